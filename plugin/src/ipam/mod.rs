//! Calico block IPAM (calico-datastore.md §1.7): addresses come from blocks
//! that a host claims (block + confirmed affinity), handles `mesos.<uid>`
//! record what each container holds.
//!
//! Every request is planned against one snapshot (all its reads pinned to
//! one etcd revision) and written in a single etcd transaction guarded by
//! the mod revisions of everything it read (blocks, handles, affinities,
//! the pool of a claim): concurrent plugins on many hosts can never hand
//! out one address twice, and a failed request leaves nothing. A lost race
//! re-reads and plans again. The plugins of one host queue on a host lock
//! (`lock.rs`) instead of racing each other.
//!
//! - `allocate.rs`: automatic and specific assignment;
//! - `release.rs`: release by handle and by address;
//! - `ownership.rs`: who may free an address;
//! - `block.rs`, `plan.rs`: block invariants and one attempt's writes.

pub mod admin;
mod allocate;
pub mod block;
pub mod check;
mod hints;
pub mod lock;
pub mod lookup;
pub mod ownership;
pub mod plan;
pub mod pools;
mod release;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::config::IpamSettings;
use crate::datastore::model::{
    AllocationAttribute, AllocationBlock, BlockAffinity, ClusterInformation, IpReservation,
    IpamConfig, IpamHandle, Node,
};
use crate::datastore::{keys, Datastore, DatastoreError, RawEntry, Read, Versioned};
use lock::HostLock;
use pools::Pool;

pub use release::{ContainerRelease, Released};

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
    #[error(
        "IPAM block {key} is corrupt ({reason}); refusing to use it. `calico-mesos ipam show` \
         lists the blocks; repair or delete the document"
    )]
    CorruptBlock { key: String, reason: String },
    #[error("{0}")]
    Lock(String),
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

/// One affinity key of this node.
#[derive(Debug, Clone)]
struct Affinity {
    cidr: IpNetwork,
    doc: BlockAffinity,
    mod_revision: i64,
}

/// What one attempt needs, read in one round trip at `revision`.
struct Snapshot {
    revision: i64,
    pools: Vec<Pool>,
    config: IpamConfig,
    reserved: Vec<IpNetwork>,
    node_labels: BTreeMap<String, String>,
    handle: Option<Versioned<IpamHandle>>,
    /// This node's affinities per family (index 0: v4, 1: v6), all of
    /// them: read with the snapshot when there is no hint, else only when
    /// the hinted blocks are not enough (`Ipam::all_affinities`).
    all_affinities: OnceCell<Affinities>,
    /// The affinities of the hinted blocks, read with the snapshot in
    /// place of all of them: a host with hundreds of blocks allocates from
    /// the hinted one without reading the others' keys.
    hinted_affinities: Affinities,
    /// The hinted blocks, read with everything else.
    hinted: Vec<(IpNetwork, RawEntry)>,
}

/// Affinities per family (index 0: v4, 1: v6).
type Affinities = [Vec<Affinity>; 2];

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

/// This node's affinity for `cidr`, among all of them.
fn affinity<'s>(all: &'s Affinities, cidr: &IpNetwork) -> Option<&'s Affinity> {
    all[usize::from(cidr.is_ipv6())]
        .iter()
        .find(|a| a.cidr == *cidr)
}

pub struct Ipam<'a> {
    ds: &'a Datastore,
    node: &'a str,
    settings: &'a IpamSettings,
}

impl<'a> Ipam<'a> {
    pub fn new(ds: &'a Datastore, node: &'a str, settings: &'a IpamSettings) -> Self {
        Ipam { ds, node, settings }
    }

    /// Queues behind the other plugins of this host for one IPAM
    /// plan-and-commit; held until the returned guard drops.
    async fn host_lock(&self) -> Result<HostLock> {
        HostLock::acquire(
            &self.settings.lock_dir,
            self.node,
            Duration::from_millis(self.settings.lock_timeout_ms),
        )
        .await
        .map_err(IpamError::Lock)
    }

    /// Reads everything an attempt needs, with the `hinted` blocks and
    /// their affinities (all affinities when there is no hint); fails if
    /// Calico is not ready.
    async fn snapshot(&self, handle_id: Option<&str>, hinted: &[IpNetwork]) -> Result<Snapshot> {
        let mut reads = vec![
            Read::Key(keys::cluster_information()),
            Read::Key(keys::node(self.node)),
            Read::Key(keys::ipam_config()),
            Read::Prefix(keys::ip_pools_prefix()),
            Read::Prefix(keys::ip_reservations_prefix()),
            Read::Key(keys::handle(handle_id.unwrap_or("-"))),
        ];
        if hinted.is_empty() {
            reads.extend(self.affinity_reads());
        } else {
            reads.extend(
                hinted
                    .iter()
                    .map(|c| Read::Key(keys::block_affinity(self.node, c))),
            );
        }
        reads.extend(hinted.iter().map(|c| Read::Key(keys::block(c))));
        let (r, revision) = self.ds.read_batch_at(&reads, None).await?;
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
        let handle = match (handle_id, r[5].first()) {
            (Some(_), Some(e)) => Some(e.decode()?),
            _ => None,
        };
        let all_affinities = OnceCell::new();
        let mut hinted_affinities: Affinities = Default::default();
        let blocks_at = if hinted.is_empty() {
            let _ = all_affinities.set([parse_affinities(&r[6]), parse_affinities(&r[7])]);
            8
        } else {
            for a in r[6..6 + hinted.len()]
                .iter()
                .flat_map(|e| parse_affinities(e))
            {
                hinted_affinities[usize::from(a.cidr.is_ipv6())].push(a);
            }
            6 + hinted.len()
        };
        let hinted = hinted
            .iter()
            .zip(&r[blocks_at..])
            .filter_map(|(c, e)| Some((*c, e.first()?.clone())))
            .collect();
        Ok(Snapshot {
            revision,
            pools,
            config,
            reserved,
            node_labels: node.value.metadata.labels,
            handle,
            all_affinities,
            hinted_affinities,
            hinted,
        })
    }

    /// The reads of this node's affinity keys, v4 then v6.
    fn affinity_reads(&self) -> [Read; 2] {
        [
            Read::Prefix(keys::host_affinities_prefix(self.node, false)),
            Read::Prefix(keys::host_affinities_prefix(self.node, true)),
        ]
    }

    /// All of this node's affinities as of the snapshot's revision: read
    /// now (one round trip, pinned to that revision, so the attempt still
    /// plans against one consistent view) unless the snapshot has them.
    async fn all_affinities<'s>(&self, snap: &'s Snapshot) -> Result<&'s Affinities> {
        if let Some(all) = snap.all_affinities.get() {
            return Ok(all);
        }
        let (r, _) = self
            .ds
            .read_batch_at(&self.affinity_reads(), Some(snap.revision))
            .await?;
        Ok(snap
            .all_affinities
            .get_or_init(|| [parse_affinities(&r[0]), parse_affinities(&r[1])]))
    }
}

/// The readiness check of `check_ready` over entries read elsewhere (the
/// ClusterInformation and Node keys).
pub fn ready_from(cluster: &[RawEntry], node: &[RawEntry], name: &str) -> Result<Node> {
    check_ready(cluster, node, name).map(|n| n.value)
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

fn parse_affinities(entries: &[RawEntry]) -> Vec<Affinity> {
    entries
        .iter()
        .filter_map(|e| {
            let cidr = keys::cidr_from_key(&e.key)?;
            let doc = BlockAffinity::parse(&e.value).ok()?;
            Some(Affinity {
                cidr,
                doc,
                mod_revision: e.mod_revision,
            })
        })
        .collect()
}

fn parse_cidr_or_ip(text: &str) -> Option<IpNetwork> {
    text.parse::<IpNetwork>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNetwork::from))
}

fn corrupt_block(cidr: &IpNetwork, reason: impl std::fmt::Display) -> IpamError {
    IpamError::CorruptBlock {
        key: keys::block(cidr),
        reason: reason.to_string(),
    }
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

/// Runs `attempt` until it commits (Some), planning again after a lost
/// race (None) or a compacted snapshot, with libcalico-go's retry budget.
async fn retry<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    for n in 0..MAX_ATTEMPTS {
        match attempt().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => tracing::debug!(attempt = n, "IPAM write lost a race; planning again"),
            Err(e) if is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
        backoff(n).await;
    }
    Err(IpamError::Contention(MAX_ATTEMPTS))
}

/// Whether a failed attempt may simply be planned again.
fn is_retryable(e: &IpamError) -> bool {
    matches!(e, IpamError::Datastore(DatastoreError::Compacted))
}

async fn backoff(attempt: usize) {
    let cap = 5 + 5 * attempt.min(10) as u64;
    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=cap))).await;
}

/// Helper for reports: a block's CIDR (from its key) and its document,
/// or why it is corrupt.
pub fn parse_block(
    entry: &RawEntry,
) -> Option<(IpNetwork, std::result::Result<AllocationBlock, String>)> {
    let cidr = keys::cidr_from_key(&entry.key)?;
    let doc = entry
        .decode::<AllocationBlock>()
        .map_err(|e| format!("not a block document: {e}"))
        .and_then(|d| {
            block::check(&d.value, &cidr).map_err(|c| c.0)?;
            Ok(d.value)
        });
    Some((cidr, doc))
}
