//! The shared runtime state every agent reads and writes, behind one trait so
//! that kvstore mode (etcd) and CRD mode (the Kubernetes API) are
//! interchangeable.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use weir_abi::identity::is_cluster;
use weir_types::LabelSet;

/// Where a pod address lives and which identity it has: one ipcache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub identity: u32,
    /// Name of the node the pod runs on.
    pub node: String,
    /// Underlay address of that node (the tunnel endpoint), so an ipcache
    /// entry needs no node lookup.
    pub node_ip: IpAddr,
    pub namespace: String,
    pub pod: String,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Underlay address other nodes reach it at.
    pub ip: IpAddr,
    /// The node's pod address range.
    pub pod_cidr: IpNetwork,
    /// Its IPv6 pod address range on a dual-stack node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr_v6: Option<IpNetwork>,
    /// Its IPv6 underlay address on a dual-stack node: what other nodes
    /// route its IPv6 pod range through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
}

impl NodeRecord {
    /// The node's pod CIDRs: `pod_cidr`, then `pod_cidr_v6` if any.
    pub fn pod_cidrs(&self) -> impl Iterator<Item = IpNetwork> {
        std::iter::once(self.pod_cidr).chain(self.pod_cidr_v6)
    }

    /// The node's addresses: `ip`, then `ipv6` if any.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(self.ip).chain(self.ipv6.map(IpAddr::V6))
    }

    /// Each pod CIDR with the node address of its family that reaches it,
    /// for routes to the node's pods (a CIDR whose family the node has no
    /// address of is left out).
    pub fn pod_routes(&self) -> impl Iterator<Item = (IpNetwork, IpAddr)> + '_ {
        self.pod_cidrs().filter_map(|cidr| {
            let via = self.addresses().find(|a| a.is_ipv4() == cidr.is_ipv4())?;
            Some((cidr, via))
        })
    }
}

/// One change seen by a watch.
///
/// A watch first yields an `Upsert` for every record present, then `Synced`,
/// then changes in the order they happened. If the watch has to list again
/// (its history was compacted away), it yields `Delete` for records that went
/// away meanwhile, `Upsert` for every current one and `Synced` again, so the
/// consumer never needs to reset its view. Act on absences (garbage-collect
/// datapath state) only after a `Synced`: before it, the view is partial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent<K, V> {
    Upsert(K, V),
    Delete(K),
    Synced,
}

pub type IdentityEvent = StoreEvent<u32, LabelSet>;
pub type EndpointEvent = StoreEvent<IpAddr, EndpointRecord>;
pub type NodeEvent = StoreEvent<String, NodeRecord>;

/// A watch. Errors are reported as items and the watch carries on (it
/// retries with backoff); drop the stream to stop it.
pub type EventStream<E> = Pin<Box<dyn Stream<Item = Result<E>> + Send>>;

/// Cluster-wide state shared by all agents.
///
/// Records written by a node (its identity references, endpoints and node
/// record) live as long as that node's agent does in kvstore mode: if it
/// dies they vanish from the store after a timeout (its etcd lease). CRD
/// mode has no leases: an endpoint goes with its Pod (owner reference), and
/// the operator removes the endpoints and node record of a node that is
/// gone, and identities no endpoint references (see [`crate::crd`]).
#[async_trait]
pub trait SharedStore: Send + Sync {
    /// The node this handle writes as.
    fn node_name(&self) -> &str;

    /// The cluster-wide identity of `labels`, allocating one if none exists.
    /// Every agent gets the same id for the same set, and never the same id
    /// for different sets. Takes a reference held by this node: pair each
    /// call with [`SharedStore::release_identity`]. A single `reserved:*`
    /// label gives its reserved identity without storing anything.
    async fn allocate_identity(&self, labels: &LabelSet) -> Result<u32>;

    /// Drops one of this node's references to `id`. Returns true when it was
    /// the last one and the node's reference is gone from the store.
    async fn release_identity(&self, id: u32) -> Result<bool>;

    /// The labels of an identity: stored ones for cluster identities, the
    /// `reserved:<name>` label for reserved ones.
    async fn lookup_identity(&self, id: u32) -> Result<Option<LabelSet>>;

    /// All allocated cluster identities.
    async fn list_identities(&self) -> Result<BTreeMap<u32, LabelSet>>;

    /// Allocated identities, so that policy can be computed for identities
    /// of pods on other nodes.
    async fn watch_identities(&self) -> Result<EventStream<IdentityEvent>>;

    /// Identities no node references any more (kvstore mode) or no
    /// endpoint carries (CRD mode): candidates for garbage collection by an
    /// operator.
    async fn unreferenced_identities(&self) -> Result<Vec<u32>>;

    /// Publishes a pod address, tied to this node's lifetime.
    async fn upsert_endpoint(&self, ip: IpAddr, record: &EndpointRecord) -> Result<()>;

    /// Removes a pod address if this node wrote it last. Returns whether a
    /// record was removed (false if absent or now owned by another node).
    async fn delete_endpoint(&self, ip: IpAddr) -> Result<bool>;

    async fn list_endpoints(&self) -> Result<BTreeMap<IpAddr, EndpointRecord>>;

    async fn watch_endpoints(&self) -> Result<EventStream<EndpointEvent>>;

    /// Publishes a node record, tied to this node's lifetime.
    async fn upsert_node(&self, node: &NodeRecord) -> Result<()>;

    /// Removes a node record if this node wrote it.
    async fn delete_node(&self, name: &str) -> Result<bool>;

    async fn list_nodes(&self) -> Result<BTreeMap<String, NodeRecord>>;

    async fn watch_nodes(&self) -> Result<EventStream<NodeEvent>>;
}

/// Checks done before any backend work on an allocation: reserved sets are
/// answered at once, empty sets refused.
pub(crate) fn precheck_allocation(labels: &LabelSet) -> Result<Option<u32>> {
    if let Some(id) = labels.reserved_identity() {
        return Ok(Some(id));
    }
    if labels.is_empty() {
        return Err(StoreError::EmptyLabels);
    }
    Ok(None)
}

/// Refuses ids that are never stored (reserved, local).
pub(crate) fn require_cluster(id: u32) -> Result<()> {
    if is_cluster(id) {
        Ok(())
    } else {
        Err(StoreError::NotClusterIdentity(id))
    }
}
