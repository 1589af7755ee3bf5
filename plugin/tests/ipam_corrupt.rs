//! Corrupt block documents (someone else's bad write, a half-restored
//! backup), written with the raw client: the plugin never panics, never
//! hands an address out twice or outside its block, names the key in a
//! clear error, and `pool delete` refuses while such a block exists.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::{Etcd, Plugin};
use serde_json::{json, Value};

const NODE: &str = "agent-1";
/// The only block of the pool 198.18.0.0/29 (block size 29).
const KEY: &str = "/calico/ipam/v2/assignment/ipv4/block/198.18.0.0-29";
const AFFINITY: &str = "/calico/ipam/v2/host/agent-1/ipv4/block/198.18.0.0-29";

fn good_block() -> Value {
    json!({
        "cidr": "198.18.0.0/29", "affinity": "host:agent-1",
        "allocations": [0, null, null, null, null, null, null, null],
        "unallocated": [1, 2, 3, 4, 5, 6, 7],
        "attributes": [{"handle_id": "mesos.owner", "secondary": {"node": NODE}}],
        "sequenceNumber": 1767950102000000000u64,
        "sequenceNumberForAllocation": {"0": 1767950102000000000u64},
        "deleted": false
    })
}

/// Each case: what was done to the document, and why it is corrupt.
fn cases() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut b = good_block();
        f(&mut b);
        b
    };
    out.push((
        "unallocated ordinal out of range",
        edit(&|b| b["unallocated"] = json!([1, 2, 3, 4, 5, 6, 7, 4000000000u64])),
    ));
    out.push((
        "allocation index past attributes",
        edit(&|b| b["allocations"][3] = json!(5)),
    ));
    out.push((
        "free list names an in-use ordinal",
        edit(&|b| b["unallocated"] = json!([0, 1, 2, 3, 4, 5, 6, 7])),
    ));
    out.push((
        "one ordinal listed twice",
        edit(&|b| b["unallocated"] = json!([1, 1, 2, 3, 4, 5, 6, 7])),
    ));
    out.push((
        "cidr differs from its key",
        edit(&|b| b["cidr"] = json!("203.0.113.0/29")),
    ));
    out.push((
        "allocations of the wrong length",
        edit(&|b| b["allocations"] = json!([0, null, null])),
    ));
    out.push(("not JSON at all", Value::String("{half a document".into())));
    out
}

fn setup(doc: &Value) -> (Etcd, Plugin) {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let p = Plugin::new(&etcd, NODE);
    p.add_pool("198.18.0.0/29", 29);
    match doc {
        Value::String(raw) => etcd.put_raw(KEY, raw),
        v => etcd.put(KEY, v),
    }
    etcd.put(AFFINITY, &json!({"state": "confirmed", "deleted": false}));
    (etcd, p)
}

#[test]
fn corrupt_blocks_are_refused_with_their_key_and_never_panic() {
    for (what, doc) in cases() {
        let (etcd, p) = setup(&doc);
        let rev = etcd.revision();

        // Automatic allocation skips the block: the pool has no other.
        let r = p.allocate("new", 1, 0);
        assert_eq!(r.status, 1, "{what}: {r:?}");
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
        assert!(
            r.error().unwrap().starts_with("No free IPv4"),
            "{what}: {r:?}"
        );

        // A specific address in it, and releases that touch it: refused,
        // naming the key.
        for r in [
            p.reserve("new", &["198.18.0.2"], &[]),
            p.release_ips(&["198.18.0.0"]),
        ] {
            assert_eq!(r.status, 1, "{what}: {r:?}");
            assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
            let e = r.error().unwrap();
            assert!(e.contains(KEY) && e.contains("corrupt"), "{what}: {e}");
        }
        etcd.put(
            "/calico/ipam/v2/handle/mesos.owner",
            &json!({"block": {"198.18.0.0/29": 1}, "deleted": false}),
        );
        let rev_h = etcd.revision();
        let r = p.release_uid("owner");
        assert_eq!(r.status, 1, "{what}: {r:?}");
        assert!(r.error().unwrap().contains(KEY), "{what}: {r:?}");
        assert_eq!(etcd.revision(), rev_h, "{what}: a refused release wrote");
        etcd.delete("/calico/ipam/v2/handle/mesos.owner");

        // pool delete refuses and names the block; the block stays.
        let out = p.cli(&["pool", "delete", "198.18.0.0/29"]);
        assert!(!out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(KEY) && err.contains("corrupt"),
            "{what}: {err}"
        );
        assert!(etcd.get(KEY).is_some(), "{what}: the block was deleted");
        let _ = rev;
    }
}

#[test]
fn a_corrupt_block_beside_good_ones_never_causes_a_duplicate() {
    // The corrupt block claims ordinal 0 is free although it is in use, and
    // lists ordinal 1 twice; the host also owns a good block.
    let (etcd, p) = setup(&json!(null));
    let mut bad = good_block();
    bad["unallocated"] = json!([0, 1, 1, 2, 3, 4, 5, 6, 7]);
    etcd.put(KEY, &bad);
    p.add_pool("198.18.1.0/28", 29);
    let mut got = BTreeSet::new();
    for i in 0..16 {
        let r = p.allocate(&format!("u{i}"), 1, 0);
        if r.status != 0 {
            assert!(r.error().unwrap().starts_with("No free"), "{r:?}");
            break;
        }
        let ip: IpAddr = r.ips("ipv4")[0].parse().unwrap();
        let good: ipnetwork::IpNetwork = "198.18.1.0/28".parse().unwrap();
        assert!(good.contains(ip), "{ip} came from outside the good blocks");
        assert!(got.insert(ip), "{ip} handed out twice");
    }
    assert_eq!(got.len(), 16, "the good pool fills up");
    assert_eq!(
        etcd.get(KEY),
        Some(bad),
        "the corrupt block is never rewritten"
    );
}
