//! IPAM through the real plugin binary against a real etcd.

mod common;

use std::net::IpAddr;

use common::consistency::check_ipam;
use common::{Etcd, Plugin};
use serde_json::json;

const NODE: &str = "agent-1";

fn setup(pools: &[(&str, u8)]) -> (Etcd, Plugin) {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE, "agent-2"]);
    let plugin = Plugin::new(&etcd, NODE);
    for (cidr, bs) in pools {
        plugin.add_pool(cidr, *bs);
    }
    (etcd, plugin)
}

fn block_key(cidr: &str) -> String {
    let fam = if cidr.contains(':') { "ipv6" } else { "ipv4" };
    format!(
        "/calico/ipam/v2/assignment/{fam}/block/{}",
        cidr.replacen('/', "-", 1)
    )
}

#[test]
fn allocate_v4_claims_a_block_with_affinity_and_handle() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 26)]);
    let r = plugin.allocate("u1", 1, 0);
    r.ok();
    let v4 = r.ips("ipv4");
    assert_eq!(v4.len(), 1);
    assert!(r.ips("ipv6").is_empty());
    let ip: IpAddr = v4[0].parse().unwrap();
    let cidr: ipnetwork::IpNetwork = "198.18.0.0/24".parse().unwrap();
    assert!(cidr.contains(ip));

    let block_cidr = ipnetwork::IpNetwork::new(ip, 26).unwrap();
    let block_cidr = format!("{}/26", block_cidr.network());
    let block = etcd.get(&block_key(&block_cidr)).expect("block written");
    assert_eq!(block["affinity"], json!(format!("host:{NODE}")));
    assert_eq!(block["deleted"], json!(false));
    assert!(block["affinity_claim_time"].is_string());
    assert_eq!(block["allocations"].as_array().unwrap().len(), 64);
    assert_eq!(block["unallocated"].as_array().unwrap().len(), 63);
    assert_eq!(block["attributes"][0]["handle_id"], json!("mesos.u1"));
    assert_eq!(block["attributes"][0]["secondary"]["node"], json!(NODE));
    assert!(block["sequenceNumber"].as_u64().unwrap() > 1_700_000_000_000_000_000);

    let affinity = etcd
        .get(&format!(
            "/calico/ipam/v2/host/{NODE}/ipv4/block/{}",
            block_cidr.replacen('/', "-", 1)
        ))
        .expect("affinity written");
    assert_eq!(affinity, json!({"state": "confirmed", "deleted": false}));
    let handle = etcd.get("/calico/ipam/v2/handle/mesos.u1").expect("handle");
    assert_eq!(
        handle,
        json!({"block": {block_cidr.clone(): 1}, "deleted": false})
    );
    check_ipam(&etcd);

    // The next allocation comes from the same block.
    let r2 = plugin.allocate("u2", 2, 0);
    r2.ok();
    for ip in r2.ips("ipv4") {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(block_cidr
            .parse::<ipnetwork::IpNetwork>()
            .unwrap()
            .contains(ip));
    }
    assert_eq!(check_ipam(&etcd).len(), 3);
}

#[test]
fn allocate_v6_and_dual_stack() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 26), ("fd00:18::/120", 122)]);
    let r = plugin.allocate("six", 0, 2);
    r.ok();
    assert!(r.ips("ipv4").is_empty());
    let v6 = r.ips("ipv6");
    assert_eq!(v6.len(), 2);
    for ip in &v6 {
        let ip: IpAddr = ip.parse().unwrap();
        assert!("fd00:18::/120"
            .parse::<ipnetwork::IpNetwork>()
            .unwrap()
            .contains(ip));
    }
    assert!(etcd
        .dump("/calico/ipam/v2/assignment/ipv6/block/")
        .keys()
        .all(|k| k.ends_with("-122")));

    let both = plugin.allocate("both", 1, 1);
    both.ok();
    assert_eq!(both.ips("ipv4").len(), 1);
    assert_eq!(both.ips("ipv6").len(), 1);
    let handle = etcd.get("/calico/ipam/v2/handle/mesos.both").unwrap();
    assert_eq!(handle["block"].as_object().unwrap().len(), 2);
    assert_eq!(check_ipam(&etcd).len(), 4);
}

#[test]
fn reserve_is_all_or_nothing_and_names_the_taken_address() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 26), ("fd00:18::/120", 122)]);
    plugin.reserve("a", &["198.18.0.5"], &["fd00:18::5"]).ok();
    let again = plugin.reserve("a", &["198.18.0.5"], &[]);
    assert_eq!(again.error(), Some("IP '198.18.0.5' already in use."));
    let rev = etcd.revision();
    let r = plugin.reserve("b", &["198.18.0.6", "198.18.0.5"], &[]);
    assert_eq!(r.status, 1);
    assert_eq!(r.error(), Some("IP '198.18.0.5' already in use."));
    assert_eq!(etcd.revision(), rev, "a refused reserve writes nothing");
    let allocated = check_ipam(&etcd);
    assert!(!allocated.contains_key(&"198.18.0.6".parse::<IpAddr>().unwrap()));

    let outside = plugin.reserve("c", &["198.19.9.9"], &[]);
    assert_eq!(
        outside.error(),
        Some("IP '198.19.9.9' is not in any IP pool.")
    );
    assert_eq!(etcd.revision(), rev);
    plugin.reserve("b", &["198.18.0.6"], &[]).ok();
    assert_eq!(check_ipam(&etcd).len(), 3);
}

#[test]
fn release_by_uid_and_by_ips_is_idempotent() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 26), ("fd00:18::/120", 122)]);
    // Releases by address of addresses no endpoint lists free them only
    // past the grace period: none here.
    plugin.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    let a = plugin.allocate("a", 2, 1);
    a.ok();
    let b = plugin.allocate("b", 1, 1);
    b.ok();

    plugin.release_uid("a").ok();
    let left = check_ipam(&etcd);
    assert_eq!(left.len(), 2);
    assert!(left.values().all(|h| h == "mesos.b"));
    assert!(etcd.get("/calico/ipam/v2/handle/mesos.a").is_none());
    // The emptied-out affine blocks stay, with their affinity.
    assert_eq!(etcd.dump("/calico/ipam/v2/assignment/").len(), 2);
    let rev = etcd.revision();
    plugin.release_uid("a").ok();
    plugin.release_uid("never-allocated").ok();
    assert_eq!(
        etcd.revision(),
        rev,
        "releasing what is free writes nothing"
    );

    let mut ips = b.ips("ipv4");
    ips.extend(b.ips("ipv6"));
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    plugin.release_ips(&refs).ok();
    assert!(check_ipam(&etcd).is_empty());
    assert!(etcd.get("/calico/ipam/v2/handle/mesos.b").is_none());
    let rev = etcd.revision();
    plugin.release_ips(&refs).ok();
    plugin.release_ips(&["198.19.1.1"]).ok();
    assert_eq!(etcd.revision(), rev);
    // Freed addresses go to the back: a new allocation does not reuse them.
    let c = plugin.allocate("c", 1, 0);
    assert!(!refs.contains(&c.ips("ipv4")[0].as_str()));
}

#[test]
fn ipv4_addrs_label_reserves_the_named_address() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 26)]);
    let r = plugin.request(&json!({"command": "allocate", "args": {
        "hostname": NODE, "uid": "m", "num_ipv4": 2, "num_ipv6": 0,
        "labels": [{"key": "ipv4_addrs", "value": "[\"198.18.0.200\"]"}]}}));
    r.ok();
    let v4 = r.ips("ipv4");
    assert_eq!(v4.len(), 2, "label address plus one more: {v4:?}");
    assert_eq!(v4[0], "198.18.0.200");
    let allocated = check_ipam(&etcd);
    assert_eq!(
        allocated
            .get(&"198.18.0.200".parse::<IpAddr>().unwrap())
            .map(String::as_str),
        Some("mesos.m")
    );
}

#[test]
fn a_full_block_makes_the_host_claim_a_second_one() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 30)]);
    let first = plugin.allocate("a", 4, 0);
    first.ok();
    assert_eq!(etcd.dump("/calico/ipam/v2/assignment/").len(), 1);
    let second = plugin.allocate("b", 1, 0);
    second.ok();
    let blocks = etcd.dump("/calico/ipam/v2/assignment/");
    assert_eq!(blocks.len(), 2);
    assert!(blocks
        .values()
        .all(|b| b["affinity"] == json!(format!("host:{NODE}"))));
    assert_eq!(etcd.dump(&format!("/calico/ipam/v2/host/{NODE}/")).len(), 2);
    check_ipam(&etcd);
}

#[test]
fn no_borrowing_from_other_hosts_blocks_by_default() {
    // One /30 block in the whole pool, claimed by agent-2.
    let (etcd, plugin) = setup(&[("198.18.0.0/30", 30)]);
    let other = Plugin::new(&etcd, "agent-2");
    other.allocate("o", 1, 0).ok();
    let rev = etcd.revision();
    let r = plugin.allocate("mine", 1, 0);
    assert_eq!(r.status, 1);
    assert!(
        r.error()
            .unwrap()
            .starts_with("No free IPv4 addresses for node 'agent-1'"),
        "{r:?}"
    );
    assert_eq!(etcd.revision(), rev);

    // With borrowing enabled the free addresses of agent-2's block are used.
    std::fs::write(plugin.config_file(), "[ipam]\nborrow = true\n").unwrap();
    let r = plugin.allocate("mine", 1, 0);
    r.ok();
    let allocated = check_ipam(&etcd);
    assert_eq!(allocated.len(), 2);
}

#[test]
fn pool_exhaustion_and_missing_pools_are_clear_errors() {
    let (etcd, plugin) = setup(&[]);
    plugin.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    let rev = etcd.revision();
    let r = plugin.allocate("a", 1, 0);
    assert_eq!(r.status, 1);
    let msg = r.error().unwrap();
    assert!(
        msg.starts_with("No usable IPv4 IP pool") && msg.contains("calico-mesos pool add"),
        "{msg}"
    );
    assert_eq!(etcd.revision(), rev);

    plugin.add_pool("198.18.0.0/30", 30);
    plugin.allocate("a", 4, 0).ok();
    let rev = etcd.revision();
    let r = plugin.allocate("b", 1, 0);
    assert_eq!(r.status, 1);
    assert!(
        r.error().unwrap().starts_with("No free IPv4 addresses"),
        "{r:?}"
    );
    assert_eq!(etcd.revision(), rev);
    // Asking for more than is left fails whole: nothing half-allocated.
    plugin.release_ips(&["198.18.0.1", "198.18.0.2"]).ok();
    let rev = etcd.revision();
    let r = plugin.allocate("c", 3, 0);
    assert_eq!(r.status, 1);
    assert_eq!(etcd.revision(), rev);
    assert_eq!(check_ipam(&etcd).len(), 2);
}

#[test]
fn calico_must_be_ready() {
    let etcd = Etcd::start();
    let plugin = Plugin::new(&etcd, NODE);
    plugin.add_pool("198.18.0.0/24", 26);
    let rev = etcd.revision();
    let r = plugin.allocate("a", 1, 0);
    assert!(
        r.error()
            .unwrap()
            .contains("ClusterInformation 'default' is missing"),
        "{r:?}"
    );
    etcd.seed_calico(&["agent-2"]);
    let rev2 = etcd.revision();
    assert!(rev2 > rev);
    let r = plugin.allocate("a", 1, 0);
    assert!(
        r.error()
            .unwrap()
            .contains("Calico node 'agent-1' does not exist"),
        "{r:?}"
    );
    assert_eq!(etcd.revision(), rev2);
}

#[test]
fn unknown_fields_written_by_newer_calico_survive_updates() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 26)]);
    plugin.allocate("a", 1, 0).ok();
    let (key, mut block) = etcd
        .dump("/calico/ipam/v2/assignment/")
        .into_iter()
        .next()
        .unwrap();
    block["futureField"] = json!({"x": [1, 2]});
    block["attributes"][0]["alternateOwnerAttrs"] = json!({"k": "v"});
    etcd.put(&key, &block);
    plugin.allocate("b", 1, 0).ok();
    let after = etcd.get(&key).unwrap();
    assert_eq!(after["futureField"], json!({"x": [1, 2]}));
    assert_eq!(
        after["attributes"][0]["alternateOwnerAttrs"],
        json!({"k": "v"})
    );
    assert_eq!(
        after["sequenceNumber"].as_u64(),
        block["sequenceNumber"].as_u64().map(|s| s + 1)
    );
}

#[test]
fn failover_to_the_surviving_members() {
    let mut etcd = Etcd::cluster(3);
    etcd.seed_calico(&[NODE]);
    let plugin = Plugin::new(&etcd, NODE);
    plugin.add_pool("198.18.0.0/24", 26);
    plugin.allocate("before", 1, 0).ok();
    etcd.kill_member(0);
    for i in 0..10 {
        plugin.allocate(&format!("after{i}"), 1, 0).ok();
    }
    assert_eq!(check_ipam(&etcd).len(), 11);
}

#[test]
fn etcd_over_tls_with_client_certificates() {
    let etcd = Etcd::start_tls();
    etcd.seed_calico(&[NODE]);
    let tls = etcd.tls.clone().unwrap();
    let mut plugin = Plugin::new(&etcd, NODE);
    assert!(plugin.endpoints.starts_with("https://"));

    plugin
        .extra_env
        .push(("ETCD_CA_CERT_FILE".into(), tls.ca.clone()));
    plugin
        .extra_env
        .push(("ETCD_CERT_FILE".into(), tls.cert.clone()));
    plugin
        .extra_env
        .push(("ETCD_KEY_FILE".into(), tls.key.clone()));
    plugin.add_pool("198.18.0.0/24", 26);
    plugin.allocate("tls", 1, 0).ok();

    // Without the client certificate the server refuses us, and the
    // error points at the etcd settings.
    let mut no_cert = Plugin::new(&etcd, NODE);
    no_cert
        .extra_env
        .push(("ETCD_CA_CERT_FILE".into(), tls.ca.clone()));
    let r = no_cert.allocate("no-cert", 1, 0);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.error().unwrap().contains("Check the etcd settings"),
        "{r:?}"
    );
    // Only one of certificate and key is a configuration error.
    no_cert
        .extra_env
        .push(("ETCD_CERT_FILE".into(), tls.cert.clone()));
    let r = no_cert.allocate("half", 1, 0);
    assert!(
        r.error()
            .unwrap()
            .contains("needs both a certificate file and a key file"),
        "{r:?}"
    );
    assert_eq!(check_ipam(&etcd).len(), 1);
}

#[test]
fn blocks_without_changes_are_not_rewritten() {
    let (etcd, plugin) = setup(&[("198.18.0.0/24", 30)]);
    plugin.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    let full = plugin.allocate("a", 4, 0);
    full.ok();
    let other = plugin.allocate("b", 1, 0);
    other.ok();
    let b_ip: IpAddr = other.ips("ipv4")[0].parse().unwrap();
    let b_block = format!(
        "{}/30",
        ipnetwork::IpNetwork::new(b_ip, 30).unwrap().network()
    );
    // A free address in b's block, and a used one in a's block.
    let free_in_b = match b_ip {
        IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) ^ 1).to_string(),
        IpAddr::V6(_) => unreachable!(),
    };
    let seq_before = etcd.get(&block_key(&b_block)).unwrap()["sequenceNumber"].as_u64();
    plugin
        .release_ips(&[full.ips("ipv4")[0].as_str(), free_in_b.as_str()])
        .ok();
    let seq_after = etcd.get(&block_key(&b_block)).unwrap()["sequenceNumber"].as_u64();
    assert_eq!(
        seq_before, seq_after,
        "a block with nothing to release was rewritten"
    );
    assert_eq!(check_ipam(&etcd).len(), 4);
}

#[test]
fn pools_outside_calicos_block_sizes_are_ignored_not_fatal() {
    let (etcd, plugin) = setup(&[]);
    // Written by hand, as calicoctl would refuse it: IPv6 blocks of /64.
    etcd.put(
        "/calico/resources/v3/projectcalico.org/ippools/huge-blocks",
        &json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": "huge-blocks"},
                "spec": {"cidr": "fd00:18::/48", "blockSize": 64}}),
    );
    let rev = etcd.revision();
    let r = plugin.allocate("x", 0, 1);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.error().unwrap().starts_with("No usable IPv6 IP pool"),
        "{r:?}"
    );
    assert_eq!(etcd.revision(), rev);
}
