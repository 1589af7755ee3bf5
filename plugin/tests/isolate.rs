//! isolate and cleanup end to end: the real binary inside simulated agent
//! hosts (network namespaces), real etcd, real containers' namespaces.
//! etcd documents are checked through etcdctl, the kernel through `ip`.

mod common;

use std::net::IpAddr;

use common::cluster::Cluster;
use common::consistency::check_ipam;
use common::netns::{can_run, join, route_via_fabric, Ns, SimHost};
use common::Plugin;
use serde_json::{json, Value};

const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/";
const PROFILES: &str = "/calico/resources/v3/projectcalico.org/profiles/";

fn isolate(
    p: &Plugin,
    cid: &str,
    pid: u32,
    v4: &[String],
    v6: &[String],
    groups: &[&str],
) -> common::plugin::Reply {
    p.request(&json!({"command": "isolate", "args": {
        "hostname": p.node, "container_id": cid, "pid": pid,
        "ipv4_addrs": v4, "ipv6_addrs": v6, "netgroups": groups,
        "labels": {"labels": [{"key": "DCOS_SPACE", "value": "/a/b/c"}, {"key": "rack", "value": "3A"}]}}}))
}

fn cleanup(p: &Plugin, cid: &str) -> common::plugin::Reply {
    p.request(&json!({"command": "cleanup", "args": {"hostname": p.node, "container_id": cid}}))
}

fn veth(cid: &str) -> String {
    calico_mesos::dataplane::host_veth_name(cid)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cali_links(host: &SimHost) -> Vec<String> {
    host.ns
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("cali"))
        .collect()
}

fn host_routes_to(host: &SimHost, addr: &str) -> Vec<Value> {
    let v6 = addr.contains(':');
    host.ns
        .routes(v6)
        .into_iter()
        .filter(|r| r["dst"] == addr)
        .collect()
}

#[test]
fn isolate_plumbs_the_container_and_writes_the_endpoint() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    let cid = "ba11f1de-fc4d-46fd-9f15-424f4ef05a3a";
    let alloc = p.allocate(cid, 1, 0);
    alloc.ok();
    let v4 = alloc.ips("ipv4");
    let ctr = host.container();
    isolate(
        &p,
        cid,
        ctr.pid,
        &v4,
        &[],
        &["frontend", "public", "Prod_DB"],
    )
    .ok();

    // Container: eth0 with the /32, the link route and the default route.
    let addrs = ctr.ip_json("addr show dev eth0");
    let inet: Vec<(String, u64)> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            (
                a["local"].as_str().unwrap().to_string(),
                a["prefixlen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(inet, vec![(v4[0].clone(), 32)]);
    let routes = ctr.routes(false);
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "169.254.1.1" && r["dev"] == "eth0" && r["scope"] == "link"),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1" && r["dev"] == "eth0"),
        "{routes:?}"
    );
    let container_mac = ctr.link("eth0").unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();

    // Host: the cali link (MAC ee:ee:…, MTU, up), the /32 route, sysctls.
    let name = veth(cid);
    let link = host.ns.link(&name).expect("host end exists");
    assert_eq!(link["address"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(link["mtu"], 1500);
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let hr = host_routes_to(&host, &v4[0]);
    assert_eq!(hr.len(), 1, "{hr:?}");
    assert_eq!(hr[0]["dev"], name.as_str());
    assert_eq!(
        host.ns.sysctl(&format!("net.ipv4.conf.{name}.proxy_arp")),
        "1"
    );
    assert_eq!(
        host.ns
            .sysctl(&format!("net.ipv4.neigh.{name}.proxy_delay")),
        "0"
    );
    assert_eq!(
        host.ns.sysctl(&format!("net.ipv4.conf.{name}.forwarding")),
        "1"
    );
    assert_eq!(
        host.ns
            .sysctl(&format!("net.ipv4.conf.{name}.route_localnet")),
        "1"
    );

    assert!(host.ns.ping(ip(&v4[0])), "host cannot ping its container");

    // The endpoint, field by field, as etcd holds it.
    let key = format!("{WEP_PREFIX}agent--1-mesos-ba11f1de--fc4d--46fd--9f15--424f4ef05a3a-eth0");
    let wep = c.etcd.get(&key).expect("endpoint written");
    assert_eq!(wep["kind"], "WorkloadEndpoint");
    assert_eq!(wep["apiVersion"], "projectcalico.org/v3");
    assert_eq!(
        wep["metadata"]["name"],
        "agent--1-mesos-ba11f1de--fc4d--46fd--9f15--424f4ef05a3a-eth0"
    );
    assert_eq!(wep["metadata"]["namespace"], "default");
    assert!(wep["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(wep["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(wep["metadata"].get("resourceVersion").is_none());
    assert_eq!(
        wep["metadata"]["labels"],
        json!({"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "mesos",
               "DCOS_SPACE": "a.b.c", "rack": "3A"})
    );
    assert_eq!(
        wep["metadata"]["annotations"]["mesos.projectcalico.org/netgroups"],
        "frontend,public,Prod_DB"
    );
    assert_eq!(
        wep["spec"],
        json!({
            "orchestrator": "mesos", "workload": cid, "node": "agent-1", "containerID": cid,
            "endpoint": "eth0", "ipNetworks": [format!("{}/32", v4[0])],
            "profiles": ["mesos.host.agent-1", "mesos.public", "mesos.netgroup.frontend", "mesos.netgroup.prod-db-4616e31d"],
            "interfaceName": name, "mac": container_mac
        })
    );

    // The profiles, created before the endpoint.
    let profiles = c.etcd.dump(PROFILES);
    assert_eq!(
        profiles[&format!("{PROFILES}mesos.netgroup.prod-db-4616e31d")]["spec"],
        json!({"ingress": [{"action": "Allow", "source": {"selector": "has(netgroup.mesos.projectcalico.org/prod-db-4616e31d)"}}],
               "egress": [{"action": "Allow"}],
               "labelsToApply": {"netgroup.mesos.projectcalico.org/prod-db-4616e31d": ""}})
    );
    assert_eq!(
        profiles[&format!("{PROFILES}mesos.netgroup.prod-db-4616e31d")]["metadata"]["annotations"]
            ["mesos.projectcalico.org/netgroup"],
        "Prod_DB"
    );
    assert_eq!(
        profiles[&format!("{PROFILES}mesos.public")]["spec"],
        json!({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
               "labelsToApply": {"netgroup.mesos.projectcalico.org/public": ""}})
    );
    assert_eq!(
        profiles[&format!("{PROFILES}mesos.host.agent-1")]["spec"],
        json!({"ingress": [{"action": "Allow", "source": {"nets": ["172.31.0.10/32"]}}],
               "egress": [{"action": "Allow", "destination": {"nets": ["172.31.0.10/32"]}}]})
    );

    // Isolating again with the same addresses changes nothing.
    let rev = c.etcd.revision();
    isolate(
        &p,
        cid,
        ctr.pid,
        &v4,
        &[],
        &["frontend", "public", "Prod_DB"],
    )
    .ok();
    assert_eq!(c.etcd.revision(), rev);
    assert_eq!(cali_links(&host), vec![name.clone()]);

    // cleanup: link, route, endpoint gone, addresses free; twice is fine.
    cleanup(&p, cid).ok();
    assert!(host.ns.link(&name).is_none());
    assert!(host_routes_to(&host, &v4[0]).is_empty());
    assert!(
        ctr.link("eth0").is_none(),
        "deleting the host end removes the container end"
    );
    assert!(c.etcd.get(&key).is_none());
    assert!(check_ipam(&c.etcd).is_empty());
    assert!(
        c.etcd.dump(PROFILES).len() == 4,
        "profiles are shared and stay"
    );
    let rev = c.etcd.revision();
    let again = cleanup(&p, cid);
    again.ok();
    assert_eq!(c.etcd.revision(), rev);
    assert!(
        again.stderr.contains("unknown container"),
        "{}",
        again.stderr
    );
}

#[test]
fn containers_on_one_host_reach_each_other_v4_and_v6() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    let mut ctrs: Vec<(Ns, Vec<String>, Vec<String>)> = Vec::new();
    for cid in ["one", "two"] {
        let a = p.allocate(cid, 1, 1);
        a.ok();
        let ctr = host.container();
        isolate(&p, cid, ctr.pid, &a.ips("ipv4"), &a.ips("ipv6"), &[]).ok();
        ctrs.push((ctr, a.ips("ipv4"), a.ips("ipv6")));
    }
    let (c1, c1v4, c1v6) = &ctrs[0];
    let (c2, c2v4, c2v6) = &ctrs[1];
    // v6: the container's default route points at the host end's link-local.
    let r6 = c1.routes(true);
    assert!(
        r6.iter().any(|r| r["dst"] == "default"
            && r["gateway"] == "fe80::ecee:eeff:feee:eeee"
            && r["dev"] == "eth0"),
        "{r6:?}"
    );
    assert!(host.ns.ping(ip(&c1v6[0])), "host -> container over IPv6");
    assert!(c1.ping(ip(&c2v4[0])), "container -> container IPv4");
    assert!(c2.ping(ip(&c1v4[0])), "container -> container IPv4 back");
    assert!(c1.ping(ip(&c2v6[0])), "container -> container IPv6");
    assert_eq!(
        host.ns
            .sysctl(&format!("net.ipv6.conf.{}.proxy_ndp", veth("one"))),
        "1"
    );
    for cid in ["one", "two"] {
        cleanup(&p, cid).ok();
    }
    assert!(cali_links(&host).is_empty());
}

#[test]
fn containers_on_two_hosts_reach_each_other_over_the_fabric() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1", "agent-2"]);
    let (h1, h2) = (c.host(), c.host());
    join(&h1, &h2);
    let (p1, p2) = (c.plugin("agent-1", &h1), c.plugin("agent-2", &h2));
    let a1 = p1.allocate("left", 1, 1);
    a1.ok();
    let a2 = p2.allocate("right", 1, 1);
    a2.ok();
    let (k1, k2) = (h1.container(), h2.container());
    isolate(&p1, "left", k1.pid, &a1.ips("ipv4"), &a1.ips("ipv6"), &[]).ok();
    isolate(&p2, "right", k2.pid, &a2.ips("ipv4"), &a2.ips("ipv6"), &[]).ok();
    // BGP's part, by hand: each host routes the other's container addresses.
    for a in a2.ips("ipv4").iter().chain(a2.ips("ipv6").iter()) {
        route_via_fabric(&h1, ip(a), false);
    }
    for a in a1.ips("ipv4").iter().chain(a1.ips("ipv6").iter()) {
        route_via_fabric(&h2, ip(a), true);
    }
    assert!(k1.ping(ip(&a2.ips("ipv4")[0])), "cross-host IPv4");
    assert!(k2.ping(ip(&a1.ips("ipv4")[0])), "cross-host IPv4 back");
    assert!(k1.ping(ip(&a2.ips("ipv6")[0])), "cross-host IPv6");
    // Each host's blocks are its own.
    let blocks = c.etcd.dump("/calico/ipam/v2/assignment/");
    assert_eq!(blocks.len(), 4);
    cleanup(&p1, "left").ok();
    cleanup(&p2, "right").ok();
    assert!(check_ipam(&c.etcd).is_empty());
}

/// Nothing of `cid` is left: no link, no route, no endpoint.
fn assert_nothing_left(c: &Cluster, host: &SimHost, cid: &str, addrs: &[String]) {
    assert!(host.ns.link(&veth(cid)).is_none(), "link left behind");
    for a in addrs {
        assert!(
            host_routes_to(host, a).is_empty(),
            "route to {a} left behind"
        );
    }
    assert!(
        c.etcd
            .dump(WEP_PREFIX)
            .keys()
            .all(|k| !k.contains(&cid.replace('-', "--"))),
        "endpoint left behind"
    );
}

#[test]
fn failed_isolates_leave_nothing_behind() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    let a = p.allocate("victim", 1, 0);
    a.ok();
    let v4 = a.ips("ipv4");

    // A pid that no longer exists.
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let r = isolate(&p, "victim", dead, &v4, &[], &[]);
    assert_eq!(r.status, 1);
    assert!(
        r.error()
            .unwrap()
            .contains(&format!("pid {dead} has exited")),
        "{r:?}"
    );
    assert_nothing_left(&c, &host, "victim", &v4);

    // A link with the host end's name already exists: refused, left alone.
    let ctr = host.container();
    host.ns.sh(&format!(
        "ip link add {} type veth peer name squat1",
        veth("victim")
    ));
    let r = isolate(&p, "victim", ctr.pid, &v4, &[], &[]);
    assert_eq!(r.status, 1);
    assert!(r.error().unwrap().contains("already exists"), "{r:?}");
    assert!(
        host.ns.link(&veth("victim")).is_some(),
        "someone else's link was deleted"
    );
    assert!(ctr.link("eth0").is_none());
    assert!(host_routes_to(&host, &v4[0]).is_empty());
    host.ns.sh(&format!("ip link del {}", veth("victim")));

    // The address is already routed through another interface.
    host.ns.sh(&format!("ip route add {}/32 dev up1", v4[0]));
    let r = isolate(&p, "victim", ctr.pid, &v4, &[], &[]);
    assert_eq!(r.status, 1);
    assert!(
        r.error()
            .unwrap()
            .contains("already routed via interface up1"),
        "{r:?}"
    );
    host.ns.sh(&format!("ip route del {}/32 dev up1", v4[0]));
    assert_nothing_left(&c, &host, "victim", &v4);

    // Isolated, then isolated again with different addresses: refused,
    // nothing changes.
    isolate(&p, "victim", ctr.pid, &v4, &[], &[]).ok();
    let other = p.allocate("other", 1, 0);
    let rev = c.etcd.revision();
    let r = isolate(&p, "victim", ctr.pid, &other.ips("ipv4"), &[], &[]);
    assert_eq!(r.status, 1);
    assert!(
        r.error().unwrap().contains("already isolated with"),
        "{r:?}"
    );
    assert_eq!(c.etcd.revision(), rev);
    assert!(host_routes_to(&host, &other.ips("ipv4")[0]).is_empty());
    assert_eq!(cali_links(&host), vec![veth("victim")]);
    cleanup(&p, "victim").ok();

    // etcd stopped before isolate: error, nothing plumbed.
    let ctr2 = host.container();
    c.etcd.stop();
    let r = isolate(&p, "late", ctr2.pid, &v4, &[], &[]);
    assert_eq!(r.status, 1);
    assert!(r.error().unwrap().contains("etcd is unreachable"), "{r:?}");
    assert!(cali_links(&host).is_empty());
    assert!(ctr2.link("eth0").is_none());
}

#[test]
fn endpoint_list_shows_isolated_containers_and_mtu_is_configurable() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    std::fs::write(p.config_file(), "[dataplane]\nmtu = 1400\n").unwrap();
    let a = p.allocate("listed", 1, 0);
    let ctr = host.container();
    isolate(&p, "listed", ctr.pid, &a.ips("ipv4"), &[], &["web"]).ok();
    assert_eq!(
        host.ns.link(&veth("listed")).unwrap()["mtu"],
        1400,
        "host end MTU"
    );
    assert_eq!(ctr.link("eth0").unwrap()["mtu"], 1400, "container end MTU");
    let out = p.cli(&["endpoint", "list", "--json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["container_id"], "listed");
    assert_eq!(list[0]["interface"], veth("listed").as_str());
    assert_eq!(list[0]["profiles"][1], "mesos.netgroup.web");
    cleanup(&p, "listed").ok();
}
