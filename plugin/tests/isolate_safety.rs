//! isolate and cleanup under hostile and interrupted requests, in
//! simulated hosts: the host's own namespace is never plumbed, nothing is
//! written for a bad request, a rerun after SIGKILL repairs, cleanup is
//! best effort and a rerun completes it.

mod common;

use std::net::IpAddr;

use common::cluster::Cluster;
use common::consistency::check_ipam;
use common::netns::{can_run, join, route_via_fabric, Ns, SimHost};
use common::Plugin;
use serde_json::{json, Value};

const WEP: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

fn isolate_req(p: &Plugin, cid: &str, pid: u32, v4: &[String]) -> Value {
    json!({"command": "isolate", "args": {
        "hostname": p.node, "container_id": cid, "pid": pid, "ipv4_addrs": v4,
        "netgroups": ["web"]}})
}

fn isolate(p: &Plugin, cid: &str, pid: u32, v4: &[String]) -> common::plugin::Reply {
    p.request(&isolate_req(p, cid, pid, v4))
}

fn cleanup(p: &Plugin, cid: &str) -> common::plugin::Reply {
    p.request(&json!({"command": "cleanup", "args": {"hostname": p.node, "container_id": cid}}))
}

fn refused(r: &common::plugin::Reply, text: &str) {
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.error().unwrap().contains(text), "wanted {text:?}: {r:?}");
}

/// Everything of a namespace that isolate must never change: links,
/// addresses, routes of every table, forwarding sysctls.
fn host_state(ns: &Ns) -> String {
    ns.sh(
        "ip -d link show; ip addr show; ip route show table all; ip -6 route show table all; \
         cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding \
         /proc/sys/net/ipv4/conf/all/forwarding /proc/sys/net/ipv6/conf/default/forwarding",
    )
}

#[test]
fn a_pid_in_the_hosts_namespace_is_refused_with_and_without_eth0() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    let v4 = p.allocate("victim", 1, 0).ips("ipv4");
    // Another process of the host, as the agent or a host-network task.
    let host_task = KillOnDrop(
        host.ns
            .command("sleep")
            .arg("600")
            .spawn()
            .expect("sleep runs"),
    );
    let task_pid = host_task.0.id();
    while std::fs::read_link(format!("/proc/{task_pid}/ns/net")).ok()
        != std::fs::read_link(format!("/proc/{}/ns/net", host.ns.pid)).ok()
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    for with_eth0 in [false, true] {
        if with_eth0 {
            host.ns
                .sh("ip link add eth0 type veth peer name eth0peer && ip link set eth0 up");
        }
        for pid in [host.ns.pid, task_pid] {
            let before = host_state(&host.ns);
            let rev = c.etcd.revision();
            let r = isolate(&p, "victim", pid, &v4);
            refused(
                &r,
                &format!("pid {pid} is not in a container network namespace"),
            );
            assert_eq!(host_state(&host.ns), before, "the host namespace changed");
            assert_eq!(c.etcd.revision(), rev, "etcd was written");
        }
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn addresses_never_allocated_or_held_by_others_are_refused() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1", "agent-2"]);
    let (h1, h2) = (c.host(), c.host());
    let (p1, p2) = (c.plugin("agent-1", &h1), c.plugin("agent-2", &h2));
    let a = p1.allocate("ctr-a", 1, 0).ips("ipv4");
    let ctr_a = h1.container();
    isolate(&p1, "ctr-a", ctr_a.pid, &a).ok();

    let check_refused = |p: &Plugin, host: &SimHost, cid: &str, v4: &[String], text: &str| {
        let ctr = host.container();
        let rev = c.etcd.revision();
        let links = host.ns.link_names();
        let r = isolate(p, cid, ctr.pid, v4);
        refused(&r, text);
        assert_eq!(c.etcd.revision(), rev, "{cid}: etcd was written");
        assert_eq!(host.ns.link_names(), links, "{cid}: a link was made");
        assert!(ctr.link("eth0").is_none());
    };
    // Never allocated.
    check_refused(
        &p1,
        &h1,
        "ctr-b",
        &["198.18.0.200".into()],
        "address 198.18.0.200 is not allocated",
    );
    // A's address, on the same host and on another one.
    check_refused(&p1, &h1, "ctr-b", &a, "is held by container ctr-a");
    check_refused(&p2, &h2, "ctr-c", &a, "is held by container ctr-a");
    // Allocated to D (no endpoint yet) while E, which has its own
    // allocation, asks for it.
    let d = p1.allocate("ctr-d", 1, 0).ips("ipv4");
    p1.allocate("ctr-e", 1, 0).ok();
    check_refused(
        &p1,
        &h1,
        "ctr-e",
        &d,
        "is held by mesos.ctr-d, not by this container's mesos.ctr-e",
    );

    // A dead pid changes no etcd revision.
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let rev = c.etcd.revision();
    refused(
        &isolate(&p1, "ctr-d", dead, &d),
        &format!("pid {dead} has exited"),
    );
    assert_eq!(c.etcd.revision(), rev);

    // A container with an eth0 of its own.
    let ctr = h1.container();
    ctr.sh("ip link add eth0 type veth peer name eth0peer");
    let rev = c.etcd.revision();
    refused(
        &isolate(&p1, "ctr-d", ctr.pid, &d),
        "container already has an eth0",
    );
    assert_eq!(c.etcd.revision(), rev);
    assert!(h1
        .ns
        .link_names()
        .iter()
        .all(|l| !l.starts_with("cali") || l == &calico_mesos::dataplane::host_veth_name("ctr-a")));
    cleanup(&p1, "ctr-a").ok();
}

/// The fault points of isolate, in order (plugin/src/faults.rs).
const FAULTS: [&str; 5] = [
    "isolate:veth-created",
    "isolate:veth-marked",
    "isolate:container-configured",
    "isolate:plumbed",
    "isolate:endpoint-written",
];

#[test]
fn after_sigkill_at_any_step_a_rerun_of_isolate_succeeds() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1", "agent-2"]);
    let (h1, h2) = (c.host(), c.host());
    join(&h1, &h2);
    let p = c.plugin("agent-1", &h1);
    // A peer on the other host to ping across the fabric.
    let p2 = c.plugin("agent-2", &h2);
    let peer_ip = p2.allocate("peer", 1, 0).ips("ipv4");
    let peer = h2.container();
    isolate(&p2, "peer", peer.pid, &peer_ip).ok();
    let peer_ip: IpAddr = peer_ip[0].parse().unwrap();
    route_via_fabric(&h1, peer_ip, false);

    for (n, fault) in FAULTS.iter().enumerate() {
        let cid = format!("ctr-{n}");
        let v4 = p.allocate(&cid, 1, 0).ips("ipv4");
        let ctr = h1.container();
        let out = c
            .plugin("agent-1", &h1)
            .with_env("CALICO_MESOS_FAULT", fault)
            .run_raw(&isolate_req(&p, &cid, ctr.pid, &v4));
        assert!(
            out.status.code().is_none(),
            "{fault}: the plugin was not killed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The module (or Mesos) retries: it must just work.
        isolate(&p, &cid, ctr.pid, &v4).ok();
        let links: Vec<String> = ctr.link_names();
        assert_eq!(links, vec!["lo".to_string(), "eth0".to_string()], "{fault}");
        let ip: IpAddr = v4[0].parse().unwrap();
        route_via_fabric(&h2, ip, true);
        // Up to three one-second pings: a loaded machine may lose the
        // first while neighbours resolve.
        assert!(
            (0..3).any(|_| ctr.ping(peer_ip)),
            "{fault}: no connectivity after the rerun"
        );
        let endpoints = c.etcd.dump(WEP);
        assert_eq!(
            endpoints
                .keys()
                .filter(|k| k.contains(&format!("mesos-{}-eth0", cid.replace('-', "--"))))
                .count(),
            1,
            "{fault}"
        );
        cleanup(&p, &cid).ok();
        assert!(ctr.link("eth0").is_none(), "{fault}");
    }
    cleanup(&p2, "peer").ok();
    assert!(check_ipam(&c.etcd).is_empty());
}

#[test]
fn a_foreign_link_of_our_name_is_left_alone() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    let v4 = p.allocate("ctr", 1, 0).ips("ipv4");
    let name = calico_mesos::dataplane::host_veth_name("ctr");
    // Someone else's veth: its peer in the host, then its peer an eth0 in
    // another container.
    let elsewhere = host.container();
    for make in [
        format!("ip link add {name} type veth peer name other0"),
        format!(
            "ip link add {name} type veth peer name eth0 netns {}",
            elsewhere.pid
        ),
    ] {
        host.ns.sh(&make);
        let ctr = host.container();
        let rev = c.etcd.revision();
        refused(&isolate(&p, "ctr", ctr.pid, &v4), "it is not ours");
        assert!(
            host.ns.link(&name).is_some(),
            "the foreign link was deleted"
        );
        assert_eq!(c.etcd.revision(), rev);
        host.ns.sh(&format!("ip link del {name}"));
    }
}

#[test]
fn cleanup_with_etcd_down_removes_what_it_can_and_a_rerun_completes() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    let v4 = p.allocate("ctr", 1, 0).ips("ipv4");
    let ctr = host.container();
    isolate(&p, "ctr", ctr.pid, &v4).ok();
    let name = calico_mesos::dataplane::host_veth_name("ctr");

    c.etcd.stop();
    let r = cleanup(&p, "ctr");
    refused(&r, "cleanup of container ctr is incomplete");
    assert!(r.error().unwrap().contains("etcd is unreachable"), "{r:?}");
    assert!(host.ns.link(&name).is_none(), "the link was not removed");
    assert!(ctr.link("eth0").is_none());

    c.etcd.restart();
    assert_eq!(
        check_ipam(&c.etcd).len(),
        1,
        "nothing was released without etcd"
    );
    cleanup(&p, "ctr").ok();
    assert!(check_ipam(&c.etcd).is_empty());
    assert!(c.etcd.dump(WEP).is_empty());
    // And once more: nothing left to do, still success.
    cleanup(&p, "ctr").ok();
}
