//! `calico-mesos ipam check` against a real etcd: consistent data passes,
//! and each kind of damage is named with its key, without a write.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_mesos::endpoint::{build_endpoint, endpoint_key, EndpointInput};
use common::{Etcd, Plugin};
use serde_json::Value;

const NODE: &str = "agent-1";

fn check(p: &Plugin, etcd: &Etcd) -> (i32, String) {
    let rev = etcd.revision();
    let out = p.cli(&["ipam", "check"]);
    assert_eq!(etcd.revision(), rev, "ipam check wrote to etcd");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// An endpoint as isolate writes it, put straight into etcd.
fn put_endpoint(etcd: &Etcd, cid: &str, ip: &str, handle: &str) {
    let ip: IpAddr = ip.parse().unwrap();
    let handles = BTreeMap::from([(ip, handle.to_string())]);
    let ep = build_endpoint(&EndpointInput {
        node: NODE,
        container_id: cid,
        ips: &[ip],
        profiles: vec!["mesos.host.agent-1".into()],
        interface_name: &calico_mesos::dataplane::host_veth_name(cid),
        mac: "02:00:00:00:00:01",
        mesos_labels: &BTreeMap::new(),
        netgroups: &[],
        handles: &handles,
    });
    etcd.put(
        &endpoint_key(NODE, cid),
        &serde_json::to_value(&ep).unwrap(),
    );
}

#[test]
fn each_kind_of_damage_is_named_with_its_key() {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let p = Plugin::new(&etcd, NODE);
    p.add_pool("198.18.0.0/24", 26);
    p.add_pool("198.18.9.0/24", 26);
    p.add_pool("fd00:18::/120", 122);
    let a = p.allocate("ctr-a", 1, 1).ok().ips("ipv4").remove(0);
    let b = p.allocate("ctr-b", 1, 0).ok().ips("ipv4").remove(0);
    p.allocate("ctr-c", 1, 0).ok();
    put_endpoint(&etcd, "ctr-a", &a, "mesos.ctr-a");
    let (code, text) = check(&p, &etcd);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("IPAM is consistent"), "{text}");

    // A deleted handle document.
    etcd.delete("/calico/ipam/v2/handle/mesos.ctr-b");
    // A changed handle count.
    let hc = "/calico/ipam/v2/handle/mesos.ctr-c";
    let mut doc = etcd.get(hc).unwrap();
    let block = doc["block"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    doc["block"][&block] = Value::from(3);
    etcd.put(hc, &doc);
    // An endpoint address that is not allocated.
    put_endpoint(&etcd, "ctr-d", "198.18.0.200", "mesos.ctr-d");
    // A block outside every pool: its pool was deleted behind IPAM's back.
    let in_second = p
        .reserve("ctr-e", &["198.18.9.7"], &[])
        .ok()
        .ips("ipv4")
        .remove(0);
    assert_eq!(in_second, "198.18.9.7");
    etcd.delete("/calico/resources/v3/projectcalico.org/ippools/mesos-198-18-9-0-24");

    let (code, text) = check(&p, &etcd);
    assert_eq!(code, 1, "{text}");
    for (key, what) in [
        (
            "/calico/ipam/v2/handle/mesos.ctr-b",
            format!("missing: the blocks hold 1 address(es) for handle mesos.ctr-b ({b})"),
        ),
        (
            hc,
            format!("handle mesos.ctr-c counts 3 address(es) in block {block}; the block holds 1"),
        ),
        (
            &endpoint_key(NODE, "ctr-d"),
            "address 198.18.0.200 is not allocated".to_string(),
        ),
        (
            "/calico/ipam/v2/assignment/ipv4/block/198.18.9.0-26",
            "block 198.18.9.0/26 is outside every IP pool".to_string(),
        ),
    ] {
        let line = format!("{key}: {what}");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("4 problem(s)"), "{text}");

    // The same for scripts.
    let out = p.cli(&["ipam", "check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["consistent"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 4);
}

#[test]
fn affinities_and_blocks_must_name_each_other() {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let p = Plugin::new(&etcd, NODE);
    p.add_pool("198.18.0.0/24", 26);
    p.allocate("ctr-a", 1, 0).ok();
    let blocks = etcd.dump("/calico/ipam/v2/assignment/ipv4/block/");
    let block_key = blocks.keys().next().unwrap().clone();
    let dashed = block_key.rsplit('/').next().unwrap().to_string();
    let affinity = format!("/calico/ipam/v2/host/agent-1/ipv4/block/{dashed}");
    etcd.delete(&affinity);
    let stray = if dashed == "198.18.0.64-26" {
        "198.18.0.128-26"
    } else {
        "198.18.0.64-26"
    };
    etcd.put_raw(
        &format!("/calico/ipam/v2/host/agent-1/ipv4/block/{stray}"),
        r#"{"state":"confirmed","deleted":false}"#,
    );
    let (code, text) = check(&p, &etcd);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "{block_key}: block is affine to host:agent-1 but has no affinity key ({affinity})"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "/calico/ipam/v2/host/agent-1/ipv4/block/{stray}: affinity (confirmed) of \
             host:agent-1 for block {}, which does not exist",
            stray.replacen('-', "/", 1)
        )),
        "{text}"
    );
}
