//! Many plugin processes on several simulated hosts allocating from one
//! small pool at once: every address is handed out exactly once and the
//! etcd documents stay consistent.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use common::consistency::check_ipam;
use common::{Etcd, Plugin};

const NODES: [&str; 4] = ["host-a", "host-b", "host-c", "host-d"];
const WORKERS: usize = 8;
const PER_WORKER: usize = 6;

#[test]
fn concurrent_allocations_never_share_an_address() {
    let etcd = Etcd::start();
    etcd.seed_calico(&NODES);
    // 128 addresses in /29 blocks: 16 blocks for 4 hosts; 48 addresses
    // are asked for, so every host needs several blocks and claims race.
    Plugin::new(&etcd, NODES[0]).add_pool("198.18.4.0/25", 29);

    let barrier = Arc::new(Barrier::new(WORKERS));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let endpoints = etcd.endpoints();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let plugin = Plugin::with_endpoints(&endpoints, NODES[w % NODES.len()]);
                barrier.wait();
                (0..PER_WORKER)
                    .map(|i| {
                        let uid = format!("w{w}-{i}");
                        let r = plugin.allocate(&uid, 1, 0);
                        r.ok();
                        (uid, r.ips("ipv4").remove(0))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(String, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker finished"))
        .collect();

    let addresses: BTreeSet<&String> = results.iter().map(|(_, ip)| ip).collect();
    assert_eq!(
        addresses.len(),
        WORKERS * PER_WORKER,
        "an address was handed out twice"
    );

    // etcd agrees: each handle holds exactly the address its process got.
    let allocated = check_ipam(&etcd);
    assert_eq!(allocated.len(), WORKERS * PER_WORKER);
    for (uid, ip) in &results {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(allocated.get(&ip), Some(&format!("mesos.{uid}")));
    }
    // Every block belongs to one of the hosts and holds only that host's
    // allocations (no borrowing by default).
    for (key, block) in etcd.dump("/calico/ipam/v2/assignment/") {
        let owner = block["affinity"]
            .as_str()
            .expect("affine")
            .trim_start_matches("host:")
            .to_string();
        for attr in block["attributes"].as_array().unwrap() {
            assert_eq!(
                attr["secondary"]["node"].as_str(),
                Some(owner.as_str()),
                "{key}"
            );
        }
    }
}
