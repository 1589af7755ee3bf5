//! Checks the IPAM documents in etcd against the invariants libcalico-go
//! relies on, reading raw etcd (not the plugin's code).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::Etcd;

/// Asserts the invariants and returns every allocated address with its
/// handle.
pub fn check_ipam(etcd: &Etcd) -> BTreeMap<IpAddr, String> {
    let all = etcd.dump("/calico/ipam/v2/");
    let mut allocated = BTreeMap::new();
    // handle -> block cidr -> count, as counted from the blocks.
    let mut counted: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (key, block) in all.iter().filter(|(k, _)| k.contains("/assignment/")) {
        let cidr: ipnetwork::IpNetwork = block["cidr"].as_str().unwrap().parse().unwrap();
        let allocations = block["allocations"].as_array().unwrap();
        let unallocated: Vec<u64> = block["unallocated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let attributes = block["attributes"].as_array().unwrap();
        assert_eq!(
            allocations.len() as u128,
            1u128 << (if cidr.is_ipv4() { 32 } else { 128 } - cidr.prefix() as u32),
            "{key}"
        );
        let mut referenced = vec![false; attributes.len()];
        for (o, a) in allocations.iter().enumerate() {
            let listed = unallocated.iter().filter(|u| **u == o as u64).count();
            match a.as_u64() {
                None => assert_eq!(listed, 1, "{key}: free ordinal {o} listed {listed} times"),
                Some(i) => {
                    assert_eq!(listed, 0, "{key}: allocated ordinal {o} also unallocated");
                    let attr = &attributes[i as usize];
                    referenced[i as usize] = true;
                    let handle = attr["handle_id"].as_str().expect("handle_id").to_string();
                    let ip = match cidr {
                        ipnetwork::IpNetwork::V4(n) => {
                            IpAddr::V4((u32::from(n.network()) + o as u32).into())
                        }
                        ipnetwork::IpNetwork::V6(n) => {
                            IpAddr::V6((u128::from(n.network()) + o as u128).into())
                        }
                    };
                    assert!(
                        allocated.insert(ip, handle.clone()).is_none(),
                        "{ip} allocated twice"
                    );
                    *counted
                        .entry(handle)
                        .or_default()
                        .entry(cidr.to_string())
                        .or_default() += 1;
                    assert!(block["sequenceNumberForAllocation"][o.to_string()].is_u64());
                }
            }
        }
        assert!(
            referenced.iter().all(|r| *r),
            "{key}: unreferenced attribute"
        );
        if let Some(aff) = block["affinity"].as_str() {
            let node = aff.strip_prefix("host:").expect("host affinity");
            let fam = if cidr.is_ipv4() { "ipv4" } else { "ipv6" };
            let akey = format!(
                "/calico/ipam/v2/host/{node}/{fam}/block/{}",
                cidr.to_string().replacen('/', "-", 1)
            );
            assert_eq!(
                all.get(&akey).map(|v| v["state"].clone()),
                Some(Value::from("confirmed")),
                "{key}: affinity {akey} not confirmed"
            );
        }
    }
    // Every handle document matches the blocks, and no block bit is set
    // without its handle.
    let handles: BTreeMap<String, BTreeMap<String, u64>> = all
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("/calico/ipam/v2/handle/")?;
            let blocks = v["block"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(c, n)| (c.clone(), n.as_u64().unwrap()))
                .collect();
            Some((id.to_string(), blocks))
        })
        .collect();
    assert_eq!(handles, counted, "handles do not match the blocks");
    allocated
}
