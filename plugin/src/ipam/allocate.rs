//! Assignment (calico-datastore.md §1.7.6 A and B): this host's blocks
//! first, then a newly claimed block, then (only if enabled) other hosts'
//! blocks; specific addresses for `reserve` and static IPs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::block::{block_cidr_for, host_affinity, AssignError};
use super::plan::{BlockState, Plan};
use super::pools::{pool_containing, Pool};
use super::{
    affinity, attribute, corrupt_block, family_name, hints, retry, Affinities, Affinity, Ipam,
    IpamError, Result, Snapshot,
};
use crate::datastore::model::AllocationAttribute;
use crate::datastore::{keys, Read};

/// How many of this host's blocks the first lazy read fetches (each
/// further read fetches four times more).
const BLOCKS_PER_READ: usize = 4;

/// Orders `cidrs` for reading: those the plan already holds (read with
/// the snapshot: the hinted blocks) first, as a batch of their own that
/// costs no round trip; then the rest in batches of `BLOCKS_PER_READ`,
/// each `grow` times larger than the one before (1: fixed size).
fn read_batches(cidrs: &mut [IpNetwork], plan: &Plan, grow: usize) -> Vec<std::ops::Range<usize>> {
    cidrs.sort_by_key(|c| !plan.has_block(c));
    let held = cidrs.iter().take_while(|c| plan.has_block(c)).count();
    batch_ranges(cidrs.len(), held, grow)
}

/// `read_batches` over `len` CIDRs of which the first `held` need no read.
fn batch_ranges(len: usize, held: usize, grow: usize) -> Vec<std::ops::Range<usize>> {
    let mut start = held.min(len);
    let mut out = Vec::new();
    if start > 0 {
        out.push(0..start);
    }
    let mut size = BLOCKS_PER_READ;
    while start < len {
        let end = (start + size).min(len);
        out.push(start..end);
        start = end;
        size *= grow;
    }
    out
}

/// The outcome of planning one attempt.
enum Planned<T> {
    Ready(T),
    /// Another local client is mid-claim (or a block is being released):
    /// wait and plan again.
    Wait,
}

impl Ipam<'_> {
    /// Picks `num_v4` + `num_v6` free addresses for `handle_id`, plus the
    /// `specific` ones (which must be free): all or nothing.
    pub async fn allocate(
        &self,
        handle_id: &str,
        num_v4: u32,
        num_v6: u32,
        specific: &[IpAddr],
    ) -> Result<Vec<IpAddr>> {
        let _queued = self.host_lock().await?;
        let attr = attribute(handle_id, self.node);
        let hinted = hints::read(&self.settings.lock_dir, self.node);
        let (ips, room, held) =
            retry(|| self.try_allocate(handle_id, num_v4, num_v6, specific, &attr, &hinted))
                .await?;
        if room != hinted {
            hints::write(&self.settings.lock_dir, self.node, &room);
        }
        hints::record_handle(&self.settings.lock_dir, self.node, handle_id, &held);
        Ok(ips)
    }

    /// One attempt; None: it lost a race (or must wait) and is planned
    /// again. Also returns the blocks that still have room (the next hint)
    /// and the blocks the handle holds addresses in (its record).
    async fn try_allocate(
        &self,
        handle_id: &str,
        num_v4: u32,
        num_v6: u32,
        specific: &[IpAddr],
        attr: &AllocationAttribute,
        hinted: &[IpNetwork],
    ) -> Result<Option<(Vec<IpAddr>, Vec<IpNetwork>, Vec<IpNetwork>)>> {
        let snap = self.snapshot(Some(handle_id), hinted).await?;
        let mut plan = Plan::new(
            self.node,
            handle_id,
            snap.handle.clone(),
            Some(snap.revision),
        );
        for (cidr, entry) in &snap.hinted {
            plan.adopt(*cidr, entry);
        }
        let mut got = match self.plan_specific(&mut plan, &snap, specific, attr).await? {
            Planned::Ready(ips) => ips,
            Planned::Wait => return Ok(None),
        };
        for (v6, n) in [(false, num_v4), (true, num_v6)] {
            if n == 0 {
                continue;
            }
            match self
                .plan_auto(&mut plan, &snap, v6, n as usize, attr)
                .await?
            {
                Planned::Ready(ips) => got.extend(ips),
                Planned::Wait => return Ok(None),
            }
        }
        let room = plan.changed_blocks_with_room();
        let held = plan.handle_blocks();
        Ok(self
            .ds
            .commit(&plan.into_batch())
            .await?
            .then_some((got, room, held)))
    }

    /// Assigns specific addresses (reserve, static IPs) to the plan.
    async fn plan_specific(
        &self,
        plan: &mut Plan,
        snap: &Snapshot,
        ips: &[IpAddr],
        attr: &AllocationAttribute,
    ) -> Result<Planned<Vec<IpAddr>>> {
        let mut targets = Vec::with_capacity(ips.len());
        for ip in ips {
            let pool = pool_containing(&snap.pools, *ip).ok_or(IpamError::NotInPool(*ip))?;
            targets.push((*ip, block_cidr_for(*ip, pool.block_size), pool));
        }
        let cidrs: Vec<IpNetwork> = targets.iter().map(|(_, c, _)| *c).collect();
        plan.load_blocks(self.ds, &cidrs).await?;
        let mine = host_affinity(self.node);
        for (ip, cidr, pool) in &targets {
            if !plan.has_block(cidr) {
                // Nobody holds this block yet: claim it for this host.
                let all = self.all_affinities(snap).await?;
                match claimable(all, cidr) {
                    Claimable::Yes(stale) => {
                        plan.claim_block(*cidr, stale, pool.doc.key.clone(), pool.doc.mod_revision)
                    }
                    Claimable::Busy => return Ok(Planned::Wait),
                }
            }
            if snap.config.strict_affinity && plan.block_affinity(cidr) != Some(mine.as_str()) {
                if let BlockState::Ready(_) = plan.block(cidr) {
                    return Err(IpamError::ForeignBlock {
                        ip: *ip,
                        block: *cidr,
                    });
                }
            }
            match plan.block(cidr) {
                BlockState::Ready(mut view) => match view.assign(*ip, attr) {
                    Ok(()) => {
                        plan.mark_changed(cidr);
                        plan.count_handle(cidr, 1);
                    }
                    Err(AssignError::InUse) => return Err(IpamError::InUse(*ip)),
                    Err(AssignError::OutsideBlock) => {
                        return Err(corrupt_block(cidr, format!("{ip} is outside it")))
                    }
                },
                BlockState::Corrupt(why) => return Err(corrupt_block(cidr, why)),
                BlockState::Missing => return Err(corrupt_block(cidr, "vanished from the plan")),
            }
        }
        Ok(Planned::Ready(ips.to_vec()))
    }

    /// Picks `n` addresses of one family: this host's blocks first, then a
    /// newly claimed block, then (only if enabled) other hosts' blocks.
    async fn plan_auto(
        &self,
        plan: &mut Plan,
        snap: &Snapshot,
        v6: bool,
        n: usize,
        attr: &AllocationAttribute,
    ) -> Result<Planned<Vec<IpAddr>>> {
        let pools = snap.usable_pools(v6, self.settings);
        if pools.is_empty() {
            return Err(IpamError::NoPool {
                family: family_name(v6),
                node: self.node.to_string(),
            });
        }
        let in_usable_pool = |c: &IpNetwork| pools.iter().any(|p| p.cidr.contains(c.network()));
        let own_block = |a: &Affinity| a.doc.is_confirmed() && in_usable_pool(&a.cidr);
        let fam = usize::from(v6);
        let mut got = Vec::with_capacity(n);

        // The hinted blocks, read with the snapshot (and their affinities
        // in place of all): when they have room, nothing else is read.
        if snap.all_affinities.get().is_none() {
            let hinted: Vec<IpNetwork> = snap.hinted_affinities[fam]
                .iter()
                .filter(|a| own_block(a))
                .map(|a| a.cidr)
                .collect();
            self.take_from_own(plan, &hinted, n, &mut got, snap, attr);
            if got.len() == n {
                return Ok(Planned::Ready(got));
            }
        }

        let all = self.all_affinities(snap).await?;
        let affinities = &all[fam];
        let mut mine: Vec<IpNetwork> = affinities
            .iter()
            .filter(|a| own_block(a))
            .map(|a| a.cidr)
            .collect();
        let someone_claiming = affinities.iter().any(|a| a.doc.is_pending());
        // Lazily, stopping as soon as there is room: a host with hundreds
        // of full blocks reads only what it needs.
        for range in read_batches(&mut mine, plan, 4) {
            if got.len() == n {
                break;
            }
            let batch = &mine[range];
            plan.load_blocks(self.ds, batch).await?;
            self.take_from_own(plan, batch, n, &mut got, snap, attr);
        }

        // Claim new blocks while short, from the block listing of the
        // same snapshot (read at most once per attempt; borrowing uses it
        // too).
        let mut existing: Option<BTreeSet<IpNetwork>> = None;
        if got.len() < n && snap.config.auto_allocate() {
            while got.len() < n {
                let owned = affinities.len() + plan.claimed_count(v6);
                if owned as u32 >= snap.config.block_limit() {
                    break;
                }
                if existing.is_none() {
                    existing = Some(self.block_cidrs(v6, snap.revision).await?);
                }
                let taken = existing.as_ref().expect("loaded above");
                let Some((cidr, pool, stale)) = find_free_block(&pools, taken, plan, snap, all)
                else {
                    break;
                };
                plan.claim_block(cidr, stale, pool.doc.key.clone(), pool.doc.mod_revision);
                got.extend(self.take(plan, &cidr, n - got.len(), snap, attr));
            }
        }

        if got.len() < n && self.settings.borrow && !snap.config.strict_affinity {
            got.extend(
                self.plan_borrow(plan, snap, &pools, existing, n - got.len(), attr)
                    .await?,
            );
        }

        if got.len() < n {
            if someone_claiming {
                return Ok(Planned::Wait);
            }
            return Err(IpamError::Exhausted {
                family: family_name(v6),
                node: self.node.to_string(),
                limit: snap.config.block_limit(),
            });
        }
        Ok(Planned::Ready(got))
    }

    /// Fills `got` up to `n` from those of `cidrs` (already in the plan)
    /// whose block is this host's; a stale affinity (no block, or someone
    /// else's block) and a corrupt block are skipped, the latter logged.
    fn take_from_own(
        &self,
        plan: &mut Plan,
        cidrs: &[IpNetwork],
        n: usize,
        got: &mut Vec<IpAddr>,
        snap: &Snapshot,
        attr: &AllocationAttribute,
    ) {
        let owner = host_affinity(self.node);
        for cidr in cidrs {
            if got.len() == n {
                break;
            }
            if plan.block_affinity(cidr) == Some(owner.as_str()) {
                got.extend(self.take(plan, cidr, n - got.len(), snap, attr));
            }
        }
    }

    /// Takes up to `n` free, unreserved addresses from a planned block
    /// (none from a corrupt one).
    fn take(
        &self,
        plan: &mut Plan,
        cidr: &IpNetwork,
        n: usize,
        snap: &Snapshot,
        attr: &AllocationAttribute,
    ) -> Vec<IpAddr> {
        let BlockState::Ready(mut view) = plan.block(cidr) else {
            return Vec::new();
        };
        let ips = view.assign_next(n, attr, |ip| snap.is_reserved(ip));
        if !ips.is_empty() {
            plan.mark_changed(cidr);
            plan.count_handle(cidr, ips.len() as u64);
        }
        ips
    }

    /// Non-strict fallback: addresses from any block of a usable pool
    /// (`existing`: the family's block CIDRs, if the attempt read them).
    async fn plan_borrow(
        &self,
        plan: &mut Plan,
        snap: &Snapshot,
        pools: &[&Pool],
        existing: Option<BTreeSet<IpNetwork>>,
        n: usize,
        attr: &AllocationAttribute,
    ) -> Result<Vec<IpAddr>> {
        let v6 = pools[0].is_v6();
        let existing = match existing {
            Some(cidrs) => cidrs,
            None => self.block_cidrs(v6, snap.revision).await?,
        };
        let mut others: Vec<IpNetwork> = existing
            .into_iter()
            .filter(|c| pools.iter().any(|p| p.cidr.contains(c.network())))
            .collect();
        fastrand::shuffle(&mut others);
        // A hinted block (the one the last borrow took from) first, at no
        // read; the others sampled a few blocks per read, not the whole
        // cluster's blocks.
        let mut got = Vec::new();
        for range in read_batches(&mut others, plan, 1) {
            if got.len() == n {
                break;
            }
            let batch = &others[range];
            plan.load_blocks(self.ds, batch).await?;
            for cidr in batch {
                if got.len() < n {
                    got.extend(self.take(plan, cidr, n - got.len(), snap, attr));
                }
            }
        }
        if !got.is_empty() {
            tracing::info!(
                count = got.len(),
                "borrowed addresses from other hosts' blocks"
            );
        }
        Ok(got)
    }

    /// Every block CIDR of one family (keys only), at `revision`.
    pub(super) async fn block_cidrs(&self, v6: bool, revision: i64) -> Result<BTreeSet<IpNetwork>> {
        let (r, _) = self
            .ds
            .read_batch_at(&[Read::PrefixKeys(keys::blocks_prefix(v6))], Some(revision))
            .await?;
        Ok(r[0]
            .iter()
            .filter_map(|e| keys::cidr_from_key(&e.key))
            .collect())
    }
}

/// Whether this node may claim a block CIDR no block uses.
enum Claimable {
    /// Yes; Some: our stale affinity (its block is gone) at this revision.
    Yes(Option<i64>),
    /// Our affinity for it is pending (another local client mid-claim) or
    /// pendingDeletion (being released): never resurrect it.
    Busy,
}

fn claimable(all: &Affinities, cidr: &IpNetwork) -> Claimable {
    match affinity(all, cidr) {
        None => Claimable::Yes(None),
        Some(a) if a.doc.is_confirmed() => Claimable::Yes(Some(a.mod_revision)),
        Some(_) => Claimable::Busy,
    }
}

/// A block CIDR no block uses yet, with its pool, searched from a random
/// start in each pool so that hosts claiming at once rarely collide.
fn find_free_block<'p>(
    pools: &[&'p Pool],
    taken: &BTreeSet<IpNetwork>,
    plan: &Plan,
    snap: &Snapshot,
    all: &Affinities,
) -> Option<(IpNetwork, &'p Pool, Option<i64>)> {
    for pool in pools {
        let count = pool.block_count();
        let start = fastrand::u128(0..count);
        // Each taken block (or fully reserved one) can push the search one
        // step on, so a pool with a free block yields it within this reach.
        let reach = count.min(taken.len() as u128 + plan.block_total() as u128 + 1024);
        for step in 0..reach {
            let cidr = pool.block_at((start + step) % count);
            if taken.contains(&cidr) || plan.has_block(&cidr) {
                continue;
            }
            let Claimable::Yes(stale) = claimable(all, &cidr) else {
                continue;
            };
            let all_reserved = snap
                .reserved
                .iter()
                .any(|r| r.prefix() <= cidr.prefix() && r.contains(cidr.network()));
            if !all_reserved {
                return Some((cidr, pool, stale));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::batch_ranges;

    #[test]
    fn hinted_blocks_are_a_batch_of_their_own_then_batches_grow() {
        assert_eq!(batch_ranges(0, 0, 4), vec![]);
        assert_eq!(batch_ranges(3, 0, 4), vec![0..3]);
        assert_eq!(batch_ranges(30, 0, 4), vec![0..4, 4..20, 20..30]);
        assert_eq!(batch_ranges(30, 1, 4), vec![0..1, 1..5, 5..21, 21..30]);
        assert_eq!(batch_ranges(2, 2, 4), vec![0..2]);
        assert_eq!(batch_ranges(10, 1, 1), vec![0..1, 1..5, 5..9, 9..10]);
    }
}
