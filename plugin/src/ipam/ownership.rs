//! Who may free an address (calico-datastore.md §1.7; the IPAM issue's
//! ownership rules). A release by handle frees only that handle's
//! addresses. A release by address alone is ambiguous, so it frees an
//! address only when that cannot take it from a container that holds it
//! now:
//! - an endpoint references it under the handle that endpoint recorded at
//!   isolate, and that container is gone from this host (its host veth
//!   no longer exists): the 2016 module's order, release then cleanup,
//!   after Mesos destroyed the container. A container still running keeps
//!   its address; its own cleanup frees it;
//! - or no endpoint references it and its allocation is older than the
//!   grace period (a leak, or an operator's clean-up).
//!
//! Everything else is skipped with a warning naming the holder, so a late
//! release never frees what another container reserved a moment ago.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::block::Holding;
use crate::datastore::{RawEntry, Versioned};
use crate::endpoint::{endpoint_ips, recorded_handles, WorkloadEndpoint};

/// One endpoint that lists an address.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRef {
    pub key: String,
    /// The handle it recorded for the address; None: it records none
    /// (an endpoint from before handles were recorded).
    pub handle: Option<String>,
    pub node: String,
    pub interface: String,
    pub container: String,
}

/// Whether the container behind an endpoint still runs on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its host veth exists here.
    Alive,
    /// It is on this node and its host veth is gone.
    Gone,
    /// On another node: cannot be told from here, so treated as alive.
    Elsewhere,
}

/// Address → the endpoints that list it.
pub type EndpointRefs = BTreeMap<IpAddr, Vec<EndpointRef>>;

/// Indexes endpoints by address; documents that are not endpoints are
/// skipped (someone else's write must not stop a release).
pub fn index_endpoints(entries: &[RawEntry]) -> EndpointRefs {
    let mut refs = EndpointRefs::new();
    for entry in entries {
        let ep: Versioned<WorkloadEndpoint> = match entry.decode() {
            Ok(ep) => ep,
            Err(e) => {
                tracing::debug!(key = %entry.key, "not an endpoint: {e}");
                continue;
            }
        };
        let recorded = recorded_handles(&ep.value);
        for ip in endpoint_ips(&ep.value) {
            refs.entry(ip).or_default().push(EndpointRef {
                key: entry.key.clone(),
                handle: recorded.as_ref().and_then(|r| r.get(&ip).cloned()),
                node: ep.value.spec.node.clone(),
                interface: ep.value.spec.interface_name.clone(),
                container: ep.value.spec.container_id.clone(),
            });
        }
    }
    refs
}

/// What a release by address does with one allocated address.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Free,
    /// Left alone; the text says who holds it and why it stays.
    Keep(String),
}

/// Decides for `ip`, held as `holding`, listed by `refs` (each with the
/// liveness of its container).
pub fn decide(
    ip: IpAddr,
    holding: &Holding,
    refs: &[(EndpointRef, Liveness)],
    now: SystemTime,
    grace: Duration,
) -> Decision {
    let holder = holding.handle.as_deref().unwrap_or("(no handle)");
    if let Some((first, _)) = refs.first() {
        let owners: Vec<&(EndpointRef, Liveness)> = refs
            .iter()
            .filter(|(r, _)| r.handle.is_none() || r.handle == holding.handle)
            .collect();
        if owners.iter().any(|(_, l)| *l == Liveness::Gone) {
            return Decision::Free;
        }
        return Decision::Keep(match owners.first() {
            Some((owner, _)) => format!(
                "address {ip} is held by {holder} for endpoint {}, whose container still \
                 runs (or is on another node); its cleanup frees it",
                owner.key
            ),
            None => format!(
                "address {ip} is held by {holder}, but endpoint {} recorded it under {}",
                first.key,
                first.handle.as_deref().unwrap_or("another handle")
            ),
        });
    }
    // An allocation without a readable timestamp is not ours (calico-mesos
    // always writes one); treat it as old.
    let age = holding
        .allocated_at
        .map(|t| now.duration_since(t).unwrap_or_default());
    match age {
        Some(age) if age < grace => Decision::Keep(format!(
            "address {ip} is held by {holder}, allocated {} s ago, with no endpoint yet: \
             younger than the grace period of {} s, so it may be a container being started",
            age.as_secs(),
            grace.as_secs()
        )),
        _ => Decision::Free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(handle: &str, age_s: u64, now: SystemTime) -> Holding {
        Holding {
            ordinal: 1,
            handle: Some(handle.into()),
            allocated_at: Some(now - Duration::from_secs(age_s)),
        }
    }

    fn r(handle: Option<&str>, l: Liveness) -> (EndpointRef, Liveness) {
        let r = EndpointRef {
            key: "/ep".into(),
            handle: handle.map(String::from),
            node: "n1".into(),
            interface: "cali0".into(),
            container: "c".into(),
        };
        (r, l)
    }

    #[test]
    fn a_late_release_never_takes_a_young_or_foreign_address() {
        let now = SystemTime::now();
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let grace = Duration::from_secs(600);
        // Reserved a moment ago by B, no endpoint yet: kept.
        let d = decide(ip, &held("mesos.b", 5, now), &[], now, grace);
        assert!(
            matches!(&d, Decision::Keep(t) if t.contains("mesos.b")),
            "{d:?}"
        );
        // The same, past the grace period: a leak, freed.
        assert_eq!(
            decide(ip, &held("mesos.b", 601, now), &[], now, grace),
            Decision::Free
        );
        // B's endpoint recorded it under B and B is gone: the 2016 order
        // (release, then cleanup) frees it.
        let gone = [r(Some("mesos.b"), Liveness::Gone)];
        assert_eq!(
            decide(ip, &held("mesos.b", 5, now), &gone, now, grace),
            Decision::Free
        );
        // B still runs (or runs elsewhere): a late release leaves it alone.
        for l in [Liveness::Alive, Liveness::Elsewhere] {
            let d = decide(
                ip,
                &held("mesos.b", 5, now),
                &[r(Some("mesos.b"), l)],
                now,
                grace,
            );
            assert!(
                matches!(&d, Decision::Keep(t) if t.contains("still")),
                "{d:?}"
            );
        }
        // An endpoint recorded another handle: someone else holds it now.
        let d = decide(ip, &held("mesos.c", 5, now), &gone, now, grace);
        assert!(
            matches!(&d, Decision::Keep(t) if t.contains("recorded")),
            "{d:?}"
        );
        // Unknown age, no endpoint: not ours, treated as old.
        let mut h = held("x", 0, now);
        h.allocated_at = None;
        assert_eq!(decide(ip, &h, &[], now, grace), Decision::Free);
    }
}
