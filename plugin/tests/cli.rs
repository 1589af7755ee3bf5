//! Operator subcommands against a real etcd: output, `--json`, and clear
//! one-line errors that change nothing.

mod common;

use common::{Etcd, Plugin};
use serde_json::Value;

fn run(p: &Plugin, args: &[&str]) -> (i32, String, String) {
    let out = p.cli(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_line_error(p: &Plugin, etcd: &Etcd, args: &[&str], expected: &str) {
    let rev = etcd.revision();
    let (code, _, err) = run(p, args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.contains(expected),
        "{args:?}: expected {expected:?} in {err:?}"
    );
    assert_eq!(etcd.revision(), rev, "{args:?} changed etcd");
}

#[test]
fn pool_add_list_and_delete() {
    let etcd = Etcd::start();
    etcd.seed_calico(&["agent-1"]);
    let p = Plugin::new(&etcd, "agent-1");

    let (code, out, _) = run(&p, &["pool", "add", "198.18.0.0/24", "--nat-outgoing"]);
    assert_eq!(code, 0);
    assert!(out.contains("mesos-198-18-0-0-24"), "{out}");
    let stored = etcd
        .get("/calico/resources/v3/projectcalico.org/ippools/mesos-198-18-0-0-24")
        .expect("IPPool resource");
    assert_eq!(stored["kind"], "IPPool");
    assert_eq!(stored["apiVersion"], "projectcalico.org/v3");
    assert_eq!(stored["spec"]["cidr"], "198.18.0.0/24");
    assert_eq!(stored["spec"]["blockSize"], 26);
    assert_eq!(stored["spec"]["natOutgoing"], true);
    assert_eq!(stored["spec"]["nodeSelector"], "all()");
    assert!(stored["metadata"]["uid"].is_string());
    assert!(stored["metadata"].get("resourceVersion").is_none());
    p.add_pool("fd00:18::/120", 122);

    let (_, out, _) = run(&p, &["pool", "list", "--json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (_, text, _) = run(&p, &["pool", "list"]);
    assert!(
        text.contains("198.18.0.0/24") && text.contains("fd00:18::/120"),
        "{text}"
    );

    one_line_error(
        &p,
        &etcd,
        &["pool", "add", "198.18.0.128/25"],
        "overlaps the existing pool",
    );
    one_line_error(
        &p,
        &etcd,
        &["pool", "add", "198.18.1.1/24"],
        "has host bits set; did you mean 198.18.1.0/24?",
    );
    one_line_error(
        &p,
        &etcd,
        &["pool", "add", "198.18.2.0/24", "--block-size", "12"],
        "block size 12 is outside 20..32",
    );
    one_line_error(
        &p,
        &etcd,
        &["pool", "add", "banana"],
        "'banana' is not a CIDR",
    );
    one_line_error(
        &p,
        &etcd,
        &["pool", "delete", "198.19.0.0/16"],
        "no IP pool named or with CIDR",
    );

    // In use: refused; after release: deleted with its blocks and affinities.
    p.allocate("u", 2, 0).ok();
    one_line_error(
        &p,
        &etcd,
        &["pool", "delete", "198.18.0.0/24"],
        "still has 2 address(es) in use",
    );
    p.release_uid("u").ok();
    let (code, out, err) = run(&p, &["pool", "delete", "198.18.0.0/24"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Deleted IP pool mesos-198-18-0-0-24"));
    assert!(etcd.dump("/calico/ipam/v2/assignment/ipv4/").is_empty());
    assert!(etcd.dump("/calico/ipam/v2/host/agent-1/ipv4/").is_empty());
    assert!(etcd
        .get("/calico/resources/v3/projectcalico.org/ippools/mesos-198-18-0-0-24")
        .is_none());
}

#[test]
fn ipam_show_reports_blocks_affinity_and_usage() {
    let etcd = Etcd::start();
    etcd.seed_calico(&["agent-1", "agent-2"]);
    let a = Plugin::new(&etcd, "agent-1");
    let b = Plugin::new(&etcd, "agent-2");
    a.add_pool("198.18.0.0/24", 28);
    a.allocate("x", 3, 0).ok();
    b.allocate("y", 1, 0).ok();

    let (code, out, _) = run(&a, &["ipam", "show", "--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    let pool = &report["pools"][0];
    assert_eq!(pool["cidr"], "198.18.0.0/24");
    assert_eq!(pool["size"], 256);
    assert_eq!(pool["in_use"], 4);
    let blocks = pool["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    let mut seen: Vec<(String, u64, u64)> = blocks
        .iter()
        .map(|b| {
            (
                b["affinity"].as_str().unwrap().to_string(),
                b["in_use"].as_u64().unwrap(),
                b["free"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("host:agent-1".into(), 3, 13),
            ("host:agent-2".into(), 1, 15)
        ]
    );

    let (_, text, _) = run(&a, &["ipam", "show"]);
    assert!(text.contains("4 of 256 addresses in use"), "{text}");
    assert!(text.contains("host:agent-2"), "{text}");
}

#[test]
fn every_subcommand_has_help_and_version_works() {
    let p = Plugin::with_endpoints("http://127.0.0.1:1", "agent-1");
    for args in [
        vec!["--help"],
        vec!["pool", "--help"],
        vec!["pool", "add", "--help"],
        vec!["pool", "list", "--help"],
        vec!["pool", "delete", "--help"],
        vec!["ipam", "show", "--help"],
        vec!["ipam", "check", "--help"],
        vec!["gc", "--help"],
        vec!["doctor", "--help"],
    ] {
        let (code, out, _) = run(&p, &args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
    let (code, out, _) = run(&p, &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("calico-mesos {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, _, err) = run(&p, &["pool", "frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
    // Unreachable etcd: one line, non-zero.
    let (code, _, err) = run(&p, &["pool", "list"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("etcd is unreachable"), "{err}");
}

#[test]
fn the_man_page_describes_every_command_and_the_timer() {
    let p = Plugin::with_endpoints("http://127.0.0.1:1", "agent-1");
    let (code, page, _) = run(&p, &["man"]);
    assert_eq!(code, 0);
    for text in [
        ".SH COMMANDS",
        "calico\\-mesos gc [\\-\\-apply] [\\-\\-grace SECONDS] [\\-\\-json]",
        "calico\\-mesos ipam check [\\-\\-json]",
        "calico\\-mesos doctor",
        "systemctl enable \\-\\-now calico\\-mesos\\-gc.timer",
        "Without \\-\\-apply nothing changes",
    ] {
        assert!(page.contains(text), "{text:?} missing from the man page");
    }
    // No pointers at per-command pages that are not shipped.
    assert!(!page.contains("calico\\-mesos\\-gc(1)"), "{page}");
}

#[test]
fn endpoint_list_filters_by_node_and_orchestrator() {
    let etcd = Etcd::start();
    let p = Plugin::new(&etcd, "agent-1");
    let wep = |node: &str, cid: &str, orchestrator: &str| {
        let name = format!(
            "{}-{orchestrator}-{}-eth0",
            node.replace('-', "--"),
            cid.replace('-', "--")
        );
        etcd.put(
            &format!("/calico/resources/v3/projectcalico.org/workloadendpoints/default/{name}"),
            &serde_json::json!({
                "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"orchestrator": orchestrator, "workload": cid, "node": node, "containerID": cid,
                         "endpoint": "eth0", "ipNetworks": ["198.18.0.7/32"], "profiles": ["mesos.host.x"],
                         "interfaceName": "cali0123456789a", "mac": "aa:bb:cc:dd:ee:ff"}
            }),
        );
    };
    wep("agent-1", "c-1", "mesos");
    wep("agent-2", "c-2", "mesos");
    wep("agent-1", "k", "k8s");

    let (code, out, err) = run(&p, &["endpoint", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "only mesos endpoints: {out}"
    );
    let (_, out, _) = run(&p, &["endpoint", "list", "--node", "agent-2", "--json"]);
    let one: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(one[0]["container_id"], "c-2");
    assert_eq!(one[0]["ip_networks"][0], "198.18.0.7/32");
    let (_, text, _) = run(&p, &["endpoint", "list", "--node", "agent-1"]);
    assert!(text.contains("c-1") && !text.contains("c-2"), "{text}");
}
