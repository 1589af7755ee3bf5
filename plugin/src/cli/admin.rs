//! Output of the inspection and pool subcommands.

use serde_json::json;

use super::{JsonFlag, PoolCommand};
use crate::datastore::{keys, Datastore};
use crate::endpoint::{self, WorkloadEndpoint};
use crate::ipam::admin::{self, NewPool};

pub async fn pool(ds: &Datastore, cmd: PoolCommand) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Add(a) => {
            let p = admin::add_pool(
                ds,
                NewPool {
                    cidr: a.cidr,
                    name: a.name,
                    block_size: a.block_size,
                    nat_outgoing: a.nat_outgoing,
                    disabled: a.disabled,
                },
            )
            .await?;
            println!(
                "Added IP pool {} ({}, blocks of /{})",
                p.name, p.cidr, p.block_size
            );
        }
        PoolCommand::List(JsonFlag { json }) => {
            let pools = admin::list_pools(ds).await?;
            if json {
                let list: Vec<_> = pools
                    .iter()
                    .map(|p| {
                        json!({
                            "name": p.name,
                            "cidr": p.cidr.to_string(),
                            "block_size": p.block_size,
                            "nat_outgoing": p.doc.value.spec.nat_outgoing,
                            "disabled": p.disabled(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<32} {:<24} {:>6} {:>4} {:>8}",
                    "NAME", "CIDR", "BLOCK", "NAT", "DISABLED"
                );
                for p in &pools {
                    println!(
                        "{:<32} {:<24} {:>6} {:>4} {:>8}",
                        p.name,
                        p.cidr.to_string(),
                        format!("/{}", p.block_size),
                        yes_no(p.doc.value.spec.nat_outgoing),
                        yes_no(p.disabled())
                    );
                }
            }
        }
        PoolCommand::Delete { pool } => {
            let p = admin::delete_pool(ds, &pool).await?;
            println!("Deleted IP pool {} ({})", p.name, p.cidr);
        }
    }
    Ok(())
}

pub async fn ipam_show(ds: &Datastore, as_json: bool) -> anyhow::Result<()> {
    let report = admin::report(ds).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for p in &report.pools {
        println!(
            "Pool {} {}{}: {} of {} addresses in use, {} block(s) of /{}",
            p.name,
            p.cidr,
            if p.disabled { " (disabled)" } else { "" },
            p.in_use,
            p.size,
            p.blocks.len(),
            p.block_size
        );
        for b in &p.blocks {
            println!(
                "  block {:<28} {:<24} used {:>5}  free {:>5}",
                b.cidr,
                b.affinity.as_deref().unwrap_or("(no affinity)"),
                b.in_use,
                b.free
            );
        }
    }
    if report.pools.is_empty() {
        println!("No IP pools. Add one with `calico-mesos pool add <CIDR>`.");
    }
    for b in &report.orphan_blocks {
        println!(
            "Block {} is in no pool ({}, {} in use)",
            b.cidr,
            b.affinity.as_deref().unwrap_or("no affinity"),
            b.in_use
        );
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub async fn endpoint_list(
    ds: &Datastore,
    node: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let endpoints: Vec<WorkloadEndpoint> = ds
        .list::<WorkloadEndpoint>(&keys::workload_endpoints_prefix(endpoint::NAMESPACE))
        .await?
        .into_iter()
        .map(|v| v.value)
        .filter(|ep| ep.spec.orchestrator == endpoint::ORCHESTRATOR)
        .filter(|ep| node.is_none_or(|n| ep.spec.node == n))
        .collect();
    if as_json {
        let list: Vec<_> = endpoints
            .iter()
            .map(|ep| {
                json!({
                    "name": ep.metadata.name,
                    "node": ep.spec.node,
                    "container_id": ep.spec.container_id,
                    "interface": ep.spec.interface_name,
                    "mac": ep.spec.mac,
                    "ip_networks": ep.spec.ip_networks,
                    "profiles": ep.spec.profiles,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<38} {:<16} {:<34} PROFILES",
        "NODE", "CONTAINER", "INTERFACE", "ADDRESSES"
    );
    for ep in &endpoints {
        println!(
            "{:<16} {:<38} {:<16} {:<34} {}",
            ep.spec.node,
            ep.spec.container_id,
            ep.spec.interface_name,
            ep.spec.ip_networks.join(","),
            ep.spec.profiles.join(",")
        );
    }
    Ok(())
}
