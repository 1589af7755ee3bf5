//! `calico-mesos doctor` on a simulated agent host (every path in a temp
//! dir): healthy is exit 0; each problem is exit 1 with a clear line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use calico_mesos::doctor::VERSION_MARKER;
use common::{Etcd, Plugin};

const NODE: &str = "agent-1";

/// The files an installed agent host has: modules.json, the module, the
/// agent's flag files, calico-node.env and a `mesos-slave`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        let so = h.module();
        let mut bytes = b"\x7fELF\x02\x01\x01\0fixture ".to_vec();
        bytes.extend_from_slice(VERSION_MARKER);
        bytes.extend_from_slice(b"0.26.0\0");
        std::fs::write(&so, bytes).unwrap();
        let plugin = common::plugin::BIN;
        std::fs::write(
            h.modules_json(),
            format!(
                r#"{{"libraries": [{{"file": "{}", "modules": [
                {{"name": "com_mesosphere_mesos_NetworkIsolator", "parameters": [
                  {{"key": "isolator_command", "value": "{plugin}"}},
                  {{"key": "ipam_command", "value": "{plugin}"}}]}},
                {{"name": "com_mesosphere_mesos_NetworkHook"}}]}}]}}"#,
                so.display()
            ),
        )
        .unwrap();
        let flags = h.flags();
        std::fs::create_dir(&flags).unwrap();
        std::fs::write(
            flags.join("modules"),
            format!("file://{}\n", h.modules_json().display()),
        )
        .unwrap();
        std::fs::write(
            flags.join("isolation"),
            "cgroups/cpu,cgroups/mem,com_mesosphere_mesos_NetworkIsolator\n",
        )
        .unwrap();
        std::fs::write(flags.join("hooks"), "com_mesosphere_mesos_NetworkHook\n").unwrap();
        std::fs::write(
            h.path("calico-node.env"),
            "NODENAME=agent-1\nFELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT\n",
        )
        .unwrap();
        h.set_mesos("0.26.0");
        h
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn module(&self) -> PathBuf {
        self.path("libmesos_network_isolator.so")
    }
    fn modules_json(&self) -> PathBuf {
        self.path("modules.json")
    }
    fn flags(&self) -> PathBuf {
        self.path("mesos-slave")
    }

    fn set_mesos(&self, version: &str) {
        let p = self.path("mesos-slave-bin");
        std::fs::write(&p, format!("#!/bin/sh\necho 'mesos {version}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn doctor(&self, p: &Plugin) -> (i32, Vec<String>) {
        let arg = |path: &Path| path.display().to_string();
        let out = p.cli(&[
            "doctor",
            "--modules-json",
            &arg(&self.modules_json()),
            "--agent-flags-dir",
            &arg(&self.flags()),
            "--node-env",
            &arg(&self.path("calico-node.env")),
            "--mesos-slave",
            &arg(&self.path("mesos-slave-bin")),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (
            out.status.code().unwrap_or(-1),
            text.lines().map(String::from).collect(),
        )
    }
}

fn problems(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("PROBLEM")).collect()
}

fn healthy_world() -> (Etcd, Plugin, Host) {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let p = Plugin::new(&etcd, NODE);
    p.add_pool("198.18.0.0/24", 26);
    (etcd, p, Host::new())
}

#[test]
fn a_healthy_host_passes() {
    let (_etcd, p, host) = healthy_world();
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 0, "{lines:#?}");
    assert!(problems(&lines).is_empty(), "{lines:#?}");
    assert_eq!(lines.last().map(String::as_str), Some("healthy"));
    for check in [
        "config",
        "etcd",
        "node",
        "pools",
        "felix",
        "modules.json",
        "module",
        "agent-flags",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("ok       {check}:"))),
            "{check} not reported: {lines:#?}"
        );
    }
}

#[test]
fn each_problem_gets_a_clear_line() {
    let (mut etcd, p, host) = healthy_world();

    // The Node document is missing.
    etcd.delete("/calico/resources/v3/projectcalico.org/nodes/agent-1");
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 1);
    let found = problems(&lines);
    assert_eq!(found.len(), 1, "{lines:#?}");
    assert!(
        found[0].contains("Calico node 'agent-1' does not exist in etcd")
            && found[0].contains("To fix: start calico/node"),
        "{lines:#?}"
    );
    etcd.seed_node(NODE, "172.31.0.10");

    // modules.json points at a missing module.
    std::fs::remove_file(host.module()).unwrap();
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 1);
    assert!(
        problems(&lines).iter().any(|l| l.contains(&format!(
            "points at the module file {}, which does not exist",
            host.module().display()
        ))),
        "{lines:#?}"
    );

    // A module built for another Mesos.
    host.set_mesos("0.25.0");
    std::fs::write(
        host.module(),
        [b"\x7fELF ".as_slice(), VERSION_MARKER, b"0.26.0\0"].concat(),
    )
    .unwrap();
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 1);
    assert!(
        problems(&lines)
            .iter()
            .any(|l| l
                .contains("is built for Mesos 0.26.0, but the installed agent is mesos 0.25.0")),
        "{lines:#?}"
    );
    host.set_mesos("0.26.0");

    // Felix would drop container-to-agent traffic.
    std::fs::write(host.path("calico-node.env"), "NODENAME=agent-1\n").unwrap();
    let (_, lines) = host.doctor(&p);
    assert!(
        problems(&lines)
            .iter()
            .any(|l| l.contains("endpoint-to-host action is Drop")
                && l.contains("FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT")),
        "{lines:#?}"
    );
    std::fs::write(
        host.path("calico-node.env"),
        "FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT\n",
    )
    .unwrap();
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 0, "{lines:#?}");

    // The plugin's etcd deadline outlasts the module's command_timeout
    // (30 s when modules.json names none): the module would kill it.
    p.set_config("[etcd]\ndeadline_ms = 40000\ntimeout_ms = 5000\n");
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 1);
    assert!(
        problems(&lines)
            .iter()
            .any(|l| l.contains("command_timeout 30 s does not outlast")),
        "{lines:#?}"
    );
    p.set_config("# test config\n");

    // etcd is down.
    etcd.stop();
    let (code, lines) = host.doctor(&p);
    assert_eq!(code, 1);
    let endpoint = etcd.endpoint().to_string();
    assert!(
        problems(&lines).iter().any(|l| l
            .contains(&format!("etcd endpoint {endpoint} does not answer"))
            && l.contains("To fix: start etcd there")),
        "{lines:#?}"
    );
}
