//! A real etcd server (Debian's etcd-server) on free loopback ports with a
//! temporary data dir, one per test; killed and removed on drop, also when
//! the test fails.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
    /// How it was started, to start it again after a kill.
    args: Vec<std::ffi::OsString>,
}

/// The host-lock directory the plugins of a test share (derived from the
/// etcd endpoints, so every `Plugin` of one test finds the same one);
/// removed with the test's etcd.
pub fn lock_dir_for(endpoints: &str) -> std::path::PathBuf {
    let tag: String = endpoints
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("calico-mesos-locks-{tag}"))
}

pub struct Etcd {
    pub members: Vec<Member>,
    /// Client TLS files when the cluster serves https.
    pub tls: Option<TlsFiles>,
    _dir: tempfile::TempDir,
}

/// A test CA with a server and a client certificate for 127.0.0.1.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
    server_cert: String,
    server_key: String,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (ci/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFiles {
    /// Generates the CA and certificates with the openssl CLI.
    pub fn generate(dir: &std::path::Path) -> TlsFiles {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &[
                    "req",
                    "-x509",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=calico-mesos-test-ca",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                ][..],
                &ec,
            ]
            .concat(),
        );
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nkeyUsage=digitalSignature\n"),
            )
            .unwrap();
            openssl(
                dir,
                &[
                    &[
                        "req",
                        "-subj",
                        &format!("/CN={name}"),
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        &format!("{name}.csr"),
                    ][..],
                    &ec,
                ]
                .concat(),
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "1",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        let path = |f: &str| dir.join(f).display().to_string();
        TlsFiles {
            ca: path("ca.pem"),
            cert: path("client.pem"),
            key: path("client.key"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn data_root() -> tempfile::TempDir {
    // tmpfs: etcd 3.4 cannot skip fsync, and /dev/shm makes it cheap.
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("calico-mesos-etcd")
        .to_owned();
    if shm.is_dir() {
        builder.tempdir_in(shm).expect("temp dir in /dev/shm")
    } else {
        builder.tempdir().expect("temp dir")
    }
}

impl Member {
    fn spawn(&mut self) {
        let child = Command::new("etcd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (ci/setup installs etcd-server)");
        self.child = Some(child);
    }
}

impl Etcd {
    /// One server, ready to serve.
    pub fn start() -> Etcd {
        Self::cluster(1)
    }

    /// `n` members on loopback forming one cluster.
    pub fn cluster(n: usize) -> Etcd {
        Self::launch(n, false)
    }

    /// One server that serves https only and requires client certificates.
    pub fn start_tls() -> Etcd {
        Self::launch(1, true)
    }

    fn launch(n: usize, with_tls: bool) -> Etcd {
        let dir = data_root();
        let tls = with_tls.then(|| TlsFiles::generate(dir.path()));
        let scheme = if with_tls { "https" } else { "http" };
        let id = format!(
            "cmt{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("{id}-m{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
                args: Vec::new(),
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let (heartbeat, election) = if n == 1 { ("10", "100") } else { ("25", "250") };
        for m in &mut members {
            let mut cmd = Command::new("etcd");
            if let Some(t) = &tls {
                cmd.args(["--cert-file", &t.server_cert, "--key-file", &t.server_key])
                    .args(["--trusted-ca-file", &t.ca, "--client-cert-auth"]);
            }
            cmd.args(["--name", &m.name])
                .arg("--data-dir")
                .arg(dir.path().join(&m.name))
                .args(["--listen-client-urls", &m.client_url])
                .args(["--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", &id])
                .args(["--heartbeat-interval", heartbeat])
                .args(["--election-timeout", election])
                .args(["--log-level", "error"]);
            m.args = cmd.get_args().map(|a| a.to_os_string()).collect();
            m.spawn();
        }
        let etcd = Etcd {
            members,
            tls,
            _dir: dir,
        };
        etcd.wait_ready();
        etcd
    }

    /// Waits until every member answers and is the server we started (a
    /// health check alone could pass against someone else's etcd).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for m in &self.members {
            loop {
                let out = self
                    .etcdctl_command(&m.client_url)
                    .arg("--dial-timeout=1s")
                    .args(["member", "list", "-w", "simple"])
                    .output()
                    .expect("etcdctl is installed");
                let listed = String::from_utf8_lossy(&out.stdout);
                if out.status.success() && listed.contains(&m.name) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not start",
                    m.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The client URL of the first member.
    pub fn endpoint(&self) -> &str {
        &self.members[0].client_url
    }

    /// All client URLs, comma-separated (ETCD_ENDPOINTS form).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts every killed member again, on its old data, and waits for it.
    pub fn restart(&mut self) {
        for m in &mut self.members {
            if m.child.is_none() {
                m.spawn();
            }
        }
        self.wait_ready();
    }

    /// Kills member `i` (failover tests).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The index of the current leader, as the members report it.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .etcdctl_command(&self.live_endpoints())
                .args(["endpoint", "status", "-w", "json"])
                .output()
                .expect("etcdctl runs");
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                for (i, m) in self.members.iter().enumerate() {
                    let st = v.as_array().and_then(|a| {
                        a.iter()
                            .find(|e| e["Endpoint"].as_str() == Some(&m.client_url))
                    });
                    if let Some(st) = st {
                        if st["Status"]["leader"] == st["Status"]["header"]["member_id"] {
                            return i;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes member `i` (SIGSTOP): it keeps accepting connections and
    /// never answers.
    pub fn freeze(&self, i: usize, frozen: bool) {
        let pid = self.members[i].child.as_ref().expect("member runs").id();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Kills every member (etcd-down tests).
    pub fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    fn live_endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn etcdctl_command(&self, endpoints: &str) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.args(["--endpoints", endpoints]);
        if let Some(t) = &self.tls {
            cmd.args(["--cacert", &t.ca, "--cert", &t.cert, "--key", &t.key]);
        }
        cmd
    }

    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self
            .etcdctl_command(&self.live_endpoints())
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    pub fn put(&self, key: &str, value: &Value) {
        self.etcdctl(&["put", key, &value.to_string()]);
    }

    pub fn put_raw(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]);
    }

    pub fn delete(&self, key: &str) {
        self.etcdctl(&["del", key]);
    }

    /// The `/metrics` text of every live member (plain http only).
    fn metrics_texts(&self) -> Vec<String> {
        use std::io::{Read, Write};
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| {
                let addr = m.client_url.trim_start_matches("http://");
                let mut conn = std::net::TcpStream::connect(addr).expect("etcd metrics");
                write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
                let mut text = String::new();
                conn.read_to_string(&mut text).unwrap();
                text
            })
            .collect()
    }

    /// A plain counter of etcd's `/metrics`, summed over the members.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_texts()
            .iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .sum()
    }

    /// etcd's own count of KV calls served so far, by method (`Txn`,
    /// `Range`, `Put`, `DeleteRange`), summed over the members: read from
    /// each member's `/metrics` (plain http only).
    pub fn kv_calls(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for text in self.metrics_texts() {
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("grpc_server_handled_total{") else {
                    continue;
                };
                if !rest.contains("grpc_service=\"etcdserverpb.KV\"") {
                    continue;
                }
                let method = rest
                    .split("grpc_method=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?");
                let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap_or(0.0);
                *out.entry(method.to_string()).or_default() += n as u64;
            }
        }
        out
    }

    /// The store's revision: unchanged means nothing was written.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["get", "/", "-w", "json"]);
        let v: Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"].as_i64().expect("revision")
    }

    /// Every key under `prefix` with its value parsed as JSON (raw string
    /// when it is not JSON), read by etcdctl, not by the plugin's code.
    pub fn dump(&self, prefix: &str) -> BTreeMap<String, Value> {
        let out = self.etcdctl(&["get", "--prefix", prefix]);
        let mut lines = out.lines();
        let mut map = BTreeMap::new();
        while let Some(key) = lines.next() {
            let value = lines.next().unwrap_or("");
            let parsed = serde_json::from_str(value).unwrap_or(Value::String(value.to_string()));
            map.insert(key.to_string(), parsed);
        }
        map
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.dump(key).remove(key)
    }

    /// Writes ClusterInformation and a Node resource per name, the way
    /// calico/node does when it starts.
    pub fn seed_calico(&self, nodes: &[&str]) {
        self.put(
            "/calico/resources/v3/projectcalico.org/clusterinformations/default",
            &serde_json::json!({
                "kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": "default", "uid": "9e0d5b7c-1111-4c1a-8d0b-2e9d5b1f7c33",
                             "creationTimestamp": "2026-01-09T09:00:00Z"},
                "spec": {"clusterGUID": "5b0c7e1f2a3d4c5b8e9f0a1b2c3d4e5f", "clusterType": "bgp",
                         "calicoVersion": "v3.32.1", "datastoreReady": true}
            }),
        );
        for (i, node) in nodes.iter().enumerate() {
            self.seed_node(node, &format!("172.31.0.{}", i + 10));
        }
    }

    pub fn seed_node(&self, node: &str, ipv4: &str) {
        self.put(
            &format!("/calico/resources/v3/projectcalico.org/nodes/{node}"),
            &serde_json::json!({
                "kind": "Node", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": node, "uid": "c2b1aaaa-0000-4000-8000-000000000001",
                             "creationTimestamp": "2026-01-09T09:00:00Z"},
                "spec": {"bgp": {"ipv4Address": format!("{ipv4}/24")}},
                "status": {}
            }),
        );
    }
}

/// A TCP address on loopback that never completes a connection: its one
/// listen slot is taken and never accepted, so the kernel drops every
/// further SYN, as a blackholed route would.
pub struct Blackhole {
    pub url: String,
    _listener: TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        // std listens with a backlog of 128: fill it until a connect hangs.
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
            assert!(fillers.len() < 4096, "the accept queue never filled");
        }
        Blackhole {
            url: format!("http://{addr}"),
            _listener: listener,
            _fillers: fillers,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Thaw first: a frozen member would not die of SIGKILL until then.
        for m in &self.members {
            if let Some(c) = &m.child {
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
            }
        }
        self.stop();
        let _ = std::fs::remove_dir_all(lock_dir_for(&self.endpoints()));
    }
}
