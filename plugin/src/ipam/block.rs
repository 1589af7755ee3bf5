//! Pure operations on one allocation block (calico-datastore.md §1.7.2),
//! keeping every invariant libcalico-go relies on: each ordinal is either
//! free (null, listed once in `unallocated`) or points at an attribute;
//! attributes are deduplicated and every one is referenced.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use ipnetwork::IpNetwork;

use crate::datastore::model::{AllocationAttribute, AllocationBlock, Extra};

/// Address arithmetic for a block CIDR.
pub fn address_at(cidr: &IpNetwork, ordinal: usize) -> IpAddr {
    match cidr {
        IpNetwork::V4(n) => IpAddr::V4((u32::from(n.network()) + ordinal as u32).into()),
        IpNetwork::V6(n) => IpAddr::V6((u128::from(n.network()) + ordinal as u128).into()),
    }
}

/// The ordinal of `ip` in `cidr`, if it lies inside.
pub fn ordinal_of(cidr: &IpNetwork, ip: IpAddr) -> Option<usize> {
    if !cidr.contains(ip) {
        return None;
    }
    Some(match (cidr, ip) {
        (IpNetwork::V4(n), IpAddr::V4(a)) => (u32::from(a) - u32::from(n.network())) as usize,
        (IpNetwork::V6(n), IpAddr::V6(a)) => (u128::from(a) - u128::from(n.network())) as usize,
        _ => return None,
    })
}

/// The block of prefix `block_size` that holds `ip`.
pub fn block_cidr_for(ip: IpAddr, block_size: u8) -> IpNetwork {
    IpNetwork::new(ip, block_size)
        .and_then(|n| IpNetwork::new(n.network(), block_size))
        .expect("block sizes are validated against the family")
}

pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

/// A brand-new block owned by `node` (every ordinal free, in order).
pub fn new_block(cidr: IpNetwork, node: &str, now_ns: u64, claim_time: String) -> AllocationBlock {
    let size = 1usize << (max_prefix(&cidr) - cidr.prefix());
    AllocationBlock {
        cidr: cidr.to_string(),
        affinity: Some(host_affinity(node)),
        affinity_claim_time: Some(claim_time),
        allocations: vec![None; size],
        unallocated: (0..size).collect(),
        attributes: Vec::new(),
        sequence_number: now_ns,
        sequence_number_for_allocation: BTreeMap::new(),
        deleted: false,
        extra: Extra::new(),
    }
}

/// The largest Calico block: an IPv4 /20.
const MAX_BLOCK_HOST_BITS: u8 = 12;

fn max_prefix(cidr: &IpNetwork) -> u8 {
    if cidr.is_ipv4() {
        32
    } else {
        128
    }
}

/// The invariant checks of [`BlockView::new`].
pub fn check(doc: &AllocationBlock, key_cidr: &IpNetwork) -> Result<(), Corruption> {
    let bad = |m: String| Err(Corruption(m));
    let cidr: IpNetwork = match doc.cidr.parse() {
        Ok(c) => c,
        Err(_) => return bad(format!("cidr '{}' is not a CIDR", doc.cidr)),
    };
    if cidr != *key_cidr || cidr.network() != cidr.ip() {
        return bad(format!(
            "its cidr {} differs from its key's {key_cidr}",
            doc.cidr
        ));
    }
    let host_bits = max_prefix(&cidr) - cidr.prefix();
    if host_bits > MAX_BLOCK_HOST_BITS {
        return bad(format!("/{} is not a Calico block size", cidr.prefix()));
    }
    let size = 1usize << host_bits;
    if doc.allocations.len() != size {
        return bad(format!(
            "{} allocation entries for a block of {size} addresses",
            doc.allocations.len()
        ));
    }
    if let Some((o, i)) = doc
        .allocations
        .iter()
        .enumerate()
        .find_map(|(o, a)| a.filter(|i| *i >= doc.attributes.len()).map(|i| (o, i)))
    {
        return bad(format!(
            "allocation {o} points at attribute {i} of {}",
            doc.attributes.len()
        ));
    }
    let mut listed = vec![false; size];
    for &o in &doc.unallocated {
        if o >= size {
            return bad(format!("unallocated ordinal {o} is outside the block"));
        }
        if listed[o] {
            return bad(format!("unallocated lists ordinal {o} twice"));
        }
        if doc.allocations[o].is_some() {
            return bad(format!("unallocated lists ordinal {o}, which is in use"));
        }
        listed[o] = true;
    }
    Ok(())
}

/// The current holder of one allocated address.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub ordinal: usize,
    pub handle: Option<String>,
    /// From the attribute's `timestamp` (None: not recorded or unreadable).
    pub allocated_at: Option<SystemTime>,
}

/// When an allocation was made, from the `secondary.timestamp` the CNI
/// plugin and this plugin write (`2026-01-09 09:20:11.482913044 +0000 UTC`).
fn allocation_time(attr: &AllocationAttribute) -> Option<SystemTime> {
    let text = attr.secondary.as_ref()?.get("timestamp")?;
    let mut parts = text.split_whitespace();
    let (date, time, offset) = (parts.next()?, parts.next()?, parts.next()?);
    if offset != "+0000" {
        return None;
    }
    humantime::parse_rfc3339(&format!("{date}T{time}Z")).ok()
}

/// Why a specific address cannot be assigned.
#[derive(Debug, PartialEq, Eq)]
pub enum AssignError {
    OutsideBlock,
    InUse,
}

/// Why a block document cannot be used (calico-datastore.md §1.7.2
/// invariants 1–2): someone else's bad write or a half-restored backup.
/// A corrupt block is never allocated from and never released into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption(pub String);

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A block whose document passed every invariant check, with its CIDR.
/// Every index the methods below use was checked in `new`, so no input
/// can push them out of bounds.
pub struct BlockView<'a> {
    pub cidr: IpNetwork,
    pub doc: &'a mut AllocationBlock,
}

impl<'a> BlockView<'a> {
    /// Checks the document read under the key of `key_cidr`: its `cidr`
    /// is the key's, a Calico block size, `allocations` as long as the
    /// block, every allocation index inside `attributes`, and `unallocated`
    /// in range, without repeats and disjoint from the allocated ordinals.
    pub fn new(doc: &'a mut AllocationBlock, key_cidr: &IpNetwork) -> Result<Self, Corruption> {
        check(doc, key_cidr)?;
        Ok(BlockView {
            cidr: *key_cidr,
            doc,
        })
    }

    pub fn free_count(&self) -> usize {
        self.doc.unallocated.len()
    }

    /// Takes up to `n` free addresses from the front of `unallocated`,
    /// skipping (and leaving in place) those `skip` rejects.
    pub fn assign_next(
        &mut self,
        n: usize,
        attr: &AllocationAttribute,
        skip: impl Fn(IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        let chosen: Vec<usize> = self
            .doc
            .unallocated
            .iter()
            .copied()
            .filter(|o| !skip(address_at(&self.cidr, *o)))
            .take(n)
            .collect();
        for o in &chosen {
            self.mark(*o, attr);
        }
        chosen.iter().map(|o| address_at(&self.cidr, *o)).collect()
    }

    pub fn assign(&mut self, ip: IpAddr, attr: &AllocationAttribute) -> Result<(), AssignError> {
        let o = ordinal_of(&self.cidr, ip).ok_or(AssignError::OutsideBlock)?;
        if self.doc.allocations[o].is_some() {
            return Err(AssignError::InUse);
        }
        self.mark(o, attr);
        Ok(())
    }

    fn mark(&mut self, o: usize, attr: &AllocationAttribute) {
        let idx = self.find_or_add_attribute(attr);
        self.doc.allocations[o] = Some(idx);
        self.doc.unallocated.retain(|u| *u != o);
        self.doc
            .sequence_number_for_allocation
            .insert(o.to_string(), self.doc.sequence_number);
    }

    fn find_or_add_attribute(&mut self, attr: &AllocationAttribute) -> usize {
        if let Some(i) = self
            .doc
            .attributes
            .iter()
            .position(|a| a.handle_id == attr.handle_id && a.secondary == attr.secondary)
        {
            return i;
        }
        self.doc.attributes.push(attr.clone());
        self.doc.attributes.len() - 1
    }

    /// Who holds `ip` now: None when it is outside the block or free.
    pub fn holding(&self, ip: IpAddr) -> Option<Holding> {
        let o = ordinal_of(&self.cidr, ip)?;
        let attr = self.doc.attributes.get(self.doc.allocations[o]?);
        Some(Holding {
            ordinal: o,
            handle: attr.and_then(|a| a.handle_id.clone()),
            allocated_at: attr.and_then(allocation_time),
        })
    }

    /// Frees every address held by `handle`; returns how many.
    pub fn release_handle(&mut self, handle: &str) -> u64 {
        let ordinals: Vec<usize> = (0..self.doc.allocations.len())
            .filter(|o| {
                self.doc.allocations[*o]
                    .and_then(|i| self.doc.attributes.get(i))
                    .is_some_and(|a| a.handle_id.as_deref() == Some(handle))
            })
            .collect();
        self.free_ordinals(&ordinals).values().sum()
    }

    /// Frees the given ordinals (the caller decided they may go); free
    /// ones are skipped. Returns how many were freed per handle.
    pub fn free_ordinals(&mut self, ordinals: &[usize]) -> BTreeMap<Option<String>, u64> {
        let mut per_handle: BTreeMap<Option<String>, u64> = BTreeMap::new();
        for &o in ordinals {
            let Some(idx) = self.doc.allocations.get_mut(o).and_then(Option::take) else {
                continue;
            };
            let handle = self
                .doc
                .attributes
                .get(idx)
                .and_then(|a| a.handle_id.clone());
            *per_handle.entry(handle).or_default() += 1;
            // Releases go to the back, so a freed address is reused last.
            self.doc.unallocated.push(o);
            self.doc
                .sequence_number_for_allocation
                .remove(&o.to_string());
        }
        if !ordinals.is_empty() {
            self.compact_attributes();
        }
        per_handle
    }

    /// Drops attributes nobody references and renumbers the rest.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.doc.attributes.len()];
        for idx in self.doc.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*idx) {
                *u = true;
            }
        }
        let mut remap = vec![usize::MAX; used.len()];
        let mut kept = Vec::new();
        for (i, attr) in std::mem::take(&mut self.doc.attributes)
            .into_iter()
            .enumerate()
        {
            if used[i] {
                remap[i] = kept.len();
                kept.push(attr);
            }
        }
        self.doc.attributes = kept;
        for slot in self.doc.allocations.iter_mut().flatten() {
            *slot = remap[*slot];
        }
    }

    pub fn is_empty(&self) -> bool {
        self.doc.allocations.iter().all(Option::is_none)
    }

    pub fn in_use(&self) -> usize {
        self.doc.allocations.iter().filter(|a| a.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(h: &str) -> AllocationAttribute {
        AllocationAttribute {
            handle_id: Some(h.into()),
            secondary: Some([("node".to_string(), "n1".to_string())].into()),
            extra: Extra::new(),
        }
    }

    fn invariants(b: &AllocationBlock) {
        let mut seen = vec![0; b.allocations.len()];
        for o in &b.unallocated {
            seen[*o] += 1;
            assert!(b.allocations[*o].is_none());
        }
        for (o, a) in b.allocations.iter().enumerate() {
            match a {
                None => assert_eq!(seen[o], 1, "ordinal {o} free but listed {} times", seen[o]),
                Some(i) => {
                    assert_eq!(seen[o], 0);
                    assert!(*i < b.attributes.len());
                    assert!(b
                        .sequence_number_for_allocation
                        .contains_key(&o.to_string()));
                }
            }
        }
        for i in 0..b.attributes.len() {
            assert!(
                b.allocations.contains(&Some(i)),
                "attribute {i} unreferenced"
            );
        }
    }

    #[test]
    fn assign_release_and_compaction_keep_invariants() {
        let cidr: IpNetwork = "198.18.0.0/29".parse().unwrap();
        let mut doc = new_block(cidr, "n1", 100, "t".into());
        let mut b = BlockView::new(&mut doc, &cidr).unwrap();
        let skip_first = |ip: IpAddr| ip == "198.18.0.0".parse::<IpAddr>().unwrap();
        let got = b.assign_next(2, &attr("a"), skip_first);
        assert_eq!(
            got,
            vec![
                "198.18.0.1".parse::<IpAddr>().unwrap(),
                "198.18.0.2".parse().unwrap()
            ]
        );
        b.assign("198.18.0.5".parse().unwrap(), &attr("b")).unwrap();
        assert_eq!(
            b.assign("198.18.0.5".parse().unwrap(), &attr("c")),
            Err(AssignError::InUse)
        );
        assert_eq!(
            b.doc.attributes.len(),
            2,
            "one attribute per distinct handle"
        );
        invariants(b.doc);

        assert_eq!(b.release_handle("a"), 2);
        assert_eq!(b.doc.attributes.len(), 1);
        assert_eq!(
            b.doc.allocations[5],
            Some(0),
            "b's index renumbered after a's removal"
        );
        // Freed ordinals go to the back.
        assert_eq!(&b.doc.unallocated[b.doc.unallocated.len() - 2..], &[1, 2]);
        invariants(b.doc);

        let held = b.holding("198.18.0.5".parse().unwrap()).unwrap();
        assert_eq!(held.handle.as_deref(), Some("b"));
        assert_eq!(b.holding("198.18.0.6".parse().unwrap()), None, "free");
        let freed = b.free_ordinals(&[held.ordinal, 6]);
        assert_eq!(freed.get(&Some("b".to_string())), Some(&1));
        assert!(b.is_empty());
        invariants(b.doc);
    }

    fn corrupt(edit: impl Fn(&mut AllocationBlock)) -> String {
        let cidr: IpNetwork = "198.18.0.0/29".parse().unwrap();
        let mut doc = new_block(cidr, "n1", 1, "t".into());
        BlockView::new(&mut doc, &cidr)
            .unwrap()
            .assign("198.18.0.3".parse().unwrap(), &attr("a"))
            .unwrap();
        edit(&mut doc);
        match BlockView::new(&mut doc, &cidr) {
            Ok(_) => panic!("a corrupt block was accepted: {doc:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn corrupt_block_documents_are_refused() {
        type Edit = Box<dyn Fn(&mut AllocationBlock)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|d| d.cidr = "fd00::/0".into()), "differs"),
            (Box::new(|d| d.cidr = "198.18.0.8/29".into()), "differs"),
            (Box::new(|d| d.cidr = "nonsense".into()), "not a CIDR"),
            (Box::new(|d| d.allocations.push(None)), "allocation entries"),
            (
                Box::new(|d| d.allocations[5] = Some(7)),
                "points at attribute",
            ),
            (Box::new(|d| d.unallocated.push(8)), "outside the block"),
            (
                Box::new(|d| d.unallocated.push(usize::MAX)),
                "outside the block",
            ),
            (Box::new(|d| d.unallocated.push(0)), "twice"),
            (Box::new(|d| d.unallocated.push(3)), "in use"),
        ];
        for (edit, why) in cases {
            let reason = corrupt(edit);
            assert!(reason.contains(why), "{reason} (wanted: {why})");
        }
        // A /0 under a /0 key is not a block size either.
        let zero: IpNetwork = "fd00::/0".parse().unwrap();
        let mut doc = new_block("198.18.0.0/29".parse().unwrap(), "n1", 1, "t".into());
        doc.cidr = "::/0".into();
        assert!(BlockView::new(&mut doc, &"::/0".parse().unwrap()).is_err());
        assert!(BlockView::new(&mut doc, &zero).is_err());
    }

    #[test]
    fn allocation_times_come_from_the_cni_timestamp() {
        let mut a = attr("a");
        a.secondary.as_mut().unwrap().insert(
            "timestamp".into(),
            "2026-01-09 09:20:11.482913044 +0000 UTC".into(),
        );
        let t = allocation_time(&a).unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(t).to_string(),
            "2026-01-09T09:20:11Z"
        );
        a.secondary
            .as_mut()
            .unwrap()
            .insert("timestamp".into(), "yesterday".into());
        assert_eq!(allocation_time(&a), None);
    }

    #[test]
    fn v6_ordinals() {
        let cidr: IpNetwork = "fd00:1::/122".parse().unwrap();
        assert_eq!(
            address_at(&cidr, 63),
            "fd00:1::3f".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ordinal_of(&cidr, "fd00:1::3f".parse().unwrap()), Some(63));
        assert_eq!(ordinal_of(&cidr, "fd00:1::40".parse().unwrap()), None);
        assert_eq!(
            block_cidr_for("198.18.1.77".parse().unwrap(), 26).to_string(),
            "198.18.1.64/26"
        );
    }
}
