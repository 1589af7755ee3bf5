//! `isolate` and `cleanup`: a container's network, from etcd to the kernel
//! and back (calico-datastore.md §2.4, §6).
//!
//! isolate validates everything before it writes anything: the pid is a
//! live container's (never the host's namespace), each address is
//! allocated and held by nobody else, no foreign link or eth0 is in the
//! way. Then the veth, then the profiles and the endpoint in one guarded
//! transaction; if that fails the veth is removed again. A rerun after an
//! interrupted attempt finds its own half-made veth and replaces it.
//!
//! cleanup is best effort and complete: it tries every step (link,
//! addresses, endpoint), answers one error listing what failed, and a
//! rerun finishes the job.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::bail;

use crate::config::Config;
use crate::dataplane::{self, ContainerNetwork, Dataplane, HostEnd};
use crate::datastore::model::Node;
use crate::datastore::{keys, Datastore, RawEntry, Read, Versioned, WriteBatch};
use crate::endpoint::{
    build_endpoint, endpoint_ips, endpoint_key, node_endpoints_prefix, EndpointInput,
    WorkloadEndpoint,
};
use crate::ipam::lock::ContainerLock;
use crate::ipam::lookup::{self, Found};
use crate::ipam::ownership::{index_endpoints, EndpointRef};
use crate::ipam::{self, handle_for_uid, ContainerRelease, Ipam};
use crate::profiles::{self, Profile};
use crate::protocol::{CleanupArgs, IsolateArgs};

/// How often the endpoint write is planned again when a profile was
/// created (or changed) concurrently by another agent.
const ENDPOINT_ATTEMPTS: usize = 5;

pub async fn isolate(
    cfg: &Config,
    ds: &Datastore,
    dp: &impl Dataplane,
    args: &IsolateArgs,
) -> anyhow::Result<()> {
    let node = cfg.node_name.as_str();
    // Held until isolate returns (or dies): gc leaves the container alone
    // meanwhile, so it never takes a half-made veth for a leak.
    let _working = ContainerLock::acquire(
        &cfg.ipam.lock_dir,
        &args.container_id,
        Duration::from_millis(cfg.ipam.lock_timeout_ms),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let key = endpoint_key(node, &args.container_id);
    let ips: Vec<IpAddr> = args
        .ipv4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(args.ipv6.iter().map(|a| IpAddr::V6(*a)))
        .collect();
    let net = ContainerNetwork {
        container_id: args.container_id.clone(),
        pid: args.pid,
        ipv4: args.ipv4.clone(),
        ipv6: args.ipv6.clone(),
        mtu: dataplane::resolve_mtu(cfg.dataplane.mtu, &cfg.dataplane.mtu_file),
    };

    // ---- validation: nothing below writes until it all passed ----------
    dp.check_pid(args.pid).await?;
    let view = View::read(cfg, ds, args, &key, &ips).await?;
    if let Some(ep) = &view.endpoint {
        let have: BTreeSet<IpAddr> = endpoint_ips(&ep.value).into_iter().collect();
        let want: BTreeSet<IpAddr> = ips.iter().copied().collect();
        if have != want {
            bail!(
                "container {} is already isolated with {}; refusing to change it to {}",
                args.container_id,
                list(&have),
                list(&want)
            );
        }
    }
    let mut owners = check_addresses(cfg, ds, &view, &args.container_id, &key, &ips).await?;
    let probe = dp.probe(&net).await?;
    if view.endpoint.is_some() && probe.paired {
        tracing::info!("container already isolated with these addresses; nothing to do");
        return Ok(());
    }

    // ---- writes ----------------------------------------------------------
    if let HostEnd::Ours { .. } = probe.host_end {
        tracing::info!(
            "found the host end of an interrupted isolate of this container; plumbing again"
        );
        dp.teardown(&dataplane::host_veth_name(&args.container_id))
            .await?;
    }
    let plumbed = dp.setup(&net).await?;
    crate::faults::point("isolate:plumbed");
    let endpoint_at = view.endpoint.as_ref().map(|e| e.mod_revision);
    let mut view = view;
    let mut written = Ok(false);
    for attempt in 0..ENDPOINT_ATTEMPTS {
        if attempt > 0 {
            // Someone changed a profile, a block or the endpoint: read and
            // validate again (the addresses may have changed hands).
            view = match View::read(cfg, ds, args, &key, &ips).await {
                Ok(v) => v,
                Err(e) => {
                    written = Err(e);
                    break;
                }
            };
            if view.endpoint.as_ref().map(|e| e.mod_revision) != endpoint_at {
                written = Err(anyhow::anyhow!(
                    "the endpoint of container {} was written by someone else meanwhile",
                    args.container_id
                ));
                break;
            }
            owners = match check_addresses(cfg, ds, &view, &args.container_id, &key, &ips).await {
                Ok(o) => o,
                Err(e) => {
                    written = Err(e);
                    break;
                }
            };
        }
        let endpoint = build_endpoint(&EndpointInput {
            node,
            container_id: &args.container_id,
            ips: &ips,
            profiles: profiles::profiles_for(node, &args.netgroups),
            interface_name: &plumbed.host_ifname,
            mac: &plumbed.container_mac,
            mesos_labels: &args.labels,
            netgroups: &args.netgroups,
            handles: &owners.handles,
        });
        written = write_endpoint(ds, cfg, args, &view, &owners, &key, &endpoint).await;
        if !matches!(written, Ok(false)) {
            break;
        }
        tracing::debug!(attempt, "the endpoint write lost a race; reading again");
    }
    let failed = match written {
        Ok(true) => None,
        Ok(false) => Some(anyhow::anyhow!(
            "could not confirm the profiles and addresses of container {} after \
             {ENDPOINT_ATTEMPTS} attempts (other agents kept changing them)",
            args.container_id
        )),
        Err(e) => Some(e),
    };
    if let Some(e) = failed {
        // Undo the dataplane so nothing is left behind.
        if let Err(undo) = dp.teardown(&plumbed.host_ifname).await {
            tracing::error!(error = %undo, "could not remove {} after a failed isolate", plumbed.host_ifname);
        }
        return Err(e.context("cannot write the Calico endpoint"));
    }
    crate::faults::point("isolate:endpoint-written");
    tracing::info!(interface = %plumbed.host_ifname, mac = %plumbed.container_mac, "container isolated");
    Ok(())
}

/// Everything isolate needs from etcd, read in one round trip at one
/// revision: readiness, the endpoint, the container's own handle, the
/// profiles, this node's other endpoints and the candidate blocks of each
/// address (`ipam::lookup`).
struct View {
    node: Node,
    endpoint: Option<Versioned<WorkloadEndpoint>>,
    own_handle: Option<i64>,
    profiles: Vec<Option<Versioned<Profile>>>,
    node_endpoints: Vec<RawEntry>,
    /// Per address, the reads of its candidate blocks.
    blocks: Vec<Vec<Vec<RawEntry>>>,
}

impl View {
    async fn read(
        cfg: &Config,
        ds: &Datastore,
        args: &IsolateArgs,
        key: &str,
        ips: &[IpAddr],
    ) -> anyhow::Result<View> {
        let node = cfg.node_name.as_str();
        let profile_keys = profiles::wanted_keys(node, &args.netgroups);
        let mut reads = vec![
            Read::Key(keys::cluster_information()),
            Read::Key(keys::node(node)),
            Read::Key(key.to_string()),
            Read::Key(keys::handle(&handle_for_uid(&args.container_id))),
            Read::Prefix(node_endpoints_prefix(node)),
        ];
        reads.extend(profile_keys.iter().cloned().map(Read::Key));
        let per_ip = lookup::candidate_blocks(ips[0]).len();
        for ip in ips {
            reads.extend(
                lookup::candidate_blocks(*ip)
                    .iter()
                    .map(|c| Read::Key(keys::block(c))),
            );
        }
        let (r, _) = ds.read_batch_at(&reads, None).await?;
        let node_doc = ipam::ready_from(&r[0], &r[1], node)?;
        let endpoint = decode_one(&r[2])?;
        let own_handle = r[3].first().map(|e| e.mod_revision);
        let profiles_at = 5;
        let profiles = r[profiles_at..profiles_at + profile_keys.len()]
            .iter()
            .map(|e| decode_one(e))
            .collect::<Result<Vec<_>, _>>()?;
        let blocks = r[profiles_at + profile_keys.len()..]
            .chunks(per_ip)
            .map(|c| c.to_vec())
            .collect();
        Ok(View {
            node: node_doc,
            endpoint,
            own_handle,
            profiles,
            node_endpoints: r[4].clone(),
            blocks,
        })
    }
}

/// The document of a single-key read, if there is one.
fn decode_one<T: serde::de::DeserializeOwned>(
    entries: &[RawEntry],
) -> crate::datastore::Result<Option<Versioned<T>>> {
    entries.first().map(|e| e.decode()).transpose()
}

/// Who holds the addresses: the handle of each (recorded on the endpoint
/// for cleanup) and the block revisions the endpoint write is guarded on.
struct Owners {
    handles: BTreeMap<IpAddr, String>,
    blocks: BTreeMap<String, i64>,
}

/// Every address must be allocated, held by this container's handle when
/// it has one (`mesos.<container id>`, as our module allocates), and listed
/// by no other endpoint. Without an own handle (the 2016 module allocated
/// under a uid of its own) every endpoint of the cluster is checked, the
/// slow way.
async fn check_addresses(
    cfg: &Config,
    ds: &Datastore,
    view: &View,
    container_id: &str,
    own_key: &str,
    ips: &[IpAddr],
) -> anyhow::Result<Owners> {
    let own_handle = handle_for_uid(container_id);
    let mut owners = Owners {
        handles: BTreeMap::new(),
        blocks: BTreeMap::new(),
    };
    let here = index_endpoints(&view.node_endpoints);
    let mut slow = view.own_handle.is_none();
    for (ip, candidates) in ips.iter().zip(&view.blocks) {
        refuse_other_endpoint(*ip, here.get(ip).map_or(&[][..], Vec::as_slice), own_key)?;
        let (holding, key, rev) = match lookup::find(*ip, candidates) {
            Found::Held {
                holding,
                key,
                mod_revision,
            } => (holding, key, mod_revision),
            Found::Free => return Err(not_allocated(*ip)),
            Found::Corrupt { key, reason } => {
                return Err(ipam::IpamError::CorruptBlock { key, reason }.into())
            }
            Found::Ambiguous => {
                slow = true;
                continue;
            }
        };
        let holder = holding.handle.clone().unwrap_or_default();
        if view.own_handle.is_some() && holder != own_handle {
            bail!(
                "address {ip} is held by {}, not by this container's {own_handle}",
                if holder.is_empty() {
                    "an allocation without handle"
                } else {
                    holder.as_str()
                }
            );
        }
        owners.handles.insert(*ip, holder);
        owners.blocks.insert(key, rev);
    }
    if slow {
        let ipam = Ipam::new(ds, &cfg.node_name, &cfg.ipam);
        let states = ipam.address_states(ips).await?;
        for ip in ips {
            let state = &states[ip];
            refuse_other_endpoint(*ip, &state.endpoints, own_key)?;
            let Some(holding) = &state.holding else {
                return Err(not_allocated(*ip));
            };
            owners
                .handles
                .entry(*ip)
                .or_insert_with(|| holding.handle.clone().unwrap_or_default());
        }
    }
    Ok(owners)
}

/// Refuses an address that an endpoint other than ours lists.
fn refuse_other_endpoint(ip: IpAddr, refs: &[EndpointRef], own_key: &str) -> anyhow::Result<()> {
    match refs.iter().find(|r| r.key != own_key) {
        Some(other) => bail!(
            "address {ip} is held by container {} (endpoint {})",
            other.container,
            other.key
        ),
        None => Ok(()),
    }
}

fn not_allocated(ip: IpAddr) -> anyhow::Error {
    anyhow::anyhow!("address {ip} is not allocated: allocate or reserve it first")
}

/// Writes the endpoint together with the profiles it needs, in one
/// transaction guarded on everything the validation read: the profiles,
/// the blocks holding the addresses, the own handle and the endpoint
/// (created, or replacing an earlier attempt's whose link was gone).
/// Ok(false): something changed meanwhile; read and validate again.
async fn write_endpoint(
    ds: &Datastore,
    cfg: &Config,
    args: &IsolateArgs,
    view: &View,
    owners: &Owners,
    key: &str,
    endpoint: &WorkloadEndpoint,
) -> anyhow::Result<bool> {
    let mut batch = WriteBatch::new();
    let wanted = profiles::wanted(&cfg.node_name, &view.node, &args.netgroups);
    profiles::add_writes(&mut batch, &cfg.node_name, &wanted, &view.profiles);
    for (block, rev) in &owners.blocks {
        batch.require_unchanged(block, *rev);
    }
    let own = keys::handle(&handle_for_uid(&args.container_id));
    match view.own_handle {
        Some(rev) => batch.require_unchanged(&own, rev),
        None => batch.require_absent(&own),
    };
    batch.upsert(
        key,
        view.endpoint.as_ref().map(|e| e.mod_revision),
        endpoint,
    );
    Ok(ds.commit(&batch).await?)
}

pub async fn cleanup(
    cfg: &Config,
    ds: &Datastore,
    dp: &impl Dataplane,
    args: &CleanupArgs,
) -> anyhow::Result<()> {
    let node = cfg.node_name.as_str();
    let ipam = Ipam::new(ds, node, &cfg.ipam);
    let host_ifname = dataplane::host_veth_name(&args.container_id);
    let mut errors: Vec<String> = Vec::new();

    // The kernel side first: it needs nothing from etcd.
    let removed = match dp.teardown(&host_ifname).await {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("cannot remove interface {host_ifname}: {e}"));
            false
        }
    };

    // Addresses and endpoint in one transaction: if this stops half-way,
    // a rerun still finds the endpoint and the handles it recorded.
    let key = endpoint_key(node, &args.container_id);
    let own = handle_for_uid(&args.container_id);
    let (freed, endpoint_deleted) = match ipam.release_container(&key, &own).await {
        Ok(ContainerRelease::Done {
            freed,
            endpoint_deleted,
        }) => (freed, endpoint_deleted),
        Ok(ContainerRelease::Unrecorded(ep)) => {
            cleanup_unrecorded(&ipam, ds, dp, &key, &own, &ep, &mut errors).await
        }
        Err(e) => {
            errors.push(format!(
                "cannot release the addresses and delete the endpoint (kept, so that a rerun \
                 can): {e}"
            ));
            (0, false)
        }
    };
    if !errors.is_empty() {
        bail!(
            "cleanup of container {} is incomplete (run it again to finish): {}",
            args.container_id,
            errors.join("; ")
        );
    }
    if !removed && !endpoint_deleted && freed == 0 {
        tracing::warn!(container = %args.container_id, "cleanup of an unknown container: nothing to clean up");
    } else {
        tracing::info!(
            interface_removed = removed,
            endpoint_deleted,
            freed,
            "container cleaned up"
        );
    }
    Ok(())
}

/// An endpoint that records no handles (an older calico-mesos wrote it):
/// its addresses are freed by the ownership rules (its link is gone now),
/// the own handle released, then the endpoint deleted, each step alone.
async fn cleanup_unrecorded(
    ipam: &Ipam<'_>,
    ds: &Datastore,
    dp: &impl Dataplane,
    key: &str,
    own: &str,
    ep: &Versioned<WorkloadEndpoint>,
    errors: &mut Vec<String>,
) -> (u64, bool) {
    let mut freed = 0;
    let links = dp.host_links().await.unwrap_or_default();
    let released = match ipam.release_ips(&endpoint_ips(&ep.value), &links).await {
        Ok(r) => {
            freed += r.freed;
            ipam.release_handle(own).await.map(|n| freed += n)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = released {
        errors.push(format!(
            "cannot release the endpoint's addresses (endpoint kept, so that a rerun can): {e}"
        ));
        return (freed, false);
    }
    match ds
        .commit(WriteBatch::new().delete(key, ep.mod_revision))
        .await
    {
        Ok(true) => (freed, true),
        Ok(false) => {
            errors.push("the endpoint changed during cleanup".into());
            (freed, false)
        }
        Err(e) => {
            errors.push(format!("cannot delete the endpoint: {e}"));
            (freed, false)
        }
    }
}

fn list(ips: &BTreeSet<IpAddr>) -> String {
    let v: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    format!("[{}]", v.join(", "))
}
