//! The contract between our two halves: the module's C++ client core, with
//! the module's own request builders, drives the real plugin binary against
//! a real etcd. If either side changes the protocol, this fails.

mod common;

use std::path::Path;
use std::process::Command;

use common::consistency::check_ipam;
use common::netns::{can_run, SimHost};
use common::{Etcd, Plugin};

#[test]
fn the_module_client_and_the_plugin_agree() {
    let etcd = Etcd::start();
    etcd.seed_calico(&["agent-1"]);
    let plugin = Plugin::new(&etcd, "agent-1");
    plugin.add_pool("198.18.0.0/24", 26);
    plugin.add_pool("fd00:18::/120", 122);

    let cpp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netmodules-build/cpp");
    let scratch = tempfile::tempdir().unwrap();
    let driver = scratch.path().join("contract_driver");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = Command::new(cxx)
        .args(["-std=c++11", "-Wall", "-Werror", "-O1"])
        .args([
            "json.cpp",
            "deadline.cpp",
            "subprocess.cpp",
            "plugin_client.cpp",
            "tests/contract_driver.cpp",
        ])
        .arg("-o")
        .arg(&driver)
        .current_dir(&cpp)
        .output()
        .expect("a C++ compiler is installed");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let cid = "ba11f1de-fc4d-46fd-9f15-424f4ef05a3a";
    // The driver runs the plugin with the test's environment, as the agent
    // would run it with its own; as root, on a simulated host (gc reads and
    // may change the host's links: never the machine's own).
    let plugin_cmd = plugin.command();
    let mut host = None;
    let mut run = if can_run() {
        let mut h = SimHost::new();
        h.reach_etcd(&etcd.endpoints());
        let c = common::netns::command_in(h.ns.pid, &driver);
        host = Some(h);
        c
    } else {
        Command::new(&driver)
    };
    run.env_clear().arg(common::plugin::BIN).arg(cid);
    for (k, v) in plugin_cmd.get_envs() {
        if let Some(v) = v {
            run.env(k, v);
        }
    }
    let out = run.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("allocated 198.18.0."), "{report}");
    assert!(
        report.contains("reserve refused: IP '198.18.0."),
        "{report}"
    );
    assert!(report.contains("cleaned up and released"), "{report}");
    // gc kept the survivor's address, and only that.
    let left = check_ipam(&etcd);
    let survivor = format!("mesos.{cid}-survivor");
    assert!(
        report.contains(&format!("gc kept {cid}-survivor")),
        "{report}"
    );
    assert_eq!(
        left.values().collect::<Vec<_>>(),
        vec![&survivor],
        "{report}"
    );
    plugin.release_uid(&format!("{cid}-survivor")).ok();
    assert!(check_ipam(&etcd).is_empty(), "everything was released");
    drop(host);
}
