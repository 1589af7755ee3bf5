//! Pure operations on one allocation block (calico-datastore.md §1.7.2),
//! keeping every invariant libcalico-go relies on: each ordinal is either
//! free (null, listed once in `unallocated`) or points at an attribute;
//! attributes are deduplicated and every one is referenced.

use std::collections::BTreeMap;
use std::net::IpAddr;

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

/// Why a specific address cannot be assigned.
#[derive(Debug, PartialEq, Eq)]
pub enum AssignError {
    OutsideBlock,
    InUse,
}

/// A block with its parsed CIDR.
pub struct BlockView<'a> {
    pub cidr: IpNetwork,
    pub doc: &'a mut AllocationBlock,
}

impl<'a> BlockView<'a> {
    /// None for a document that is not a sane block (unparsable CIDR, a
    /// size outside Calico's block sizes, allocations of the wrong length).
    pub fn new(doc: &'a mut AllocationBlock) -> Option<Self> {
        let cidr: IpNetwork = doc.cidr.parse().ok()?;
        let host_bits = max_prefix(&cidr) - cidr.prefix();
        (host_bits <= MAX_BLOCK_HOST_BITS && doc.allocations.len() == 1usize << host_bits)
            .then_some(BlockView { cidr, doc })
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

    /// Frees the given addresses; those already free are skipped. Returns
    /// how many were freed per handle (None: an allocation without handle).
    pub fn release(&mut self, ips: &[IpAddr]) -> BTreeMap<Option<String>, u64> {
        let ordinals: Vec<usize> = ips
            .iter()
            .filter_map(|ip| ordinal_of(&self.cidr, *ip))
            .filter(|o| self.doc.allocations[*o].is_some())
            .collect();
        self.free_ordinals(&ordinals)
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

    fn free_ordinals(&mut self, ordinals: &[usize]) -> BTreeMap<Option<String>, u64> {
        let mut per_handle: BTreeMap<Option<String>, u64> = BTreeMap::new();
        for &o in ordinals {
            let Some(idx) = self.doc.allocations[o].take() else {
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
        let mut b = BlockView::new(&mut doc).unwrap();
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

        let freed = b.release(&["198.18.0.5".parse().unwrap(), "198.18.0.6".parse().unwrap()]);
        assert_eq!(freed.get(&Some("b".to_string())), Some(&1));
        assert!(b.is_empty());
        invariants(b.doc);
    }

    #[test]
    fn absurd_block_documents_are_refused() {
        let mut doc = new_block("198.18.0.0/29".parse().unwrap(), "n1", 1, "t".into());
        doc.cidr = "fd00::/0".into();
        assert!(
            BlockView::new(&mut doc).is_none(),
            "a /0 block would overflow"
        );
        doc.cidr = "198.18.0.0/28".into();
        assert!(
            BlockView::new(&mut doc).is_none(),
            "allocations of the wrong length"
        );
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
