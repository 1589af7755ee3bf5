//! The etcd round trips of the common operations, counted from etcd's own
//! metrics (not timed): the block hint, the handle records, isolate's one
//! snapshot and cleanup's one transaction each remove reads, and a change
//! that loses one of them shows here.

mod common;

use common::cluster::Cluster;
use common::netns::can_run;
use common::Etcd;
use serde_json::json;

/// KV calls etcd served while `f` ran.
fn calls(etcd: &Etcd, f: impl FnOnce()) -> u64 {
    let total = |e: &Etcd| -> u64 { e.kv_calls().values().sum() };
    let before = total(etcd);
    f();
    total(etcd) - before
}

#[test]
fn each_operation_takes_one_read_and_one_write() {
    if !can_run() {
        return;
    }
    let c = Cluster::new(&["agent-1"]);
    let host = c.host();
    let p = c.plugin("agent-1", &host);
    // The first allocate claims a block (it lists the blocks); after it,
    // the hint names the block with room.
    p.allocate("warm", 1, 0).ok();

    let mut v4 = Vec::new();
    let n = calls(&c.etcd, || v4 = p.allocate("ctr", 1, 0).ok().ips("ipv4"));
    assert_eq!(n, 2, "allocate: snapshot (with the hinted block) + commit");

    let ctr = host.container();
    let n = calls(&c.etcd, || {
        p.request(
            &json!({"command": "isolate", "args": {"hostname": "agent-1",
            "container_id": "ctr", "pid": ctr.pid, "ipv4_addrs": v4, "netgroups": ["web"]}}),
        )
        .ok();
    });
    assert_eq!(
        n, 2,
        "isolate: one snapshot + one write (profiles and endpoint)"
    );

    let n = calls(&c.etcd, || {
        p.request(
            &json!({"command": "cleanup", "args": {"hostname": "agent-1", "container_id": "ctr"}}),
        )
        .ok();
    });
    assert_eq!(n, 2, "cleanup: one read + one write (handles and endpoint)");

    // The module's release by uid right after: cleanup freed the handle
    // and recorded so; etcd is not asked.
    let n = calls(&c.etcd, || {
        p.release_uid("ctr").ok();
    });
    assert_eq!(n, 0, "release by uid after this host's cleanup");
    // The record was consumed, and an allocate under the same uid
    // replaces it: the next release frees for real.
    let again = p.allocate("ctr", 1, 0).ok().ips("ipv4");
    let n = calls(&c.etcd, || {
        p.release_uid("ctr").ok();
    });
    assert_eq!(n, 2, "release by uid after a new allocate for the uid");
    assert!(
        c.etcd.get("/calico/ipam/v2/handle/mesos.ctr").is_none(),
        "the handle of {again:?} is released"
    );

    let n = calls(&c.etcd, || {
        p.release_uid("warm").ok();
    });
    assert_eq!(
        n, 2,
        "release by uid: the handle with its recorded blocks + commit"
    );
}

#[test]
fn a_host_with_full_blocks_allocates_from_its_hinted_block_in_one_read() {
    let etcd = Etcd::start();
    etcd.seed_calico(&["agent-1"]);
    let p = common::Plugin::new(&etcd, "agent-1");
    p.add_pool("198.18.0.0/24", 29); // blocks of 8
    for i in 0..5 {
        p.allocate(&format!("full-{i}"), 8, 0).ok();
    }
    // Five full blocks; a sixth with room, which the hint now names.
    p.allocate("part", 2, 0).ok();
    let n = calls(&etcd, || {
        p.allocate("ctr", 1, 0).ok();
    });
    assert_eq!(
        n, 2,
        "snapshot (with the hinted block) + commit: the full blocks are not read"
    );
}

/// Bytes etcd sent while `f` ran.
fn sent(etcd: &Etcd, f: impl FnOnce()) -> f64 {
    let metric = "etcd_network_client_grpc_sent_bytes_total";
    let before = etcd.metric(metric);
    f();
    etcd.metric(metric) - before
}

#[test]
fn an_allocate_from_the_hinted_block_reads_none_of_the_hosts_other_affinities() {
    let etcd = Etcd::start();
    etcd.seed_calico(&["small", "big"]);
    etcd.put(
        "/calico/ipam/v2/config",
        &json!({"strict_affinity": true, "auto_allocate_blocks": true, "maxBlocksPerHost": 100}),
    );
    let small = common::Plugin::new(&etcd, "small");
    let big = common::Plugin::new(&etcd, "big");
    small.add_pool("198.18.0.0/22", 29); // 128 blocks of 8
    for i in 0..40 {
        big.allocate(&format!("full-{i}"), 8, 0).ok();
    }
    // Each host's hint now names a block holding two addresses; "big"
    // owns 40 more, full ones.
    small.allocate("part", 2, 0).ok();
    big.allocate("part", 2, 0).ok();
    let from_small = sent(&etcd, || {
        small.allocate("ctr", 1, 0).ok();
    });
    let from_big = sent(&etcd, || {
        big.allocate("ctr", 1, 0).ok();
    });
    // 40 affinity keys and values are ~4 KiB; the two requests differ
    // only in names otherwise.
    assert!(
        from_big - from_small < 1024.0,
        "etcd sent {from_big} bytes for the host with 41 blocks, {from_small} for the one with 1"
    );
}

#[test]
fn a_borrowing_allocate_lists_the_blocks_once_and_tries_its_hinted_block_first() {
    let etcd = Etcd::start();
    etcd.seed_calico(&["owner", "borrower"]);
    let owner = common::Plugin::new(&etcd, "owner");
    owner.add_pool("198.18.0.0/24", 26); // 4 blocks
    for b in 0..4 {
        owner.reserve(
            &format!("claim-{b}"),
            &[&format!("198.18.0.{}", b * 64 + 1)],
            &[],
        );
    }
    let p = common::Plugin::new(&etcd, "borrower");
    p.set_config("[ipam]\nborrow = true\n");
    p.allocate("first", 1, 0).ok();
    let n = calls(&etcd, || {
        p.allocate("ctr", 1, 0).ok();
    });
    // Snapshot (with the block the last borrow took from), this host's
    // (no) affinities, the block listing (no block left to claim; the
    // borrow needs no other), the commit.
    assert_eq!(n, 4, "a borrowing allocate");
}
