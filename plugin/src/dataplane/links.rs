//! Links over netlink: look up, create the veth pair, set MAC/state, delete.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use super::netns::Netns;
use super::{errno, DataplaneError};

const ENODEV: i32 = 19;

/// The index of `name`, if such a link exists.
pub async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, DataplaneError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(DataplaneError::netlink(format!("look up link {name}"), e)),
    }
}

/// What a link says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFacts {
    pub index: u32,
    pub is_veth: bool,
    /// IFLA_IFALIAS, our ownership mark.
    pub alias: Option<String>,
    /// A veth's peer index, in the peer's namespace.
    pub peer_index: Option<u32>,
    /// The peer lives in another network namespace (IFLA_LINK_NETNSID).
    pub peer_elsewhere: bool,
}

/// The facts of one RTM_NEWLINK message, with the link's name.
fn facts_of_message(msg: LinkMessage) -> (Option<String>, LinkFacts) {
    let mut name = None;
    let mut facts = LinkFacts {
        index: msg.header.index,
        is_veth: false,
        alias: None,
        peer_index: None,
        peer_elsewhere: false,
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::IfAlias(text) => facts.alias = Some(text),
            LinkAttribute::Link(i) => facts.peer_index = Some(i),
            LinkAttribute::LinkNetNsId(_) => facts.peer_elsewhere = true,
            LinkAttribute::LinkInfo(infos) => {
                facts.is_veth = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    (name, facts)
}

/// The facts of link `name`, if it exists.
pub async fn facts_of(handle: &Handle, name: &str) -> Result<Option<LinkFacts>, DataplaneError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    let msg = match links.try_next().await {
        Ok(Some(msg)) => msg,
        Ok(None) => return Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => return Ok(None),
        Err(e) => return Err(DataplaneError::netlink(format!("look up link {name}"), e)),
    };
    Ok(Some(facts_of_message(msg).1))
}

/// Every link in the namespace of `handle`, by name, with its facts.
pub async fn all(handle: &Handle) -> Result<Vec<(String, LinkFacts)>, DataplaneError> {
    let mut links = handle.link().get().execute();
    let mut out = Vec::new();
    loop {
        match links.try_next().await {
            Ok(Some(msg)) => {
                if let (Some(name), facts) = facts_of_message(msg) {
                    out.push((name, facts));
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(DataplaneError::netlink("list links".into(), e)),
        }
    }
}

/// Marks the link as ours (IFLA_IFALIAS; the kernel ignores an alias
/// given at creation, so it is set right after).
pub async fn set_alias(handle: &Handle, index: u32, alias: &str) -> Result<(), DataplaneError> {
    let msg = LinkUnspec::new_with_index(index).alias(alias).build();
    set(handle, msg, format!("mark link {index} as ours")).await
}

async fn get(handle: &Handle, index: u32) -> Result<LinkMessage, DataplaneError> {
    handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| DataplaneError::netlink(format!("read link {index}"), e))?
        .ok_or_else(|| DataplaneError::Internal(format!("link {index} vanished")))
}

/// The link's hardware address.
pub async fn mac_of(handle: &Handle, index: u32) -> Result<[u8; 6], DataplaneError> {
    let msg = get(handle, index).await?;
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(bytes);
                Some(mac)
            }
            _ => None,
        })
        .ok_or_else(|| DataplaneError::Internal(format!("link {index} has no MAC address")))
}

/// Creates the pair in one request: the host end here, the peer directly
/// in the container's namespace (no move, which costs ~30 ms in the
/// kernel), both with the MTU, the host end with `host_mac`.
pub async fn create_veth(
    host: &Handle,
    host_name: &str,
    host_mac: [u8; 6],
    peer_name: &str,
    mtu: u32,
    container: &Netns,
) -> Result<(), DataplaneError> {
    let peer = LinkUnspec::new_with_name(peer_name)
        .mtu(mtu)
        .setns_by_fd(container.raw_file().as_raw_fd())
        .build();
    let msg = LinkVeth::new(host_name, peer_name)
        .mtu(mtu)
        .address(host_mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| DataplaneError::netlink(format!("create veth {host_name}"), e))
}

/// Applies a change to link `index` (an RTM_NEWLINK "set").
async fn set(handle: &Handle, msg: LinkMessage, what: String) -> Result<(), DataplaneError> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| DataplaneError::netlink(what, e))
}

pub async fn set_mac(handle: &Handle, index: u32, mac: [u8; 6]) -> Result<(), DataplaneError> {
    let msg = LinkUnspec::new_with_index(index)
        .address(mac.to_vec())
        .build();
    set(handle, msg, format!("set MAC of link {index}")).await
}

pub async fn set_up(handle: &Handle, index: u32) -> Result<(), DataplaneError> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    set(handle, msg, format!("bring link {index} up")).await
}

pub async fn set_down(handle: &Handle, index: u32) -> Result<(), DataplaneError> {
    let msg = LinkUnspec::new_with_index(index).down().build();
    set(handle, msg, format!("bring link {index} down")).await
}

/// Deletes the link; one that is already gone counts as deleted.
pub async fn delete(handle: &Handle, index: u32) -> Result<(), DataplaneError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        Err(e) => Err(DataplaneError::netlink(format!("delete link {index}"), e)),
    }
}
