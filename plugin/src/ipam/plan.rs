//! One IPAM attempt's changes, held in memory and turned into a single
//! guarded etcd transaction: every block, handle and affinity it read is
//! compared by mod revision (or absence), so the write applies only to the
//! snapshot it was planned on.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;

use super::block::{new_block, BlockView, Corruption};
use crate::datastore::model::{AllocationBlock, BlockAffinity, IpamHandle};
use crate::datastore::{keys, Datastore, RawEntry, Read, Result, Versioned, WriteBatch};

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

/// A block the plan wants to claim for its node.
struct Claim {
    cidr: IpNetwork,
    /// Some: a stale affinity of ours (its block vanished) at this
    /// revision, rewritten only if nobody changed it meanwhile (e.g.
    /// `calicoctl ipam release` marking it pendingDeletion).
    stale_affinity: Option<i64>,
}

/// What a plan holds for one block CIDR.
pub enum BlockState<'a> {
    /// No such block in etcd (and none planned).
    Missing,
    /// The document breaks an invariant: never allocate from it or
    /// release into it.
    Corrupt(Corruption),
    Ready(BlockView<'a>),
}

pub struct Plan {
    node: String,
    handle_id: String,
    now_ns: u64,
    /// The etcd revision every read of this attempt is pinned to, so the
    /// plan sees one consistent snapshot (None: the latest).
    revision: Option<i64>,
    blocks: BTreeMap<IpNetwork, PlannedBlock>,
    corrupt: BTreeMap<IpNetwork, Corruption>,
    claims: Vec<Claim>,
    /// Pools a claim was planned in, with the revision they were read at:
    /// a claim commits only while its pool is unchanged, so it can never
    /// land in a pool that `pool delete` just removed.
    pool_guards: BTreeMap<String, i64>,
    /// Handles to write, by id. `handle_id`'s own is here too.
    handles: BTreeMap<String, PlannedHandle>,
    /// Handles to delete, with their revision.
    dropped_handles: Vec<(String, i64)>,
}

impl Plan {
    /// A plan for `handle_id` (empty: no handle of its own), starting from
    /// its current document if it exists.
    pub fn new(
        node: &str,
        handle_id: &str,
        handle: Option<Versioned<IpamHandle>>,
        revision: Option<i64>,
    ) -> Self {
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
            revision,
            blocks: BTreeMap::new(),
            corrupt: BTreeMap::new(),
            claims: Vec::new(),
            pool_guards: BTreeMap::new(),
            handles,
            dropped_handles: Vec::new(),
        }
    }

    /// Reads the blocks not yet in the plan, in one round trip, at the
    /// plan's revision. Absent blocks simply stay absent; documents that
    /// cannot be parsed or break an invariant are remembered as corrupt.
    pub async fn load_blocks(&mut self, ds: &Datastore, cidrs: &[IpNetwork]) -> Result<()> {
        let mut wanted: Vec<IpNetwork> = cidrs
            .iter()
            .filter(|c| !self.has_block(c))
            .copied()
            .collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let reads: Vec<Read> = wanted.iter().map(|c| Read::Key(keys::block(c))).collect();
        let (entries, _) = ds.read_batch_at(&reads, self.revision).await?;
        for (cidr, entry) in wanted.into_iter().zip(entries) {
            if let Some(entry) = entry.first() {
                self.adopt(cidr, entry);
            }
        }
        Ok(())
    }

    /// Takes a block document read elsewhere at the plan's revision (the
    /// snapshot reads the hinted blocks along with everything else).
    pub fn adopt(&mut self, cidr: IpNetwork, entry: &RawEntry) {
        if self.has_block(&cidr) {
            return;
        }
        let checked = entry
            .decode::<AllocationBlock>()
            .map_err(|e| Corruption(format!("not a block document: {e}")))
            .and_then(|doc| {
                super::block::check(&doc.value, &cidr)?;
                Ok(doc)
            });
        match checked {
            Ok(doc) => {
                self.blocks.insert(
                    cidr,
                    PlannedBlock {
                        doc: doc.value,
                        mod_revision: Some(doc.mod_revision),
                        changed: false,
                    },
                );
            }
            Err(why) => {
                tracing::warn!(key = %entry.key, reason = %why, "corrupt IPAM block: not used");
                self.corrupt.insert(cidr, why);
            }
        }
    }

    /// True when the block exists (usable or corrupt) or is planned.
    pub fn has_block(&self, cidr: &IpNetwork) -> bool {
        self.blocks.contains_key(cidr) || self.corrupt.contains_key(cidr)
    }

    /// A loaded block. Whoever changes it calls `mark_changed`: only
    /// changed blocks are written.
    pub fn block(&mut self, cidr: &IpNetwork) -> BlockState<'_> {
        if let Some(why) = self.corrupt.get(cidr) {
            return BlockState::Corrupt(why.clone());
        }
        match self.blocks.get_mut(cidr) {
            None => BlockState::Missing,
            Some(b) => match BlockView::new(&mut b.doc, cidr) {
                Ok(view) => BlockState::Ready(view),
                Err(why) => BlockState::Corrupt(why),
            },
        }
    }

    /// The affinity the loaded block names (None: missing or corrupt).
    pub fn block_affinity(&self, cidr: &IpNetwork) -> Option<&str> {
        self.blocks.get(cidr)?.doc.affinity.as_deref()
    }

    pub fn mark_changed(&mut self, cidr: &IpNetwork) {
        if let Some(b) = self.blocks.get_mut(cidr) {
            b.changed = true;
        }
    }

    /// The blocks the plan's own handle holds addresses in once it commits.
    pub fn handle_blocks(&self) -> Vec<IpNetwork> {
        self.handles
            .get(&self.handle_id)
            .map(|h| h.doc.block.keys().filter_map(|c| c.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The blocks this plan changed that still have free addresses.
    pub fn changed_blocks_with_room(&self) -> Vec<IpNetwork> {
        self.blocks
            .iter()
            .filter(|(_, b)| b.changed && !b.doc.unallocated.is_empty())
            .map(|(c, _)| *c)
            .collect()
    }

    /// How many blocks the plan holds (loaded or new).
    pub fn block_total(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks of one family this plan claims.
    pub fn claimed_count(&self, v6: bool) -> usize {
        self.claims
            .iter()
            .filter(|c| c.cidr.is_ipv6() == v6)
            .count()
    }

    /// Creates `cidr` for this node, with its confirmed affinity, in the
    /// same transaction (the end state of libcalico-go's claim sequence),
    /// guarded on the pool `pool_key` still being at `pool_revision`.
    /// `stale_affinity`: the revision of an affinity of ours whose block is
    /// gone (a crashed claim), which is rewritten under that guard.
    pub fn claim_block(
        &mut self,
        cidr: IpNetwork,
        stale_affinity: Option<i64>,
        pool_key: String,
        pool_revision: i64,
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
        self.claims.push(Claim {
            cidr,
            stale_affinity,
        });
        self.pool_guards.insert(pool_key, pool_revision);
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
                    let empty = b.doc.allocations.iter().all(Option::is_none);
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
        for claim in &self.claims {
            let key = keys::block_affinity(&self.node, &claim.cidr);
            batch.upsert(&key, claim.stale_affinity, &BlockAffinity::confirmed());
        }
        for (key, rev) in &self.pool_guards {
            batch.require_unchanged(key, *rev);
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
