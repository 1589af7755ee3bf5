//! IP pools as the allocator sees them (calico-datastore.md §1.4): parsed,
//! defaulted, and filtered the way libcalico-go's `determinePools` does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::config::IpamSettings;
use crate::datastore::model::IpPool;
use crate::datastore::{RawEntry, Versioned};

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNetwork,
    pub block_size: u8,
    pub doc: Versioned<IpPool>,
}

impl Pool {
    pub fn from_entry(entry: &RawEntry) -> Option<Pool> {
        let doc: Versioned<IpPool> = match entry.decode() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("skipping IP pool: {e}");
                return None;
            }
        };
        let cidr: IpNetwork = match doc.value.spec.cidr.parse() {
            Ok(c) => c,
            Err(_) => {
                tracing::warn!(key = %entry.key, "skipping IP pool with unparsable cidr");
                return None;
            }
        };
        let block_size = doc.value.spec.block_size_for(cidr.is_ipv6());
        // Calico's own limits (v4 20-32, v6 116-128) keep blocks small.
        let allowed = if cidr.is_ipv4() { 20..=32 } else { 116..=128 };
        if !allowed.contains(&block_size) || block_size < cidr.prefix() {
            tracing::warn!(key = %entry.key, block_size, "skipping IP pool with unusable blockSize");
            return None;
        }
        Some(Pool {
            name: doc.value.metadata.name.clone(),
            cidr,
            block_size,
            doc,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.cidr.is_ipv6()
    }

    pub fn disabled(&self) -> bool {
        self.doc.value.spec.disabled
    }

    /// How many blocks the pool holds.
    pub fn block_count(&self) -> u128 {
        // checked: a ::/0 pool of /128 blocks would overflow the shift.
        1u128
            .checked_shl(u32::from(self.block_size - self.cidr.prefix()))
            .unwrap_or(u128::MAX)
    }

    /// The `i`-th block of the pool.
    pub fn block_at(&self, i: u128) -> IpNetwork {
        let shift = (if self.is_v6() { 128 } else { 32 }) - self.block_size as u32;
        let base = match self.cidr.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let addr = base + (i << shift);
        let ip = if self.is_v6() {
            IpAddr::V6(addr.into())
        } else {
            IpAddr::V4((addr as u32).into())
        };
        IpNetwork::new(ip, self.block_size).expect("aligned block")
    }

    /// Usable for automatic allocation to a workload on a node with
    /// `node_labels`, given the operator's restrictions.
    pub fn usable_for_auto(
        &self,
        node_labels: &BTreeMap<String, String>,
        settings: &IpamSettings,
    ) -> bool {
        let spec = &self.doc.value.spec;
        let restrict = if self.is_v6() {
            &settings.ipv6_pools
        } else {
            &settings.ipv4_pools
        };
        !spec.disabled
            && spec.allows_workloads()
            && spec.is_automatic()
            && selector_matches(spec.node_selector.as_deref(), node_labels, &self.name)
            && (restrict.is_empty()
                || restrict
                    .iter()
                    .any(|r| *r == self.name || r.parse::<IpNetwork>().ok() == Some(self.cidr)))
    }
}

/// Calico's selector grammar is large; the plugin evaluates the selectors
/// pools really use for "every node" and treats anything else as no match
/// (logged), so a pool meant for other nodes is never used by mistake.
fn selector_matches(
    selector: Option<&str>,
    _labels: &BTreeMap<String, String>,
    pool: &str,
) -> bool {
    match selector.map(str::trim) {
        None | Some("") | Some("all()") => true,
        Some(other) => {
            tracing::warn!(
                pool,
                selector = other,
                "pool nodeSelector is not supported by calico-mesos; the pool is not used for automatic allocation"
            );
            false
        }
    }
}

/// The pool holding `ip` (disabled ones too: releases and reservations
/// still need their block size).
pub fn pool_containing(pools: &[Pool], ip: IpAddr) -> Option<&Pool> {
    pools.iter().find(|p| p.cidr.contains(ip))
}
