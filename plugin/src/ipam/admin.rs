//! Operator actions on pools and blocks: add, list and delete pools, and
//! a usage report. The plugin itself never invents a pool.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::block::BlockView;
use super::parse_block;
use super::pools::Pool;
use crate::datastore::model::{
    AllocationBlock, IpPool, IpPoolSpec, Metadata, Resource, DEFAULT_BLOCK_SIZE_V4,
    DEFAULT_BLOCK_SIZE_V6,
};
use crate::datastore::{keys, Datastore, Read, WriteBatch};
use crate::names::is_dns1123_subdomain;

pub struct NewPool {
    pub cidr: String,
    pub name: Option<String>,
    pub block_size: Option<u8>,
    pub nat_outgoing: bool,
    pub disabled: bool,
}

/// The pool name used when the operator gives none: `mesos-` + the CIDR
/// with its punctuation turned into dashes (a valid DNS-1123 name).
pub fn default_pool_name(cidr: &IpNetwork) -> String {
    let text: String = cidr
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("mesos-{}", text.to_lowercase())
}

pub async fn list_pools(ds: &Datastore) -> anyhow::Result<Vec<Pool>> {
    let entries = ds
        .read_batch(&[Read::Prefix(keys::ip_pools_prefix())])
        .await?;
    Ok(entries[0].iter().filter_map(Pool::from_entry).collect())
}

pub async fn add_pool(ds: &Datastore, req: NewPool) -> anyhow::Result<Pool> {
    let cidr: IpNetwork = req
        .cidr
        .parse()
        .map_err(|_| anyhow::anyhow!("'{}' is not a CIDR (like 198.18.0.0/16)", req.cidr))?;
    let aligned = IpNetwork::new(cidr.network(), cidr.prefix())?;
    if aligned.ip() != cidr.ip() {
        anyhow::bail!("{cidr} has host bits set; did you mean {aligned}?");
    }
    let v6 = cidr.is_ipv6();
    let (default, range) = if v6 {
        (DEFAULT_BLOCK_SIZE_V6, 116..=128)
    } else {
        (DEFAULT_BLOCK_SIZE_V4, 20..=32)
    };
    let block_size = req.block_size.unwrap_or(default);
    if !range.contains(&block_size) {
        anyhow::bail!(
            "block size {block_size} is outside {}..{} for {}",
            range.start(),
            range.end(),
            if v6 { "IPv6" } else { "IPv4" }
        );
    }
    if block_size < cidr.prefix() {
        anyhow::bail!("block size /{block_size} is larger than the pool {cidr}");
    }
    let name = req.name.unwrap_or_else(|| default_pool_name(&cidr));
    if !is_dns1123_subdomain(&name) {
        anyhow::bail!("pool name '{name}' is not a valid DNS-1123 name");
    }
    for existing in list_pools(ds).await? {
        if existing.cidr.contains(cidr.network()) || cidr.contains(existing.cidr.network()) {
            anyhow::bail!(
                "{cidr} overlaps the existing pool {} ({})",
                existing.name,
                existing.cidr
            );
        }
    }
    let spec = IpPoolSpec {
        cidr: cidr.to_string(),
        vxlan_mode: Some("Never".into()),
        ipip_mode: Some("Never".into()),
        nat_outgoing: req.nat_outgoing,
        disabled: req.disabled,
        block_size: Some(block_size),
        node_selector: Some("all()".into()),
        allowed_uses: Some(vec!["Workload".into(), "Tunnel".into()]),
        assignment_mode: Some("Automatic".into()),
        extra: Default::default(),
    };
    let pool: IpPool = Resource::new("IPPool", Metadata::new_for_create(&name), spec);
    let key = keys::ip_pool(&name);
    if !ds.commit(WriteBatch::new().create(&key, &pool)).await? {
        anyhow::bail!("an IP pool named {name} already exists");
    }
    let entry = ds.read_batch(&[Read::Key(key)]).await?.remove(0);
    entry
        .first()
        .and_then(Pool::from_entry)
        .ok_or_else(|| anyhow::anyhow!("pool {name} vanished right after it was created"))
}

/// Finds a pool by CIDR or name.
pub fn find_pool<'p>(pools: &'p [Pool], what: &str) -> Option<&'p Pool> {
    let cidr = what.parse::<IpNetwork>().ok();
    pools
        .iter()
        .find(|p| p.name == what || Some(p.cidr) == cidr)
}

/// Deletes a pool with its (empty) blocks and their affinities. Refuses
/// while any block of the pool holds an address or is corrupt, naming them.
///
/// Every write is guarded on the block listing it was planned from (no
/// block of the family created since) and on the pool document, while a
/// claim is guarded on its pool document: a delete and a claim that race
/// cannot both commit, so no allocation ever lives outside a pool.
pub async fn delete_pool(ds: &Datastore, what: &str) -> anyhow::Result<Pool> {
    let pools = list_pools(ds).await?;
    let pool = find_pool(&pools, what)
        .ok_or_else(|| anyhow::anyhow!("no IP pool named or with CIDR '{what}'"))?
        .clone();
    let prefix = keys::blocks_prefix(pool.is_v6());
    let (mut r, listed_at) = ds
        .read_batch_at(&[Read::Prefix(prefix.clone())], None)
        .await?;
    let blocks = r.remove(0);
    let mut refused = Vec::new();
    let mut in_use_total = 0;
    let mut batch = WriteBatch::new();
    let mut batches = Vec::new();
    for entry in &blocks {
        // A key whose CIDR cannot be read cannot be placed in a pool.
        let Some((cidr, doc)) = parse_block(entry) else {
            continue;
        };
        if !pool.cidr.contains(cidr.network()) {
            continue;
        }
        let mut doc = match doc {
            Ok(d) => d,
            Err(why) => {
                refused.push(format!("{} is corrupt ({why})", entry.key));
                continue;
            }
        };
        let in_use = BlockView::new(&mut doc, &cidr).map_or(0, |v| v.in_use());
        if in_use > 0 {
            in_use_total += in_use;
            refused.push(format!("{} holds {in_use}", entry.key));
            continue;
        }
        // Guarded: an allocation that lands meanwhile makes the delete fail.
        batch.delete(&entry.key, entry.mod_revision);
        if let Some(node) = doc
            .affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
        {
            batch.put_delete(&keys::block_affinity(node, &cidr));
        }
        if batch.len() >= 100 {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !refused.is_empty() {
        anyhow::bail!(
            "pool {} ({}) still has {in_use_total} address(es) in use or corrupt blocks: {}. \
             Release the addresses first (see `calico-mesos ipam show`) and repair or delete \
             corrupt blocks",
            pool.name,
            pool.cidr,
            refused.join("; ")
        );
    }
    // The pool goes last, so an interrupted delete can simply be rerun.
    batch.delete(&keys::ip_pool(&pool.name), pool.doc.mod_revision);
    batches.push(batch);
    for b in &mut batches {
        b.require_no_keys_created_after(&prefix, listed_at)
            .require_unchanged(&pool.doc.key, pool.doc.mod_revision);
        if !ds.commit(b).await? {
            anyhow::bail!(
                "pool {} changed while it was being deleted (an address was allocated or a \
                 block claimed meanwhile); nothing more was deleted, try again",
                pool.name
            );
        }
    }
    Ok(pool)
}

#[derive(Debug, Serialize)]
pub struct BlockUsage {
    pub cidr: String,
    pub affinity: Option<String>,
    pub in_use: usize,
    pub free: usize,
    /// Why the document cannot be used, if it is corrupt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: String,
    pub block_size: u8,
    pub disabled: bool,
    pub size: u128,
    pub in_use: u128,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Debug, Serialize)]
pub struct IpamReport {
    pub pools: Vec<PoolUsage>,
    /// Blocks outside every pool (their pool was deleted).
    pub orphan_blocks: Vec<BlockUsage>,
}

pub async fn report(ds: &Datastore) -> anyhow::Result<IpamReport> {
    let pools = list_pools(ds).await?;
    let r = ds
        .read_batch(&[
            Read::Prefix(keys::blocks_prefix(false)),
            Read::Prefix(keys::blocks_prefix(true)),
        ])
        .await?;
    let mut by_pool: BTreeMap<String, Vec<BlockUsage>> = BTreeMap::new();
    let mut orphan_blocks = Vec::new();
    for entry in r.iter().flatten() {
        let Some((cidr, doc)) = parse_block(entry) else {
            continue;
        };
        let usage = match doc {
            Ok(mut doc) => usage_of(&cidr, &mut doc),
            Err(why) => BlockUsage {
                cidr: cidr.to_string(),
                affinity: None,
                in_use: 0,
                free: 0,
                corrupt: Some(why),
            },
        };
        match pools.iter().find(|p| p.cidr.contains(cidr.network())) {
            Some(p) => by_pool.entry(p.name.clone()).or_default().push(usage),
            None => orphan_blocks.push(usage),
        }
    }
    let pools = pools
        .iter()
        .map(|p| {
            let blocks = by_pool.remove(&p.name).unwrap_or_default();
            let max = if p.is_v6() { 128 } else { 32 };
            PoolUsage {
                name: p.name.clone(),
                cidr: p.cidr.to_string(),
                block_size: p.block_size,
                disabled: p.disabled(),
                size: 1u128
                    .checked_shl(max - u32::from(p.cidr.prefix()))
                    .unwrap_or(u128::MAX),
                in_use: blocks.iter().map(|b| b.in_use as u128).sum(),
                blocks,
            }
        })
        .collect();
    Ok(IpamReport {
        pools,
        orphan_blocks,
    })
}

fn usage_of(cidr: &IpNetwork, doc: &mut AllocationBlock) -> BlockUsage {
    let affinity = doc.affinity.clone();
    let (in_use, free) = BlockView::new(doc, cidr).map_or((0, 0), |v| (v.in_use(), v.free_count()));
    BlockUsage {
        cidr: cidr.to_string(),
        affinity,
        in_use,
        free,
        corrupt: None,
    }
}
