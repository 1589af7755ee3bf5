//! The profiles a Mesos endpoint lists (calico-datastore.md §3.3): one per
//! netgroup (members accept each other), `mesos.public` (accepts anyone),
//! and `mesos.host.<node>` (the container and its own host). Profiles are
//! created once and never overwritten: operators may tighten them, and
//! another agent may create the same one at the same moment.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::datastore::model::{Extra, Metadata, Node, Resource};
use crate::datastore::{keys, Versioned, WriteBatch};
use crate::endpoint::collapse_dot_runs;

pub const NETGROUP_LABEL_PREFIX: &str = "netgroup.mesos.projectcalico.org/";
pub const NETGROUP_ANNOTATION: &str = "mesos.projectcalico.org/netgroup";
pub const PUBLIC: &str = "public";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    #[serde(default)]
    pub ingress: Vec<Value>,
    #[serde(default)]
    pub egress: Vec<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type Profile = Resource<ProfileSpec>;

/// A netgroup's name inside Calico names and label keys: Calico's own name
/// normaliser, plus a hash suffix whenever that changed the name, so two
/// different groups can never collide (`Prod_DB` → `prod-db-4616e31d`).
pub fn netgroup_id(group: &str) -> String {
    let lowered: String = group
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' => c,
            _ => '-',
        })
        .collect();
    let g = collapse_dot_runs(&lowered)
        .trim_matches(|c| c == '.' || c == '-')
        .to_string();
    if g == group && g.len() <= 54 {
        return g;
    }
    let hash: String = Sha1::digest(group.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    if g.is_empty() {
        return format!("x-{hash}");
    }
    let cut = g[..g.len().min(54)].trim_end_matches(['.', '-']);
    format!("{cut}-{hash}")
}

pub fn netgroup_profile_name(group: &str) -> String {
    format!("mesos.netgroup.{}", netgroup_id(group))
}

pub fn host_profile_name(node: &str) -> String {
    format!("mesos.host.{node}")
}

pub const PUBLIC_PROFILE: &str = "mesos.public";

/// The endpoint's profile list, in the legacy order: host, public, then the
/// netgroups as requested.
pub fn profiles_for(node: &str, netgroups: &[String]) -> Vec<String> {
    let mut names = vec![host_profile_name(node)];
    if netgroups.iter().any(|g| g == PUBLIC) {
        names.push(PUBLIC_PROFILE.into());
    }
    names.extend(
        netgroups
            .iter()
            .filter(|g| *g != PUBLIC)
            .map(|g| netgroup_profile_name(g)),
    );
    names
}

fn annotated(name: &str, group: &str) -> Metadata {
    let mut m = Metadata::new_for_create(name);
    m.annotations
        .insert(NETGROUP_ANNOTATION.into(), group.to_string());
    m
}

/// Members of the group accept traffic from members; they may send anywhere.
pub fn netgroup_profile(group: &str) -> Profile {
    let label = format!("{NETGROUP_LABEL_PREFIX}{}", netgroup_id(group));
    let spec = ProfileSpec {
        ingress: vec![json!({"action": "Allow", "source": {"selector": format!("has({label})")}})],
        egress: vec![json!({"action": "Allow"})],
        labels_to_apply: BTreeMap::from([(label, String::new())]),
        extra: Extra::new(),
    };
    Resource::new(
        "Profile",
        annotated(&netgroup_profile_name(group), group),
        spec,
    )
}

pub fn public_profile() -> Profile {
    let spec = ProfileSpec {
        ingress: vec![json!({"action": "Allow"})],
        egress: vec![json!({"action": "Allow"})],
        labels_to_apply: BTreeMap::from([(
            format!("{NETGROUP_LABEL_PREFIX}{PUBLIC}"),
            String::new(),
        )]),
        extra: Extra::new(),
    };
    Resource::new("Profile", annotated(PUBLIC_PROFILE, PUBLIC), spec)
}

/// The host's own addresses, from its Node resource: BGP addresses with
/// their prefix replaced by /32 (/128), and tunnel addresses, which the
/// kernel may pick as source.
pub fn host_nets(node: &Node) -> Vec<String> {
    let spec = &node.spec;
    let bgp = spec.bgp.as_ref();
    let wireguard = |k: &str| {
        spec.wireguard
            .as_ref()
            .and_then(|w| w.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let candidates = [
        bgp.and_then(|b| b.ipv4_address.clone()),
        bgp.and_then(|b| b.ipv6_address.clone()),
        bgp.and_then(|b| b.ipv4_ipip_tunnel_addr.clone()),
        spec.ipv4_vxlan_tunnel_addr.clone(),
        spec.ipv6_vxlan_tunnel_addr.clone(),
        wireguard("interfaceIPv4Address"),
        wireguard("interfaceIPv6Address"),
    ];
    let mut nets: Vec<String> = candidates
        .into_iter()
        .flatten()
        .filter_map(|text| {
            let ip: IpAddr = text
                .parse::<IpNetwork>()
                .map(|n| n.ip())
                .or_else(|_| text.parse())
                .ok()?;
            Some(crate::endpoint::host_cidr(&ip))
        })
        .collect();
    nets.dedup();
    nets
}

/// The container may talk to its host and the host to it. Without known
/// host addresses the profile has no rules (an empty `nets` would match
/// everything).
pub fn host_profile(node_name: &str, node: &Node) -> Profile {
    let nets = host_nets(node);
    let (ingress, egress) = if nets.is_empty() {
        tracing::warn!(
            node = node_name,
            "the Node resource lists no addresses: the host profile allows nothing"
        );
        (vec![], vec![])
    } else {
        (
            vec![json!({"action": "Allow", "source": {"nets": nets}})],
            vec![json!({"action": "Allow", "destination": {"nets": nets}})],
        )
    };
    let spec = ProfileSpec {
        ingress,
        egress,
        labels_to_apply: BTreeMap::new(),
        extra: Extra::new(),
    };
    Resource::new(
        "Profile",
        Metadata::new_for_create(host_profile_name(node_name)),
        spec,
    )
}

/// The profiles an endpoint of this node with these netgroups lists.
pub fn wanted(node_name: &str, node: &Node, netgroups: &[String]) -> Vec<Profile> {
    let mut wanted: Vec<Profile> = vec![host_profile(node_name, node)];
    if netgroups.iter().any(|g| g == PUBLIC) {
        wanted.push(public_profile());
    }
    wanted.extend(
        netgroups
            .iter()
            .filter(|g| *g != PUBLIC)
            .map(|g| netgroup_profile(g)),
    );
    wanted
}

/// The keys of those profiles, in the same order (known before the Node
/// is read, so they can be read together with it).
pub fn wanted_keys(node_name: &str, netgroups: &[String]) -> Vec<String> {
    profiles_for(node_name, netgroups)
        .iter()
        .map(|n| keys::profile(n))
        .collect()
}

/// Adds to `batch` the profile writes an endpoint of this node needs,
/// given what etcd holds (`existing`, in `wanted` order): a create for
/// each missing profile, and the host profile's rules brought up to date.
/// Existing profiles are otherwise never overwritten. Every write is
/// guarded, so a profile created or deleted concurrently makes the whole
/// batch fail and the caller reads and plans again: an endpoint is never
/// committed without its profiles.
pub fn add_writes(
    batch: &mut WriteBatch,
    node_name: &str,
    wanted: &[Profile],
    existing: &[Option<Versioned<Profile>>],
) {
    for (want, have) in wanted.iter().zip(existing) {
        let key = keys::profile(&want.metadata.name);
        match have {
            None => {
                batch.create(&key, want);
            }
            Some(have)
                if want.metadata.name == host_profile_name(node_name)
                    && have.value.spec.ingress != want.spec.ingress =>
            {
                let mut updated = have.value.clone();
                updated.spec.ingress = want.spec.ingress.clone();
                updated.spec.egress = want.spec.egress.clone();
                batch.update(&key, have.mod_revision, &updated);
            }
            // Present: it must still be there when the batch commits.
            Some(have) => {
                batch.require_unchanged(&key, have.mod_revision);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netgroup_ids_follow_the_spec_examples() {
        assert_eq!(netgroup_id("frontend"), "frontend");
        assert_eq!(netgroup_id("Prod_DB"), "prod-db-4616e31d");
        assert!(netgroup_id("***").starts_with("x-"));
        let long = "a".repeat(80);
        let id = netgroup_id(&long);
        assert_eq!(id.len(), 54 + 1 + 8, "{id}");
        assert!(id[55..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_ne!(netgroup_id("prod-db"), netgroup_id("Prod_DB"));
    }

    #[test]
    fn profile_order_is_host_public_then_groups() {
        let groups = vec![
            "frontend".to_string(),
            "public".to_string(),
            "Prod_DB".to_string(),
        ];
        assert_eq!(
            profiles_for("agent-1", &groups),
            vec![
                "mesos.host.agent-1",
                "mesos.public",
                "mesos.netgroup.frontend",
                "mesos.netgroup.prod-db-4616e31d"
            ]
        );
    }

    #[test]
    fn netgroup_profile_matches_the_documented_shape() {
        let p = serde_json::to_value(netgroup_profile("frontend")).unwrap();
        assert_eq!(p["kind"], "Profile");
        assert_eq!(p["metadata"]["name"], "mesos.netgroup.frontend");
        assert_eq!(
            p["metadata"]["annotations"][NETGROUP_ANNOTATION],
            "frontend"
        );
        assert_eq!(
            p["spec"],
            json!({
                "ingress": [{"action": "Allow", "source": {"selector": "has(netgroup.mesos.projectcalico.org/frontend)"}}],
                "egress": [{"action": "Allow"}],
                "labelsToApply": {"netgroup.mesos.projectcalico.org/frontend": ""}
            })
        );
    }

    #[test]
    fn host_nets_come_from_the_node() {
        let node: Node = serde_json::from_value(json!({
            "kind": "Node", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "agent-1"},
            "spec": {"bgp": {"ipv4Address": "172.16.0.11/24", "ipv4IPIPTunnelAddr": "10.65.12.64", "ipv6Address": "fd00:aa::1/64"}}
        }))
        .unwrap();
        assert_eq!(
            host_nets(&node),
            vec!["172.16.0.11/32", "fd00:aa::1/128", "10.65.12.64/32"]
        );
    }
}
