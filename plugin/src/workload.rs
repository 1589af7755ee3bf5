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
use crate::datastore::model::IpamHandle;
use crate::datastore::{keys, Datastore, Versioned, WriteBatch};
use crate::endpoint::{
    build_endpoint, endpoint_ips, endpoint_key, recorded_handles, EndpointInput, WorkloadEndpoint,
};
use crate::ipam::lock::ContainerLock;
use crate::ipam::{handle_for_uid, Ipam};
use crate::profiles;
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
    let ipam = Ipam::new(ds, node, &cfg.ipam);
    let node_doc = ipam.check_ready().await?;
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
    let existing = ds.get::<WorkloadEndpoint>(&key).await?;
    if let Some(ep) = &existing {
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
    let handles = check_addresses(&ipam, ds, &args.container_id, &key, &ips).await?;
    let probe = dp.probe(&net).await?;
    if existing.is_some() && probe.paired {
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
    let endpoint = build_endpoint(&EndpointInput {
        node,
        container_id: &args.container_id,
        ips: &ips,
        profiles: profiles::profiles_for(node, &args.netgroups),
        interface_name: &plumbed.host_ifname,
        mac: &plumbed.container_mac,
        mesos_labels: &args.labels,
        netgroups: &args.netgroups,
        handles: &handles,
    });
    let written = write_endpoint(ds, cfg, &node_doc, args, &key, &endpoint, existing).await;
    if let Err(e) = written {
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

/// Every address must be allocated, held by this container's handle when
/// it has one (`mesos.<container id>`, as our module allocates), and listed
/// by no other endpoint. Returns the holder of each address, which the
/// endpoint records for cleanup.
async fn check_addresses(
    ipam: &Ipam<'_>,
    ds: &Datastore,
    container_id: &str,
    own_key: &str,
    ips: &[IpAddr],
) -> anyhow::Result<BTreeMap<IpAddr, String>> {
    let states = ipam.address_states(ips).await?;
    let own_handle = handle_for_uid(container_id);
    let has_own_handle = ds
        .get::<IpamHandle>(&keys::handle(&own_handle))
        .await?
        .is_some();
    let mut handles = BTreeMap::new();
    for ip in ips {
        let state = &states[ip];
        if let Some(other) = state.endpoints.iter().find(|r| r.key != own_key) {
            bail!(
                "address {ip} is held by container {} (endpoint {})",
                other.container,
                other.key
            );
        }
        let Some(holding) = &state.holding else {
            bail!("address {ip} is not allocated: allocate or reserve it first");
        };
        let holder = holding.handle.clone().unwrap_or_default();
        if has_own_handle && holder != own_handle {
            bail!(
                "address {ip} is held by {}, not by this container's {own_handle}",
                if holder.is_empty() {
                    "an allocation without handle"
                } else {
                    holder.as_str()
                }
            );
        }
        handles.insert(*ip, holder);
    }
    Ok(handles)
}

/// Writes the endpoint together with the profiles it needs, in one guarded
/// transaction; a profile created concurrently elsewhere means planning
/// again. `existing`: the endpoint of an earlier attempt whose link was
/// gone, replaced under its revision.
async fn write_endpoint(
    ds: &Datastore,
    cfg: &Config,
    node_doc: &crate::datastore::model::Node,
    args: &IsolateArgs,
    key: &str,
    endpoint: &WorkloadEndpoint,
    existing: Option<Versioned<WorkloadEndpoint>>,
) -> anyhow::Result<()> {
    let mut existing_rev = existing.map(|e| e.mod_revision);
    for attempt in 0..ENDPOINT_ATTEMPTS {
        let mut batch = WriteBatch::new();
        profiles::add_profile_writes(ds, &mut batch, &cfg.node_name, node_doc, &args.netgroups)
            .await?;
        batch.upsert(key, existing_rev, endpoint);
        if ds.commit(&batch).await? {
            return Ok(());
        }
        // Who changed: the endpoint (someone else isolated this container)
        // is fatal, a profile is planned again.
        let now = ds.get::<WorkloadEndpoint>(key).await?;
        if now.as_ref().map(|e| e.mod_revision) != existing_rev {
            bail!(
                "the endpoint of container {} was written by someone else meanwhile",
                args.container_id
            );
        }
        existing_rev = now.map(|e| e.mod_revision);
        tracing::debug!(attempt, "a profile changed concurrently; planning again");
    }
    bail!(
        "could not confirm the profiles of container {} after {ENDPOINT_ATTEMPTS} attempts \
         (other agents kept changing them)",
        args.container_id
    )
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

    let key = endpoint_key(node, &args.container_id);
    // Only a failed release keeps the endpoint: it records the handles.
    let mut released_all = true;
    let endpoint = match ds.get::<WorkloadEndpoint>(&key).await {
        Ok(ep) => ep,
        Err(e) => {
            released_all = false;
            errors.push(format!("cannot read the endpoint: {e}"));
            None
        }
    };
    // Addresses before the endpoint: if this stops half-way, a rerun
    // still finds the endpoint and the handles it recorded.
    let mut freed = 0;
    let mut handles: BTreeSet<String> = BTreeSet::new();
    if let Some(ep) = &endpoint {
        match recorded_handles(&ep.value) {
            Some(recorded) => handles.extend(recorded.into_values().filter(|h| !h.is_empty())),
            None => {
                // Written before handles were recorded: free its addresses
                // by the ownership rules (its link is gone now).
                let links = dp.host_links().await.unwrap_or_default();
                match ipam.release_ips(&endpoint_ips(&ep.value), &links).await {
                    Ok(r) => freed += r.freed,
                    Err(e) => {
                        released_all = false;
                        errors.push(format!("cannot release the endpoint's addresses: {e}"));
                    }
                }
            }
        }
    }
    // Our module allocates under the container id; release that handle too.
    handles.insert(handle_for_uid(&args.container_id));
    for h in &handles {
        match ipam.release_handle(h).await {
            Ok(n) => freed += n,
            Err(e) => {
                released_all = false;
                errors.push(format!("cannot release handle {h}: {e}"));
            }
        }
    }
    if let Some(ep) = &endpoint {
        if released_all {
            match ds
                .commit(WriteBatch::new().delete(&key, ep.mod_revision))
                .await
            {
                Ok(true) => {}
                Ok(false) => errors.push("the endpoint changed during cleanup".into()),
                Err(e) => errors.push(format!("cannot delete the endpoint: {e}")),
            }
        } else {
            errors.push("the endpoint was kept so that a rerun can release its addresses".into());
        }
    }
    if !errors.is_empty() {
        bail!(
            "cleanup of container {} is incomplete (run it again to finish): {}",
            args.container_id,
            errors.join("; ")
        );
    }
    if !removed && endpoint.is_none() && freed == 0 {
        tracing::warn!(container = %args.container_id, "cleanup of an unknown container: nothing to clean up");
    } else {
        tracing::info!(
            interface_removed = removed,
            endpoint_deleted = endpoint.is_some(),
            freed,
            "container cleaned up"
        );
    }
    Ok(())
}

fn list(ips: &BTreeSet<IpAddr>) -> String {
    let v: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    format!("[{}]", v.join(", "))
}
