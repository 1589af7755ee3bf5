//! Network namespaces as simulated agent hosts and containers.
//!
//! A namespace is a `unshare -n sleep infinity` process; commands run in it
//! are started the way a process living there starts them (`command_in`).
//! The machine's own namespace is never changed:
//! links between namespaces are created from inside one of them, and the
//! harness reaches a simulated host only through its own sockets.
//! Everything is torn down in Drop, also when a test fails.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calico_mesos::dataplane::Netns;
use serde_json::Value;

/// `program`, to be started inside the network namespace of `pid` the way
/// an agent living there starts it: one exec, the child entering the
/// namespace between fork and exec. (`nsenter` would be a second exec,
/// ~1.4 ms here, that an agent never pays and the benchmark would bill.)
pub fn command_in(pid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let ns = Netns::of_pid(pid).unwrap_or_else(|e| panic!("network namespace of pid {pid}: {e}"));
    let mut cmd = Command::new(program);
    // SAFETY: between fork and exec the child only makes the setns
    // syscall on a descriptor the parent holds open (the closure owns it).
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(ns.raw_file().as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

/// Whether namespace tests can run here; prints why not when they cannot.
pub fn can_run() -> bool {
    // /proc/self/status "Uid:" line: real, effective, ...
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        eprintln!("SKIPPED: network namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
    }
    root
}

/// One network namespace, alive as long as this value.
pub struct Ns {
    pub pid: u32,
    child: Child,
}

impl Ns {
    pub fn new() -> Ns {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare runs");
        let pid = child.id();
        let ns = Ns { pid, child };
        // unshare has switched once the namespace differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_ref()
            == Some(&ours)
        {
            assert!(
                Instant::now() < deadline,
                "unshare did not create a namespace"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        ns.sh("ip link set lo up");
        ns
    }

    /// A command inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        command_in(self.pid, program)
    }

    pub fn run(&self, line: &str) -> Output {
        self.command("sh")
            .args(["-c", line])
            .output()
            .expect("a command runs in the namespace")
    }

    /// Runs a shell line in the namespace and asserts it succeeded.
    pub fn sh(&self, line: &str) -> String {
        let out = self.run(line);
        assert!(
            out.status.success(),
            "in netns {}: {line}: {}",
            self.pid,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -j ...` parsed.
    pub fn ip_json(&self, args: &str) -> Value {
        let out = self.sh(&format!("ip -j {args}"));
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j output")
    }

    pub fn link_names(&self) -> Vec<String> {
        self.ip_json("link show")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        self.ip_json("link show")
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }

    /// Main-table routes as `ip -j route` objects (v6 with `-6`).
    pub fn routes(&self, v6: bool) -> Vec<Value> {
        let fam = if v6 { "-6 " } else { "" };
        self.ip_json(&format!("{fam}route show"))
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn sysctl(&self, key: &str) -> String {
        self.sh(&format!("cat /proc/sys/{}", key.replace('.', "/")))
            .trim()
            .to_string()
    }

    /// One ping, one second at most.
    pub fn ping(&self, to: IpAddr) -> bool {
        let flag = if to.is_ipv6() { "-6" } else { "-4" };
        self.run(&format!("ping {flag} -c1 -W1 {to}"))
            .status
            .success()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static UPLINK: AtomicUsize = AtomicUsize::new(0);

/// A simulated agent host: forwarding on, and a default route through an
/// uplink veth (proxy ARP for 169.254.1.1 only answers when the host has a
/// route covering it through another interface, as every real host has).
pub struct SimHost {
    pub ns: Ns,
    forwarders: Vec<Forwarder>,
}

impl SimHost {
    pub fn new() -> SimHost {
        let ns = Ns::new();
        let n = UPLINK.fetch_add(1, Ordering::SeqCst) % 60;
        // No DAD on the simulated hosts' own links: a tentative link-local
        // on the fabric drops the first forwarded IPv6 packets for ~1 s.
        ns.sh(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
             net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
        );
        ns.sh(&format!(
            "ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up && \
             ip addr add 198.19.255.{}/30 dev up0 && ip route add default via 198.19.255.{} dev up0",
            4 * n + 1,
            4 * n + 2
        ));
        SimHost {
            ns,
            forwarders: Vec::new(),
        }
    }

    /// Makes `endpoint` (an http://127.0.0.1:PORT etcd of the test) reachable
    /// at the same URL from inside this host.
    pub fn reach_etcd(&mut self, endpoints: &str) {
        for url in endpoints.split(',') {
            let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
            self.forwarders.push(Forwarder::start(&self.ns, port));
        }
    }

    /// A new container namespace (not yet connected to anything).
    pub fn container(&self) -> Ns {
        Ns::new()
    }
}

/// Joins two hosts with a veth "fabric" link (created from inside `a`)
/// and addresses on it; routes to containers are added with `route_via`.
pub fn join(a: &SimHost, b: &SimHost) {
    a.ns.sh(&format!(
        "ip link add fab0 type veth peer name fab0 netns {} && ip link set fab0 up && \
         ip addr add 198.19.254.1/30 dev fab0 && ip addr add fd00:fab::1/64 dev fab0 nodad",
        b.ns.pid
    ));
    b.ns.sh("ip link set fab0 up && ip addr add 198.19.254.2/30 dev fab0 && ip addr add fd00:fab::2/64 dev fab0 nodad");
}

/// Static route on `host` to a container address living on the other end
/// of the fabric (standing in for BGP).
pub fn route_via_fabric(host: &SimHost, ip: IpAddr, peer_is_a: bool) {
    let (gw4, gw6) = if peer_is_a {
        ("198.19.254.1", "fd00:fab::1")
    } else {
        ("198.19.254.2", "fd00:fab::2")
    };
    match ip {
        IpAddr::V4(a) => host
            .ns
            .sh(&format!("ip route add {a}/32 via {gw4} dev fab0")),
        IpAddr::V6(a) => host
            .ns
            .sh(&format!("ip -6 route add {a}/128 via {gw6} dev fab0")),
    };
}

/// Relays TCP connections made inside a namespace to 127.0.0.1:port to the
/// same port on the machine's loopback (where the test etcd listens). The
/// listening socket is created on a thread that entered the namespace; the
/// outgoing connections are made from the test's own namespace. accept()
/// blocks, so a connection is relayed the moment it is made (a polling
/// accept would add its sleep to every plugin run the benchmark times);
/// drop wakes it with one last connection from inside.
struct Forwarder {
    /// Held open: it keeps the namespace alive for the wake-up.
    ns: Netns,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    fn start(ns: &Ns, port: u16) -> Forwarder {
        let ns = Netns::of_pid(ns.pid).expect("the simulated host's namespace");
        let listener = ns
            .run(|| Ok(TcpListener::bind(("127.0.0.1", port))))
            .expect("a thread in the namespace")
            .expect("bind in the namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for inside in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(inside) = inside {
                    if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                        pipe(inside, outside);
                    }
                }
            }
        });
        Forwarder {
            ns,
            port,
            stop,
            thread: Some(thread),
        }
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    // gRPC writes small frames; without this, Nagle plus delayed ACKs add
    // ~40 ms to every request relayed.
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    };
    copy(a.try_clone().unwrap(), b.try_clone().unwrap());
    copy(b, a);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let port = self.port;
        // The namespace file keeps the listener's namespace alive, so the
        // wake-up connection reaches it; if it still fails, leave the
        // thread rather than hang.
        let woken = self
            .ns
            .run(|| Ok(TcpStream::connect(("127.0.0.1", port)).is_ok()))
            .unwrap_or(false);
        if let Some(t) = self.thread.take() {
            if woken {
                let _ = t.join();
            }
        }
    }
}
