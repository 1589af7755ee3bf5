//! Calico block IPAM (calico-datastore.md §1.7): addresses come from blocks
//! that a host claims (block + confirmed affinity), handles `mesos.<uid>`
//! record what each container holds.
//!
//! Every request is planned against one snapshot and written in a single
//! etcd transaction guarded by the mod revisions of everything it read
//! (blocks, handles, affinities): concurrent plugins on many hosts can
//! never hand out one address twice, and a failed request leaves nothing.
//! A lost race re-reads and plans again.

pub mod admin;
pub mod block;
pub mod plan;
pub mod pools;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::config::IpamSettings;
use crate::datastore::model::{
    AllocationAttribute, AllocationBlock, BlockAffinity, ClusterInformation, IpReservation,
    IpamConfig, IpamHandle, Node,
};
use crate::datastore::{keys, Datastore, DatastoreError, RawEntry, Read, Versioned};
use block::{block_cidr_for, host_affinity, AssignError, BlockView};
use plan::Plan;
use pools::{pool_containing, Pool};

/// libcalico-go's `datastoreRetries`.
const MAX_ATTEMPTS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{0}")]
    NotReady(String),
    #[error(
        "No usable {family} IP pool for node '{node}'. Add one with `calico-mesos pool add <CIDR>` \
         (or `calicoctl create` an IPPool); pools must be enabled, allow Workload use and use \
         Automatic assignment"
    )]
    NoPool { family: &'static str, node: String },
    #[error(
        "No free {family} addresses for node '{node}': the usable pools are full, or the node \
         holds its limit of {limit} blocks. Add a pool with `calico-mesos pool add <CIDR>`"
    )]
    Exhausted {
        family: &'static str,
        node: String,
        limit: u32,
    },
    #[error("IP '{0}' already in use.")]
    InUse(IpAddr),
    #[error("IP '{0}' is not in any IP pool.")]
    NotInPool(IpAddr),
    #[error(
        "IP '{ip}' is in block {block}, which belongs to another host, and strict affinity is on."
    )]
    ForeignBlock { ip: IpAddr, block: IpNetwork },
    #[error("gave up after {0} attempts: other writers kept changing the same IPAM data")]
    Contention(usize),
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}

pub type Result<T> = std::result::Result<T, IpamError>;

fn family_name(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// The handle that records a Mesos allocation.
pub fn handle_for_uid(uid: &str) -> String {
    format!("mesos.{uid}")
}

/// What one attempt needs, read in one round trip.
struct Snapshot {
    pools: Vec<Pool>,
    config: IpamConfig,
    reserved: Vec<IpNetwork>,
    node_labels: BTreeMap<String, String>,
    handle: Option<Versioned<IpamHandle>>,
    /// This node's affinities per family (index 0: v4, 1: v6).
    affinities: [Vec<(IpNetwork, BlockAffinity)>; 2],
}

impl Snapshot {
    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.contains(ip))
    }

    fn usable_pools(&self, v6: bool, settings: &IpamSettings) -> Vec<&Pool> {
        self.pools
            .iter()
            .filter(|p| p.is_v6() == v6 && p.usable_for_auto(&self.node_labels, settings))
            .collect()
    }
}

pub struct Ipam<'a> {
    ds: &'a Datastore,
    node: &'a str,
    settings: &'a IpamSettings,
}

/// The outcome of planning one attempt.
enum Planned<T> {
    Ready(T),
    /// Another local client is mid-claim: wait and plan again.
    Wait,
}

impl<'a> Ipam<'a> {
    pub fn new(ds: &'a Datastore, node: &'a str, settings: &'a IpamSettings) -> Self {
        Ipam { ds, node, settings }
    }

    /// Reads everything an attempt needs; fails if Calico is not ready.
    async fn snapshot(&self, handle_id: Option<&str>) -> Result<Snapshot> {
        let reads = vec![
            Read::Key(keys::cluster_information()),
            Read::Key(keys::node(self.node)),
            Read::Key(keys::ipam_config()),
            Read::Prefix(keys::ip_pools_prefix()),
            Read::Prefix(keys::ip_reservations_prefix()),
            Read::Prefix(keys::host_affinities_prefix(self.node, false)),
            Read::Prefix(keys::host_affinities_prefix(self.node, true)),
            Read::Key(keys::handle(handle_id.unwrap_or("-"))),
        ];
        let r = self.ds.read_batch(&reads).await?;
        let node = check_ready(&r[0], &r[1], self.node)?;
        let config = match r[2].first() {
            Some(e) => e.decode::<IpamConfig>()?.value,
            None => IpamConfig::default(),
        };
        let pools = r[3].iter().filter_map(Pool::from_entry).collect();
        let mut reserved = Vec::new();
        for e in &r[4] {
            let res: Versioned<IpReservation> = e.decode()?;
            reserved.extend(
                res.value
                    .spec
                    .reserved_cidrs
                    .iter()
                    .filter_map(|c| parse_cidr_or_ip(c)),
            );
        }
        let affinities = [parse_affinities(&r[5]), parse_affinities(&r[6])];
        let handle = match (handle_id, r[7].first()) {
            (Some(_), Some(e)) => Some(e.decode()?),
            _ => None,
        };
        Ok(Snapshot {
            pools,
            config,
            reserved,
            node_labels: node.value.metadata.labels,
            handle,
            affinities,
        })
    }

    /// Checks that Calico is ready for this node (ClusterInformation and
    /// the Node resource), as the CNI plugin does before any work, and
    /// returns the Node.
    pub async fn check_ready(&self) -> Result<Node> {
        let r = self
            .ds
            .read_batch(&[
                Read::Key(keys::cluster_information()),
                Read::Key(keys::node(self.node)),
            ])
            .await?;
        check_ready(&r[0], &r[1], self.node).map(|n| n.value)
    }

    /// Picks `num_v4` + `num_v6` free addresses for `handle_id`, plus the
    /// `specific` ones (which must be free): all or nothing.
    pub async fn allocate(
        &self,
        handle_id: &str,
        num_v4: u32,
        num_v6: u32,
        specific: &[IpAddr],
    ) -> Result<Vec<IpAddr>> {
        let attr = attribute(handle_id, self.node);
        for attempt in 0..MAX_ATTEMPTS {
            let snap = self.snapshot(Some(handle_id)).await?;
            let mut plan = Plan::new(self.node, handle_id, snap.handle.clone());
            let mut got = self
                .plan_specific(&mut plan, &snap, specific, &attr)
                .await?;
            let mut waiting = false;
            for (v6, n) in [(false, num_v4), (true, num_v6)] {
                if n == 0 {
                    continue;
                }
                match self
                    .plan_auto(&mut plan, &snap, v6, n as usize, &attr)
                    .await?
                {
                    Planned::Ready(ips) => got.extend(ips),
                    Planned::Wait => waiting = true,
                }
            }
            if !waiting && self.ds.commit(&plan.into_batch()).await? {
                return Ok(got);
            }
            tracing::debug!(attempt, waiting, "IPAM write lost a race; planning again");
            backoff(attempt).await;
        }
        Err(IpamError::Contention(MAX_ATTEMPTS))
    }

    /// Assigns specific addresses (reserve, static IPs) to the plan.
    async fn plan_specific(
        &self,
        plan: &mut Plan,
        snap: &Snapshot,
        ips: &[IpAddr],
        attr: &AllocationAttribute,
    ) -> Result<Vec<IpAddr>> {
        let mut cidrs = Vec::with_capacity(ips.len());
        for ip in ips {
            let pool = pool_containing(&snap.pools, *ip).ok_or(IpamError::NotInPool(*ip))?;
            cidrs.push(block_cidr_for(*ip, pool.block_size));
        }
        plan.load_blocks(self.ds, &cidrs).await?;
        for (ip, cidr) in ips.iter().zip(&cidrs) {
            if !plan.has_block(cidr) {
                // Nobody holds this block yet: claim it for this host.
                plan.claim_block(*cidr, &snap.affinities);
            }
            let mine = host_affinity(self.node);
            let block = plan.block_mut(cidr);
            if snap.config.strict_affinity && block.affinity.as_deref() != Some(mine.as_str()) {
                return Err(IpamError::ForeignBlock {
                    ip: *ip,
                    block: *cidr,
                });
            }
            let mut view = BlockView::new(block).ok_or_else(|| corrupt_block(cidr))?;
            match view.assign(*ip, attr) {
                Ok(()) => {
                    plan.mark_changed(cidr);
                    plan.count_handle(cidr, 1);
                }
                Err(AssignError::InUse) => return Err(IpamError::InUse(*ip)),
                Err(AssignError::OutsideBlock) => return Err(corrupt_block(cidr)),
            }
        }
        Ok(ips.to_vec())
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
        let affinities = &snap.affinities[usize::from(v6)];
        let mine: Vec<IpNetwork> = affinities
            .iter()
            .filter(|(c, a)| a.is_confirmed() && in_usable_pool(c))
            .map(|(c, _)| *c)
            .collect();
        let someone_claiming = affinities.iter().any(|(_, a)| a.is_pending());
        plan.load_blocks(self.ds, &mine).await?;

        let mut got = Vec::with_capacity(n);
        let owner = host_affinity(self.node);
        for cidr in &mine {
            if got.len() == n {
                break;
            }
            if !plan.has_block(cidr) {
                continue; // stale affinity without a block
            }
            let block = plan.block_mut(cidr);
            if block.affinity.as_deref() != Some(owner.as_str()) {
                continue; // stale affinity: the block is someone else's
            }
            got.extend(self.take(plan, cidr, n - got.len(), snap, attr)?);
        }

        // Claim new blocks while short.
        if got.len() < n && snap.config.auto_allocate() {
            let mut existing: Option<BTreeSet<IpNetwork>> = None;
            while got.len() < n {
                let owned = affinities.len() + plan.claimed_count(v6);
                if owned as u32 >= snap.config.block_limit() {
                    break;
                }
                if existing.is_none() {
                    existing = Some(self.block_cidrs(v6).await?);
                }
                let taken = existing.as_ref().expect("loaded above");
                let Some(cidr) = find_free_block(&pools, taken, plan, snap) else {
                    break;
                };
                plan.claim_block(cidr, &snap.affinities);
                got.extend(self.take(plan, &cidr, n - got.len(), snap, attr)?);
            }
        }

        if got.len() < n && self.settings.borrow && !snap.config.strict_affinity {
            got.extend(
                self.plan_borrow(plan, snap, &pools, n - got.len(), attr)
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

    /// Takes up to `n` free, unreserved addresses from a planned block.
    fn take(
        &self,
        plan: &mut Plan,
        cidr: &IpNetwork,
        n: usize,
        snap: &Snapshot,
        attr: &AllocationAttribute,
    ) -> Result<Vec<IpAddr>> {
        let block = plan.block_mut(cidr);
        let mut view = BlockView::new(block).ok_or_else(|| corrupt_block(cidr))?;
        let ips = view.assign_next(n, attr, |ip| snap.is_reserved(ip));
        if !ips.is_empty() {
            plan.mark_changed(cidr);
            plan.count_handle(cidr, ips.len() as u64);
        }
        Ok(ips)
    }

    /// Non-strict fallback: addresses from any block of a usable pool.
    async fn plan_borrow(
        &self,
        plan: &mut Plan,
        snap: &Snapshot,
        pools: &[&Pool],
        n: usize,
        attr: &AllocationAttribute,
    ) -> Result<Vec<IpAddr>> {
        let v6 = pools[0].is_v6();
        let mut others: Vec<IpNetwork> = self
            .block_cidrs(v6)
            .await?
            .into_iter()
            .filter(|c| pools.iter().any(|p| p.cidr.contains(c.network())))
            .collect();
        fastrand::shuffle(&mut others);
        plan.load_blocks(self.ds, &others).await?;
        let mut got = Vec::new();
        for cidr in &others {
            if got.len() == n {
                break;
            }
            if plan.has_block(cidr) {
                got.extend(self.take(plan, cidr, n - got.len(), snap, attr)?);
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

    /// Every block CIDR of one family (keys only).
    async fn block_cidrs(&self, v6: bool) -> Result<BTreeSet<IpNetwork>> {
        Ok(self
            .ds
            .list_keys(&keys::blocks_prefix(v6))
            .await?
            .iter()
            .filter_map(|k| keys::cidr_from_key(k))
            .collect())
    }

    /// Releases every address held by `handle_id`. Releasing what is already
    /// free succeeds.
    pub async fn release_handle(&self, handle_id: &str) -> Result<u64> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(handle) = self.ds.get::<IpamHandle>(&keys::handle(handle_id)).await? else {
                return Ok(0);
            };
            let cidrs: Vec<IpNetwork> = handle
                .value
                .block
                .keys()
                .filter_map(|c| c.parse().ok())
                .collect();
            let mut plan = Plan::new(self.node, handle_id, Some(handle));
            plan.load_blocks(self.ds, &cidrs).await?;
            let mut freed = 0;
            for cidr in &cidrs {
                if !plan.has_block(cidr) {
                    continue; // a missing block counts as released
                }
                let mut view =
                    BlockView::new(plan.block_mut(cidr)).ok_or_else(|| corrupt_block(cidr))?;
                let n = view.release_handle(handle_id);
                if n > 0 {
                    freed += n;
                    plan.mark_changed(cidr);
                }
            }
            plan.drop_handle();
            if self.ds.commit(&plan.into_batch()).await? {
                return Ok(freed);
            }
            backoff(attempt).await;
        }
        Err(IpamError::Contention(MAX_ATTEMPTS))
    }

    /// Releases specific addresses, whoever holds them. Already-free ones
    /// are skipped. Returns how many were freed.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<u64> {
        if ips.is_empty() {
            return Ok(0);
        }
        for attempt in 0..MAX_ATTEMPTS {
            let pools: Vec<Pool> = self
                .ds
                .read_batch(&[Read::Prefix(keys::ip_pools_prefix())])
                .await?
                .remove(0)
                .iter()
                .filter_map(Pool::from_entry)
                .collect();
            let mut by_block: BTreeMap<IpNetwork, Vec<IpAddr>> = BTreeMap::new();
            let mut strays = Vec::new();
            for ip in ips {
                match pool_containing(&pools, *ip) {
                    Some(p) => by_block
                        .entry(block_cidr_for(*ip, p.block_size))
                        .or_default()
                        .push(*ip),
                    None => strays.push(*ip),
                }
            }
            // Addresses in no pool: find their blocks by scanning.
            for ip in strays {
                let all = self.block_cidrs(ip.is_ipv6()).await?;
                if let Some(c) = all.iter().find(|c| c.contains(ip)) {
                    by_block.entry(*c).or_default().push(ip);
                }
            }
            let cidrs: Vec<IpNetwork> = by_block.keys().copied().collect();
            let mut plan = Plan::new(self.node, "", None);
            plan.load_blocks(self.ds, &cidrs).await?;
            let mut per_handle: BTreeMap<String, BTreeMap<IpNetwork, u64>> = BTreeMap::new();
            let mut freed = 0;
            for (cidr, block_ips) in &by_block {
                if !plan.has_block(cidr) {
                    continue;
                }
                let mut view =
                    BlockView::new(plan.block_mut(cidr)).ok_or_else(|| corrupt_block(cidr))?;
                let released = view.release(block_ips);
                if !released.is_empty() {
                    plan.mark_changed(cidr);
                }
                for (handle, count) in released {
                    freed += count;
                    if let Some(h) = handle {
                        *per_handle.entry(h).or_default().entry(*cidr).or_default() += count;
                    }
                }
            }
            if freed == 0 {
                return Ok(0);
            }
            let handle_keys: Vec<String> = per_handle.keys().map(|h| keys::handle(h)).collect();
            let handles = self.ds.get_many::<IpamHandle>(&handle_keys).await?;
            for ((id, counts), doc) in per_handle.iter().zip(handles) {
                plan.decrement_handle(id, doc, counts);
            }
            if self.ds.commit(&plan.into_batch()).await? {
                return Ok(freed);
            }
            backoff(attempt).await;
        }
        Err(IpamError::Contention(MAX_ATTEMPTS))
    }
}

/// A block CIDR no block or affinity uses yet, searched from a random
/// start in each pool so that hosts claiming at once rarely collide.
fn find_free_block(
    pools: &[&Pool],
    taken: &BTreeSet<IpNetwork>,
    plan: &Plan,
    snap: &Snapshot,
) -> Option<IpNetwork> {
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
            let all_reserved = snap
                .reserved
                .iter()
                .any(|r| r.prefix() <= cidr.prefix() && r.contains(cidr.network()));
            if !all_reserved {
                return Some(cidr);
            }
        }
    }
    None
}

fn check_ready(cluster: &[RawEntry], node: &[RawEntry], name: &str) -> Result<Versioned<Node>> {
    let Some(ci) = cluster.first() else {
        return Err(IpamError::NotReady(
            "Calico is not initialised: ClusterInformation 'default' is missing from etcd. \
             Start calico/node, which creates it"
                .into(),
        ));
    };
    let ci: Versioned<ClusterInformation> = ci.decode()?;
    if ci.value.spec.datastore_ready == Some(false) {
        return Err(IpamError::NotReady(
            "the Calico datastore is not ready (ClusterInformation datastoreReady is false)".into(),
        ));
    }
    match node.first() {
        Some(n) => Ok(n.decode()?),
        None => Err(IpamError::NotReady(format!(
            "Calico node '{name}' does not exist in etcd: start calico/node on this agent, \
             or set NODENAME (or [node] name) to the name calico/node uses"
        ))),
    }
}

fn parse_affinities(entries: &[RawEntry]) -> Vec<(IpNetwork, BlockAffinity)> {
    entries
        .iter()
        .filter_map(|e| {
            let cidr = keys::cidr_from_key(&e.key)?;
            let aff = BlockAffinity::parse(&e.value).ok()?;
            Some((cidr, aff))
        })
        .collect()
}

fn parse_cidr_or_ip(text: &str) -> Option<IpNetwork> {
    text.parse::<IpNetwork>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNetwork::from))
}

fn corrupt_block(cidr: &IpNetwork) -> IpamError {
    IpamError::Datastore(DatastoreError::Corrupt {
        key: keys::block(cidr),
        detail: "allocations do not match the block size".into(),
    })
}

/// The attribute every address of one request shares (§1.7.2).
fn attribute(handle_id: &str, node: &str) -> AllocationAttribute {
    AllocationAttribute {
        handle_id: Some(handle_id.to_string()),
        secondary: Some(BTreeMap::from([
            ("node".to_string(), node.to_string()),
            ("timestamp".to_string(), go_style_timestamp()),
        ])),
        extra: Default::default(),
    }
}

/// `2026-01-09 09:20:11.482913044 +0000 UTC`, as the CNI plugin writes it.
fn go_style_timestamp() -> String {
    let t = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    format!(
        "{} +0000 UTC",
        t.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

async fn backoff(attempt: usize) {
    let cap = 5 + 5 * attempt.min(10) as u64;
    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=cap))).await;
}

/// Helper for reports: a block's CIDR and document.
pub fn parse_block(entry: &RawEntry) -> Option<(IpNetwork, AllocationBlock)> {
    let doc: AllocationBlock = entry.decode().ok()?.value;
    Some((doc.cidr.parse().ok()?, doc))
}
