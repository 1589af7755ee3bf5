//! The WorkloadEndpoint a container gets (calico-datastore.md §1.2, §2.5):
//! namespace `default`, orchestrator `mesos`, a name Felix can split into
//! node / orchestrator / workload / endpoint, and sanitised Mesos labels.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::datastore::keys;
use crate::datastore::model::{Extra, Metadata, Resource};
use crate::profiles::NETGROUP_LABEL_PREFIX;

pub const NAMESPACE: &str = "default";
pub const ORCHESTRATOR: &str = "mesos";
/// The container-side interface.
pub const ENDPOINT: &str = "eth0";
/// Annotation listing the requested netgroups, for people.
pub const NETGROUPS_ANNOTATION: &str = "mesos.projectcalico.org/netgroups";
/// Which IPAM handle held each address when the container was isolated
/// (a JSON object, address → handle): cleanup releases exactly these
/// handles, never "the endpoint's addresses, whoever holds them now".
pub const IPAM_HANDLES_ANNOTATION: &str = "mesos.projectcalico.org/ipam-handles";

/// `WorkloadEndpoint.spec`, with exactly the fields this plugin sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    pub orchestrator: String,
    pub workload: String,
    pub node: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub endpoint: String,
    #[serde(default)]
    pub ip_networks: Vec<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    pub interface_name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type WorkloadEndpoint = Resource<WorkloadEndpointSpec>;

/// `node-mesos-workload-eth0`, every `-` inside a segment doubled
/// (libcalico-go `CalculateWorkloadEndpointName`).
pub fn endpoint_name(node: &str, container_id: &str) -> String {
    [node, ORCHESTRATOR, container_id, ENDPOINT]
        .iter()
        .map(|s| s.replace('-', "--"))
        .collect::<Vec<_>>()
        .join("-")
}

/// The key prefix of every Mesos endpoint of `node` (names start with the
/// escaped node and orchestrator, so no other node's names match).
pub fn node_endpoints_prefix(node: &str) -> String {
    keys::workload_endpoint(
        NAMESPACE,
        &format!("{}-{ORCHESTRATOR}-", node.replace('-', "--")),
    )
}

pub fn endpoint_key(node: &str, container_id: &str) -> String {
    keys::workload_endpoint(NAMESPACE, &endpoint_name(node, container_id))
}

/// The single-address CIDR of `ip` (/32 or /128).
pub fn host_cidr(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The CNI plugin's Mesos label sanitiser, for keys and values: `/` → `.`,
/// characters outside `[-_.a-zA-Z0-9]` → `-`, runs of `[.-]` holding a `.`
/// → `.`, leading and trailing `.`/`-` trimmed.
pub fn sanitize_label(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' => c,
            _ => '-',
        })
        .collect();
    collapse_dot_runs(&mapped)
        .trim_matches(|c| c == '.' || c == '-')
        .to_string()
}

/// Replaces every run of `.`/`-` that contains a `.` by a single `.`.
pub fn collapse_dot_runs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.contains('.') {
            out.push('.');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c == '.' || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Cuts to Kubernetes' 63-character limit and re-trims the ends.
fn fit63(s: String) -> String {
    if s.len() <= 63 {
        return s;
    }
    s[..63].trim_end_matches(['.', '-', '_']).to_string()
}

/// The endpoint's labels: the two clientv3 forces, then the sanitised Mesos
/// labels, minus any that would claim a netgroup or a Calico-reserved name.
pub fn endpoint_labels(mesos: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (k, v) in mesos {
        let key = fit63(sanitize_label(k));
        let reserved = key.is_empty()
            || key.starts_with("pcns.")
            || key.starts_with("pcsa.")
            || key.starts_with("projectcalico.org")
            || key.starts_with(&NETGROUP_LABEL_PREFIX.replace('/', "."));
        if reserved {
            tracing::debug!(label = %k, "dropping a Mesos label Calico reserves");
            continue;
        }
        labels.insert(key, fit63(sanitize_label(v)));
    }
    labels.insert("projectcalico.org/namespace".into(), NAMESPACE.into());
    labels.insert("projectcalico.org/orchestrator".into(), ORCHESTRATOR.into());
    labels
}

/// Everything isolate knows about the container's endpoint.
pub struct EndpointInput<'a> {
    pub node: &'a str,
    pub container_id: &'a str,
    pub ips: &'a [IpAddr],
    pub profiles: Vec<String>,
    pub interface_name: &'a str,
    pub mac: &'a str,
    pub mesos_labels: &'a BTreeMap<String, String>,
    pub netgroups: &'a [String],
    /// The handle holding each address (see `IPAM_HANDLES_ANNOTATION`).
    pub handles: &'a BTreeMap<IpAddr, String>,
}

pub fn build_endpoint(input: &EndpointInput) -> WorkloadEndpoint {
    let mut metadata = Metadata::new_for_create(endpoint_name(input.node, input.container_id));
    metadata.namespace = Some(NAMESPACE.into());
    metadata.labels = endpoint_labels(input.mesos_labels);
    if !input.netgroups.is_empty() {
        metadata
            .annotations
            .insert(NETGROUPS_ANNOTATION.into(), input.netgroups.join(","));
    }
    if !input.handles.is_empty() {
        let recorded: BTreeMap<String, &String> = input
            .handles
            .iter()
            .map(|(ip, h)| (ip.to_string(), h))
            .collect();
        metadata.annotations.insert(
            IPAM_HANDLES_ANNOTATION.into(),
            serde_json::to_string(&recorded).expect("a map of strings serializes"),
        );
    }
    let spec = WorkloadEndpointSpec {
        orchestrator: ORCHESTRATOR.into(),
        workload: input.container_id.into(),
        node: input.node.into(),
        container_id: input.container_id.into(),
        endpoint: ENDPOINT.into(),
        ip_networks: input.ips.iter().map(host_cidr).collect(),
        profiles: input.profiles.clone(),
        interface_name: input.interface_name.into(),
        mac: input.mac.into(),
        extra: Extra::new(),
    };
    Resource::new("WorkloadEndpoint", metadata, spec)
}

/// The addresses an endpoint holds (its `ipNetworks`, prefix dropped).
pub fn endpoint_ips(ep: &WorkloadEndpoint) -> Vec<IpAddr> {
    ep.spec
        .ip_networks
        .iter()
        .filter_map(|n| n.split('/').next()?.parse().ok())
        .collect()
}

/// The handles recorded at isolate, by address. None: the endpoint
/// records none (written by someone else, or by an older calico-mesos);
/// an unreadable record counts as none.
pub fn recorded_handles(ep: &WorkloadEndpoint) -> Option<BTreeMap<IpAddr, String>> {
    let text = ep.metadata.annotations.get(IPAM_HANDLES_ANNOTATION)?;
    let raw: BTreeMap<String, String> = serde_json::from_str(text).ok()?;
    Some(
        raw.into_iter()
            .filter_map(|(ip, h)| Some((ip.parse().ok()?, h)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_double_dashes_inside_segments() {
        assert_eq!(
            endpoint_name("agent-1", "ba11f1de-fc4d-46fd-9f15-424f4ef05a3a"),
            "agent--1-mesos-ba11f1de--fc4d--46fd--9f15--424f4ef05a3a-eth0"
        );
        assert_eq!(
            endpoint_key("agent-1", "c"),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/default/agent--1-mesos-c-eth0"
        );
    }

    #[test]
    fn labels_are_sanitised_like_the_cni_plugin() {
        assert_eq!(sanitize_label("/a/b/c"), "a.b.c");
        assert_eq!(sanitize_label("DCOS_SPACE"), "DCOS_SPACE");
        assert_eq!(sanitize_label("we ird!!/x"), "we-ird.x");
        assert_eq!(sanitize_label("-.-a-.b--"), "a.b");
        let mesos = BTreeMap::from([
            ("DCOS_SPACE".to_string(), "/a/b/c".to_string()),
            ("rack".to_string(), "3A".to_string()),
            (
                "netgroup.mesos.projectcalico.org.prod".to_string(),
                "".to_string(),
            ),
            (
                "projectcalico.org.namespace".to_string(),
                "evil".to_string(),
            ),
            ("pcns.x".to_string(), "y".to_string()),
            ("long".to_string(), "v".repeat(100)),
        ]);
        let labels = endpoint_labels(&mesos);
        assert_eq!(labels["DCOS_SPACE"], "a.b.c");
        assert_eq!(labels["rack"], "3A");
        assert_eq!(labels["projectcalico.org/namespace"], "default");
        assert_eq!(labels["projectcalico.org/orchestrator"], "mesos");
        assert_eq!(labels["long"].len(), 63);
        assert_eq!(labels.len(), 5, "{labels:?}");
    }
}
