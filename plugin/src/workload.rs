//! `isolate` and `cleanup`: a container's network, from etcd to the kernel
//! and back (calico-datastore.md §2.4, §6).
//!
//! isolate is all-or-nothing: profiles first (Felix drops traffic of an
//! endpoint whose profile is missing), then the veth, then the endpoint;
//! if the endpoint cannot be written the veth is removed again. Profiles
//! are shared and stay.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{bail, Context};

use crate::config::Config;
use crate::dataplane::{self, ContainerNetwork};
use crate::datastore::{Datastore, WriteBatch};
use crate::endpoint::{
    build_endpoint, endpoint_ips, endpoint_key, EndpointInput, WorkloadEndpoint,
};
use crate::ipam::{handle_for_uid, Ipam};
use crate::profiles;
use crate::protocol::{CleanupArgs, IsolateArgs};

pub async fn isolate(cfg: &Config, ds: &Datastore, args: &IsolateArgs) -> anyhow::Result<()> {
    let node = cfg.node_name.as_str();
    let node_doc = Ipam::new(ds, node, &cfg.ipam).check_ready().await?;
    let key = endpoint_key(node, &args.container_id);
    let host_ifname = dataplane::host_veth_name(&args.container_id);
    let ips: Vec<IpAddr> = args
        .ipv4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(args.ipv6.iter().map(|a| IpAddr::V6(*a)))
        .collect();

    if let Some(existing) = ds.get::<WorkloadEndpoint>(&key).await? {
        let have: BTreeSet<IpAddr> = endpoint_ips(&existing.value).into_iter().collect();
        let want: BTreeSet<IpAddr> = ips.iter().copied().collect();
        if have != want {
            bail!(
                "container {} is already isolated with {}; refusing to change it to {}",
                args.container_id,
                list(&have),
                list(&want)
            );
        }
        if dataplane::inspect(&host_ifname).await?.is_none() {
            bail!(
                "container {} has a Calico endpoint but its interface {host_ifname} is gone; \
                 run cleanup for it first",
                args.container_id
            );
        }
        tracing::info!("container already isolated with these addresses; nothing to do");
        return Ok(());
    }

    profiles::ensure_profiles(ds, node, &node_doc, &args.netgroups).await?;
    let net = ContainerNetwork {
        container_id: args.container_id.clone(),
        pid: args.pid,
        ipv4: args.ipv4.clone(),
        ipv6: args.ipv6.clone(),
        mtu: dataplane::resolve_mtu(cfg.dataplane.mtu, &cfg.dataplane.mtu_file),
    };
    let plumbed = dataplane::setup(&net).await?;
    let endpoint = build_endpoint(&EndpointInput {
        node,
        container_id: &args.container_id,
        ips: &ips,
        profiles: profiles::profiles_for(node, &args.netgroups),
        interface_name: &plumbed.host_ifname,
        mac: &plumbed.container_mac,
        mesos_labels: &args.labels,
        netgroups: &args.netgroups,
    });
    let written = ds
        .commit(WriteBatch::new().create(&key, &endpoint))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|created| {
            if created {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "the endpoint of container {} was created by someone else meanwhile",
                    args.container_id
                ))
            }
        });
    if let Err(e) = written {
        // Undo the dataplane so nothing is left behind.
        if let Err(undo) = dataplane::teardown(&plumbed.host_ifname).await {
            tracing::error!(error = %undo, "could not remove {} after a failed isolate", plumbed.host_ifname);
        }
        return Err(e.context("cannot write the Calico endpoint"));
    }
    tracing::info!(interface = %plumbed.host_ifname, mac = %plumbed.container_mac, "container isolated");
    Ok(())
}

pub async fn cleanup(cfg: &Config, ds: &Datastore, args: &CleanupArgs) -> anyhow::Result<()> {
    let node = cfg.node_name.as_str();
    let ipam = Ipam::new(ds, node, &cfg.ipam);
    let host_ifname = dataplane::host_veth_name(&args.container_id);
    // The kernel side first: it needs nothing from etcd.
    let removed = dataplane::teardown(&host_ifname)
        .await
        .with_context(|| format!("cannot remove interface {host_ifname}"))?;

    let key = endpoint_key(node, &args.container_id);
    let mut freed = 0;
    let mut had_endpoint = false;
    for _ in 0..5 {
        let Some(ep) = ds.get::<WorkloadEndpoint>(&key).await? else {
            break;
        };
        had_endpoint = true;
        // Addresses before the endpoint: if this stops half-way, a rerun
        // still finds the endpoint and its addresses.
        freed += ipam.release_ips(&endpoint_ips(&ep.value)).await?;
        if ds
            .commit(WriteBatch::new().delete(&key, ep.mod_revision))
            .await?
        {
            break;
        }
    }
    // Our module allocates under the container id; release that handle too.
    freed += ipam
        .release_handle(&handle_for_uid(&args.container_id))
        .await?;
    if !removed && !had_endpoint && freed == 0 {
        tracing::warn!(container = %args.container_id, "cleanup of an unknown container: nothing to clean up");
    } else {
        tracing::info!(
            interface_removed = removed,
            endpoint_deleted = had_endpoint,
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
