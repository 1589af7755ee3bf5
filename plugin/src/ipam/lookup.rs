//! Finding the block of an address without reading the pools first: a
//! block's CIDR is the address masked to one of Calico's 13 block sizes,
//! so reading those 13 keys (absent ones cost nothing) finds it in the same
//! round trip as everything else isolate reads.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::block::{block_cidr_for, check, BlockView, Holding};
use crate::datastore::model::AllocationBlock;
use crate::datastore::{keys, RawEntry};

/// Calico's block sizes (calico-datastore.md §1.4): v4 /20../32, v6
/// /116../128.
pub fn candidate_blocks(ip: IpAddr) -> Vec<IpNetwork> {
    let sizes = if ip.is_ipv4() { 20..=32 } else { 116..=128 };
    sizes.map(|s| block_cidr_for(ip, s)).collect()
}

/// What the candidate reads say about one address.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Allocated in the block at `key`, which was at `mod_revision`.
    Held {
        holding: Holding,
        key: String,
        mod_revision: i64,
    },
    /// Free in an existing block, or in no block at all.
    Free,
    /// More than one block covers it (overlapping blocks of pools
    /// recreated with another block size): look it up the slow way.
    Ambiguous,
    Corrupt {
        key: String,
        reason: String,
    },
}

/// Interprets the reads of `candidate_blocks(ip)` (`entries`, same order).
pub fn find(ip: IpAddr, entries: &[Vec<RawEntry>]) -> Found {
    let present: Vec<(IpNetwork, &RawEntry)> = candidate_blocks(ip)
        .into_iter()
        .zip(entries)
        .filter_map(|(c, e)| Some((c, e.first()?)))
        .collect();
    let (cidr, entry) = match present.as_slice() {
        [] => return Found::Free,
        [one] => *one,
        _ => return Found::Ambiguous,
    };
    let mut doc = match entry.decode::<AllocationBlock>() {
        Ok(d) => d,
        Err(e) => {
            return Found::Corrupt {
                key: entry.key.clone(),
                reason: format!("not a block document: {e}"),
            }
        }
    };
    if let Err(why) = check(&doc.value, &cidr) {
        return Found::Corrupt {
            key: entry.key.clone(),
            reason: why.0,
        };
    }
    let view = BlockView::new(&mut doc.value, &cidr).expect("checked above");
    match view.holding(ip) {
        Some(holding) => Found::Held {
            holding,
            key: keys::block(&cidr),
            mod_revision: doc.mod_revision,
        },
        None => Found::Free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_candidates_per_family_from_the_largest_block() {
        let v4 = candidate_blocks("198.18.3.77".parse().unwrap());
        assert_eq!(v4.len(), 13);
        assert_eq!(v4[0].to_string(), "198.18.0.0/20");
        assert_eq!(v4[6].to_string(), "198.18.3.64/26");
        assert_eq!(v4[12].to_string(), "198.18.3.77/32");
        let v6 = candidate_blocks("fd00::1:5".parse().unwrap());
        assert_eq!(v6.len(), 13);
        assert_eq!(v6[6].to_string(), "fd00::1:0/122");
        assert_eq!(
            find("198.18.3.77".parse().unwrap(), &vec![Vec::new(); 13]),
            Found::Free
        );
    }
}
