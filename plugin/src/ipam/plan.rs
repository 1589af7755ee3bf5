//! One IPAM attempt's changes, held in memory and turned into a single
//! guarded etcd transaction: every block, handle and affinity it read is
//! compared by mod revision (or absence), so the write applies only to the
//! snapshot it was planned on.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;

use super::block::{new_block, BlockView};
use crate::datastore::model::{AllocationBlock, BlockAffinity, IpamHandle};
use crate::datastore::{keys, Datastore, Result, Versioned, WriteBatch};

struct PlannedBlock {
    doc: AllocationBlock,
    /// None: the block is created by this plan.
    mod_revision: Option<i64>,
    changed: bool,
}

struct PlannedHandle {
    doc: IpamHandle,
    mod_revision: Option<i64>,
}

pub struct Plan {
    node: String,
    handle_id: String,
    now_ns: u64,
    blocks: BTreeMap<IpNetwork, PlannedBlock>,
    /// Affinities to create; `true` marks a stale one of ours (its block
    /// vanished) that is rewritten instead.
    claims: Vec<(IpNetwork, bool)>,
    /// Handles to write, by id. `handle_id`'s own is here too.
    handles: BTreeMap<String, PlannedHandle>,
    /// Handles to delete, with their revision.
    dropped_handles: Vec<(String, i64)>,
}

impl Plan {
    /// A plan for `handle_id` (empty: no handle of its own), starting from
    /// its current document if it exists.
    pub fn new(node: &str, handle_id: &str, handle: Option<Versioned<IpamHandle>>) -> Self {
        let mut handles = BTreeMap::new();
        if !handle_id.is_empty() {
            let (doc, mod_revision) = match handle {
                Some(h) => (h.value, Some(h.mod_revision)),
                None => (IpamHandle::default(), None),
            };
            handles.insert(handle_id.to_string(), PlannedHandle { doc, mod_revision });
        }
        Plan {
            node: node.to_string(),
            handle_id: handle_id.to_string(),
            now_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            blocks: BTreeMap::new(),
            claims: Vec::new(),
            handles,
            dropped_handles: Vec::new(),
        }
    }

    /// Reads the blocks not yet in the plan, in one round trip. Absent
    /// blocks simply stay absent.
    pub async fn load_blocks(&mut self, ds: &Datastore, cidrs: &[IpNetwork]) -> Result<()> {
        let mut wanted: Vec<IpNetwork> = cidrs
            .iter()
            .filter(|c| !self.blocks.contains_key(c))
            .copied()
            .collect();
        wanted.sort();
        wanted.dedup();
        let keys: Vec<String> = wanted.iter().map(keys::block).collect();
        let docs = ds.get_many::<AllocationBlock>(&keys).await?;
        for (cidr, doc) in wanted.into_iter().zip(docs) {
            if let Some(doc) = doc {
                self.blocks.insert(
                    cidr,
                    PlannedBlock {
                        doc: doc.value,
                        mod_revision: Some(doc.mod_revision),
                        changed: false,
                    },
                );
            }
        }
        Ok(())
    }

    pub fn has_block(&self, cidr: &IpNetwork) -> bool {
        self.blocks.contains_key(cidr)
    }

    /// A loaded block. Whoever changes it calls `mark_changed`: only
    /// changed blocks are written.
    pub fn block_mut(&mut self, cidr: &IpNetwork) -> &mut AllocationBlock {
        &mut self
            .blocks
            .get_mut(cidr)
            .expect("block loaded before use")
            .doc
    }

    pub fn mark_changed(&mut self, cidr: &IpNetwork) {
        if let Some(b) = self.blocks.get_mut(cidr) {
            b.changed = true;
        }
    }

    /// How many blocks the plan holds (loaded or new).
    pub fn block_total(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks of one family this plan claims.
    pub fn claimed_count(&self, v6: bool) -> usize {
        self.claims
            .iter()
            .filter(|(c, _)| c.is_ipv6() == v6)
            .count()
    }

    /// Creates `cidr` for this node, with its confirmed affinity, in the
    /// same transaction (the end state of libcalico-go's claim sequence).
    pub fn claim_block(
        &mut self,
        cidr: IpNetwork,
        affinities: &[Vec<(IpNetwork, BlockAffinity)>; 2],
    ) {
        let claim_time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let doc = new_block(cidr, &self.node, self.now_ns, claim_time);
        self.blocks.insert(
            cidr,
            PlannedBlock {
                doc,
                mod_revision: None,
                changed: true,
            },
        );
        // An affinity of ours without a block (a crashed claim) is rewritten;
        // the block's absence is still guarded.
        let stale = affinities[usize::from(cidr.is_ipv6())]
            .iter()
            .any(|(c, _)| *c == cidr);
        self.claims.push((cidr, stale));
    }

    /// Records `n` more addresses of `cidr` under the plan's handle.
    pub fn count_handle(&mut self, cidr: &IpNetwork, n: u64) {
        if n == 0 || self.handle_id.is_empty() {
            return;
        }
        let h = self
            .handles
            .get_mut(&self.handle_id)
            .expect("plan has its handle");
        *h.doc.block.entry(cidr.to_string()).or_default() += n;
    }

    /// The plan's handle is deleted (release by handle).
    pub fn drop_handle(&mut self) {
        if let Some(h) = self.handles.remove(&self.handle_id) {
            if let Some(rev) = h.mod_revision {
                self.dropped_handles.push((self.handle_id.clone(), rev));
            }
        }
    }

    /// Takes released addresses off another handle's counts; a handle left
    /// with no blocks is deleted. Counts never go below zero (libcalico-go
    /// may have over-counted).
    pub fn decrement_handle(
        &mut self,
        id: &str,
        doc: Option<Versioned<IpamHandle>>,
        counts: &BTreeMap<IpNetwork, u64>,
    ) {
        let Some(mut doc) = doc else {
            tracing::warn!(
                handle = id,
                "released addresses of a handle that does not exist"
            );
            return;
        };
        for (cidr, n) in counts {
            let key = cidr.to_string();
            let left = doc
                .value
                .block
                .get(&key)
                .copied()
                .unwrap_or(0)
                .saturating_sub(*n);
            if left == 0 {
                doc.value.block.remove(&key);
            } else {
                doc.value.block.insert(key, left);
            }
        }
        if doc.value.block.is_empty() {
            self.dropped_handles
                .push((id.to_string(), doc.mod_revision));
        } else {
            self.handles.insert(
                id.to_string(),
                PlannedHandle {
                    doc: doc.value,
                    mod_revision: Some(doc.mod_revision),
                },
            );
        }
    }

    /// The guarded transaction that applies the plan.
    pub fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (cidr, mut b) in self.blocks {
            let key = keys::block(&cidr);
            match (b.changed, b.mod_revision) {
                (false, _) => {}
                (true, None) => {
                    b.doc.sequence_number += 1;
                    batch.create(&key, &b.doc);
                }
                (true, Some(rev)) => {
                    let empty = BlockView::new(&mut b.doc).is_none_or(|v| v.is_empty());
                    if empty && b.doc.affinity.is_none() {
                        // Empty and nobody's: libcalico-go deletes it too.
                        batch.delete(&key, rev);
                    } else {
                        b.doc.sequence_number += 1;
                        batch.update(&key, rev, &b.doc);
                    }
                }
            }
        }
        for (cidr, stale) in &self.claims {
            let key = keys::block_affinity(&self.node, cidr);
            if *stale {
                // The block's absence guard already serialises this claim.
                batch.put(&key, &BlockAffinity::confirmed());
            } else {
                batch.create(&key, &BlockAffinity::confirmed());
            }
        }
        for (id, h) in self.handles {
            if h.doc.block.is_empty() {
                continue; // nothing was assigned to it
            }
            batch.upsert(&keys::handle(&id), h.mod_revision, &h.doc);
        }
        for (id, rev) in self.dropped_handles {
            batch.delete(&keys::handle(&id), rev);
        }
        batch
    }
}
