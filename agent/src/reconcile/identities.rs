//! The identities reconciler: every local endpoint gets the identity of its
//! security labels (allocated in the shared store, so every node agrees),
//! and this node publishes an endpoint record (address → identity, node)
//! for each, which every other node's ipcache is built from.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_identity::{EndpointRecord, SharedStore, StoreError};
use weir_policy::labels::{pod_security_labels, LabelFilter};
use weir_types::LabelSet;

use crate::cluster::manifest_dir::ClusterManifests;
use crate::endpoint::ipam::AttachmentKey;
use crate::endpoint::registry::Endpoint;

/// An identity this node holds in the store for one local endpoint, with
/// the labels it was allocated for.
struct Held {
    labels: LabelSet,
    id: u32,
}

/// How long a label set the store refused waits before it is offered
/// again: the same set is refused the same way until the store's
/// validation changes (an upgrade), so trying it every pass would only
/// burn identity numbers and API calls.
const REFUSED_RETRY: Duration = Duration::from_secs(60);

pub struct IdentitySync {
    node_name: String,
    node_ip: IpAddr,
    store: Arc<dyn SharedStore>,
    filter: LabelFilter,
    /// Identity held per local endpoint.
    held: BTreeMap<AttachmentKey, Held>,
    /// Endpoint records this node published.
    published: BTreeMap<IpAddr, EndpointRecord>,
    /// Identities no endpoint holds any more whose release the store has
    /// not confirmed (it was down): retried, so no reference leaks.
    unreleased: Vec<u32>,
    /// Label sets the store refused, and when: their endpoints hold no
    /// identity until [`REFUSED_RETRY`] has passed.
    refused: BTreeMap<LabelSet, Instant>,
}

impl IdentitySync {
    pub fn new(
        node_name: String,
        node_ip: IpAddr,
        store: Arc<dyn SharedStore>,
        filter: LabelFilter,
    ) -> IdentitySync {
        IdentitySync {
            node_name,
            node_ip,
            store,
            filter,
            held: BTreeMap::new(),
            published: BTreeMap::new(),
            unreleased: Vec::new(),
            refused: BTreeMap::new(),
        }
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn node_ip(&self) -> IpAddr {
        self.node_ip
    }

    /// The identity of each local endpoint that has one.
    pub fn by_attachment(&self) -> BTreeMap<AttachmentKey, u32> {
        self.held
            .iter()
            .map(|(k, held)| (k.clone(), held.id))
            .collect()
    }

    /// The labels of every identity this node holds: known here as soon
    /// as it is allocated, before the store's watch echoes it back.
    pub fn local_labels(&self) -> BTreeMap<u32, LabelSet> {
        self.held
            .values()
            .map(|held| (held.id, held.labels.clone()))
            .collect()
    }

    /// The identity of one local endpoint.
    pub fn of(&self, attachment: &AttachmentKey) -> Option<u32> {
        self.held.get(attachment).map(|held| held.id)
    }

    /// The endpoint records this node published, by address.
    pub fn published(&self) -> &BTreeMap<IpAddr, EndpointRecord> {
        &self.published
    }

    /// Allocates (or keeps) the identity of every local endpoint's labels
    /// and releases those of endpoints that are gone or relabelled.
    pub async fn sync(
        &mut self,
        cluster: &ClusterManifests,
        endpoints: &[Endpoint],
    ) -> anyhow::Result<()> {
        // A failed allocation stops the allocations, never the releases.
        let mut allocated = Ok(());
        for endpoint in endpoints {
            let labels = self.labels_of(cluster, endpoint);
            if self.held.get(&endpoint.attachment).map(|held| &held.labels) == Some(&labels) {
                continue;
            }
            if self
                .refused
                .get(&labels)
                .is_some_and(|at| at.elapsed() < REFUSED_RETRY)
            {
                continue;
            }
            let id = match self.store.allocate_identity(&labels).await {
                Ok(id) => id,
                // Refused for these labels only: the endpoint has no
                // identity (its packets are not classified by labels it
                // no longer has), and the others go on.
                Err(StoreError::Refused { reason, .. }) => {
                    warn!(endpoint = endpoint.id, pod = %endpoint.pod, %labels, %reason,
                        retry_in = ?REFUSED_RETRY, "the identity store refused the endpoint's labels");
                    self.refused.insert(labels, Instant::now());
                    if let Some(old) = self.held.remove(&endpoint.attachment) {
                        self.unreleased.push(old.id);
                    }
                    continue;
                }
                Err(error) => {
                    allocated = Err(error);
                    break;
                }
            };
            self.refused.remove(&labels);
            info!(endpoint = endpoint.id, pod = %endpoint.pod, identity = id, "endpoint identity");
            if let Some(old) = self
                .held
                .insert(endpoint.attachment.clone(), Held { labels, id })
            {
                self.unreleased.push(old.id);
            }
        }
        self.refused.retain(|_, at| at.elapsed() < REFUSED_RETRY);
        let gone: Vec<AttachmentKey> = self
            .held
            .keys()
            .filter(|k| !endpoints.iter().any(|e| &e.attachment == *k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(held) = self.held.remove(&key) {
                self.unreleased.push(held.id);
            }
        }
        while let Some(&id) = self.unreleased.last() {
            self.store.release_identity(id).await?;
            self.unreleased.pop();
        }
        Ok(allocated?)
    }

    /// Publishes an endpoint record for every address of every local
    /// endpoint with an identity and withdraws the records of the rest.
    pub async fn publish(&mut self, endpoints: &[Endpoint]) -> anyhow::Result<()> {
        let mut wanted = BTreeMap::new();
        for endpoint in endpoints {
            let Some(held) = self.held.get(&endpoint.attachment) else {
                continue;
            };
            let record = EndpointRecord {
                identity: held.id,
                node: self.node_name.clone(),
                node_ip: self.node_ip,
                namespace: endpoint.pod.namespace.clone(),
                pod: endpoint.pod.name.clone(),
            };
            // One record per address: a dual-stack pod is two ipcache
            // entries of one identity.
            for address in endpoint.addresses() {
                wanted.insert(address, record.clone());
            }
        }
        for (ip, record) in &wanted {
            if self.published.get(ip) != Some(record) {
                self.store.upsert_endpoint(*ip, record).await?;
            }
        }
        for ip in self.published.keys().filter(|ip| !wanted.contains_key(ip)) {
            self.store.delete_endpoint(*ip).await?;
        }
        self.published = wanted;
        Ok(())
    }

    /// The security labels of a local endpoint: from its Pod and Namespace
    /// manifests, or `reserved:init` while they are not known. A pod seen
    /// before its namespace (the watches deliver them independently) waits
    /// as `init` too: without the namespace's labels its identity would be
    /// wrong, and a `NotIn` namespace selector would select it. `default`
    /// may be implicit (a manifest directory need not declare it).
    fn labels_of(&self, cluster: &ClusterManifests, endpoint: &Endpoint) -> LabelSet {
        let init = || LabelSet::reserved(weir_abi::identity::INIT).unwrap_or_default();
        let Some(pod) = cluster.pods.get(&endpoint.pod) else {
            return init();
        };
        let namespace_labels = match cluster.namespaces.get(&pod.namespace) {
            Some(namespace) => namespace.labels.clone(),
            None if pod.namespace == "default" => Default::default(),
            None => return init(),
        };
        pod_security_labels(
            &pod.namespace,
            namespace_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            pod.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.filter,
        )
    }
}

#[cfg(test)]
mod tests;
