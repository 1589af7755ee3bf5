//! The container dataplane over netlink (calico-datastore.md §2.1 steps
//! 5–14, §2.4): a veth pair whose container end `eth0` is created directly
//! in the container's network namespace, /32 and /128 addresses, routes via
//! 169.254.1.1 (IPv6: the host end's link-local address), the host-side
//! sysctls and host routes Felix would otherwise add a moment later.
//!
//! `setup` is all-or-nothing: once the pair exists, any failure deletes it
//! (which removes both ends and every route through them). `probe` looks
//! before anything is written: the pid, the host end's name, the
//! container's eth0 and the routes.
//!
//! `Dataplane` is the seam `workload.rs` uses (setup, teardown, probe), so
//! its all-or-nothing and rerun logic is tested with a fake too.

mod links;
mod netns;
mod routes;
mod sysctl;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use rtnetlink::Handle;
use sha1::{Digest, Sha1};

pub use netns::Netns;

/// Felix's interface prefix (`FELIX_INTERFACEPREFIX` default).
pub const HOST_PREFIX: &str = "cali";
pub const CONTAINER_IFNAME: &str = "eth0";
/// Every host end has this MAC; Felix programs static ARP to the container MAC.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The container's IPv4 gateway, answered by proxy ARP on the host end.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("pid {0} has exited")]
    PidGone(u32),
    #[error("pid {0} is not in a container network namespace (it shares the host's)")]
    NotContainer(u32),
    #[error(
        "container already has an eth0 (in the network namespace of pid {0}); refusing to \
         replace it"
    )]
    ContainerHasEth0(u32),
    #[error(
        "cannot enter the network namespace of pid {pid} (has the container exited?): {detail}"
    )]
    NoNamespace { pid: u32, detail: String },
    #[error("interface {0} already exists on this host; it is not ours, so it was left alone")]
    LinkExists(String),
    #[error("address {ip} is already routed via interface {owner}")]
    AddressRouted { ip: IpAddr, owner: String },
    #[error("address {ip} is already routed via another interface (index {owner:?})")]
    RouteTaken { ip: IpAddr, owner: Option<u32> },
    #[error("{what}: {detail}")]
    Netlink { what: String, detail: String },
    #[error("cannot set {key}: {detail}")]
    Sysctl { key: String, detail: String },
    #[error("the host end {0} got no IPv6 link-local address")]
    NoLinkLocal(String),
    #[error("dataplane: {0}")]
    Internal(String),
}

impl DataplaneError {
    fn netlink(what: String, e: rtnetlink::Error) -> Self {
        let detail = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        DataplaneError::Netlink { what, detail }
    }
}

/// The errno of a netlink error answer.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// What isolate asks of the kernel.
#[derive(Debug, Clone)]
pub struct ContainerNetwork {
    pub container_id: String,
    pub pid: u32,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub mtu: u32,
}

impl ContainerNetwork {
    fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
    }
}

/// The plumbed pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Plumbed {
    pub host_ifname: String,
    /// The container end's MAC, `aa:bb:cc:dd:ee:ff` (for the endpoint).
    pub container_mac: String,
}

/// The alias that marks a host end as the one of `container_id`.
pub fn ownership_mark(container_id: &str) -> String {
    format!("{MARK_PREFIX}{container_id}")
}

/// A `cali…` link of the host namespace, as gc sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    /// Our ownership mark (`calico-mesos:<container id>`) or someone else's.
    pub alias: Option<String>,
    /// A veth whose peer lives in another network namespace: the link
    /// still leads into a container.
    pub leads_to_container: bool,
}

impl HostLink {
    /// The container whose ownership mark the link carries, if the mark
    /// is ours and matches the link's name.
    pub fn marked_container(&self) -> Option<&str> {
        let cid = self.alias.as_deref()?.strip_prefix(MARK_PREFIX)?;
        (host_veth_name(cid) == self.name).then_some(cid)
    }
}

const MARK_PREFIX: &str = "calico-mesos:";

/// What is already there for a container, read before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEnd {
    Absent,
    /// Our own host end from an earlier attempt of the same container
    /// (marked, or the peer of an eth0 in the container): removed and
    /// plumbed again.
    Ours {
        index: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub host_end: HostEnd,
    /// The container's eth0 is our host end's peer (a complete pair).
    pub paired: bool,
}

/// The kernel side of isolate and cleanup.
#[allow(async_fn_in_trait)]
pub trait Dataplane {
    /// Checks, without writing, that the container can be plumbed: the pid
    /// is a live container's, no foreign link has our name, the container
    /// has no eth0 of its own, no address is routed elsewhere.
    async fn probe(&self, net: &ContainerNetwork) -> Result<Probe, DataplaneError>;
    /// The first check of all: `pid` is alive and in a namespace of its
    /// own, not the host's.
    async fn check_pid(&self, pid: u32) -> Result<(), DataplaneError>;
    async fn setup(&self, net: &ContainerNetwork) -> Result<Plumbed, DataplaneError>;
    /// Removes the host end. Ok(false): it did not exist.
    async fn teardown(&self, host_ifname: &str) -> Result<bool, DataplaneError>;
    /// The names of the host's links (is a container's host end there?).
    async fn host_links(&self) -> Result<std::collections::BTreeSet<String>, DataplaneError>;
    /// The host's `cali…` links, with what gc needs to judge them.
    async fn host_ends(&self) -> Result<Vec<HostLink>, DataplaneError>;
}

/// The real dataplane: netlink in the host namespace and the container's.
pub struct Kernel;

impl Dataplane for Kernel {
    async fn probe(&self, net: &ContainerNetwork) -> Result<Probe, DataplaneError> {
        probe(net).await
    }
    async fn check_pid(&self, pid: u32) -> Result<(), DataplaneError> {
        Netns::of_container_pid(pid).map(|_| ())
    }
    async fn setup(&self, net: &ContainerNetwork) -> Result<Plumbed, DataplaneError> {
        setup(net).await
    }
    async fn teardown(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        teardown(host_ifname).await
    }
    async fn host_links(&self) -> Result<std::collections::BTreeSet<String>, DataplaneError> {
        let host = netns::host_netlink()?;
        Ok(links::all(&host)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }
    async fn host_ends(&self) -> Result<Vec<HostLink>, DataplaneError> {
        let host = netns::host_netlink()?;
        Ok(links::all(&host)
            .await?
            .into_iter()
            .filter(|(name, _)| name.starts_with(HOST_PREFIX))
            .map(|(name, f)| HostLink {
                name,
                alias: f.alias,
                leads_to_container: f.is_veth && f.peer_elsewhere,
            })
            .collect())
    }
}

/// `cali` + the first 11 hex digits of SHA-1(`default.<container_id>`):
/// Calico's k8s formula for (namespace, workload), 15 characters,
/// computable at cleanup from the container id alone.
pub fn host_veth_name(container_id: &str) -> String {
    let digest = Sha1::digest(format!("default.{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_PREFIX}{}", &hex[..11])
}

/// The MTU: configured, else the file Felix writes, else 1500.
pub fn resolve_mtu(configured: Option<u32>, mtu_file: &Path) -> u32 {
    configured
        .or_else(|| {
            std::fs::read_to_string(mtu_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|m| (576..=65535).contains(m))
        })
        .unwrap_or(DEFAULT_MTU)
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// See [`Dataplane::probe`].
pub async fn probe(net: &ContainerNetwork) -> Result<Probe, DataplaneError> {
    let host = netns::host_netlink()?;
    let container = Netns::of_container_pid(net.pid)?;
    let host_ifname = host_veth_name(&net.container_id);
    let inside = container.netlink()?;
    let eth0 = links::facts_of(&inside, CONTAINER_IFNAME).await?;
    let host_end = links::facts_of(&host, &host_ifname).await?;

    let paired = match (&host_end, &eth0) {
        (Some(h), Some(c)) => {
            h.is_veth && h.peer_index == Some(c.index) && c.peer_index == Some(h.index)
        }
        _ => false,
    };
    let host_end = match host_end {
        None => HostEnd::Absent,
        Some(h)
            if paired || h.alias.as_deref() == Some(ownership_mark(&net.container_id).as_str()) =>
        {
            HostEnd::Ours { index: h.index }
        }
        Some(_) => return Err(DataplaneError::LinkExists(host_ifname)),
    };
    if eth0.is_some() && !paired {
        return Err(DataplaneError::ContainerHasEth0(net.pid));
    }
    let ours = match host_end {
        HostEnd::Ours { index } => Some(index),
        HostEnd::Absent => None,
    };
    for ip in net.ips() {
        match routes::route_owner(&host, ip).await? {
            Some(owner) if Some(owner) != ours => {
                return Err(DataplaneError::AddressRouted {
                    ip,
                    owner: link_name(&host, owner).await,
                })
            }
            _ => {}
        }
    }
    Ok(Probe { host_end, paired })
}

/// Plumbs the container (after `probe` passed and any half-made pair of
/// ours was removed). Runs in the host's network namespace, inside a
/// tokio runtime.
pub async fn setup(net: &ContainerNetwork) -> Result<Plumbed, DataplaneError> {
    let host = netns::host_netlink()?;
    let container = Netns::of_container_pid(net.pid)?;
    let host_ifname = host_veth_name(&net.container_id);

    // `probe` checked the name and the routes; a link created since makes
    // the create fail (EEXIST), a route taken since fails add_host_route.
    links::create_veth(
        &host,
        &host_ifname,
        HOST_MAC,
        CONTAINER_IFNAME,
        net.mtu,
        &container,
    )
    .await?;
    crate::faults::point("isolate:veth-created");
    match configure(&host, &container, &host_ifname, net).await {
        Ok(container_mac) => Ok(Plumbed {
            host_ifname,
            container_mac,
        }),
        Err(e) => {
            if let Err(undo) = teardown(&host_ifname).await {
                tracing::error!("cannot remove {host_ifname} after a failed setup: {undo}");
            }
            Err(e)
        }
    }
}

async fn link_name(handle: &Handle, index: u32) -> String {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::link::LinkAttribute;
    let msg = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await;
    if let Ok(Some(msg)) = msg {
        for a in msg.attributes {
            if let LinkAttribute::IfName(n) = a {
                return n;
            }
        }
    }
    format!("#{index}")
}

/// Everything after the pair exists; the caller deletes the pair on error.
async fn configure(
    host: &Handle,
    container: &Netns,
    host_ifname: &str,
    net: &ContainerNetwork,
) -> Result<String, DataplaneError> {
    let host_index = links::index_of(host, host_ifname)
        .await?
        .ok_or_else(|| DataplaneError::Internal(format!("{host_ifname} vanished")))?;
    links::set_alias(host, host_index, &ownership_mark(&net.container_id)).await?;
    crate::faults::point("isolate:veth-marked");
    let inside = container.netlink()?;
    let eth0 = links::index_of(&inside, CONTAINER_IFNAME)
        .await?
        .ok_or_else(|| DataplaneError::Internal("eth0 was not created in the container".into()))?;
    let has_v6 = !net.ipv6.is_empty();

    if has_v6 {
        container.run(|| {
            for scope in ["all", "default", "lo"] {
                sysctl::set(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "0")?;
            }
            sysctl::set(&format!("net.ipv6.conf.{CONTAINER_IFNAME}.accept_dad"), "0")
        })?;
    }
    configure_host_sysctls(host_ifname, has_v6)?;

    links::set_up(host, host_index).await?;
    ensure_host_mac(host, host_index).await?;
    links::set_up(&inside, eth0).await?;
    if let Some(lo) = links::index_of(&inside, "lo").await? {
        links::set_up(&inside, lo).await?;
    }

    for ip in net.ips() {
        routes::add_address(&inside, eth0, ip).await?;
    }
    if !net.ipv4.is_empty() {
        routes::add_v4_gateway_routes(&inside, eth0, GATEWAY_V4).await?;
    }
    if has_v6 {
        let ll = host_link_local(host, host_index, host_ifname).await?;
        routes::add_v6_default_route(&inside, eth0, ll).await?;
    }
    container.run(|| {
        sysctl::set("net.ipv4.ip_forward", "0")?;
        if has_v6 {
            sysctl::set("net.ipv6.conf.all.forwarding", "0")?;
        }
        Ok(())
    })?;

    crate::faults::point("isolate:container-configured");
    for ip in net.ips() {
        routes::add_host_route(host, host_index, ip).await?;
    }
    Ok(format_mac(links::mac_of(&inside, eth0).await?))
}

/// Host-side sysctls of the veth (the CNI plugin's `configureSysctls`).
fn configure_host_sysctls(iface: &str, has_v6: bool) -> Result<(), DataplaneError> {
    sysctl::set(&format!("net.ipv4.conf.{iface}.route_localnet"), "1")?;
    // Without it the first packet to the container waits up to a second.
    sysctl::set_or_warn(&format!("net.ipv4.neigh.{iface}.proxy_delay"), "0");
    sysctl::set(&format!("net.ipv4.conf.{iface}.proxy_arp"), "1")?;
    sysctl::set(&format!("net.ipv4.conf.{iface}.forwarding"), "1")?;
    if has_v6 {
        sysctl::set(&format!("net.ipv6.conf.{iface}.accept_dad"), "0")?;
        sysctl::set(&format!("net.ipv6.conf.{iface}.disable_ipv6"), "0")?;
        sysctl::set(&format!("net.ipv6.conf.{iface}.proxy_ndp"), "1")?;
        sysctl::set(&format!("net.ipv6.conf.{iface}.forwarding"), "1")?;
    }
    sysctl::set_or_warn(&format!("net.ipv6.conf.{iface}.accept_ra"), "0");
    Ok(())
}

/// The kernel sometimes ignores the MAC given at creation: re-read and set
/// again, as the CNI plugin does.
async fn ensure_host_mac(host: &Handle, index: u32) -> Result<(), DataplaneError> {
    for _ in 0..50 {
        if links::mac_of(host, index).await? == HOST_MAC {
            return Ok(());
        }
        links::set_mac(host, index, HOST_MAC).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DataplaneError::Internal(format!(
        "the host end {index} keeps refusing MAC {}",
        format_mac(HOST_MAC)
    )))
}

/// Waits (10 × 50 ms, then once more after a down/up) for the host end's
/// link-local address, the container's IPv6 gateway.
async fn host_link_local(
    host: &Handle,
    index: u32,
    name: &str,
) -> Result<Ipv6Addr, DataplaneError> {
    for round in 0..2 {
        for _ in 0..10 {
            if let Some(ll) = routes::link_local_v6(host, index).await? {
                return Ok(ll);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if round == 0 {
            links::set_down(host, index).await?;
            links::set_up(host, index).await?;
        }
    }
    Err(DataplaneError::NoLinkLocal(name.to_string()))
}

/// Removes the host end (and with it the container end and every route
/// through them). Ok(false): it did not exist.
pub async fn teardown(host_ifname: &str) -> Result<bool, DataplaneError> {
    let host = netns::host_netlink()?;
    match links::index_of(&host, host_ifname).await? {
        Some(index) => {
            links::delete(&host, index).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_deterministic_and_fit_ifnamsiz() {
        let name = host_veth_name("ba11f1de-fc4d-46fd-9f15-424f4ef05a3a");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("cali"));
        assert!(name[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(name, host_veth_name("ba11f1de-fc4d-46fd-9f15-424f4ef05a3a"));
        assert_ne!(name, host_veth_name("other"));
    }

    #[test]
    fn only_our_own_mark_names_a_container() {
        let name = host_veth_name("ctr-1");
        let link = |alias: Option<&str>, name: &str| HostLink {
            name: name.into(),
            alias: alias.map(String::from),
            leads_to_container: true,
        };
        assert_eq!(
            link(Some("calico-mesos:ctr-1"), &name).marked_container(),
            Some("ctr-1")
        );
        // A mark that does not match the name, someone else's alias, none.
        assert_eq!(
            link(Some("calico-mesos:ctr-2"), &name).marked_container(),
            None
        );
        assert_eq!(link(Some("k8s"), &name).marked_container(), None);
        assert_eq!(link(None, &name).marked_container(), None);
    }

    #[test]
    fn mtu_comes_from_config_then_file_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mtu");
        assert_eq!(resolve_mtu(None, &f), 1500);
        std::fs::write(&f, "1440\n").unwrap();
        assert_eq!(resolve_mtu(None, &f), 1440);
        assert_eq!(resolve_mtu(Some(9000), &f), 9000);
        std::fs::write(&f, "junk").unwrap();
        assert_eq!(resolve_mtu(None, &f), 1500);
    }
}
