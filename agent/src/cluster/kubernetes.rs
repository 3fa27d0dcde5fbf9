//! Cluster state from the Kubernetes API: kube-rs watchers with reflector
//! stores for every kind the agent reads, assembled into the same
//! [`ClusterManifests`] the manifest directory yields, so the reconciler
//! does not know which source it runs on.
//!
//! Every object goes through [`manifest::from_document`], as a file's would:
//! one the agent cannot use is reported in `rejected` (keyed
//! `Kind/namespace/name`) and contributes nothing, while the rest apply.
//! The watchers reconnect with kube-rs's default backoff; while any of them
//! is cut off (or has not listed once yet) [`KubernetesSource::read_if_changed`]
//! fails, so the reconciler keeps the last state in force and its
//! `manifests` step, and so `/readyz`, says why.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use tokio::task::JoinHandle;

use crate::cluster::manifest::{self, Object};
use crate::cluster::manifest_dir::ClusterManifests;
use crate::wake::Wake;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("the API server has no discovery.k8s.io EndpointSlices (v1 or v1beta1)")]
    NoEndpointSlices,
    #[error("waiting for the first list of {0}")]
    NotListed(String),
    #[error("watch of {kind} cut off, reconnecting (last state kept): {reason}")]
    Disconnected { kind: String, reason: String },
}

/// The kinds watched: (group, version, kind, plural). EndpointSlices are
/// added by [`endpoint_slices`] in the version the server has.
const KINDS: [(&str, &str, &str, &str); 6] = [
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "Pod", "pods"),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    ("weir.io", "v1", "WeirNetworkPolicy", "weirnetworkpolicies"),
    (
        "weir.io",
        "v1",
        "WeirClusterwideNetworkPolicy",
        "weirclusterwidenetworkpolicies",
    ),
    ("", "v1", "Service", "services"),
];

/// How one watch is doing.
#[derive(Clone, Debug, PartialEq)]
enum WatchState {
    /// Not listed completely yet.
    Listing,
    Synced,
    /// The last attempt failed; the watcher retries with backoff.
    Failed(String),
}

/// One watched kind: its resource, store and state.
struct Watch {
    resource: ApiResource,
    store: Store<DynamicObject>,
    state: Arc<Mutex<WatchState>>,
}

/// The Kubernetes API as the agent's source of desired state.
pub struct KubernetesSource {
    watches: Vec<Watch>,
    /// Bumped by every event that changes a store.
    changes: Arc<AtomicU64>,
    lists: ListCount,
    /// `changes` as of the last assembly.
    read: Option<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubernetesSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client from `kubeconfig`, or from the environment (in-cluster service
/// account, then `$KUBECONFIG` / `~/.kube/config`) when None.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// EndpointSlices in `discovery.k8s.io/v1`, or `v1beta1` on servers before
/// 1.21 (the lab's 1.20), chosen by API discovery.
async fn endpoint_slices(client: &Client) -> Result<ApiResource, Error> {
    let group = kube::discovery::group(client, "discovery.k8s.io").await?;
    let version = ["v1", "v1beta1"]
        .into_iter()
        .find(|v| group.versions().any(|have| have == *v))
        .ok_or(Error::NoEndpointSlices)?;
    let gvk = GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice");
    Ok(ApiResource::from_gvk_with_plural(&gvk, "endpointslices"))
}

/// A count of the watches' complete lists, readable from anywhere.
#[derive(Clone, Debug, Default)]
pub struct ListCount(Arc<AtomicU64>);

impl ListCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl KubernetesSource {
    /// Starts the watches on the current tokio runtime. Fails only when the
    /// server cannot be asked which EndpointSlice version it serves; every
    /// later failure is retried by the watchers.
    pub async fn start(client: Client) -> Result<KubernetesSource, Error> {
        KubernetesSource::start_waking(client, Wake::default()).await
    }

    /// [`KubernetesSource::start`], ringing `wake` at every event.
    pub async fn start_waking(client: Client, wake: Wake) -> Result<KubernetesSource, Error> {
        let mut resources: Vec<ApiResource> = KINDS
            .iter()
            .map(|(group, version, kind, plural)| {
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, version, kind),
                    plural,
                )
            })
            .collect();
        resources.push(endpoint_slices(&client).await?);
        let changes = Arc::new(AtomicU64::new(0));
        let lists = ListCount::default();
        let mut watches = Vec::new();
        let mut tasks = Vec::new();
        for resource in resources {
            let writer = Writer::new(resource.clone());
            let store = writer.as_reader();
            let state = Arc::new(Mutex::new(WatchState::Listing));
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let stream = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).default_backoff(),
            );
            let follow = follow(
                stream,
                state.clone(),
                changes.clone(),
                lists.clone(),
                wake.clone(),
            );
            tasks.push(tokio::spawn(follow));
            watches.push(Watch {
                resource,
                store,
                state,
            });
        }
        Ok(KubernetesSource {
            watches,
            changes,
            lists,
            read: None,
            tasks,
        })
    }

    /// How many kinds are watched.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// How many complete lists the watches made (a relist after 410 Gone
    /// or a reconnect counts again).
    pub fn list_count(&self) -> ListCount {
        self.lists.clone()
    }

    /// The cluster as the stores hold it, if anything changed since the
    /// last call; an error while a watch has not listed once or is cut off.
    pub fn read_if_changed(&mut self) -> Result<Option<ClusterManifests>, Error> {
        // Read before the stores: a change during assembly is seen next time.
        let changes = self.changes.load(Ordering::Acquire);
        for watch in &self.watches {
            let state = watch
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match state {
                WatchState::Synced => {}
                WatchState::Listing => {
                    return Err(Error::NotListed(watch.resource.plural.clone()));
                }
                WatchState::Failed(reason) => {
                    return Err(Error::Disconnected {
                        kind: watch.resource.kind.clone(),
                        reason,
                    });
                }
            }
        }
        if self.read == Some(changes) {
            return Ok(None);
        }
        self.read = Some(changes);
        Ok(Some(self.assemble()))
    }

    fn assemble(&self) -> ClusterManifests {
        let mut manifests = ClusterManifests::default();
        for watch in &self.watches {
            for object in watch.store.state() {
                let key = object_key(&watch.resource, &object);
                match convert(&watch.resource, &object) {
                    Ok(object) => manifests.add(object),
                    Err(reason) => {
                        manifests.rejected.insert(PathBuf::from(key), reason);
                    }
                }
            }
        }
        manifests
    }
}

/// Drives one watch: the reflector updates the store as events pass; this
/// counts the changes and keeps the watch's state.
async fn follow<S>(
    stream: S,
    state: Arc<Mutex<WatchState>>,
    changes: Arc<AtomicU64>,
    lists: ListCount,
    wake: Wake,
) where
    S: futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                changes.fetch_add(1, Ordering::Release);
                wake.wake();
                if matches!(*state, WatchState::Failed(_)) {
                    *state = WatchState::Synced;
                }
            }
            Ok(watcher::Event::InitDone) => {
                lists.0.fetch_add(1, Ordering::Relaxed);
                changes.fetch_add(1, Ordering::Release);
                wake.wake();
                *state = WatchState::Synced;
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(error) => {
                // After a relist the store is complete again only at
                // InitDone, which marks it synced; until then it keeps the
                // previous objects.
                *state = WatchState::Failed(error.to_string());
                wake.wake();
            }
        }
    }
}

/// `Kind/namespace/name`, or `Kind/name` for cluster-scoped kinds.
fn object_key(resource: &ApiResource, object: &DynamicObject) -> String {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    match &object.metadata.namespace {
        Some(ns) => format!("{}/{ns}/{name}", resource.kind),
        None => format!("{}/{name}", resource.kind),
    }
}

/// One API object as the manifest model reads it: its document with
/// `apiVersion` and `kind` (list items lack them) and v1beta1
/// EndpointSlices in v1's shape.
fn convert(resource: &ApiResource, object: &DynamicObject) -> Result<Object, String> {
    let document = document(resource, object)?;
    manifest::from_document(document).map_err(|e| format!("{e:#}"))
}

/// The object's document as a manifest file would hold it.
fn document(
    resource: &ApiResource,
    object: &DynamicObject,
) -> Result<serde_yaml_ng::Value, String> {
    let mut json = serde_json::to_value(object).map_err(|e| e.to_string())?;
    let Some(fields) = json.as_object_mut() else {
        return Err("not an object".into());
    };
    fields.insert("apiVersion".into(), resource.api_version.clone().into());
    fields.insert("kind".into(), resource.kind.clone().into());
    if let Some(metadata) = fields.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        // Large and of no use to the agent.
        metadata.remove("managedFields");
    }
    if resource.kind == "EndpointSlice" && resource.version == "v1beta1" {
        v1beta1_to_v1(fields);
    }
    serde_yaml_ng::to_value(&json).map_err(|e| e.to_string())
}

/// A `discovery.k8s.io/v1beta1` EndpointSlice in v1's shape: the endpoint's
/// `topology` map gives v1's `nodeName` and `zone` (how 1.21 converts it).
fn v1beta1_to_v1(fields: &mut serde_json::Map<String, serde_json::Value>) {
    fields.insert("apiVersion".into(), "discovery.k8s.io/v1".into());
    let Some(endpoints) = fields.get_mut("endpoints").and_then(|e| e.as_array_mut()) else {
        return;
    };
    for endpoint in endpoints.iter_mut().filter_map(|e| e.as_object_mut()) {
        let Some(serde_json::Value::Object(topology)) = endpoint.remove("topology") else {
            continue;
        };
        if let Some(node) = topology.get("kubernetes.io/hostname") {
            endpoint.entry("nodeName").or_insert_with(|| node.clone());
        }
        if let Some(zone) = topology.get("topology.kubernetes.io/zone") {
            endpoint.entry("zone").or_insert_with(|| zone.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    fn object(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn list_items_without_kind_convert_as_their_resource() {
        let pods = resource("", "v1", "Pod", "pods");
        let pod = object(serde_json::json!({
            "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        }));
        let Ok(Object::Pod(pod)) = convert(&pods, &pod) else {
            panic!("a pod")
        };
        assert_eq!(pod.node.as_deref(), Some("n1"));
        assert_eq!(pod.labels["app"], "a");
        assert_eq!(pod.ports.len(), 1);
    }

    #[test]
    fn objects_the_agent_cannot_use_are_rejected_with_a_reason() {
        let pods = resource("", "v1", "Pod", "pods");
        let pod = object(serde_json::json!({
            "metadata": {"name": "a", "namespace": "x"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "ICMP"}]}]},
        }));
        let reason = convert(&pods, &pod).unwrap_err();
        assert!(reason.contains("unknown protocol"), "{reason}");
        assert_eq!(object_key(&pods, &pod), "Pod/x/a");
    }

    #[test]
    fn v1beta1_endpoint_slices_take_v1s_shape() {
        let slices = resource(
            "discovery.k8s.io",
            "v1beta1",
            "EndpointSlice",
            "endpointslices",
        );
        let slice = object(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "x",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true},
                           "topology": {"kubernetes.io/hostname": "n1",
                                        "topology.kubernetes.io/zone": "z1"}}],
        }));
        let mut json = serde_json::to_value(&slice).unwrap();
        v1beta1_to_v1(json.as_object_mut().unwrap());
        assert_eq!(json["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(json["endpoints"][0]["nodeName"], "n1");
        assert_eq!(json["endpoints"][0]["zone"], "z1");
        assert!(json["endpoints"][0].get("topology").is_none());
        let converted = convert(&slices, &slice);
        assert!(
            matches!(converted, Ok(Object::EndpointSlice(_))),
            "{converted:?}"
        );
    }

    #[test]
    fn ipv6_endpoint_slices_are_read_as_ipv6() {
        let slices = resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices");
        let slice = |address: &str| {
            object(serde_json::json!({
                "metadata": {"name": "web-v6", "namespace": "x",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv6",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
            }))
        };
        let read = match convert(&slices, &slice("fd00:10:244:1::5")) {
            Ok(Object::EndpointSlice(slice)) => match slice.object {
                weir_lb::AnyEndpointSlice::V6(slice) => slice,
                other => panic!("not an IPv6 slice: {other:?}"),
            },
            other => panic!("not a slice: {other:?}"),
        };
        assert_eq!(read.service(), weir_types::NamespacedName::new("x", "web"));
        assert_eq!(
            read.endpoints[0].addresses,
            ["fd00:10:244:1::5".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        let reason = convert(&slices, &slice("::1")).unwrap_err();
        assert!(
            reason.contains("may not be the loopback address"),
            "{reason}"
        );
    }
}
