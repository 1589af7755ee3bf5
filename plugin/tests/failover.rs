//! etcd failover against a real three-member cluster on loopback: members
//! killed, frozen (SIGSTOP) and blackholed while the plugin works. These
//! tests assert outcomes; a generous bound (3 x the deadline) only detects
//! hangs. Latency figures are in the benchmark.

mod common;

use std::time::{Duration, Instant};

use common::consistency::check_ipam;
use common::etcd::Blackhole;
use common::{Etcd, Plugin};

const NODE: &str = "agent-1";

fn cluster() -> Etcd {
    let etcd = Etcd::cluster(3);
    etcd.seed_calico(&[NODE]);
    Plugin::new(&etcd, NODE).add_pool("198.18.0.0/20", 26);
    etcd
}

/// A plugin given `endpoints`, with short timeouts so that a test with a
/// dead member stays quick.
fn plugin(endpoints: &str, timeout_ms: u64, deadline_ms: u64) -> Plugin {
    let p = Plugin::with_endpoints(endpoints, NODE);
    p.set_config(&format!(
        "[etcd]\ntimeout_ms = {timeout_ms}\ndeadline_ms = {deadline_ms}\n"
    ));
    p
}

/// One IPAM request that writes: allocate on even, release on odd steps.
fn step(p: &Plugin, i: usize) -> Result<(), String> {
    let uid = format!("u{}", i / 2);
    let r = if i % 2 == 0 {
        p.allocate(&uid, 1, 0)
    } else {
        p.release_uid(&uid)
    };
    match r.error() {
        None => Ok(()),
        Some(e) => Err(format!("request {i}: {e}")),
    }
}

#[test]
fn a_follower_then_the_leader_killed_during_500_requests_fail_nothing() {
    let mut etcd = cluster();
    let p = plugin(&etcd.endpoints(), 1000, 15_000);
    let mut failed = Vec::new();
    for i in 0..500 {
        match i {
            100 => {
                let follower = (etcd.leader() + 1) % 3;
                etcd.kill_member(follower);
            }
            200 => etcd.restart(),
            300 => {
                let leader = etcd.leader();
                etcd.kill_member(leader);
            }
            _ => {}
        }
        if let Err(e) = step(&p, i) {
            failed.push(e);
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    etcd.restart();
    assert!(
        check_ipam(&etcd).is_empty(),
        "every allocation was released"
    );
}

#[test]
fn the_leader_killed_under_four_parallel_clients_fails_nothing() {
    let mut etcd = cluster();
    // The other nodes the workers run as.
    for n in 2..=4 {
        etcd.seed_node(&format!("agent-{n}"), &format!("172.31.1.{n}"));
    }
    let endpoints = etcd.endpoints();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let endpoints = endpoints.clone();
            std::thread::spawn(move || {
                let p = Plugin::with_endpoints(&endpoints, &format!("agent-{}", w + 1));
                p.set_config("[etcd]\ntimeout_ms = 1000\n");
                (0..120)
                    .filter_map(|i| step(&p, i).err())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let leader = etcd.leader();
    etcd.kill_member(leader);
    let failed: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    etcd.restart();
    check_ipam(&etcd);
}

#[test]
fn a_frozen_member_listed_first_fails_nothing() {
    let etcd = cluster();
    let follower = (etcd.leader() + 1) % 3;
    let urls: Vec<String> = etcd.members.iter().map(|m| m.client_url.clone()).collect();
    let mut order = vec![urls[follower].clone()];
    order.extend(urls.iter().filter(|u| **u != urls[follower]).cloned());
    let p = plugin(&order.join(","), 200, 3000);
    etcd.freeze(follower, true);
    for i in 0..30 {
        let t = Instant::now();
        step(&p, i).unwrap();
        assert!(t.elapsed() < Duration::from_secs(9), "request {i} hung");
    }
    etcd.freeze(follower, false);
    check_ipam(&etcd);
}

#[test]
fn a_blackholed_endpoint_listed_first_fails_nothing() {
    let etcd = cluster();
    let hole = Blackhole::new();
    let p = plugin(&format!("{},{}", hole.url, etcd.endpoints()), 200, 3000);
    for i in 0..20 {
        let t = Instant::now();
        step(&p, i).unwrap();
        assert!(t.elapsed() < Duration::from_secs(9), "request {i} hung");
    }
}

#[test]
fn all_members_down_is_a_clear_error_in_time_and_nothing_half_written() {
    let mut etcd = cluster();
    let p = plugin(&etcd.endpoints(), 500, 2000);
    step(&p, 0).unwrap();
    etcd.stop();
    let t = Instant::now();
    let r = p.allocate("down", 1, 0);
    assert_eq!(r.status, 1);
    assert!(r.error().unwrap().contains("etcd is unreachable"), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    // Frozen, not dead: the deadline ends the request.
    etcd.restart();
    for i in 0..3 {
        etcd.freeze(i, true);
    }
    let t = Instant::now();
    let r = p.allocate("frozen", 1, 0);
    assert!(r.error().unwrap().contains("etcd is unreachable"), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    for i in 0..3 {
        etcd.freeze(i, false);
    }
    // Nothing of the failed requests is in etcd; the cluster works on.
    let held = check_ipam(&etcd);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held.values().all(|h| h == "mesos.u0"));
    step(&p, 1).unwrap();
}
