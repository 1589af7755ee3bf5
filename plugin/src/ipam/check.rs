//! `calico-mesos ipam check`: the invariants of calico-datastore.md §1.7
//! over the whole datastore, read from one etcd snapshot, modeled on
//! `calicoctl ipam check`. Read-only; every problem names its key.
//!
//! - every block document parses and keeps invariants 1–3 (§1.7.2);
//! - every allocation has a handle, and that handle's document exists;
//! - every handle counts, per block, exactly the addresses the blocks hold
//!   for it (§1.7.3);
//! - every block lies inside a pool and has that pool's block size;
//! - a block affine to a host has that host's affinity key, and every
//!   affinity key has its block, affine to the same host (invariant 5);
//! - every address an endpoint lists is allocated, to the handle the
//!   endpoint recorded, and listed by no other endpoint;
//! - pools, handles, affinities, endpoints and the IPAM config parse.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::block::{address_at, BlockView};
use super::parse_block;
use super::pools::Pool;
use crate::datastore::model::{BlockAffinity, IpamConfig, IpamHandle};
use crate::datastore::{keys, Datastore, RawEntry, Read};
use crate::endpoint::{recorded_handles, WorkloadEndpoint};

/// One inconsistency, at the key where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

/// What was checked, and what is wrong.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub consistent: bool,
    pub blocks: usize,
    pub handles: usize,
    pub affinities: usize,
    pub endpoints: usize,
    pub problems: Vec<Problem>,
}

/// The documents the check reads.
#[derive(Debug, Clone, Default)]
pub struct Documents {
    /// Everything under `/calico/ipam/v2/`.
    pub ipam: Vec<RawEntry>,
    pub pools: Vec<RawEntry>,
    pub endpoints: Vec<RawEntry>,
}

pub async fn read(ds: &Datastore) -> crate::datastore::Result<Documents> {
    let (r, _) = ds
        .read_batch_at(
            &[
                Read::Prefix(keys::ipam_prefix()),
                Read::Prefix(keys::ip_pools_prefix()),
                Read::Prefix(keys::all_workload_endpoints_prefix()),
            ],
            None,
        )
        .await?;
    let mut r = r.into_iter();
    Ok(Documents {
        ipam: r.next().unwrap_or_default(),
        pools: r.next().unwrap_or_default(),
        endpoints: r.next().unwrap_or_default(),
    })
}

/// Where an IPAM key belongs.
enum IpamKey {
    Block,
    Handle(String),
    /// `<type>:<name>` (as a block's `affinity` names it) and the CIDR.
    Affinity(String, Option<IpNetwork>),
    Config,
    Other,
}

fn classify(key: &str) -> IpamKey {
    let Some(rest) = key.strip_prefix(&keys::ipam_prefix()) else {
        return IpamKey::Other;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["config"] => IpamKey::Config,
        ["assignment", "ipv4" | "ipv6", "block", _] => IpamKey::Block,
        ["handle", id] => IpamKey::Handle(id.to_string()),
        [kind @ ("host" | "virtual"), name, "ipv4" | "ipv6", "block", _] => {
            IpamKey::Affinity(format!("{kind}:{name}"), keys::cidr_from_key(key))
        }
        _ => IpamKey::Other,
    }
}

fn affinity_key(owner: &str, cidr: &IpNetwork) -> String {
    let (kind, name) = owner.split_once(':').unwrap_or(("host", owner));
    keys::block_affinity(name, cidr).replacen("/v2/host/", &format!("/v2/{kind}/"), 1)
}

/// Runs every check over `docs`.
pub fn check(docs: &Documents) -> CheckReport {
    let mut problems = Vec::new();
    let mut problem = |key: &str, text: String| {
        problems.push(Problem {
            key: key.to_string(),
            problem: text,
        })
    };

    let mut pools = Vec::new();
    for e in &docs.pools {
        match Pool::from_entry(e) {
            Some(p) => pools.push(p),
            None => problem(
                &e.key,
                "corrupt IP pool: not a pool document with a CIDR and a usable blockSize".into(),
            ),
        }
    }

    // handle -> block -> count, and address -> holder, from the blocks.
    let mut counted: BTreeMap<String, BTreeMap<IpNetwork, u64>> = BTreeMap::new();
    let mut holders: BTreeMap<IpAddr, (String, String)> = BTreeMap::new();
    // block -> its affinity ("host:n"), for the affinity keys.
    let mut block_affinity: BTreeMap<IpNetwork, Option<String>> = BTreeMap::new();
    let mut handle_docs: BTreeMap<String, &RawEntry> = BTreeMap::new();
    let mut affinities: Vec<(&RawEntry, String, Option<IpNetwork>)> = Vec::new();
    let mut corrupt_blocks: BTreeSet<IpNetwork> = BTreeSet::new();
    let mut blocks = 0;
    for e in &docs.ipam {
        match classify(&e.key) {
            IpamKey::Config => {
                if let Err(err) = e.decode::<IpamConfig>() {
                    problem(&e.key, format!("corrupt IPAM config: {err}"));
                }
            }
            IpamKey::Handle(id) => {
                handle_docs.insert(id, e);
            }
            IpamKey::Affinity(owner, cidr) => affinities.push((e, owner, cidr)),
            IpamKey::Other => {}
            IpamKey::Block => {
                blocks += 1;
                let Some((cidr, doc)) = parse_block(e) else {
                    problem(&e.key, "the key names no block CIDR".into());
                    continue;
                };
                let mut doc = match doc {
                    Ok(d) => d,
                    Err(why) => {
                        problem(&e.key, format!("corrupt block: {why}"));
                        corrupt_blocks.insert(cidr);
                        continue;
                    }
                };
                block_affinity.insert(cidr, doc.affinity.clone());
                check_block_place(&e.key, &cidr, &pools, &mut problem);
                let Ok(view) = BlockView::new(&mut doc, &cidr) else {
                    continue;
                };
                let mut referenced = vec![false; view.doc.attributes.len()];
                for (o, slot) in view.doc.allocations.iter().enumerate() {
                    let Some(i) = *slot else { continue };
                    referenced[i] = true;
                    let ip = address_at(&cidr, o);
                    match view.doc.attributes[i].handle_id.as_deref() {
                        Some(h) if !h.is_empty() => {
                            *counted
                                .entry(h.to_string())
                                .or_default()
                                .entry(cidr)
                                .or_default() += 1;
                            holders.insert(ip, (h.to_string(), e.key.clone()));
                        }
                        _ => problem(
                            &e.key,
                            format!("address {ip} is allocated without a handle"),
                        ),
                    }
                }
                for (i, r) in referenced.iter().enumerate() {
                    if !r {
                        problem(
                            &e.key,
                            format!("attribute {i} is referenced by no allocation"),
                        );
                    }
                }
            }
        }
    }

    // ---- handles against the blocks ------------------------------------
    for (id, e) in &handle_docs {
        let doc = match e.decode::<IpamHandle>() {
            Ok(d) => d.value,
            Err(err) => {
                problem(&e.key, format!("corrupt handle: {err}"));
                continue;
            }
        };
        let have = counted.get(id.as_str()).cloned().unwrap_or_default();
        let mut listed = BTreeSet::new();
        for (text, n) in &doc.block {
            let Ok(cidr) = text.parse::<IpNetwork>() else {
                problem(
                    &e.key,
                    format!("counts block '{text}', which is not a CIDR"),
                );
                continue;
            };
            listed.insert(cidr);
            let held = have.get(&cidr).copied().unwrap_or(0);
            if held != *n {
                problem(
                    &e.key,
                    format!(
                        "handle {id} counts {n} address(es) in block {cidr}; the block holds \
                         {held} for it"
                    ),
                );
            }
        }
        for (cidr, held) in have.iter().filter(|(c, _)| !listed.contains(c)) {
            problem(
                &e.key,
                format!(
                    "handle {id} counts nothing in block {cidr}; the block holds {held} for it"
                ),
            );
        }
    }
    for (id, per_block) in &counted {
        if handle_docs.contains_key(id) {
            continue;
        }
        let ips: Vec<String> = holders
            .iter()
            .filter(|(_, (h, _))| h == id)
            .map(|(ip, _)| ip.to_string())
            .collect();
        problem(
            &keys::handle(id),
            format!(
                "missing: the blocks hold {} address(es) for handle {id} ({}) but it has no \
                 handle document",
                per_block.values().sum::<u64>(),
                ips.join(", ")
            ),
        );
    }

    // ---- affinities both ways ------------------------------------------
    let mut affinity_keys = BTreeSet::new();
    for (e, owner, cidr) in &affinities {
        let Some(cidr) = cidr else {
            problem(&e.key, "the key names no block CIDR".into());
            continue;
        };
        affinity_keys.insert(e.key.clone());
        let state = match BlockAffinity::parse(&e.value) {
            Ok(a) => a.state,
            Err(err) => {
                problem(&e.key, format!("corrupt affinity: {err}"));
                continue;
            }
        };
        let state = if state.is_empty() {
            "confirmed"
        } else {
            &state
        };
        if corrupt_blocks.contains(cidr) {
            continue; // reported with the block
        }
        match block_affinity.get(cidr) {
            None => problem(
                &e.key,
                format!("affinity ({state}) of {owner} for block {cidr}, which does not exist"),
            ),
            Some(a) if a.as_deref() != Some(owner.as_str()) => problem(
                &e.key,
                format!(
                    "affinity ({state}) of {owner} for block {cidr}, which is affine to {}",
                    a.as_deref().unwrap_or("nobody")
                ),
            ),
            Some(_) => {}
        }
    }
    for (cidr, owner) in &block_affinity {
        let Some(owner) = owner else { continue };
        let key = affinity_key(owner, cidr);
        if !affinity_keys.contains(&key) {
            problem(
                &keys::block(cidr),
                format!("block is affine to {owner} but has no affinity key ({key})"),
            );
        }
    }

    // ---- endpoints against the allocations ---------------------------------
    let mut listers: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for e in &docs.endpoints {
        let ep = match e.decode::<WorkloadEndpoint>() {
            Ok(ep) => ep.value,
            Err(err) => {
                problem(&e.key, format!("corrupt endpoint: {err}"));
                continue;
            }
        };
        let recorded = recorded_handles(&ep).unwrap_or_default();
        for net in &ep.spec.ip_networks {
            let Some(ip) = net.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) else {
                problem(
                    &e.key,
                    format!("ipNetworks entry '{net}' is not an address"),
                );
                continue;
            };
            listers.entry(ip).or_default().push(&e.key);
            match (holders.get(&ip), recorded.get(&ip)) {
                (None, _) => problem(&e.key, format!("address {ip} is not allocated")),
                (Some((held, _)), Some(rec)) if held != rec => problem(
                    &e.key,
                    format!(
                        "address {ip} is allocated to handle {held}, but the endpoint recorded {rec}"
                    ),
                ),
                _ => {}
            }
        }
    }
    for (ip, keys) in &listers {
        if keys.len() > 1 {
            problem(
                keys[0],
                format!("address {ip} is also listed by {}", keys[1..].join(", ")),
            );
        }
    }

    problems.sort();
    problems.dedup();
    CheckReport {
        consistent: problems.is_empty(),
        blocks,
        handles: handle_docs.len(),
        affinities: affinities.len(),
        endpoints: docs.endpoints.len(),
        problems,
    }
}

/// A block lies inside a pool of its family and has its block size.
fn check_block_place(
    key: &str,
    cidr: &IpNetwork,
    pools: &[Pool],
    problem: &mut impl FnMut(&str, String),
) {
    let inside = pools.iter().find(|p| {
        p.is_v6() == cidr.is_ipv6()
            && p.cidr.contains(cidr.network())
            && p.cidr.prefix() <= cidr.prefix()
    });
    match inside {
        None => problem(
            key,
            format!("block {cidr} is outside every IP pool (its pool was deleted?)"),
        ),
        Some(p) if p.block_size != cidr.prefix() => problem(
            key,
            format!(
                "block {cidr} is a /{} but its pool {} has blockSize {}",
                cidr.prefix(),
                p.name,
                p.block_size
            ),
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified() {
        assert!(matches!(
            classify("/calico/ipam/v2/assignment/ipv4/block/198.18.0.0-26"),
            IpamKey::Block
        ));
        assert!(
            matches!(classify("/calico/ipam/v2/handle/mesos.x"), IpamKey::Handle(h) if h == "mesos.x")
        );
        match classify("/calico/ipam/v2/host/agent-1/ipv6/block/fd00::-122") {
            IpamKey::Affinity(owner, Some(c)) => {
                assert_eq!(owner, "host:agent-1");
                assert_eq!(c.to_string(), "fd00::/122");
            }
            _ => panic!(),
        }
        assert!(matches!(
            classify("/calico/ipam/v2/config"),
            IpamKey::Config
        ));
        assert!(matches!(
            classify("/calico/ipam/v2/host/agent-1"),
            IpamKey::Other
        ));
        let c: IpNetwork = "198.18.0.0/26".parse().unwrap();
        assert_eq!(
            affinity_key("virtual:lb", &c),
            "/calico/ipam/v2/virtual/lb/ipv4/block/198.18.0.0-26"
        );
        assert_eq!(
            affinity_key("host:a", &c),
            "/calico/ipam/v2/host/a/ipv4/block/198.18.0.0-26"
        );
    }

    #[test]
    fn garbage_is_reported_not_fatal() {
        let raw = |key: &str, value: &str| RawEntry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: 1,
        };
        let docs = Documents {
            ipam: vec![
                raw("/calico/ipam/v2/assignment/ipv4/block/198.18.0.0-26", "{"),
                raw("/calico/ipam/v2/assignment/ipv4/block/nonsense", "{}"),
                raw("/calico/ipam/v2/handle/mesos.a", "[1]"),
                raw("/calico/ipam/v2/host/n/ipv4/block/198.18.0.0-26", "7"),
                raw("/calico/ipam/v2/config", "\"x\""),
            ],
            pools: vec![raw(
                "/calico/resources/v3/projectcalico.org/ippools/p",
                "{}",
            )],
            endpoints: vec![raw(
                "/calico/resources/v3/projectcalico.org/workloadendpoints/default/x",
                "null",
            )],
        };
        let report = check(&docs);
        assert!(!report.consistent);
        let text: Vec<String> = report
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.problem))
            .collect();
        for want in [
            "block/198.18.0.0-26: corrupt block",
            "block/nonsense: the key names no block CIDR",
            "handle/mesos.a: corrupt handle",
            "host/n/ipv4/block/198.18.0.0-26: corrupt affinity",
            "config: corrupt IPAM config",
            "ippools/p: corrupt IP pool",
            "workloadendpoints/default/x: corrupt endpoint",
        ] {
            assert!(text.iter().any(|t| t.contains(want)), "{want}: {text:#?}");
        }
    }
}
