//! [`SharedStore`] on the Kubernetes API ("CRD mode", Cilium's default):
//! `WeirIdentity`, `WeirEndpoint` and `WeirNode` objects (weir-crds)
//! instead of etcd keys, so a cluster runs without an etcd of Weir's own.
//!
//! # Identity allocation
//!
//! A `WeirIdentity` is named by its number, so creating one is a
//! compare-and-create on the number: the API server lets one create of a
//! name win and answers 409 to the others (the loser draws another
//! number). Nothing makes a label set unique, so two agents may create two
//! identities for one set at once. Each allocator therefore, after its
//! create, lists the identities labelled with the set's hash (a consistent
//! read: no resourceVersion, so from etcd, not the watch cache) and keeps
//! the **earliest written** one (lowest resourceVersion, see
//! [`objects::rank`]), deleting its own if that lost. Every allocator
//! agrees: whoever created later lists after the earlier create and sees
//! it; an allocator finding the set already there takes the earliest as
//! well, and a losing duplicate is never the earliest. (The lowest
//! *number* would not do: an agent that created a high number and listed
//! before a lower duplicate appeared would keep its own.) Numbers are drawn
//! at random from the range, as in etcd mode; after repeated conflicts the
//! allocator lists the used numbers and draws from the free ones.
//!
//! # References and lifetimes
//!
//! There are no leases: identities are referenced by the `WeirEndpoint`s
//! that carry them, not by nodes, and [`SharedStore::unreferenced_identities`]
//! is the identities no endpoint uses. Deleting those, and the endpoints
//! and `WeirNode`s of nodes that are gone, is the operator's job (issue
//! 14), which must give an identity a grace period before deleting it (an
//! allocator may have just found it and not yet published its endpoint).
//! A `WeirEndpoint` is owned by its Pod when the Pod exists, so
//! Kubernetes' garbage collector removes it with the pod.
//!
//! The handle's reference counts ([`SharedStore::release_identity`]) are
//! per process, as the trait asks.

mod objects;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use weir_abi::identity::{is_cluster, CLUSTER_MAX, CLUSTER_MIN};
use weir_crds::{WeirEndpoint, WeirIdentity, WeirNode};
use weir_types::LabelSet;

use crate::connection::Connection;
use crate::error::{Result, StoreError};
use crate::store::{
    precheck_allocation, require_cluster, EndpointEvent, EndpointRecord, EventStream,
    IdentityEvent, NodeEvent, NodeRecord, SharedStore,
};
pub use objects::{labels_hash, LABELS_HASH};
use watch::Claims;

/// Creates tried before an allocation gives up.
const MAX_ATTEMPTS: u32 = 64;
/// Random draws before listing the used numbers.
const RANDOM_PROBES: usize = 8;

/// Who we are and which numbers we allocate.
#[derive(Debug, Clone)]
pub struct CrdConfig {
    /// This node's name: the writer of its endpoints and node record.
    pub node_name: String,
    /// Numbers allocated to identities: the cluster range unless a test
    /// wants a small one.
    pub identity_range: RangeInclusive<u32>,
}

impl CrdConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        CrdConfig {
            node_name: node_name.into(),
            identity_range: CLUSTER_MIN..=CLUSTER_MAX,
        }
    }
}

/// A handle on the Kubernetes API for one node. Cheap to clone.
#[derive(Clone)]
pub struct CrdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    node: String,
    range: RangeInclusive<u32>,
    /// Local users of each identity this handle allocated.
    refs: Mutex<HashMap<u32, usize>>,
}

impl CrdStore {
    /// A store on `client`; nothing is sent until the first call (the
    /// client reconnects by itself).
    pub fn new(client: Client, config: CrdConfig) -> Result<Self> {
        let (min, max) = (*config.identity_range.start(), *config.identity_range.end());
        if config.node_name.is_empty() {
            return Err(StoreError::Config("empty node name".into()));
        }
        if min > max || !is_cluster(min) || !is_cluster(max) {
            return Err(StoreError::Config(format!(
                "identity range {min}..={max} is not inside the cluster range"
            )));
        }
        Ok(CrdStore {
            inner: Arc::new(Inner {
                client,
                node: config.node_name,
                range: config.identity_range,
                refs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// One cheap read (one `WeirNode`'s metadata at most), to tell whether
    /// the API server answers and serves Weir's CRDs.
    pub async fn ping(&self) -> Result<()> {
        self.nodes()
            .list_metadata(&ListParams::default().limit(1))
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", "WeirNodes", e))?;
        Ok(())
    }

    /// Checks every `interval` whether the API server answers, calling
    /// `on_change` with each new [`Connection`] state (named `crd`), until
    /// the last clone of this handle is dropped.
    pub fn spawn_connection_check(
        &self,
        interval: Duration,
        on_change: impl Fn(&Connection) + Send + Sync + 'static,
    ) {
        let weak = Arc::downgrade(&self.inner);
        let mut state = Connection::starting_to("crd", SystemTime::now());
        on_change(&state);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let store = CrdStore { inner };
                let outcome = match tokio::time::timeout(interval * 4, store.ping()).await {
                    Ok(result) => result.map_err(|e| error_chain(&e)),
                    Err(_) => Err(format!("no answer within {:?}", interval * 4)),
                };
                drop(store);
                let next = state.after(SystemTime::now(), outcome);
                if next != state {
                    match &next {
                        Connection::Connected { .. } => tracing::info!("Kubernetes API answers"),
                        Connection::Unreachable { error, .. }
                        | Connection::Connecting {
                            error: Some(error), ..
                        } => {
                            tracing::warn!(%error, "Kubernetes API does not answer; enforcing what is known, retrying")
                        }
                        Connection::Connecting { .. } => {}
                    }
                    on_change(&next);
                    state = next;
                }
                tokio::time::sleep(interval).await;
            }
        });
    }

    fn identities(&self) -> Api<WeirIdentity> {
        Api::all(self.inner.client.clone())
    }

    fn all_endpoints(&self) -> Api<WeirEndpoint> {
        Api::all(self.inner.client.clone())
    }

    fn nodes(&self) -> Api<WeirNode> {
        Api::all(self.inner.client.clone())
    }

    fn add_ref(&self, id: u32) {
        *self
            .inner
            .refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
    }

    /// The earliest written identity holding exactly `labels`, if any.
    async fn find(&self, labels: &LabelSet) -> Result<Option<u32>> {
        let selector = objects::hash_selector(labels);
        let list = self
            .identities()
            .list(&ListParams::default().labels(&selector))
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", format!("WeirIdentities {selector}"), e))?;
        Ok(list
            .items
            .iter()
            .filter_map(|object| {
                let (id, found) = objects::identity_record(object)?;
                (found == *labels).then(|| (objects::rank(&object.metadata), id))
            })
            .min()
            .map(|(_, id)| id))
    }

    /// A number to try for a new identity, not in `taken`.
    async fn candidate(&self, taken: &HashSet<u32>) -> Result<u32> {
        let range = self.inner.range.clone();
        let size = (range.end() - range.start() + 1) as usize;
        if taken.len() < RANDOM_PROBES.min(size) {
            loop {
                let id = fastrand::u32(range.clone());
                if !taken.contains(&id) {
                    return Ok(id);
                }
            }
        }
        let listed = self
            .identities()
            .list_metadata(&ListParams::default())
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", "WeirIdentities", e))?;
        let used: HashSet<u32> = listed
            .items
            .iter()
            .filter_map(|object| object.metadata.name.as_deref()?.parse().ok())
            .chain(taken.iter().copied())
            .collect();
        let free: Vec<u32> = range.clone().filter(|id| !used.contains(id)).collect();
        if free.is_empty() {
            return Err(StoreError::Exhausted {
                min: *range.start(),
                max: *range.end(),
            });
        }
        Ok(free[fastrand::usize(..free.len())])
    }

    /// The owner reference to pod `namespace/name`, when it exists.
    async fn pod_owner(&self, namespace: &str, name: &str) -> Result<Option<OwnerReference>> {
        let pods: Api<Pod> = Api::namespaced(self.inner.client.clone(), namespace);
        let pod = match pods.get_opt(name).bounded().await {
            Ok(pod) => pod,
            // Without the right to read pods the endpoint is published all
            // the same, owned by no one (the operator collects it).
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), reason = %status.message,
                    "cannot read the pod: its WeirEndpoint gets no owner reference");
                None
            }
            Err(e) => {
                return Err(StoreError::kube(
                    "get",
                    format!("Pod {namespace}/{name}"),
                    e,
                ))
            }
        };
        Ok(pod.and_then(|pod| {
            Some(OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.to_string(),
                uid: pod.metadata.uid?,
                ..Default::default()
            })
        }))
    }

    /// Deletes `name` if its resourceVersion is still `version`; false if
    /// it changed or is gone.
    async fn delete_if_unchanged<K>(
        &self,
        api: &Api<K>,
        name: &str,
        version: Option<String>,
    ) -> Result<bool>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync,
    {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: version,
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).bounded().await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
            Err(e) => Err(StoreError::kube("delete", name, e)),
        }
    }
}

/// `error: cause: cause`, for one line of status.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Longest wait for one API call. The client alone would wait for a
/// stopped API server as long as its read timeout (295 s, sized for
/// watches), holding up the reconcile loop; a timed-out call fails as a
/// transport error does (`StoreError::is_unanswered`) and is retried by
/// the caller.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// [`CALL_TIMEOUT`] on an API call.
trait Bounded<T: Send>: Future<Output = kube::Result<T>> + Sized + Send {
    fn bounded(self) -> impl Future<Output = kube::Result<T>> + Send {
        async move {
            tokio::time::timeout(CALL_TIMEOUT, self)
                .await
                .unwrap_or_else(|_| {
                    Err(kube::Error::Service(
                        format!("no answer within {CALL_TIMEOUT:?}").into(),
                    ))
                })
        }
    }
}

impl<T: Send, F: Future<Output = kube::Result<T>> + Send> Bounded<T> for F {}

/// 409 Conflict: a create of a taken name or a write on a stale version.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

fn identity_claims(object: &WeirIdentity) -> Claims<u32, LabelSet> {
    Claims {
        rank: objects::rank(&object.metadata),
        records: objects::identity_record(object).into_iter().collect(),
    }
}

fn endpoint_claims(object: &WeirEndpoint) -> Claims<IpAddr, EndpointRecord> {
    Claims {
        rank: objects::rank(&object.metadata),
        records: objects::endpoint_records(object),
    }
}

fn node_claims(object: &WeirNode) -> Claims<String, NodeRecord> {
    Claims {
        rank: objects::rank(&object.metadata),
        records: objects::node_record(object)
            .map(|node| (node.name.clone(), node))
            .into_iter()
            .collect(),
    }
}

/// The records of objects listed, as the watch resolves them.
fn resolve<O, K: Ord + Clone, V: Clone + PartialEq>(
    objects: &[O],
    claims: fn(&O) -> Claims<K, V>,
) -> BTreeMap<K, V>
where
    O: ResourceExt,
{
    let mut index = watch::Index::default();
    index.feed(watch::Input::Init);
    for object in objects {
        let key = format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        );
        index.feed(watch::Input::InitApply(key, claims(object)));
    }
    index
        .feed(watch::Input::InitDone)
        .into_iter()
        .filter_map(|event| match event {
            crate::store::StoreEvent::Upsert(k, v) => Some((k, v)),
            _ => None,
        })
        .collect()
}

#[async_trait]
impl SharedStore for CrdStore {
    fn node_name(&self) -> &str {
        &self.inner.node
    }

    async fn allocate_identity(&self, labels: &LabelSet) -> Result<u32> {
        if let Some(id) = precheck_allocation(labels)? {
            return Ok(id);
        }
        let api = self.identities();
        let mut taken = HashSet::new();
        for _ in 0..MAX_ATTEMPTS {
            if let Some(id) = self.find(labels).await? {
                self.add_ref(id);
                return Ok(id);
            }
            let id = self.candidate(&taken).await?;
            let created = match api
                .create(&PostParams::default(), &objects::identity(id, labels))
                .bounded()
                .await
            {
                Ok(created) => created,
                Err(e) if is_conflict(&e) => {
                    // The number is taken (maybe by these very labels:
                    // the next find tells).
                    taken.insert(id);
                    continue;
                }
                Err(kube::Error::Api(status)) if status.code == 422 => {
                    return Err(StoreError::Refused {
                        what: format!("an identity for {labels}"),
                        reason: status.message,
                    })
                }
                Err(e) => return Err(StoreError::kube("create", format!("WeirIdentity {id}"), e)),
            };
            let winner = self.find(labels).await?.unwrap_or(id);
            if winner != id {
                tracing::debug!(id, winner, labels = %labels, "lost an allocation race");
                self.delete_if_unchanged(&api, &id.to_string(), created.metadata.resource_version)
                    .await?;
            } else {
                tracing::debug!(id, labels = %labels, "allocated identity");
            }
            self.add_ref(winner);
            return Ok(winner);
        }
        Err(StoreError::Contended(MAX_ATTEMPTS))
    }

    async fn release_identity(&self, id: u32) -> Result<bool> {
        require_cluster(id)?;
        let mut refs = self.inner.refs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(count) = refs.get_mut(&id) else {
            return Ok(false);
        };
        *count -= 1;
        if *count == 0 {
            refs.remove(&id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn lookup_identity(&self, id: u32) -> Result<Option<LabelSet>> {
        if let Some(labels) = LabelSet::reserved(id) {
            return Ok(Some(labels));
        }
        if !is_cluster(id) {
            return Ok(None);
        }
        let object = self
            .identities()
            .get_opt(&id.to_string())
            .bounded()
            .await
            .map_err(|e| StoreError::kube("get", format!("WeirIdentity {id}"), e))?;
        Ok(object
            .as_ref()
            .and_then(objects::identity_record)
            .map(|(_, labels)| labels))
    }

    async fn list_identities(&self) -> Result<BTreeMap<u32, LabelSet>> {
        let list = self
            .identities()
            .list(&ListParams::default())
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", "WeirIdentities", e))?;
        Ok(list
            .items
            .iter()
            .filter_map(objects::identity_record)
            .collect())
    }

    async fn watch_identities(&self) -> Result<EventStream<IdentityEvent>> {
        Ok(watch::watch(
            self.identities(),
            "WeirIdentities",
            identity_claims,
        ))
    }

    async fn unreferenced_identities(&self) -> Result<Vec<u32>> {
        let identities = self.list_identities().await?;
        let endpoints = self
            .all_endpoints()
            .list(&ListParams::default())
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", "WeirEndpoints", e))?;
        let referenced: HashSet<u32> = endpoints.items.iter().map(|e| e.spec.identity).collect();
        Ok(identities
            .into_keys()
            .filter(|id| !referenced.contains(id))
            .collect())
    }

    async fn upsert_endpoint(&self, ip: IpAddr, record: &EndpointRecord) -> Result<()> {
        let api: Api<WeirEndpoint> = Api::namespaced(self.inner.client.clone(), &record.namespace);
        let what = || format!("WeirEndpoint {}/{}", record.namespace, record.pod);
        let owner = self.pod_owner(&record.namespace, &record.pod).await?;
        for _ in 0..MAX_ATTEMPTS {
            let existing = api
                .get_opt(&record.pod)
                .bounded()
                .await
                .map_err(|e| StoreError::kube("get", what(), e))?;
            let result = match existing {
                None => {
                    let spec = objects::endpoint_spec(ip, record, None);
                    let mut object = WeirEndpoint::new(&record.pod, spec);
                    object.metadata.namespace = Some(record.namespace.clone());
                    object.metadata.owner_references = owner.clone().map(|o| vec![o]);
                    objects::label_addresses(&mut object.metadata, &object.spec);
                    api.create(&PostParams::default(), &object).bounded().await
                }
                Some(mut object) => {
                    let spec = objects::endpoint_spec(ip, record, Some(&object.spec));
                    let owners = owner.clone().map(|o| vec![o]);
                    let mut labelled = object.metadata.clone();
                    objects::label_addresses(&mut labelled, &spec);
                    if object.spec == spec
                        && labelled.labels == object.metadata.labels
                        && (owners.is_none() || object.metadata.owner_references == owners)
                    {
                        return Ok(());
                    }
                    object.spec = spec;
                    object.metadata.labels = labelled.labels;
                    if owners.is_some() {
                        // A pod recreated under the same name has a new uid.
                        object.metadata.owner_references = owners;
                    }
                    api.replace(&record.pod, &PostParams::default(), &object)
                        .bounded()
                        .await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(StoreError::kube("write", what(), e)),
            }
        }
        Err(StoreError::Contended(MAX_ATTEMPTS))
    }

    async fn delete_endpoint(&self, ip: IpAddr) -> Result<bool> {
        let selector = objects::address_selector(ip);
        for _ in 0..MAX_ATTEMPTS {
            let claimants = self
                .all_endpoints()
                .list(&ListParams::default().labels(&selector))
                .bounded()
                .await
                .map_err(|e| StoreError::kube("list", format!("WeirEndpoints {selector}"), e))?
                .items;
            // The address is this node's while its latest claimant is.
            let current = claimants
                .iter()
                .filter(|o| objects::addresses(&o.spec).contains(&ip))
                .max_by_key(|o| objects::rank(&o.metadata));
            let ours = current.is_some_and(|o| o.spec.node_name == self.inner.node);
            let mut clean = true;
            for object in claimants
                .iter()
                .filter(|o| o.spec.node_name == self.inner.node)
            {
                let namespace = object.namespace().unwrap_or_default();
                let api: Api<WeirEndpoint> = Api::namespaced(self.inner.client.clone(), &namespace);
                let name = object.name_any();
                match objects::without_address(&object.spec, ip) {
                    None => {
                        let version = object.metadata.resource_version.clone();
                        clean &= self.delete_if_unchanged(&api, &name, version).await?;
                    }
                    Some(spec) => {
                        let mut object = object.clone();
                        objects::label_addresses(&mut object.metadata, &spec);
                        object.spec = spec;
                        match api
                            .replace(&name, &PostParams::default(), &object)
                            .bounded()
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if is_conflict(&e) => clean = false,
                            Err(e) => {
                                return Err(StoreError::kube(
                                    "replace",
                                    format!("WeirEndpoint {namespace}/{name}"),
                                    e,
                                ))
                            }
                        }
                    }
                }
            }
            if clean {
                return Ok(ours);
            }
        }
        Err(StoreError::Contended(MAX_ATTEMPTS))
    }

    async fn list_endpoints(&self) -> Result<BTreeMap<IpAddr, EndpointRecord>> {
        let list = self
            .all_endpoints()
            .list(&ListParams::default())
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", "WeirEndpoints", e))?;
        Ok(resolve(&list.items, endpoint_claims))
    }

    async fn watch_endpoints(&self) -> Result<EventStream<EndpointEvent>> {
        Ok(watch::watch(
            self.all_endpoints(),
            "WeirEndpoints",
            endpoint_claims,
        ))
    }

    async fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        if node.name.is_empty() {
            return Err(StoreError::Config("empty node name".into()));
        }
        let api = self.nodes();
        let what = || format!("WeirNode {}", node.name);
        let spec = objects::node_spec(node);
        for _ in 0..MAX_ATTEMPTS {
            let existing = api
                .get_opt(&node.name)
                .bounded()
                .await
                .map_err(|e| StoreError::kube("get", what(), e))?;
            let result = match existing {
                Some(object)
                    if object.spec == spec && objects::written_by(&object, &self.inner.node) =>
                {
                    return Ok(())
                }
                Some(mut object) => {
                    object.spec = spec.clone();
                    object
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(objects::WRITER.into(), self.inner.node.clone());
                    api.replace(&node.name, &PostParams::default(), &object)
                        .bounded()
                        .await
                }
                None => {
                    let mut object = WeirNode::new(&node.name, spec.clone());
                    object.metadata.annotations = Some(BTreeMap::from([(
                        objects::WRITER.to_string(),
                        self.inner.node.clone(),
                    )]));
                    api.create(&PostParams::default(), &object).bounded().await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(StoreError::kube("write", what(), e)),
            }
        }
        Err(StoreError::Contended(MAX_ATTEMPTS))
    }

    async fn delete_node(&self, name: &str) -> Result<bool> {
        let api = self.nodes();
        let existing = api
            .get_opt(name)
            .bounded()
            .await
            .map_err(|e| StoreError::kube("get", format!("WeirNode {name}"), e))?;
        match existing {
            Some(object) if objects::written_by(&object, &self.inner.node) => {
                self.delete_if_unchanged(&api, name, object.metadata.resource_version)
                    .await
            }
            _ => Ok(false),
        }
    }

    async fn list_nodes(&self) -> Result<BTreeMap<String, NodeRecord>> {
        let list = self
            .nodes()
            .list(&ListParams::default())
            .bounded()
            .await
            .map_err(|e| StoreError::kube("list", "WeirNodes", e))?;
        Ok(resolve(&list.items, node_claims))
    }

    async fn watch_nodes(&self) -> Result<EventStream<NodeEvent>> {
        Ok(watch::watch(self.nodes(), "WeirNodes", node_claims))
    }
}
