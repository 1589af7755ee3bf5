//! The JSON documents of the Calico etcdv3 datastore (calico-datastore.md §1).
//!
//! Every struct keeps the members it does not know in a flattened `extra` map
//! and writes them back, so a read-modify-write never drops fields that a
//! newer Calico added. Types are exactly the ones libcalico-go expects: a
//! mismatch makes Felix skip the whole key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Extra = Map<String, Value>;

pub const API_VERSION: &str = "projectcalico.org/v3";

/// `metadata` of a v3 resource. `resourceVersion` is never stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Metadata {
    /// Metadata for a resource created now: a fresh uid and timestamp, as
    /// libcalico-go's clientv3 `Create` sets them.
    pub fn new_for_create(name: impl Into<String>) -> Self {
        Metadata {
            name: name.into(),
            uid: Some(uuid::Uuid::new_v4().to_string()),
            creation_timestamp: Some(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            ..Default::default()
        }
    }
}

/// The v3 resource envelope: `{"kind", "apiVersion", "metadata", "spec"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    pub kind: String,
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: S,
    #[serde(flatten)]
    pub extra: Extra,
}

impl<S> Resource<S> {
    pub fn new(kind: &str, metadata: Metadata, spec: S) -> Self {
        Resource {
            kind: kind.to_string(),
            api_version: API_VERSION.to_string(),
            metadata,
            spec,
            extra: Extra::new(),
        }
    }
}

// ---------------------------------------------------------------- IPPool

/// `IPPool.spec`. Missing members get the defaults libcalico-go's
/// `convertIpPoolFromStorage` applies on read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<String>,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type IpPool = Resource<IpPoolSpec>;

pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

impl IpPoolSpec {
    pub fn block_size_for(&self, v6: bool) -> u8 {
        self.block_size.unwrap_or(if v6 {
            DEFAULT_BLOCK_SIZE_V6
        } else {
            DEFAULT_BLOCK_SIZE_V4
        })
    }

    /// `allowedUses` contains `Workload` (default `[Workload, Tunnel]`).
    pub fn allows_workloads(&self) -> bool {
        self.allowed_uses
            .as_ref()
            .is_none_or(|uses| uses.iter().any(|u| u == "Workload"))
    }

    /// `assignmentMode` is `Automatic` (the default).
    pub fn is_automatic(&self) -> bool {
        self.assignment_mode
            .as_deref()
            .is_none_or(|m| m == "Automatic")
    }
}

// ---------------------------------------------------------------- readiness

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInformationSpec {
    /// A missing value counts as ready; an explicit false is respected.
    #[serde(default)]
    pub datastore_ready: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type ClusterInformation = Resource<ClusterInformationSpec>;

/// The Node resource: only read (labels for pool selectors, BGP addresses
/// for the host profile).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(default)]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(default, rename = "ipv4VXLANTunnelAddr")]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    #[serde(default, rename = "ipv6VXLANTunnelAddr")]
    pub ipv6_vxlan_tunnel_addr: Option<String>,
    #[serde(default)]
    pub wireguard: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeBgpSpec {
    #[serde(default)]
    pub ipv4_address: Option<String>,
    #[serde(default)]
    pub ipv6_address: Option<String>,
    #[serde(default, rename = "ipv4IPIPTunnelAddr")]
    pub ipv4_ipip_tunnel_addr: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type Node = Resource<NodeSpec>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpReservationSpec {
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type IpReservation = Resource<IpReservationSpec>;

// ---------------------------------------------------------------- IPAM

/// `/calico/ipam/v2/config`; every member is omitempty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(default)]
    pub strict_affinity: bool,
    /// Absent means true (libcalico-go's default).
    #[serde(default)]
    pub auto_allocate_blocks: Option<bool>,
    #[serde(default, rename = "maxBlocksPerHost")]
    pub max_blocks_per_host: u32,
    #[serde(flatten)]
    pub extra: Extra,
}

impl IpamConfig {
    /// The allocator's own limit when `maxBlocksPerHost` is unset.
    pub const SAFETY_BLOCK_LIMIT: u32 = 20;

    pub fn auto_allocate(&self) -> bool {
        self.auto_allocate_blocks.unwrap_or(true)
    }

    pub fn block_limit(&self) -> u32 {
        if self.max_blocks_per_host > 0 {
            self.max_blocks_per_host
        } else {
            Self::SAFETY_BLOCK_LIMIT
        }
    }
}

/// One entry of a block's `attributes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(default)]
    pub handle_id: Option<String>,
    #[serde(default)]
    pub secondary: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An allocation block (§1.7.2). Ordinal `o` is address `cidr.base + o`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationBlock {
    pub cidr: String,
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    pub allocations: Vec<Option<usize>>,
    pub unallocated: Vec<usize>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    #[serde(default, rename = "sequenceNumber")]
    pub sequence_number: u64,
    #[serde(default, rename = "sequenceNumberForAllocation")]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An IPAM handle: how many addresses of each block it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamHandle {
    #[serde(default)]
    pub block: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A block affinity value. Old writers stored an empty value or `{}`; an
/// empty state counts as confirmed (block_affinity.go `parseValue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockAffinity {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

impl BlockAffinity {
    pub fn confirmed() -> Self {
        BlockAffinity {
            state: "confirmed".into(),
            ..Default::default()
        }
    }

    pub fn parse(raw: &[u8]) -> Result<Self, serde_json::Error> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(BlockAffinity::default());
        }
        serde_json::from_slice(raw)
    }

    pub fn is_confirmed(&self) -> bool {
        self.state.is_empty() || self.state == "confirmed"
    }

    pub fn is_pending(&self) -> bool {
        self.state == "pending"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trip_keeps_unknown_fields_and_big_sequence_numbers() {
        let raw = r#"{"cidr":"10.65.12.64/30","affinity":"host:agent-1","allocations":[0,null,null,null],
            "unallocated":[1,2,3],"attributes":[{"handle_id":"h","secondary":{"node":"agent-1"},"alternateOwnerAttrs":{"x":"y"}}],
            "sequenceNumber":1767950102000000004,"sequenceNumberForAllocation":{"0":1767950102000000000},
            "deleted":false,"futureField":{"a":[1,2]}}"#;
        let block: AllocationBlock = serde_json::from_str(raw).unwrap();
        assert_eq!(block.sequence_number, 1_767_950_102_000_000_004);
        let again: serde_json::Value = serde_json::to_value(&block).unwrap();
        assert_eq!(again["futureField"]["a"][1], 2);
        assert_eq!(again["attributes"][0]["alternateOwnerAttrs"]["x"], "y");
        assert_eq!(
            again["sequenceNumber"].as_u64(),
            Some(1_767_950_102_000_000_004)
        );
    }

    #[test]
    fn affinity_accepts_legacy_empty_values() {
        assert!(BlockAffinity::parse(b"").unwrap().is_confirmed());
        assert!(BlockAffinity::parse(b"{}").unwrap().is_confirmed());
        assert!(BlockAffinity::parse(br#"{"state":"pending"}"#)
            .unwrap()
            .is_pending());
    }

    #[test]
    fn pool_defaults_follow_libcalico() {
        let spec: IpPoolSpec = serde_json::from_str(r#"{"cidr":"198.18.0.0/16"}"#).unwrap();
        assert_eq!(spec.block_size_for(false), 26);
        assert!(spec.allows_workloads());
        assert!(spec.is_automatic());
        let tunnel_only: IpPoolSpec = serde_json::from_str(
            r#"{"cidr":"fd00::/64","allowedUses":["Tunnel"],"assignmentMode":"Manual"}"#,
        )
        .unwrap();
        assert_eq!(tunnel_only.block_size_for(true), 122);
        assert!(!tunnel_only.allows_workloads());
        assert!(!tunnel_only.is_automatic());
    }
}
