//! [`SharedStore`] in process memory, for unit tests of other crates.
//!
//! Handles made with [`MemoryStore::for_node`] share one state, as agents
//! share one etcd. [`MemoryStore::kill_node`] plays a node's lease running
//! out. Allocation is lowest-free-number, so tests get predictable ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::error::{Result, StoreError};
use crate::store::{
    precheck_allocation, require_cluster, EndpointEvent, EndpointRecord, EventStream,
    IdentityEvent, NodeEvent, NodeRecord, SharedStore, StoreEvent,
};
use weir_abi::identity::{is_cluster, CLUSTER_MAX, CLUSTER_MIN};
use weir_types::LabelSet;

#[derive(Clone)]
pub struct MemoryStore {
    node: String,
    shared: Arc<Mutex<State>>,
}

struct State {
    identities: BTreeMap<u32, LabelSet>,
    by_labels: HashMap<LabelSet, u32>,
    /// identity → node → local users
    refs: HashMap<u32, HashMap<String, usize>>,
    endpoints: BTreeMap<IpAddr, (String, EndpointRecord)>,
    nodes: BTreeMap<String, (String, NodeRecord)>,
    /// Label sets allocation refuses, with the reason (as an API server's
    /// validation would).
    refused: HashMap<LabelSet, String>,
    identity_tx: broadcast::Sender<IdentityEvent>,
    endpoint_tx: broadcast::Sender<EndpointEvent>,
    node_tx: broadcast::Sender<NodeEvent>,
}

impl MemoryStore {
    pub fn new(node: impl Into<String>) -> Self {
        let state = State {
            identities: BTreeMap::new(),
            by_labels: HashMap::new(),
            refs: HashMap::new(),
            endpoints: BTreeMap::new(),
            nodes: BTreeMap::new(),
            refused: HashMap::new(),
            identity_tx: broadcast::channel(4096).0,
            endpoint_tx: broadcast::channel(4096).0,
            node_tx: broadcast::channel(4096).0,
        };
        Self {
            node: node.into(),
            shared: Arc::new(Mutex::new(state)),
        }
    }

    /// Another node's handle on the same state.
    pub fn for_node(&self, node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            shared: self.shared.clone(),
        }
    }

    /// Removes everything `node` published, as its lease expiring would.
    pub fn kill_node(&self, node: &str) {
        let mut s = self.state();
        for refs in s.refs.values_mut() {
            refs.remove(node);
        }
        let ips: Vec<IpAddr> = s
            .endpoints
            .iter()
            .filter(|(_, (owner, _))| owner == node)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            s.endpoints.remove(&ip);
            let _ = s.endpoint_tx.send(StoreEvent::Delete(ip));
        }
        let names: Vec<String> = s
            .nodes
            .iter()
            .filter(|(_, (owner, _))| owner == node)
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            s.nodes.remove(&name);
            let _ = s.node_tx.send(StoreEvent::Delete(name));
        }
    }

    /// Makes allocation refuse `labels` from now on ([`StoreError::Refused`]),
    /// as a store whose validation rejects them.
    pub fn refuse(&self, labels: LabelSet, reason: impl Into<String>) {
        self.state().refused.insert(labels, reason.into());
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The snapshot and the subscription are taken under one lock, so no change
/// falls between them.
fn stream<K, V>(
    snapshot: Vec<(K, V)>,
    rx: broadcast::Receiver<StoreEvent<K, V>>,
) -> EventStream<StoreEvent<K, V>>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    let initial = snapshot
        .into_iter()
        .map(|(k, v)| Ok(StoreEvent::Upsert(k, v)))
        .chain([Ok(StoreEvent::Synced)]);
    let changes = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = match rx.recv().await {
            Ok(event) => Ok(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(StoreError::Corrupt {
                key: "memory store watch".into(),
                reason: format!("consumer lagged by {n} events"),
            }),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((item, rx))
    });
    Box::pin(futures_util::StreamExt::chain(
        futures_util::stream::iter(initial),
        changes,
    ))
}

#[async_trait]
impl SharedStore for MemoryStore {
    fn node_name(&self) -> &str {
        &self.node
    }

    async fn allocate_identity(&self, labels: &LabelSet) -> Result<u32> {
        if let Some(id) = precheck_allocation(labels)? {
            return Ok(id);
        }
        let mut s = self.state();
        if let Some(reason) = s.refused.get(labels) {
            return Err(StoreError::Refused {
                what: format!("an identity for {labels}"),
                reason: reason.clone(),
            });
        }
        let id = match s.by_labels.get(labels) {
            Some(id) => *id,
            None => {
                let id = (CLUSTER_MIN..=CLUSTER_MAX)
                    .find(|id| !s.identities.contains_key(id))
                    .ok_or(StoreError::Exhausted {
                        min: CLUSTER_MIN,
                        max: CLUSTER_MAX,
                    })?;
                s.identities.insert(id, labels.clone());
                s.by_labels.insert(labels.clone(), id);
                let _ = s.identity_tx.send(StoreEvent::Upsert(id, labels.clone()));
                id
            }
        };
        *s.refs
            .entry(id)
            .or_default()
            .entry(self.node.clone())
            .or_default() += 1;
        Ok(id)
    }

    async fn release_identity(&self, id: u32) -> Result<bool> {
        require_cluster(id)?;
        let mut s = self.state();
        let Some(refs) = s.refs.get_mut(&id) else {
            return Ok(false);
        };
        let Some(n) = refs.get_mut(&self.node) else {
            return Ok(false);
        };
        *n -= 1;
        if *n > 0 {
            return Ok(false);
        }
        refs.remove(&self.node);
        Ok(true)
    }

    async fn lookup_identity(&self, id: u32) -> Result<Option<LabelSet>> {
        if let Some(labels) = LabelSet::reserved(id) {
            return Ok(Some(labels));
        }
        Ok(self.state().identities.get(&id).cloned())
    }

    async fn list_identities(&self) -> Result<BTreeMap<u32, LabelSet>> {
        Ok(self.state().identities.clone())
    }

    async fn watch_identities(&self) -> Result<EventStream<IdentityEvent>> {
        let s = self.state();
        let snapshot = s.identities.iter().map(|(k, v)| (*k, v.clone())).collect();
        Ok(stream(snapshot, s.identity_tx.subscribe()))
    }

    async fn unreferenced_identities(&self) -> Result<Vec<u32>> {
        let s = self.state();
        let referenced: HashSet<u32> = s
            .refs
            .iter()
            .filter(|(_, nodes)| !nodes.is_empty())
            .map(|(id, _)| *id)
            .collect();
        Ok(s.identities
            .keys()
            .copied()
            .filter(|id| is_cluster(*id) && !referenced.contains(id))
            .collect())
    }

    async fn upsert_endpoint(&self, ip: IpAddr, record: &EndpointRecord) -> Result<()> {
        let mut s = self.state();
        s.endpoints.insert(ip, (self.node.clone(), record.clone()));
        let _ = s.endpoint_tx.send(StoreEvent::Upsert(ip, record.clone()));
        Ok(())
    }

    async fn delete_endpoint(&self, ip: IpAddr) -> Result<bool> {
        let mut s = self.state();
        if s.endpoints
            .get(&ip)
            .is_none_or(|(owner, _)| *owner != self.node)
        {
            return Ok(false);
        }
        s.endpoints.remove(&ip);
        let _ = s.endpoint_tx.send(StoreEvent::Delete(ip));
        Ok(true)
    }

    async fn list_endpoints(&self) -> Result<BTreeMap<IpAddr, EndpointRecord>> {
        Ok(self
            .state()
            .endpoints
            .iter()
            .map(|(ip, (_, r))| (*ip, r.clone()))
            .collect())
    }

    async fn watch_endpoints(&self) -> Result<EventStream<EndpointEvent>> {
        let s = self.state();
        let snapshot = s
            .endpoints
            .iter()
            .map(|(k, (_, v))| (*k, v.clone()))
            .collect();
        Ok(stream(snapshot, s.endpoint_tx.subscribe()))
    }

    async fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        let mut s = self.state();
        s.nodes
            .insert(node.name.clone(), (self.node.clone(), node.clone()));
        let _ = s
            .node_tx
            .send(StoreEvent::Upsert(node.name.clone(), node.clone()));
        Ok(())
    }

    async fn delete_node(&self, name: &str) -> Result<bool> {
        let mut s = self.state();
        if s.nodes
            .get(name)
            .is_none_or(|(owner, _)| *owner != self.node)
        {
            return Ok(false);
        }
        s.nodes.remove(name);
        let _ = s.node_tx.send(StoreEvent::Delete(name.to_owned()));
        Ok(true)
    }

    async fn list_nodes(&self) -> Result<BTreeMap<String, NodeRecord>> {
        Ok(self
            .state()
            .nodes
            .iter()
            .map(|(n, (_, r))| (n.clone(), r.clone()))
            .collect())
    }

    async fn watch_nodes(&self) -> Result<EventStream<NodeEvent>> {
        let s = self.state();
        let snapshot = s
            .nodes
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        Ok(stream(snapshot, s.node_tx.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn reserved_sets_are_answered_from_the_table() {
        use weir_abi::identity::{HOST, KUBE_APISERVER, REMOTE_NODE};
        let store = MemoryStore::new("a");
        let host = LabelSet::new().with("reserved:host", "");
        assert_eq!(store.allocate_identity(&host).await.unwrap(), HOST);
        let remote = LabelSet::new().with("reserved:remote-node", "");
        assert_eq!(store.allocate_identity(&remote).await.unwrap(), REMOTE_NODE);
        let kube = store
            .lookup_identity(KUBE_APISERVER)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            kube,
            remote.clone().with("reserved:kube-apiserver", ""),
            "kube-apiserver nodes are remote nodes too"
        );
        assert_eq!(
            store.allocate_identity(&kube).await.unwrap(),
            KUBE_APISERVER
        );
        let mixed = remote.with("k8s:app", "web");
        assert!(store.allocate_identity(&mixed).await.unwrap() >= CLUSTER_MIN);
    }

    #[tokio::test]
    async fn shares_state_between_nodes_and_kills_nodes() {
        let a = MemoryStore::new("a");
        let b = a.for_node("b");
        let web = LabelSet::new().with("k8s:app", "web");
        let id = a.allocate_identity(&web).await.unwrap();
        assert_eq!(id, CLUSTER_MIN);
        assert_eq!(b.allocate_identity(&web).await.unwrap(), id);
        assert!(a.release_identity(id).await.unwrap());
        assert!(a.unreferenced_identities().await.unwrap().is_empty());
        assert!(b.release_identity(id).await.unwrap());
        assert_eq!(a.unreferenced_identities().await.unwrap(), vec![id]);

        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let record = EndpointRecord {
            identity: id,
            node: "b".into(),
            node_ip: "192.168.0.2".parse().unwrap(),
            namespace: "default".into(),
            pod: "web-0".into(),
        };
        b.upsert_endpoint(ip, &record).await.unwrap();
        let mut watch = a.watch_endpoints().await.unwrap();
        assert_eq!(
            watch.next().await.unwrap().unwrap(),
            StoreEvent::Upsert(ip, record)
        );
        assert_eq!(watch.next().await.unwrap().unwrap(), StoreEvent::Synced);
        assert!(!a.delete_endpoint(ip).await.unwrap(), "not a's record");
        a.kill_node("b");
        assert_eq!(watch.next().await.unwrap().unwrap(), StoreEvent::Delete(ip));
        assert!(a.list_endpoints().await.unwrap().is_empty());
    }
}
