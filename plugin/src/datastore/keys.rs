//! Every etcd key the plugin reads or writes is built here, and only here
//! (calico-datastore.md §1.0/§1.1). CIDRs in IPAM keys have their first `/`
//! replaced by `-`.

use ipnetwork::IpNetwork;

const RESOURCES: &str = "/calico/resources/v3/projectcalico.org";
const IPAM: &str = "/calico/ipam/v2";

/// "ipv4" / "ipv6", the family segment of IPAM keys.
pub fn family_segment(v6: bool) -> &'static str {
    if v6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

fn dashed(cidr: &IpNetwork) -> String {
    cidr.to_string().replacen('/', "-", 1)
}

pub fn ip_pools_prefix() -> String {
    format!("{RESOURCES}/ippools/")
}

pub fn ip_pool(name: &str) -> String {
    format!("{RESOURCES}/ippools/{name}")
}

pub fn ip_reservations_prefix() -> String {
    format!("{RESOURCES}/ipreservations/")
}

pub fn cluster_information() -> String {
    format!("{RESOURCES}/clusterinformations/default")
}

pub fn node(name: &str) -> String {
    format!("{RESOURCES}/nodes/{name}")
}

pub fn profile(name: &str) -> String {
    format!("{RESOURCES}/profiles/{name}")
}

/// Every WorkloadEndpoint, of every namespace and orchestrator.
pub fn all_workload_endpoints_prefix() -> String {
    format!("{RESOURCES}/workloadendpoints/")
}

pub fn workload_endpoints_prefix(namespace: &str) -> String {
    format!("{RESOURCES}/workloadendpoints/{namespace}/")
}

pub fn workload_endpoint(namespace: &str, name: &str) -> String {
    format!("{RESOURCES}/workloadendpoints/{namespace}/{name}")
}

pub fn ipam_config() -> String {
    format!("{IPAM}/config")
}

pub fn blocks_prefix(v6: bool) -> String {
    format!("{IPAM}/assignment/{}/block/", family_segment(v6))
}

pub fn block(cidr: &IpNetwork) -> String {
    format!("{}{}", blocks_prefix(cidr.is_ipv6()), dashed(cidr))
}

pub fn handles_prefix() -> String {
    format!("{IPAM}/handle/")
}

/// Every IPAM key: blocks, handles, affinities, config.
pub fn ipam_prefix() -> String {
    format!("{IPAM}/")
}

pub fn handle(handle_id: &str) -> String {
    format!("{IPAM}/handle/{handle_id}")
}

pub fn host_affinities_prefix(node: &str, v6: bool) -> String {
    format!("{IPAM}/host/{node}/{}/block/", family_segment(v6))
}

pub fn block_affinity(node: &str, cidr: &IpNetwork) -> String {
    format!(
        "{}{}",
        host_affinities_prefix(node, cidr.is_ipv6()),
        dashed(cidr)
    )
}

/// Parses the CIDR at the end of a block or affinity key (`…/10.65.12.64-26`).
pub fn cidr_from_key(key: &str) -> Option<IpNetwork> {
    let last = key.rsplit('/').next()?;
    let (addr, len) = last.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_dash_the_prefix_length() {
        let v4: IpNetwork = "10.65.12.64/26".parse().unwrap();
        let v6: IpNetwork = "fd00:1::/122".parse().unwrap();
        assert_eq!(
            block(&v4),
            "/calico/ipam/v2/assignment/ipv4/block/10.65.12.64-26"
        );
        assert_eq!(
            block(&v6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00:1::-122"
        );
        assert_eq!(
            block_affinity("agent-1", &v4),
            "/calico/ipam/v2/host/agent-1/ipv4/block/10.65.12.64-26"
        );
        assert_eq!(cidr_from_key(&block(&v6)), Some(v6));
        assert_eq!(cidr_from_key(&block_affinity("a", &v4)), Some(v4));
    }

    #[test]
    fn resource_keys_match_libcalico_layout() {
        assert_eq!(
            workload_endpoint("default", "a--1-mesos-x-eth0"),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/default/a--1-mesos-x-eth0"
        );
        assert_eq!(
            ip_pool("p"),
            "/calico/resources/v3/projectcalico.org/ippools/p"
        );
        assert_eq!(handle("mesos.u"), "/calico/ipam/v2/handle/mesos.u");
    }
}
