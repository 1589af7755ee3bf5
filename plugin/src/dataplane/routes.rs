//! Addresses and routes over netlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{errno, DataplaneError};

const EEXIST: i32 = 17;
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

fn prefix_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// Adds `ip` as a /32 (/128) to the link.
pub async fn add_address(handle: &Handle, index: u32, ip: IpAddr) -> Result<(), DataplaneError> {
    handle
        .address()
        .add(index, ip, prefix_len(&ip))
        .execute()
        .await
        .map_err(|e| DataplaneError::netlink(format!("add address {ip}"), e))
}

async fn add_route(handle: &Handle, route: RouteMessage, what: &str) -> Result<(), DataplaneError> {
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(|e| DataplaneError::netlink(format!("add route {what}"), e))
}

/// `169.254.1.1/32 dev <index> scope link` then `default via 169.254.1.1`:
/// the host end answers ARP for the gateway by proxy ARP.
pub async fn add_v4_gateway_routes(
    handle: &Handle,
    index: u32,
    gateway: Ipv4Addr,
) -> Result<(), DataplaneError> {
    let link_route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(gateway, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    add_route(handle, link_route, &format!("{gateway}/32")).await?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    add_route(handle, default, "default (IPv4)").await
}

/// `::/0 via <host end's link-local> dev <index>`.
pub async fn add_v6_default_route(
    handle: &Handle,
    index: u32,
    gateway: Ipv6Addr,
) -> Result<(), DataplaneError> {
    let default = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    add_route(handle, default, "default (IPv6)").await
}

/// The link-local IPv6 address of the link, once the kernel has made it.
pub async fn link_local_v6(
    handle: &Handle,
    index: u32,
) -> Result<Option<Ipv6Addr>, DataplaneError> {
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| DataplaneError::netlink("read addresses".into(), e))?
    {
        if msg.header.scope != AddressScope::Link {
            continue;
        }
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V6(a)) = attr {
                return Ok(Some(*a));
            }
        }
    }
    Ok(None)
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table as u32)
}

/// The link a host route to `ip` already uses, if any: one FIB lookup
/// (`ip route get fibmatch`), not a dump of the host's routing table.
pub async fn route_owner(handle: &Handle, ip: IpAddr) -> Result<Option<u32>, DataplaneError> {
    let mut query = match ip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .build(),
    };
    // The matching FIB entry itself, with its real prefix length.
    query.header.flags = RouteFlags::FibMatch;
    let mut answers = handle.route().get(query).execute();
    let msg = match answers.try_next().await {
        Ok(Some(msg)) => msg,
        Ok(None) => return Ok(None),
        // No route at all (not even a default one).
        Err(e) if matches!(errno(&e), Some(ENETUNREACH | EHOSTUNREACH)) => return Ok(None),
        Err(e) => {
            return Err(DataplaneError::netlink(
                format!("look up the route to {ip}"),
                e,
            ))
        }
    };
    let full = prefix_len(&ip);
    if msg.header.destination_prefix_length != full
        || table_of(&msg) != RouteHeader::RT_TABLE_MAIN as u32
    {
        return Ok(None);
    }
    let dest = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    let oif = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    Ok(if dest == Some(ip) { oif } else { None })
}

/// `<ip>/32 (/128) dev <index> scope link` in the host's main table.
/// Already there on the same link (Felix was quicker) is success.
pub async fn add_host_route(handle: &Handle, index: u32, ip: IpAddr) -> Result<(), DataplaneError> {
    let route = match ip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .output_interface(index)
            .build(),
    };
    match handle.route().add(route).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => match route_owner(handle, ip).await? {
            Some(owner) if owner == index => Ok(()),
            owner => Err(DataplaneError::RouteTaken { ip, owner }),
        },
        Err(e) => Err(DataplaneError::netlink(format!("add host route {ip}"), e)),
    }
}
