//! One owner per address: no release frees an address another container
//! holds now, whatever the order of requests (the IPAM issue's late
//! release, the 2016 module's release-then-cleanup order, cleanup by the
//! handles an endpoint recorded).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::consistency::check_ipam;
use common::netns::{can_run, SimHost};
use common::{Etcd, Plugin};
use serde_json::json;

const NODE: &str = "agent-1";

fn setup() -> (Etcd, Plugin) {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let plugin = Plugin::new(&etcd, NODE);
    plugin.add_pool("198.18.0.0/28", 29);
    (etcd, plugin)
}

fn cleanup(p: &Plugin, cid: &str) -> common::plugin::Reply {
    p.request(&json!({"command": "cleanup", "args": {"hostname": p.node, "container_id": cid}}))
}

fn isolate(p: &Plugin, cid: &str, pid: u32, v4: &[String]) -> common::plugin::Reply {
    p.request(&json!({"command": "isolate", "args": {
        "hostname": p.node, "container_id": cid, "pid": pid, "ipv4_addrs": v4}}))
}

fn holder(etcd: &Etcd, ip: &str) -> Option<String> {
    check_ipam(etcd)
        .get(&ip.parse::<IpAddr>().unwrap())
        .cloned()
}

/// Allocates every free address for fresh uids; returns them.
fn drain(p: &Plugin, tag: &str) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    for i in 0.. {
        let r = p.allocate(&format!("{tag}{i}"), 1, 0);
        if r.status != 0 {
            assert!(r.error().unwrap().starts_with("No free IPv4"), "{r:?}");
            break;
        }
        got.extend(r.ips("ipv4"));
    }
    got
}

#[test]
fn a_late_release_never_frees_a_reservation_made_since() {
    let (etcd, p) = setup();
    let x = "198.18.0.5";
    p.reserve("ctr-a", &[x], &[]).ok();
    cleanup(&p, "ctr-a").ok();
    assert_eq!(holder(&etcd, x), None, "cleanup freed A's address");

    // B takes the same static address; then A's trailing releases arrive.
    p.reserve("ctr-b", &[x], &[]).ok();
    p.release_ips(&[x]).ok();
    assert_eq!(holder(&etcd, x).as_deref(), Some("mesos.ctr-b"));
    p.release_uid("ctr-a").ok();
    cleanup(&p, "ctr-a").ok();
    assert_eq!(holder(&etcd, x).as_deref(), Some("mesos.ctr-b"));
    assert!(
        p.log_file().exists()
            && std::fs::read_to_string(p.log_file())
                .unwrap()
                .contains("is held by mesos.ctr-b"),
        "the skipped release is logged with its holder"
    );

    // Nobody else can be given X.
    let others = drain(&p, "c");
    assert!(!others.contains(x), "{x} handed out twice");
    assert_eq!(check_ipam(&etcd).len(), 16);
}

#[test]
fn release_by_address_frees_leaks_past_the_grace_period_only() {
    let (etcd, p) = setup();
    let a = p.allocate("leak", 1, 0);
    let ip = a.ips("ipv4").remove(0);
    // Young and referenced by no endpoint: kept.
    p.release_ips(&[&ip]).ok();
    assert_eq!(holder(&etcd, &ip).as_deref(), Some("mesos.leak"));
    // An operator's tool with the grace at 0 s frees it (the 2016 shape is
    // still honoured where it is harmless), and a repeat changes nothing.
    p.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    p.release_ips(&[&ip]).ok();
    assert_eq!(holder(&etcd, &ip), None);
    assert!(etcd.get("/calico/ipam/v2/handle/mesos.leak").is_none());
    let rev = etcd.revision();
    p.release_ips(&[&ip, "198.18.0.9", "203.0.113.1"]).ok();
    assert_eq!(
        etcd.revision(),
        rev,
        "releasing free addresses writes nothing"
    );
}

#[test]
fn cleanup_frees_exactly_the_handles_its_endpoint_recorded() {
    if !can_run() {
        return;
    }
    let (etcd, mut p) = setup();
    let mut host = SimHost::new();
    host.reach_etcd(&etcd.endpoints());
    p = p.on_host(host.ns.pid);

    // The 2016 module allocated under a random uid, not the container id.
    let a = p.allocate("6a1c0e8e-random", 1, 0);
    let a_ip = a.ips("ipv4");
    let ctr_a = host.container();
    isolate(&p, "ctr-a", ctr_a.pid, &a_ip).ok();
    let ep = etcd.dump("/calico/resources/v3/projectcalico.org/workloadendpoints/");
    let recorded = ep.values().next().unwrap()["metadata"]["annotations"]
        ["mesos.projectcalico.org/ipam-handles"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&recorded).unwrap(),
        json!({a_ip[0].clone(): "mesos.6a1c0e8e-random"})
    );

    // B holds another address; A's cleanup must free A's handle only.
    let b = p.allocate("ctr-b", 1, 0);
    let ctr_b = host.container();
    isolate(&p, "ctr-b", ctr_b.pid, &b.ips("ipv4")).ok();
    cleanup(&p, "ctr-a").ok();
    let left = check_ipam(&etcd);
    assert_eq!(left.len(), 1);
    assert_eq!(
        left.get(&b.ips("ipv4")[0].parse::<IpAddr>().unwrap())
            .map(String::as_str),
        Some("mesos.ctr-b")
    );

    // A late release by address of A's old address, re-reserved and
    // isolated by C meanwhile: C's container runs, so C keeps it.
    p.reserve("ctr-c", &[&a_ip[0]], &[]).ok();
    let ctr_c = host.container();
    isolate(&p, "ctr-c", ctr_c.pid, &a_ip).ok();
    p.release_ips(&[&a_ip[0]]).ok();
    assert_eq!(holder(&etcd, &a_ip[0]).as_deref(), Some("mesos.ctr-c"));
    assert!(ctr_c.link("eth0").is_some());

    // The 2016 order for C: Mesos destroyed the container (its namespace
    // and with it the veth are gone), then release by address, then
    // cleanup: the release frees it.
    drop(ctr_c);
    let veth = calico_mesos::dataplane::host_veth_name("ctr-c");
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.ns.link(&veth).is_some() {
        assert!(
            std::time::Instant::now() < gone_by,
            "the kernel kept {veth}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    p.release_ips(&[&a_ip[0]]).ok();
    assert_eq!(holder(&etcd, &a_ip[0]), None);
    cleanup(&p, "ctr-c").ok();
    cleanup(&p, "ctr-b").ok();
    assert!(check_ipam(&etcd).is_empty());
    assert!(etcd
        .dump("/calico/resources/v3/projectcalico.org/workloadendpoints/")
        .is_empty());
}
