//! gc: finds and repairs what no surviving container of this node holds
//! any more (the leaks of the leak-repair issue), under the ownership
//! rules of `ipam/ownership.rs`.
//!
//! Two callers, one judgement:
//! - the module's `recover()` sends the protocol's `gc` with the containers
//!   Mesos recovered ([`Survivors::Listed`]): every other container of this
//!   node is gone;
//! - the operator's `calico-mesos gc` (and its hourly timer) asks the
//!   kernel ([`Survivors::Probed`]): a container whose host veth is gone,
//!   or no longer leads into a network namespace of its own, is gone.
//!
//! What is repaired, on this node only:
//! - the endpoint of a gone container: its host link removed, the handles
//!   it recorded and `mesos.<container id>` released, the endpoint deleted
//!   (exactly what `cleanup` does, so this reuses it);
//! - a `cali…` host link of ours (our alias, or the name of a container
//!   this node knows) that no endpoint names: an isolate that was
//!   interrupted;
//! - a `mesos.*` handle with no endpoint whose addresses are all on this
//!   node (the allocation's `secondary.node`): released when the ownership
//!   rules free every address of it, i.e. no endpoint lists them and they
//!   are older than the grace period. Such a handle cannot be told from a
//!   container being prepared right now (or from the 2016 module's random
//!   uids), hence the grace period; with the protocol's list, a handle of a
//!   container that left a host link behind is released at once.
//!
//! A surviving container is never touched. Planning is pure (`plan`), so
//! the dry run lists exactly what `--apply` does; each repair runs under
//! the container lock that isolate holds, so a repair never races an
//! isolate in progress.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::dataplane::{host_veth_name, Dataplane, HostLink};
use crate::datastore::{keys, Datastore, RawEntry, Read, Versioned};
use crate::endpoint::{endpoint_key, recorded_handles, WorkloadEndpoint, ORCHESTRATOR};
use crate::ipam::block::{address_at, Holding};
use crate::ipam::lock::ContainerLock;
use crate::ipam::ownership::{decide, index_endpoints, Decision, EndpointRefs, Liveness};
use crate::ipam::{handle_for_uid, parse_block, Ipam};
use crate::names::check_container_id;
use crate::protocol::CleanupArgs;
use crate::workload;

/// Who survived.
#[derive(Debug, Clone, PartialEq)]
pub enum Survivors {
    /// The containers the agent recovered; every other one is gone.
    Listed(BTreeSet<String>),
    /// Unknown: ask the kernel (host veth present and leading into a
    /// namespace of its own).
    Probed,
}

/// What gc reads: every endpoint, every block, which handles exist, and
/// the host's `cali…` links.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub endpoints: Vec<RawEntry>,
    pub blocks: Vec<RawEntry>,
    pub handles: BTreeSet<String>,
    pub links: Vec<HostLink>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Endpoint,
    Link,
    Handle,
}

/// One thing to repair, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repair {
    pub kind: Kind,
    /// The endpoint's key, the link's name or the handle's id.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub why: String,
    /// What `--apply` does about it.
    pub action: String,
    /// Handles released with it (the endpoint's, or a link's container's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handles: Vec<String>,
    /// After `--apply`: "repaired", "skipped: …" or "failed: …".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Something gc looked at and left alone, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    pub name: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub node: String,
    pub applied: bool,
    pub repairs: Vec<Repair>,
    pub kept: Vec<Kept>,
}

impl Report {
    /// The repairs that failed, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.repairs
            .iter()
            .filter_map(|r| {
                let o = r.outcome.as_deref()?;
                o.starts_with("failed")
                    .then(|| format!("{} {}: {o}", kind_name(r.kind), r.name))
            })
            .collect()
    }
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Endpoint => "endpoint",
        Kind::Link => "link",
        Kind::Handle => "handle",
    }
}

/// One endpoint of this node.
struct Ep {
    key: String,
    container: String,
    interface: String,
    handles: BTreeSet<String>,
    /// Why it is gone; None: it survives.
    gone: Option<String>,
}

/// Reads what gc needs (one etcd snapshot, then the host's links).
pub async fn read_state(ds: &Datastore, dp: &impl Dataplane) -> anyhow::Result<State> {
    let (r, _) = ds
        .read_batch_at(
            &[
                Read::Prefix(keys::all_workload_endpoints_prefix()),
                Read::Prefix(keys::blocks_prefix(false)),
                Read::Prefix(keys::blocks_prefix(true)),
                Read::PrefixKeys(keys::handles_prefix()),
            ],
            None,
        )
        .await?;
    let mut r = r.into_iter();
    let endpoints = r.next().unwrap_or_default();
    let mut blocks = r.next().unwrap_or_default();
    blocks.extend(r.next().unwrap_or_default());
    let prefix = keys::handles_prefix();
    let handles = r
        .next()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.key.strip_prefix(&prefix).map(String::from))
        .collect();
    let links = dp.host_ends().await?;
    Ok(State {
        endpoints,
        blocks,
        handles,
        links,
    })
}

/// Decides what to repair. Pure: `now` and `grace` drive the ownership
/// rules' age check.
pub fn plan(
    node: &str,
    survivors: &Survivors,
    state: &State,
    now: SystemTime,
    grace: Duration,
) -> Report {
    let mut report = Report {
        node: node.to_string(),
        ..Report::default()
    };
    let links: BTreeMap<&str, &HostLink> =
        state.links.iter().map(|l| (l.name.as_str(), l)).collect();

    // ---- endpoints ------------------------------------------------------
    let eps = our_endpoints(node, survivors, state, &links, &mut report.kept);
    let live_handles: BTreeSet<&str> = eps
        .iter()
        .filter(|e| e.gone.is_none())
        .flat_map(|e| e.handles.iter().map(String::as_str))
        .collect();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for ep in &eps {
        let Some(why) = &ep.gone else { continue };
        let handles: Vec<String> = ep
            .handles
            .iter()
            .filter(|h| state.handles.contains(*h) && !live_handles.contains(h.as_str()))
            .cloned()
            .collect();
        covered.extend(ep.handles.iter().cloned());
        let link = links.contains_key(ep.interface.as_str());
        report.repairs.push(Repair {
            kind: Kind::Endpoint,
            name: ep.key.clone(),
            container: Some(ep.container.clone()),
            why: why.clone(),
            action: format!(
                "{}release {}, delete the endpoint",
                if link {
                    format!("remove link {}, ", ep.interface)
                } else {
                    String::new()
                },
                if handles.is_empty() {
                    "its addresses".to_string()
                } else {
                    handles.join(", ")
                }
            ),
            handles,
            outcome: None,
        });
    }

    // ---- this node's mesos handles, from the allocations -------------------
    let uses = handle_uses(node, state, &mut report.kept);

    // ---- links of ours that no endpoint names ------------------------------
    let named: BTreeSet<&str> = eps.iter().map(|e| e.interface.as_str()).collect();
    let known: BTreeMap<String, &str> = uses
        .keys()
        .filter_map(|h| h.strip_prefix("mesos."))
        .map(|cid| (host_veth_name(cid), cid))
        .collect();
    let mut link_containers = BTreeSet::new();
    for link in &state.links {
        if named.contains(link.name.as_str()) {
            continue;
        }
        let cid = match (link.marked_container(), &link.alias) {
            (Some(cid), _) => cid,
            // Not marked yet (an isolate killed right after creating it):
            // ours if it has the name of a container this node knows.
            (None, None) => match known.get(&link.name) {
                Some(cid) => cid,
                None => continue,
            },
            (None, Some(_)) => continue, // someone else's mark
        };
        if listed(survivors, cid) {
            continue;
        }
        let handle = handle_for_uid(cid);
        let release = matches!(survivors, Survivors::Listed(_))
            && state.handles.contains(&handle)
            && !live_handles.contains(handle.as_str());
        if release {
            covered.insert(handle.clone());
        }
        link_containers.insert(cid.to_string());
        report.repairs.push(Repair {
            kind: Kind::Link,
            name: link.name.clone(),
            container: Some(cid.to_string()),
            why: format!(
                "no endpoint names it: an isolate of container {cid} was interrupted{}",
                if matches!(survivors, Survivors::Listed(_)) {
                    ", and the agent did not recover the container"
                } else {
                    ""
                }
            ),
            action: if release {
                format!("remove the link, release {handle}")
            } else {
                "remove the link".into()
            },
            handles: if release { vec![handle] } else { Vec::new() },
            outcome: None,
        });
    }

    // ---- handles with no endpoint -------------------------------------------
    let refs = index_endpoints(&state.endpoints);
    let liveness: BTreeMap<&str, Liveness> = eps
        .iter()
        .map(|e| {
            let l = if e.gone.is_some() {
                Liveness::Gone
            } else {
                Liveness::Alive
            };
            (e.key.as_str(), l)
        })
        .collect();
    for (handle, using) in &uses {
        if covered.contains(handle) || live_handles.contains(handle.as_str()) {
            continue;
        }
        let cid = handle.strip_prefix("mesos.").unwrap_or(handle);
        if listed(survivors, cid) {
            continue;
        }
        if !using.elsewhere.is_empty() {
            report.kept.push(Kept {
                name: handle.clone(),
                why: format!(
                    "it also holds addresses on node(s) {}; gc repairs this node only",
                    using
                        .elsewhere
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            continue;
        }
        match judge_handle(using, &refs, &liveness, now, grace) {
            Ok(why) => report.repairs.push(Repair {
                kind: Kind::Handle,
                name: handle.clone(),
                container: None,
                why,
                action: format!("release {}", list_ips(&using.ips)),
                handles: Vec::new(),
                outcome: None,
            }),
            Err(why) => report.kept.push(Kept {
                name: handle.clone(),
                why,
            }),
        }
    }
    report
}

fn listed(survivors: &Survivors, cid: &str) -> bool {
    matches!(survivors, Survivors::Listed(l) if l.contains(cid))
}

/// The Mesos endpoints of this node, each judged alive or gone.
fn our_endpoints(
    node: &str,
    survivors: &Survivors,
    state: &State,
    links: &BTreeMap<&str, &HostLink>,
    kept: &mut Vec<Kept>,
) -> Vec<Ep> {
    let mut out = Vec::new();
    for entry in &state.endpoints {
        let Ok(ep) = entry.decode::<WorkloadEndpoint>() else {
            continue; // `ipam check` reports unreadable documents
        };
        let Versioned { key, value: ep, .. } = ep;
        if ep.spec.node != node || ep.spec.orchestrator != ORCHESTRATOR {
            continue;
        }
        let cid = ep.spec.container_id.clone();
        if check_container_id(&cid).is_err() || endpoint_key(node, &cid) != key {
            kept.push(Kept {
                name: key,
                why: "not named the way calico-mesos names its endpoints; left alone".into(),
            });
            continue;
        }
        let mut handles: BTreeSet<String> = recorded_handles(&ep)
            .map(|r| r.into_values().filter(|h| !h.is_empty()).collect())
            .unwrap_or_default();
        handles.insert(handle_for_uid(&cid));
        let interface = ep.spec.interface_name.clone();
        let gone = match survivors {
            Survivors::Listed(l) if l.contains(&cid) => None,
            Survivors::Listed(_) => Some(format!(
                "container {cid} is not among the containers the agent recovered"
            )),
            Survivors::Probed => match links.get(interface.as_str()) {
                None => Some(format!(
                    "its host veth {interface} is gone (the container's namespace was destroyed)"
                )),
                Some(l) if !l.leads_to_container => Some(format!(
                    "its host veth {interface} no longer leads into a container network namespace"
                )),
                Some(_) => None,
            },
        };
        out.push(Ep {
            key,
            container: cid,
            interface,
            handles,
            gone,
        });
    }
    out
}

/// What one `mesos.*` handle holds, from the blocks.
#[derive(Debug, Default)]
struct HandleUse {
    /// Its addresses allocated for this node.
    ips: Vec<(IpAddr, Holding)>,
    /// Other nodes it holds addresses for.
    elsewhere: BTreeSet<String>,
}

/// The `mesos.*` handles holding an address for this node.
fn handle_uses(node: &str, state: &State, kept: &mut Vec<Kept>) -> BTreeMap<String, HandleUse> {
    let mut all: BTreeMap<String, HandleUse> = BTreeMap::new();
    for entry in &state.blocks {
        let Some((cidr, doc)) = parse_block(entry) else {
            continue;
        };
        let mut doc = match doc {
            Ok(d) => d,
            Err(why) => {
                kept.push(Kept {
                    name: entry.key.clone(),
                    why: format!("corrupt block ({why}): not examined"),
                });
                continue;
            }
        };
        let Ok(view) = crate::ipam::block::BlockView::new(&mut doc, &cidr) else {
            continue;
        };
        for (o, slot) in view.doc.allocations.iter().enumerate() {
            let Some(attr) = slot.and_then(|i| view.doc.attributes.get(i)) else {
                continue;
            };
            let Some(handle) = attr
                .handle_id
                .as_deref()
                .filter(|h| h.starts_with("mesos."))
            else {
                continue;
            };
            let owner = attr
                .secondary
                .as_ref()
                .and_then(|s| s.get("node"))
                .map(String::as_str)
                .unwrap_or("");
            let using = all.entry(handle.to_string()).or_default();
            if owner == node {
                let ip = address_at(&cidr, o);
                if let Some(holding) = view.holding(ip) {
                    using.ips.push((ip, holding));
                }
            } else {
                using.elsewhere.insert(if owner.is_empty() {
                    "(unrecorded)".to_string()
                } else {
                    owner.to_string()
                });
            }
        }
    }
    all.retain(|_, u| !u.ips.is_empty());
    all
}

/// Ok(why) when the ownership rules free every address of the handle.
fn judge_handle(
    using: &HandleUse,
    refs: &EndpointRefs,
    liveness: &BTreeMap<&str, Liveness>,
    now: SystemTime,
    grace: Duration,
) -> Result<String, String> {
    for (ip, holding) in &using.ips {
        let listed: Vec<_> = refs
            .get(ip)
            .into_iter()
            .flatten()
            .map(|r| {
                let l = liveness
                    .get(r.key.as_str())
                    .copied()
                    .unwrap_or(Liveness::Elsewhere);
                (r.clone(), l)
            })
            .collect();
        if let Decision::Keep(why) = decide(*ip, holding, &listed, now, grace) {
            return Err(why);
        }
    }
    let youngest = using
        .ips
        .iter()
        .filter_map(|(_, h)| h.allocated_at)
        .map(|t| now.duration_since(t).unwrap_or_default().as_secs())
        .min();
    Ok(match youngest {
        Some(age) => format!(
            "no endpoint holds it and it was allocated {age} s ago, past the grace period of \
             {} s: an allocate whose isolate never came",
            grace.as_secs()
        ),
        None => "no endpoint holds it and its allocation time is unknown".into(),
    })
}

fn list_ips(ips: &[(IpAddr, Holding)]) -> String {
    let v: Vec<String> = ips.iter().map(|(ip, _)| ip.to_string()).collect();
    v.join(", ")
}

/// Plans and, with `apply`, repairs. Each repair runs while gc holds the
/// container's lock; one an isolate holds is skipped (the next gc sees it).
pub async fn run(
    cfg: &Config,
    ds: &Datastore,
    dp: &impl Dataplane,
    survivors: &Survivors,
    grace: Duration,
    apply: bool,
) -> anyhow::Result<Report> {
    let state = read_state(ds, dp).await?;
    let mut report = plan(&cfg.node_name, survivors, &state, SystemTime::now(), grace);
    if !apply {
        return Ok(report);
    }
    report.applied = true;
    for k in &report.kept {
        tracing::info!(name = %k.name, why = %k.why, "gc: left alone");
    }
    let ipam = Ipam::new(ds, &cfg.node_name, &cfg.ipam);
    for repair in &mut report.repairs {
        let outcome = match repair_one(cfg, ds, dp, &ipam, repair).await {
            Ok(None) => "repaired".to_string(),
            Ok(Some(skip)) => format!("skipped: {skip}"),
            Err(e) => format!("failed: {e:#}"),
        };
        tracing::info!(kind = kind_name(repair.kind), name = %repair.name, why = %repair.why, %outcome, "gc");
        repair.outcome = Some(outcome);
    }
    Ok(report)
}

/// Ok(Some(why)): skipped.
async fn repair_one(
    cfg: &Config,
    ds: &Datastore,
    dp: &impl Dataplane,
    ipam: &Ipam<'_>,
    repair: &Repair,
) -> anyhow::Result<Option<String>> {
    let cid = match repair.kind {
        Kind::Handle => repair.name.strip_prefix("mesos.").unwrap_or(&repair.name),
        _ => repair.container.as_deref().unwrap_or(""),
    };
    // A handle whose name is no container id has no isolate to race.
    let _lock = if check_container_id(cid).is_ok() {
        match ContainerLock::try_acquire(&cfg.ipam.lock_dir, cid).map_err(anyhow::Error::msg)? {
            Some(l) => Some(l),
            None => {
                return Ok(Some(format!(
                    "another calico-mesos is working on container {cid}"
                )))
            }
        }
    } else {
        None
    };
    // An isolate that finished between the snapshot and the lock wrote its
    // endpoint: the container is alive after all.
    if repair.kind != Kind::Endpoint && check_container_id(cid).is_ok() {
        let key = endpoint_key(&cfg.node_name, cid);
        if ds.get::<WorkloadEndpoint>(&key).await?.is_some() {
            return Ok(Some(format!(
                "container {cid} was isolated meanwhile (endpoint {key})"
            )));
        }
    }
    match repair.kind {
        Kind::Endpoint => {
            let args = CleanupArgs {
                hostname: cfg.node_name.clone(),
                container_id: cid.to_string(),
            };
            workload::cleanup(cfg, ds, dp, &args).await?;
        }
        Kind::Link => {
            dp.teardown(&repair.name).await?;
            for h in &repair.handles {
                ipam.release_handle(h).await?;
            }
        }
        Kind::Handle => {
            ipam.release_handle(&repair.name).await?;
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
