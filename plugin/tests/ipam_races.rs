//! Races that must stay safe: pool delete against claims, affinities being
//! released, one host's plugins queueing on the host lock, many hosts
//! filling one pool.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};

use common::consistency::check_ipam;
use common::{Etcd, Plugin};
use serde_json::json;

const NODE: &str = "agent-1";

/// Every allocated address lies in an existing pool.
fn assert_no_allocation_outside_pools(etcd: &Etcd) {
    let pools: Vec<ipnetwork::IpNetwork> = etcd
        .dump("/calico/resources/v3/projectcalico.org/ippools/")
        .values()
        .map(|p| p["spec"]["cidr"].as_str().unwrap().parse().unwrap())
        .collect();
    for ip in check_ipam(etcd).keys() {
        assert!(
            pools.iter().any(|p| p.contains(*ip)),
            "{ip} is allocated outside every pool ({pools:?})"
        );
    }
}

#[test]
fn pool_delete_and_allocate_racing_never_leave_an_allocation_outside_a_pool() {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let admin = Plugin::new(&etcd, NODE);
    let (mut both, mut deleted, mut allocated) = (0, 0, 0);
    for round in 0..20 {
        let cidr = format!("198.18.{round}.0/28");
        admin.add_pool(&cidr, 29);
        let barrier = Arc::new(Barrier::new(2));
        let endpoints = etcd.endpoints();
        let b = barrier.clone();
        let alloc = std::thread::spawn(move || {
            let p = Plugin::with_endpoints(&endpoints, NODE);
            b.wait();
            p.allocate(&format!("r{round}"), 1, 0).status == 0
        });
        barrier.wait();
        let del = admin.cli(&["pool", "delete", &cidr]).status.success();
        let alloc = alloc.join().unwrap();
        assert_no_allocation_outside_pools(&etcd);
        both += usize::from(alloc && del);
        deleted += usize::from(del);
        allocated += usize::from(alloc);
        // Leave nothing for the next round.
        admin.release_uid(&format!("r{round}")).ok();
        if !del {
            let out = admin.cli(&["pool", "delete", &cidr]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!(
        "20 rounds: pool deleted in {deleted}, allocate succeeded in {allocated}, both in {both}"
    );
    assert!(etcd.dump("/calico/ipam/v2/assignment/").is_empty());
}

#[test]
fn an_affinity_being_released_is_never_resurrected() {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let p = Plugin::new(&etcd, NODE);
    // One block in the pool; calicoctl ipam release is removing our
    // affinity for it (pendingDeletion), the block is already gone.
    p.add_pool("198.18.0.0/29", 29);
    let aff = "/calico/ipam/v2/host/agent-1/ipv4/block/198.18.0.0-29";
    let releasing = json!({"state": "pendingDeletion", "deleted": false});
    etcd.put(aff, &releasing);
    for uid in ["a", "b"] {
        let r = p.allocate(uid, 1, 0);
        assert_eq!(r.status, 1, "{r:?}");
        assert!(r.error().unwrap().starts_with("No free IPv4"), "{r:?}");
        let r = p.reserve(uid, &["198.18.0.3"], &[]);
        assert_eq!(r.status, 1, "{r:?}");
    }
    assert_eq!(etcd.get(aff), Some(releasing));
    assert!(etcd.dump("/calico/ipam/v2/assignment/").is_empty());

    // A confirmed affinity without its block (a crashed claim) is ours to
    // reuse: rewritten under its revision, with the block.
    etcd.put(aff, &json!({"state": "confirmed", "deleted": false}));
    p.allocate("c", 1, 0).ok();
    assert_eq!(check_ipam(&etcd).len(), 1);
}

#[test]
fn one_hosts_concurrent_allocations_queue_instead_of_fighting() {
    const WORKERS: usize = 20;
    const EACH: usize = 10;
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    Plugin::new(&etcd, NODE).add_pool("198.18.0.0/22", 26);
    let before = etcd.kv_calls();
    let barrier = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let endpoints = etcd.endpoints();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let p = Plugin::with_endpoints(&endpoints, NODE);
                barrier.wait();
                (0..EACH)
                    .map(|i| p.allocate(&format!("w{w}-{i}"), 1, 0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let after = etcd.kv_calls();
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 0).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed[0]
    );

    let n = WORKERS * EACH;
    let calls: u64 = after
        .iter()
        .map(|(m, c)| c - before.get(m).copied().unwrap_or(0))
        .sum();
    println!("one host, {n} allocations: {calls} etcd KV calls ({after:?})");
    assert!(
        calls as f64 / n as f64 <= 4.0,
        "{calls} etcd calls for {n} allocations"
    );
    let blocks = etcd.dump("/calico/ipam/v2/assignment/").len();
    let needed = n.div_ceil(64);
    assert!(
        blocks <= needed + 1,
        "{blocks} blocks claimed, {needed} needed"
    );
    assert_eq!(check_ipam(&etcd).len(), n);
}

#[test]
fn ten_hosts_fill_a_pool_before_the_first_no_free_addresses() {
    const HOSTS: usize = 10;
    const WORKERS: usize = 20;
    const POOL_SIZE: usize = 1024;
    let nodes: Vec<String> = (0..HOSTS).map(|h| format!("host-{h}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let etcd = Etcd::start();
    etcd.seed_calico(&names);
    // Small blocks, and room for every host to hold its share of them.
    etcd.put(
        "/calico/ipam/v2/config",
        &json!({"strict_affinity": true, "auto_allocate_blocks": true, "maxBlocksPerHost": 40}),
    );
    Plugin::new(&etcd, names[0]).add_pool("198.18.0.0/22", 30);

    let successes = Arc::new(AtomicUsize::new(0));
    let filled_at_first_failure = Arc::new(OnceLock::new());
    let barrier = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let endpoints = etcd.endpoints();
            let node = nodes[w % HOSTS].clone();
            let (successes, first, barrier) = (
                successes.clone(),
                filled_at_first_failure.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let p = Plugin::with_endpoints(&endpoints, &node);
                barrier.wait();
                let mut got = Vec::new();
                for i in 0.. {
                    let r = p.allocate(&format!("w{w}-{i}"), 1, 0);
                    if r.status != 0 {
                        let e = r.error().unwrap().to_string();
                        assert!(e.starts_with("No free IPv4"), "{e}");
                        let _ = first.set(successes.load(Ordering::SeqCst));
                        break;
                    }
                    successes.fetch_add(1, Ordering::SeqCst);
                    got.push(r.ips("ipv4").remove(0));
                }
                got
            })
        })
        .collect();
    let all: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let distinct: BTreeSet<IpAddr> = all.iter().map(|ip| ip.parse().unwrap()).collect();
    assert_eq!(distinct.len(), all.len(), "an address was handed out twice");
    let filled = *filled_at_first_failure.get().expect("the pool ran full");
    println!(
        "{HOSTS} hosts, {WORKERS} workers: {filled} of {POOL_SIZE} addresses in use at the first \
         'No free addresses', {} in the end",
        all.len()
    );
    assert!(all.len() >= 1000, "{} allocations", all.len());
    assert!(
        filled as f64 >= 0.95 * POOL_SIZE as f64,
        "only {filled} of {POOL_SIZE} in use at the first failure"
    );
    assert_eq!(check_ipam(&etcd).len(), all.len());
}
