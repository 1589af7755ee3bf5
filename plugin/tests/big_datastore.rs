//! A datastore far past gRPC's default 4 MiB answers: 12,000 IP pools
//! (about 7.5 MiB of documents). allocate, release and `pool list` work.

mod common;

use calico_mesos::config::EtcdConfig;
use calico_mesos::datastore::{Datastore, WriteBatch};
use common::{Etcd, Plugin};
use serde_json::json;

const NODE: &str = "agent-1";

/// Writes `n` disabled pools in fd00:: (none usable, all listed), with
/// annotations as calicoctl-managed pools carry, in a few big batches.
fn write_pools(etcd: &Etcd, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ds = Datastore::connect(&EtcdConfig {
            endpoints: vec![etcd.endpoint().to_string()],
            ca_cert_file: None,
            cert_file: None,
            key_file: None,
            timeout_ms: 10_000,
            connect_timeout_ms: 1000,
            deadline_ms: 120_000,
        })
        .await
        .unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let mut batch = WriteBatch::new();
            for i in chunk {
                let name = format!("bulk-{i:05}");
                let doc = json!({
                    "kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                    "metadata": {"name": name, "uid": format!("5b0c7e1f-2a3d-4c5b-8e9f-{i:012}"),
                                 "creationTimestamp": "2026-01-09T09:00:00Z",
                                 "annotations": {"note": "x".repeat(400)}},
                    "spec": {"cidr": format!("fd00:{:x}:{:x}::/64", i / 65536 + 1, i % 65536),
                             "blockSize": 122, "ipipMode": "Never", "vxlanMode": "Never",
                             "natOutgoing": false, "disabled": true,
                             "nodeSelector": "all()", "allowedUses": ["Workload"]}
                });
                batch.put(
                    &format!("/calico/resources/v3/projectcalico.org/ippools/{name}"),
                    &doc,
                );
            }
            assert!(ds.commit(&batch).await.unwrap());
        }
    });
}

#[test]
fn twelve_thousand_pools_allocate_release_and_list() {
    let etcd = Etcd::start();
    etcd.seed_calico(&[NODE]);
    let p = Plugin::new(&etcd, NODE);
    write_pools(&etcd, 12_000);
    p.add_pool("198.18.0.0/24", 26);

    let a = p.allocate("big", 1, 0);
    a.ok();
    p.release_uid("big").ok();
    let r = p.reserve("big2", &["198.18.0.9"], &[]);
    r.ok();
    p.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    p.release_ips(&["198.18.0.9"]).ok();

    let out = p.cli(&["pool", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 12_001);
}
