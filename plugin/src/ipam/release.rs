//! Releases (calico-datastore.md §1.7.6 C and D), under the ownership
//! rules of `ownership.rs`: by handle frees exactly that handle's
//! addresses; by address frees only what no running container holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;

use super::block::{block_cidr_for, Holding};
use super::ownership::{decide, index_endpoints, Decision, EndpointRef, Liveness};
use super::plan::{BlockState, Plan};
use super::pools::{pool_containing, Pool};
use super::{corrupt_block, hints, retry, Ipam, Result};
use crate::datastore::model::IpamHandle;
use crate::datastore::{keys, Read, Versioned};
use crate::endpoint::{recorded_handles, WorkloadEndpoint};

/// What a release by address did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Released {
    pub freed: u64,
    /// One line per address left alone, naming its holder.
    pub kept: Vec<String>,
}

/// What the release of a container's addresses and endpoint did.
#[derive(Debug)]
pub enum ContainerRelease {
    Done {
        freed: u64,
        endpoint_deleted: bool,
    },
    /// The endpoint records no handles (written by an older calico-mesos
    /// or someone else): nothing was done; release it the old way.
    Unrecorded(Box<Versioned<WorkloadEndpoint>>),
}

struct AddressSnapshot {
    refs: super::ownership::EndpointRefs,
    by_block: BTreeMap<IpNetwork, Vec<IpAddr>>,
    plan: Plan,
    revision: i64,
}

/// Who holds an address now, and which endpoints list it.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressState {
    /// None: free (or in no existing block).
    pub holding: Option<Holding>,
    pub endpoints: Vec<EndpointRef>,
}

impl Ipam<'_> {
    /// A container's teardown in etcd: releases every address of the
    /// handles its endpoint (at `endpoint_key`) recorded, and of
    /// `own_handle`, and deletes the endpoint, all in one guarded
    /// transaction under the host lock. One read suffices when the
    /// handles are the container's own and their block records are right.
    pub async fn release_container(
        &self,
        endpoint_key: &str,
        own_handle: &str,
    ) -> Result<ContainerRelease> {
        let _queued = self.host_lock().await?;
        retry(|| self.try_release_container(endpoint_key, own_handle)).await
    }

    async fn try_release_container(
        &self,
        endpoint_key: &str,
        own_handle: &str,
    ) -> Result<Option<ContainerRelease>> {
        let dir = &self.settings.lock_dir;
        let recorded = hints::handle_blocks(dir, self.node, own_handle);
        let mut reads = vec![
            Read::Key(endpoint_key.to_string()),
            Read::Key(keys::handle(own_handle)),
        ];
        reads.extend(recorded.iter().map(|c| Read::Key(keys::block(c))));
        let (r, revision) = self.ds.read_batch_at(&reads, None).await?;
        let endpoint: Option<Versioned<WorkloadEndpoint>> =
            r[0].first().map(|e| e.decode()).transpose()?;
        let mut handles: BTreeMap<String, Option<Versioned<IpamHandle>>> = BTreeMap::new();
        handles.insert(
            own_handle.to_string(),
            r[1].first().map(|e| e.decode()).transpose()?,
        );
        if let Some(ep) = &endpoint {
            let Some(by_ip) = recorded_handles(&ep.value) else {
                return Ok(Some(ContainerRelease::Unrecorded(Box::new(ep.clone()))));
            };
            // Handles other than the own one (the 2016 module's uids): a
            // second read.
            let others: Vec<String> = by_ip
                .into_values()
                .filter(|h| !h.is_empty() && !handles.contains_key(h))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !others.is_empty() {
                let reads: Vec<Read> = others.iter().map(|h| Read::Key(keys::handle(h))).collect();
                let (docs, _) = self.ds.read_batch_at(&reads, Some(revision)).await?;
                for (h, doc) in others.into_iter().zip(docs) {
                    handles.insert(h, doc.first().map(|e| e.decode()).transpose()?);
                }
            }
        }
        let mut plan = Plan::new(self.node, "", None, Some(revision));
        for (cidr, block) in recorded.iter().zip(&r[2..]) {
            if let Some(e) = block.first() {
                plan.adopt(*cidr, e);
            }
        }
        let mut freed = 0;
        for (id, doc) in &handles {
            let Some(doc) = doc else {
                continue;
            };
            let cidrs: Vec<IpNetwork> = doc
                .value
                .block
                .keys()
                .filter_map(|c| c.parse().ok())
                .collect();
            plan.load_blocks(self.ds, &cidrs).await?;
            for cidr in &cidrs {
                match plan.block(cidr) {
                    BlockState::Missing => {}
                    BlockState::Corrupt(why) => return Err(corrupt_block(cidr, why)),
                    BlockState::Ready(mut view) => {
                        let n = view.release_handle(id);
                        if n > 0 {
                            freed += n;
                            plan.mark_changed(cidr);
                        }
                    }
                }
            }
            plan.drop_other_handle(id, doc.mod_revision);
        }
        let mut batch = plan.into_batch();
        if let Some(ep) = &endpoint {
            batch.delete(endpoint_key, ep.mod_revision);
        }
        if !self.ds.commit(&batch).await? {
            return Ok(None);
        }
        for (id, doc) in &handles {
            if id == own_handle && doc.is_some() {
                hints::record_released(dir, self.node, id);
            } else {
                hints::record_handle(dir, self.node, id, &[]);
            }
        }
        Ok(Some(ContainerRelease::Done {
            freed,
            endpoint_deleted: endpoint.is_some(),
        }))
    }

    /// Releases every address held by `handle_id`. Releasing what is already
    /// free succeeds; a corrupt block the handle names is an error.
    pub async fn release_handle(&self, handle_id: &str) -> Result<u64> {
        let _queued = self.host_lock().await?;
        retry(|| self.try_release_handle(handle_id)).await
    }

    /// The release by uid the module sends right after a cleanup: when
    /// this host's cleanup released the handle in etcd and nothing
    /// allocated it since (`hints::take_released`), nothing is left to do
    /// and etcd is not asked. Otherwise as `release_handle`. gc does not
    /// come here: it repairs what etcd says, not what this host recorded.
    pub async fn release_uid_handle(&self, handle_id: &str) -> Result<u64> {
        let _queued = self.host_lock().await?;
        if hints::take_released(&self.settings.lock_dir, self.node, handle_id) {
            tracing::debug!(
                handle = handle_id,
                "released by this host's cleanup already"
            );
            return Ok(0);
        }
        retry(|| self.try_release_handle(handle_id)).await
    }

    async fn try_release_handle(&self, handle_id: &str) -> Result<Option<u64>> {
        // The blocks recorded at allocate are read with the handle: one
        // round trip when the record is right, a second read when not.
        let recorded = hints::handle_blocks(&self.settings.lock_dir, self.node, handle_id);
        let mut reads = vec![Read::Key(keys::handle(handle_id))];
        reads.extend(recorded.iter().map(|c| Read::Key(keys::block(c))));
        let (r, revision) = self.ds.read_batch_at(&reads, None).await?;
        let Some(entry) = r[0].first() else {
            hints::record_handle(&self.settings.lock_dir, self.node, handle_id, &[]);
            return Ok(Some(0));
        };
        let handle = entry.decode::<IpamHandle>()?;
        let cidrs: Vec<IpNetwork> = handle
            .value
            .block
            .keys()
            .filter_map(|c| c.parse().ok())
            .collect();
        let mut plan = Plan::new(self.node, handle_id, Some(handle), Some(revision));
        for (cidr, block) in recorded.iter().zip(&r[1..]) {
            if let Some(e) = block.first() {
                plan.adopt(*cidr, e);
            }
        }
        plan.load_blocks(self.ds, &cidrs).await?;
        let mut freed = 0;
        for cidr in &cidrs {
            match plan.block(cidr) {
                // A missing block counts as released.
                BlockState::Missing => {}
                BlockState::Corrupt(why) => return Err(corrupt_block(cidr, why)),
                BlockState::Ready(mut view) => {
                    let n = view.release_handle(handle_id);
                    if n > 0 {
                        freed += n;
                        plan.mark_changed(cidr);
                    }
                }
            }
        }
        plan.drop_handle();
        let done = self.ds.commit(&plan.into_batch()).await?;
        if done {
            hints::record_handle(&self.settings.lock_dir, self.node, handle_id, &[]);
        }
        Ok(done.then_some(freed))
    }

    /// Releases specific addresses under the ownership rules: an address
    /// is freed only when an endpoint that recorded its holder belongs to
    /// a container gone from this host (`local_links`: the host's link
    /// names), or when no endpoint lists it and it is older than the grace
    /// period. Free addresses are skipped; the rest are kept and named.
    pub async fn release_ips(
        &self,
        ips: &[IpAddr],
        local_links: &BTreeSet<String>,
    ) -> Result<Released> {
        if ips.is_empty() {
            return Ok(Released::default());
        }
        let _queued = self.host_lock().await?;
        let grace = Duration::from_secs(self.settings.release_grace_seconds);
        retry(|| self.try_release_ips(ips, local_links, grace)).await
    }

    async fn try_release_ips(
        &self,
        ips: &[IpAddr],
        local_links: &BTreeSet<String>,
        grace: Duration,
    ) -> Result<Option<Released>> {
        let AddressSnapshot {
            refs,
            by_block,
            mut plan,
            revision,
        } = self.address_snapshot(ips).await?;

        let now = SystemTime::now();
        let mut out = Released::default();
        let mut per_handle: BTreeMap<String, BTreeMap<IpNetwork, u64>> = BTreeMap::new();
        for (cidr, block_ips) in &by_block {
            let mut view = match plan.block(cidr) {
                BlockState::Missing => continue,
                BlockState::Corrupt(why) => return Err(corrupt_block(cidr, why)),
                BlockState::Ready(view) => view,
            };
            let mut ordinals = Vec::new();
            for ip in block_ips {
                let Some(holding) = view.holding(*ip) else {
                    continue; // already free
                };
                let listed: Vec<(EndpointRef, Liveness)> = refs
                    .get(ip)
                    .into_iter()
                    .flatten()
                    .map(|r| (r.clone(), self.liveness(r, local_links)))
                    .collect();
                match decide(*ip, &holding, &listed, now, grace) {
                    Decision::Free => ordinals.push(holding.ordinal),
                    Decision::Keep(why) => {
                        tracing::warn!("not releasing: {why}");
                        out.kept.push(why);
                    }
                }
            }
            let released = view.free_ordinals(&ordinals);
            if !released.is_empty() {
                plan.mark_changed(cidr);
            }
            for (handle, count) in released {
                out.freed += count;
                if let Some(h) = handle {
                    *per_handle.entry(h).or_default().entry(*cidr).or_default() += count;
                }
            }
        }
        if out.freed == 0 {
            return Ok(Some(out));
        }
        let handle_keys: Vec<Read> = per_handle
            .keys()
            .map(|h| Read::Key(keys::handle(h)))
            .collect();
        let (handles, _) = self.ds.read_batch_at(&handle_keys, Some(revision)).await?;
        for ((id, counts), doc) in per_handle.iter().zip(handles) {
            let doc = doc.first().map(|e| e.decode::<IpamHandle>()).transpose()?;
            plan.decrement_handle(id, doc, counts);
        }
        Ok(self.ds.commit(&plan.into_batch()).await?.then_some(out))
    }

    fn liveness(&self, r: &EndpointRef, local_links: &BTreeSet<String>) -> Liveness {
        if r.node != self.node {
            Liveness::Elsewhere
        } else if local_links.contains(&r.interface) {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }

    /// One snapshot of everything a release by address (or the slow
    /// address check of isolate) needs: every endpoint by address, the
    /// addresses grouped by block, and those blocks in a plan.
    async fn address_snapshot(&self, ips: &[IpAddr]) -> Result<AddressSnapshot> {
        let (r, revision) = self
            .ds
            .read_batch_at(
                &[
                    Read::Prefix(keys::ip_pools_prefix()),
                    Read::Prefix(keys::all_workload_endpoints_prefix()),
                ],
                None,
            )
            .await?;
        let pools: Vec<Pool> = r[0].iter().filter_map(Pool::from_entry).collect();
        let refs = index_endpoints(&r[1]);
        let by_block = self.group_by_block(ips, &pools, revision).await?;
        let cidrs: Vec<IpNetwork> = by_block.keys().copied().collect();
        let mut plan = Plan::new(self.node, "", None, Some(revision));
        plan.load_blocks(self.ds, &cidrs).await?;
        Ok(AddressSnapshot {
            refs,
            by_block,
            plan,
            revision,
        })
    }

    /// Groups addresses by block: the pool's block size (disabled pools
    /// included); addresses in no pool are found by scanning the blocks.
    async fn group_by_block(
        &self,
        ips: &[IpAddr],
        pools: &[Pool],
        revision: i64,
    ) -> Result<BTreeMap<IpNetwork, Vec<IpAddr>>> {
        let mut by_block: BTreeMap<IpNetwork, Vec<IpAddr>> = BTreeMap::new();
        let mut listing: [Option<BTreeSet<IpNetwork>>; 2] = [None, None];
        for ip in ips {
            let cidr = match pool_containing(pools, *ip) {
                Some(p) => Some(block_cidr_for(*ip, p.block_size)),
                None => {
                    let fam = usize::from(ip.is_ipv6());
                    if listing[fam].is_none() {
                        listing[fam] = Some(self.block_cidrs(ip.is_ipv6(), revision).await?);
                    }
                    listing[fam]
                        .as_ref()
                        .and_then(|all| all.iter().find(|c| c.contains(*ip)).copied())
                }
            };
            if let Some(c) = cidr {
                by_block.entry(c).or_default().push(*ip);
            }
        }
        Ok(by_block)
    }

    /// Who holds each address now and which endpoints list it (isolate
    /// checks the addresses it is given with this). Read-only.
    pub async fn address_states(&self, ips: &[IpAddr]) -> Result<BTreeMap<IpAddr, AddressState>> {
        let AddressSnapshot {
            refs,
            by_block,
            mut plan,
            revision: _,
        } = self.address_snapshot(ips).await?;
        let mut out = BTreeMap::new();
        for ip in ips {
            let holding = match by_block.iter().find(|(_, v)| v.contains(ip)) {
                None => None,
                Some((cidr, _)) => match plan.block(cidr) {
                    BlockState::Missing => None,
                    BlockState::Corrupt(why) => return Err(corrupt_block(cidr, why)),
                    BlockState::Ready(view) => view.holding(*ip),
                },
            };
            out.insert(
                *ip,
                AddressState {
                    holding,
                    endpoints: refs.get(ip).cloned().unwrap_or_default(),
                },
            );
        }
        Ok(out)
    }
}
