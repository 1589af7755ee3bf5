//! `calico-mesos doctor`: checks this agent host's Calico and Mesos set-up
//! and says, for each problem, what to do. Read-only. Every path is an
//! argument (the CLI takes flags and environment variables), so tests point
//! it at their own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, EtcdConfig};
use crate::datastore::model::{ClusterInformation, Node};
use crate::datastore::{keys, Datastore, RawEntry, Read};
use crate::endpoint::{endpoint_ips, WorkloadEndpoint, ORCHESTRATOR};
use crate::ipam::pools::Pool;

pub const ISOLATOR_MODULE: &str = "com_mesosphere_mesos_NetworkIsolator";
pub const HOOK_MODULE: &str = "com_mesosphere_mesos_NetworkHook";
/// The module records the Mesos version it was built for after this
/// marker (netmodules-build/cpp/mesos/network_isolator.cpp).
pub const VERSION_MARKER: &[u8] = b"calico-mesos-module-built-for-mesos=";

/// Where doctor looks.
#[derive(Debug, Clone)]
pub struct Paths {
    pub modules_json: PathBuf,
    /// The agent's flag files (`modules`, `isolation`, `hooks`).
    pub agent_flags_dir: PathBuf,
    /// The module; None: the file modules.json names.
    pub module: Option<PathBuf>,
    /// calico-node's environment file (Felix settings).
    pub node_env: PathBuf,
    /// The agent binary asked for `--version`.
    pub mesos_slave: String,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DoctorReport {
    pub healthy: bool,
    pub checks: Vec<Finding>,
}

impl DoctorReport {
    fn ok(&mut self, check: &'static str, detail: impl Into<String>) {
        self.checks.push(Finding {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        });
    }

    fn problem(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Finding {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }
}

/// Runs every check. `config` is what `Config::load` gave.
pub async fn run(config: Result<Config, String>, paths: &Paths) -> DoctorReport {
    let mut r = DoctorReport::default();
    match &config {
        Ok(c) => r.ok(
            "config",
            match &c.source {
                Some(p) => format!("{} parses; node name {}", p.display(), c.node_name),
                None => format!("no config file, defaults apply; node name {}", c.node_name),
            },
        ),
        Err(e) => r.problem(
            "config",
            e.clone(),
            "fix the file (CALICO_MESOS_CONFIG names another one) or the environment it names",
        ),
    }
    if let Ok(cfg) = &config {
        calico_checks(&mut r, cfg, &paths.node_env).await;
    }
    let deadline_ms = config.as_ref().map(|c| c.etcd.deadline_ms).ok();
    module_checks(&mut r, paths, deadline_ms);
    r.healthy = r.checks.iter().all(|f| f.ok);
    r
}

// ---------------------------------------------------------------- etcd

async fn calico_checks(r: &mut DoctorReport, cfg: &Config, node_env: &Path) {
    for (what, file) in [
        ("CA certificate", &cfg.etcd.ca_cert_file),
        ("client certificate", &cfg.etcd.cert_file),
        ("client key", &cfg.etcd.key_file),
    ] {
        if let Some(f) = file {
            if let Err(e) = std::fs::metadata(f).and_then(|_| std::fs::File::open(f)) {
                r.problem(
                    "etcd-tls",
                    format!("the etcd {what} {f} cannot be read: {e}"),
                    "fix ETCD_CA_CERT_FILE / ETCD_CERT_FILE / ETCD_KEY_FILE or the [etcd] TLS settings",
                );
            }
        }
    }
    let mut reachable = None;
    for endpoint in &cfg.etcd.endpoints {
        let one = EtcdConfig {
            endpoints: vec![endpoint.clone()],
            timeout_ms: cfg.etcd.timeout_ms.min(3000),
            ..cfg.etcd.clone()
        };
        let answer = match Datastore::connect(&one).await {
            Ok(ds) => ds.revision().await.map(|_| ds),
            Err(e) => Err(e),
        };
        match answer {
            Ok(ds) => {
                r.ok("etcd", format!("{endpoint} answers"));
                reachable.get_or_insert(ds);
            }
            Err(e) => r.problem(
                "etcd",
                format!("etcd endpoint {endpoint} does not answer: {e}"),
                "start etcd there, or fix ETCD_ENDPOINTS ([etcd] endpoints) and the TLS files",
            ),
        }
    }
    let Some(ds) = reachable else {
        r.problem(
            "calico",
            "the Calico documents were not checked: no etcd endpoint answers",
            "make etcd reachable, then run doctor again",
        );
        return;
    };
    if let Err(e) = datastore_checks(r, cfg, &ds, node_env).await {
        r.problem(
            "calico",
            format!("reading the Calico documents failed: {e}"),
            "check etcd, then run doctor again",
        );
    }
}

async fn datastore_checks(
    r: &mut DoctorReport,
    cfg: &Config,
    ds: &Datastore,
    node_env: &Path,
) -> anyhow::Result<()> {
    let node = cfg.node_name.as_str();
    let felix = "/calico/resources/v3/projectcalico.org/felixconfigurations/";
    let reads = ds
        .read_batch(&[
            Read::Key(keys::cluster_information()),
            Read::Key(keys::node(node)),
            Read::Prefix(keys::ip_pools_prefix()),
            Read::Prefix(keys::all_workload_endpoints_prefix()),
            Read::Key(format!("{felix}default")),
            Read::Key(format!("{felix}node.{node}")),
        ])
        .await?;
    match reads[0].first().map(RawEntry::decode::<ClusterInformation>) {
        None => r.problem(
            "cluster-information",
            "ClusterInformation 'default' is missing from etcd",
            "start calico/node (systemctl enable --now calico-node), which creates it",
        ),
        Some(Err(e)) => r.problem(
            "cluster-information",
            e.to_string(),
            "let calico/node rewrite it",
        ),
        Some(Ok(ci)) if ci.value.spec.datastore_ready == Some(false) => r.problem(
            "cluster-information",
            "the Calico datastore is not ready (ClusterInformation datastoreReady is false)",
            "set datastoreReady to true once the datastore is ready (calicoctl)",
        ),
        Some(Ok(_)) => r.ok("cluster-information", "ClusterInformation is ready"),
    }
    let labels = match reads[1].first().map(RawEntry::decode::<Node>) {
        None => {
            r.problem(
                "node",
                format!("Calico node '{node}' does not exist in etcd"),
                "start calico/node on this agent (systemctl enable --now calico-node), or set \
                 NODENAME (or [node] name) to the name calico/node uses",
            );
            BTreeMap::new()
        }
        Some(Err(e)) => {
            r.problem("node", e.to_string(), "let calico/node rewrite it");
            BTreeMap::new()
        }
        Some(Ok(n)) => {
            r.ok("node", format!("Calico node '{node}' exists"));
            n.value.metadata.labels
        }
    };

    let pools: Vec<Pool> = reads[2].iter().filter_map(Pool::from_entry).collect();
    let v6_in_use = pools.iter().any(Pool::is_v6)
        || reads[3].iter().any(|e| {
            e.decode::<WorkloadEndpoint>().is_ok_and(|ep| {
                ep.value.spec.node == node
                    && ep.value.spec.orchestrator == ORCHESTRATOR
                    && endpoint_ips(&ep.value).iter().any(|ip| ip.is_ipv6())
            })
        });
    for (v6, family) in [(false, "IPv4"), (true, "IPv6")] {
        if v6 && !v6_in_use {
            continue;
        }
        let usable: Vec<&str> = pools
            .iter()
            .filter(|p| p.is_v6() == v6 && p.usable_for_auto(&labels, &cfg.ipam))
            .map(|p| p.name.as_str())
            .collect();
        if usable.is_empty() {
            r.problem(
                "pools",
                format!("no usable {family} IP pool for node '{node}'"),
                "add one with `calico-mesos pool add <CIDR>`; pools must be enabled, allow \
                 Workload use, use Automatic assignment and match the [ipam] pool lists",
            );
        } else {
            r.ok("pools", format!("{family} pools: {}", usable.join(", ")));
        }
    }

    felix_check(r, node_env, &reads[4], &reads[5]);
    Ok(())
}

/// Felix drops container-to-host traffic unless told otherwise; the agent
/// must be reachable from its containers (executors register with it).
fn felix_check(r: &mut DoctorReport, node_env: &Path, global: &[RawEntry], own: &[RawEntry]) {
    const VAR: &str = "FELIX_DEFAULTENDPOINTTOHOSTACTION";
    let from_env = std::fs::read_to_string(node_env).ok().and_then(|text| {
        text.lines().find_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            (k.trim() == VAR).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
        })
    });
    let from_doc = |e: &[RawEntry]| {
        let v: Value = serde_json::from_slice(&e.first()?.value).ok()?;
        v["spec"]["defaultEndpointToHostAction"]
            .as_str()
            .map(String::from)
    };
    let (value, source) = match (from_env, from_doc(own), from_doc(global)) {
        (Some(v), _, _) => (v, format!("{VAR} in {}", node_env.display())),
        (None, Some(v), _) => (v, "FelixConfiguration of this node".into()),
        (None, None, Some(v)) => (v, "FelixConfiguration default".into()),
        (None, None, None) => ("Drop".into(), "Felix's default".into()),
    };
    if value.eq_ignore_ascii_case("accept") {
        r.ok(
            "felix",
            format!("Felix accepts container-to-host traffic ({source})"),
        );
    } else {
        r.problem(
            "felix",
            format!(
                "Felix's endpoint-to-host action is {value} ({source}): containers cannot reach \
                 this agent"
            ),
            format!(
                "set {VAR}=ACCEPT in {} and restart calico-node",
                node_env.display()
            ),
        );
    }
}

// ---------------------------------------------------------------- Mesos

fn module_checks(r: &mut DoctorReport, paths: &Paths, deadline_ms: Option<u64>) {
    let named = modules_json_check(r, &paths.modules_json, deadline_ms);
    let module = paths.module.clone().or(named);
    match module {
        Some(so) => module_file_check(r, &so, &paths.mesos_slave),
        None => r.problem(
            "module",
            "no module file to check: modules.json names none",
            "install calico-mesos-netmodules (or name the module with --module)",
        ),
    }
    agent_flags_check(r, &paths.agent_flags_dir, &paths.modules_json);
}

/// Checks modules.json; returns the module file it names. The module's
/// `command_timeout` must outlast the plugin's etcd deadline, or the module
/// kills a plugin that was about to answer.
fn modules_json_check(
    r: &mut DoctorReport,
    path: &Path,
    deadline_ms: Option<u64>,
) -> Option<PathBuf> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            r.problem(
                "modules.json",
                format!("{} cannot be read: {e}", path.display()),
                "install calico-mesos-netmodules, which writes it (or name it with --modules-json)",
            );
            return None;
        }
    };
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            r.problem(
                "modules.json",
                format!("{} is not valid JSON: {e}", path.display()),
                "fix the file (the packaged one is a template to start from)",
            );
            return None;
        }
    };
    let libraries = doc["libraries"].as_array().cloned().unwrap_or_default();
    let has = |lib: &Value, name: &str| {
        lib["modules"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x["name"] == name))
    };
    let Some(lib) = libraries.iter().find(|l| has(l, ISOLATOR_MODULE)) else {
        r.problem(
            "modules.json",
            format!("{} loads no {ISOLATOR_MODULE}", path.display()),
            "add the isolator module to it (see the README's agent configuration)",
        );
        return None;
    };
    let mut fine = true;
    if !libraries.iter().any(|l| has(l, HOOK_MODULE)) {
        fine = false;
        r.problem(
            "modules.json",
            format!("{} loads no {HOOK_MODULE}", path.display()),
            "add the hook module (without it tasks do not report their addresses)",
        );
    }
    let file = lib["file"].as_str().map(PathBuf::from);
    match &file {
        Some(f) if f.is_file() => {}
        Some(f) => {
            fine = false;
            r.problem(
                "modules.json",
                format!(
                    "{} points at the module file {}, which does not exist",
                    path.display(),
                    f.display()
                ),
                "reinstall calico-mesos-netmodules or fix the \"file\" of the library",
            );
        }
        None => {
            fine = false;
            r.problem(
                "modules.json",
                format!("{}: the isolator's library has no \"file\"", path.display()),
                "name the module file in it",
            );
        }
    }
    let isolator = lib["modules"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["name"] == ISOLATOR_MODULE))
        .cloned()
        .unwrap_or(Value::Null);
    let params: BTreeMap<String, String> = isolator["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p["key"].as_str()?.into(), p["value"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default();
    for key in ["isolator_command", "ipam_command"] {
        match params.get(key) {
            Some(cmd) if is_executable(Path::new(cmd)) => {}
            Some(cmd) => {
                fine = false;
                r.problem(
                    "modules.json",
                    format!("{}: {key} {cmd} is not an executable file", path.display()),
                    "point it at /usr/bin/calico-mesos (the agent refuses to start otherwise)",
                );
            }
            None => {
                fine = false;
                r.problem(
                    "modules.json",
                    format!("{}: the isolator has no {key}", path.display()),
                    "add it with the value /usr/bin/calico-mesos",
                );
            }
        }
    }
    let timeout_s = params
        .get("command_timeout")
        .map_or(Some(30), |t| t.parse::<u64>().ok());
    if let (Some(deadline), Some(t)) = (deadline_ms, timeout_s) {
        if t * 1000 <= deadline {
            fine = false;
            r.problem(
                "modules.json",
                format!(
                    "{}: command_timeout {t} s does not outlast the plugin's etcd deadline_ms \
                     {deadline}",
                    path.display()
                ),
                "raise command_timeout above deadline_ms (the packaged 30 s is above the \
                 default 15000 ms), or lower [etcd] deadline_ms",
            );
        }
    }
    if fine {
        r.ok(
            "modules.json",
            format!("{} is valid and its files exist", path.display()),
        );
    }
    file
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Mesos version a module was built for: its `module.env`, else the
/// marker the module carries.
pub fn module_version(so: &Path) -> Option<String> {
    if let Some(env) = so
        .parent()
        .and_then(|d| std::fs::read_to_string(d.join("module.env")).ok())
    {
        if let Some(v) = env.lines().find_map(|l| l.strip_prefix("MESOS_VERSION=")) {
            return Some(v.trim().to_string());
        }
    }
    let bytes = std::fs::read(so).ok()?;
    let at = bytes
        .windows(VERSION_MARKER.len())
        .position(|w| w == VERSION_MARKER)?
        + VERSION_MARKER.len();
    let version: String = bytes[at..]
        .iter()
        .take(32)
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|b| *b as char)
        .collect();
    (!version.is_empty()).then_some(version)
}

/// `major.minor` of a version text like `mesos 0.26.0`.
fn minor_of(text: &str) -> Option<String> {
    let v = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

fn installed_mesos(mesos_slave: &str) -> Option<String> {
    let out = std::process::Command::new(mesos_slave)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    out.status.success().then_some(text.trim().to_string())
}

fn module_file_check(r: &mut DoctorReport, so: &Path, mesos_slave: &str) {
    let head = std::fs::read(so).map(|b| b.get(..4) == Some(b"\x7fELF"));
    match head {
        Err(e) => {
            r.problem(
                "module",
                format!("the module {} cannot be read: {e}", so.display()),
                "reinstall calico-mesos-netmodules",
            );
            return;
        }
        Ok(false) => {
            r.problem(
                "module",
                format!("the module {} is not a shared library", so.display()),
                "reinstall calico-mesos-netmodules",
            );
            return;
        }
        Ok(true) => {}
    }
    let built = module_version(so);
    let installed = installed_mesos(mesos_slave);
    match (&built, &installed) {
        (Some(b), Some(i)) if minor_of(b) != minor_of(i) => r.problem(
            "module",
            format!(
                "the module {} is built for Mesos {b}, but the installed agent is {i}",
                so.display()
            ),
            "install the calico-mesos-netmodules package for this Mesos version",
        ),
        (Some(b), Some(i)) => r.ok(
            "module",
            format!("{} is built for Mesos {b}; the agent is {i}", so.display()),
        ),
        (Some(b), None) => r.ok(
            "module",
            format!(
                "{} is built for Mesos {b} ({mesos_slave} --version did not answer: not compared)",
                so.display()
            ),
        ),
        (None, _) => r.ok(
            "module",
            format!(
                "{} is present (it records no Mesos version: not compared)",
                so.display()
            ),
        ),
    }
}

fn agent_flags_check(r: &mut DoctorReport, dir: &Path, modules_json: &Path) {
    if !dir.is_dir() {
        r.problem(
            "agent-flags",
            format!("the agent flag directory {} does not exist", dir.display()),
            "install calico-mesos-netmodules (it writes modules, isolation and hooks there), or \
             make sure the agent runs with --modules, --isolation and --hooks as the README says",
        );
        return;
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let mut fine = true;
    let modules = read("modules");
    let wanted = format!("file://{}", modules_json.display());
    if !modules.lines().any(|l| {
        let l = l.trim();
        l == wanted || l == modules_json.display().to_string()
    }) {
        fine = false;
        r.problem(
            "agent-flags",
            format!("{} does not name {wanted}", dir.join("modules").display()),
            format!("write {wanted} into it"),
        );
    }
    for (file, module) in [("isolation", ISOLATOR_MODULE), ("hooks", HOOK_MODULE)] {
        let text = read(file);
        if !text.split([',', '\n']).any(|m| m.trim() == module) {
            fine = false;
            r.problem(
                "agent-flags",
                format!("{} does not name {module}", dir.join(file).display()),
                format!("add {module} to it (comma separated, keep the others)"),
            );
        }
    }
    if fine {
        r.ok(
            "agent-flags",
            format!("{} names our modules, isolator and hook", dir.display()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_minor() {
        assert_eq!(minor_of("mesos 0.26.0").as_deref(), Some("0.26"));
        assert_eq!(minor_of("0.25.1").as_deref(), Some("0.25"));
        assert_eq!(minor_of("mesos").as_deref(), None);
    }

    #[test]
    fn the_recorded_version_comes_from_module_env_or_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let so = dir.path().join("libmesos_network_isolator.so");
        let mut bytes = b"\x7fELF junk ".to_vec();
        bytes.extend_from_slice(VERSION_MARKER);
        bytes.extend_from_slice(b"0.25.0\0more");
        std::fs::write(&so, &bytes).unwrap();
        assert_eq!(module_version(&so).as_deref(), Some("0.25.0"));
        std::fs::write(dir.path().join("module.env"), "MESOS_VERSION=0.26.0\n").unwrap();
        assert_eq!(module_version(&so).as_deref(), Some("0.26.0"));
    }
}
