//! What the agent knows of the rest of the cluster from the shared store:
//! every endpoint record (pod address → identity, node), every node record
//! and the labels of every identity, kept current by watch tasks; and the
//! connection to the store as `/readyz`, `weir status` and
//! `weir_kvstore_connected` report it.
//!
//! The view survives an outage as it was: the watches resume where they
//! stopped, or list again and apply only the differences (see
//! [`StoreEvent`]), so nothing still present ever leaves the view and a
//! part once synced stays synced.
//!
//! Records are checked before they are used ([`trust`]): one refused is
//! logged, counted (`weir_kvstore_records_rejected_total{kind}`) and left
//! out; an endpoint is checked again against its node's record when the
//! ipcache is built ([`SharedView::trusted_endpoints`]).

pub mod trust;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tracing::{info, warn};
use weir_identity::{
    Connection, EndpointRecord, LazyEtcdStore, NodeRecord, SharedStore, StoreEvent,
};
use weir_types::LabelSet;

use crate::reconcile::status::SharedReconcileStatus;
use crate::wake::Wake;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedView {
    pub endpoints: BTreeMap<IpAddr, EndpointRecord>,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub identities: BTreeMap<u32, LabelSet>,
    /// Each watch has delivered its initial full list.
    pub endpoints_synced: bool,
    pub nodes_synced: bool,
    pub identities_synced: bool,
}

impl SharedView {
    pub fn synced(&self) -> bool {
        self.endpoints_synced && self.nodes_synced && self.identities_synced
    }

    /// The endpoint records that pass [`trust::check_endpoint`] against
    /// their node's record; one whose node is not known is left out until
    /// it is.
    pub fn trusted_endpoints(&self) -> impl Iterator<Item = (&IpAddr, &EndpointRecord)> {
        self.endpoints.iter().filter(|(address, record)| {
            let node = self.nodes.get(&record.node);
            node.is_some() && trust::check_endpoint(**address, record, node).is_ok()
        })
    }
}

/// Checks one record before it enters the view (the view as it is, for
/// records that depend on others).
type Check<K, V> = fn(&K, &V, &SharedView) -> Result<(), trust::Refusal>;

fn check_endpoint(
    address: &IpAddr,
    record: &EndpointRecord,
    view: &SharedView,
) -> Result<(), trust::Refusal> {
    trust::check_endpoint(*address, record, view.nodes.get(&record.node))
}

fn check_node(_: &String, node: &NodeRecord, _: &SharedView) -> Result<(), trust::Refusal> {
    trust::check_node(node)
}

fn check_identity(id: &u32, labels: &LabelSet, _: &SharedView) -> Result<(), trust::Refusal> {
    trust::check_identity(*id, labels)
}

fn apply<K: Ord, V>(map: &mut BTreeMap<K, V>, synced: &mut bool, event: StoreEvent<K, V>) {
    match event {
        StoreEvent::Upsert(k, v) => {
            map.insert(k, v);
        }
        StoreEvent::Delete(k) => {
            map.remove(&k);
        }
        StoreEvent::Synced => *synced = true,
    }
}

/// Starts the three watches, feeding `view`. Watch errors are logged (once
/// per change); the store's streams retry by themselves. Refused records
/// are counted in `registry`.
pub async fn start_watches(
    store: Arc<dyn SharedStore>,
    view: Arc<Mutex<SharedView>>,
    registry: &prometheus::Registry,
) -> weir_identity::Result<()> {
    start_watches_waking(store, view, registry, Wake::default()).await
}

/// [`start_watches`], ringing `wake` after every event applied.
pub async fn start_watches_waking(
    store: Arc<dyn SharedStore>,
    view: Arc<Mutex<SharedView>>,
    registry: &prometheus::Registry,
    wake: Wake,
) -> weir_identity::Result<()> {
    let rejected = crate::registry::registered(
        registry,
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "weir_kvstore_records_rejected_total",
                "Records of the shared store refused (a reserved identity for a pod, an address \
                 outside its node's pod CIDR, a bad node address), by kind",
            ),
            &["kind"],
        ),
    );
    let endpoints = store.watch_endpoints().await?;
    let nodes = store.watch_nodes().await?;
    let identities = store.watch_identities().await?;
    let watch = |what| Watch {
        what,
        view: view.clone(),
        rejected: rejected.with_label_values(&[what]),
        wake: wake.clone(),
    };
    spawn_watch(watch("endpoint"), endpoints, check_endpoint, |v| {
        (&mut v.endpoints, &mut v.endpoints_synced)
    });
    spawn_watch(watch("node"), nodes, check_node, |v| {
        (&mut v.nodes, &mut v.nodes_synced)
    });
    spawn_watch(watch("identity"), identities, check_identity, |v| {
        (&mut v.identities, &mut v.identities_synced)
    });
    Ok(())
}

/// One watch's name, the view it feeds, its refusal counter and what it
/// rings after each event.
struct Watch {
    what: &'static str,
    view: Arc<Mutex<SharedView>>,
    rejected: prometheus::IntCounter,
    wake: Wake,
}

/// Feeds one watch stream into the part of the view `part` selects; a
/// record `check` refuses is logged, counted and removed from the view (a
/// refused update of a record takes the old one out too).
fn spawn_watch<K, V, S>(
    watch: Watch,
    mut events: S,
    check: Check<K, V>,
    part: fn(&mut SharedView) -> (&mut BTreeMap<K, V>, &mut bool),
) where
    K: Ord + Send + std::fmt::Debug + 'static,
    V: Send + 'static,
    S: futures::Stream<Item = weir_identity::Result<StoreEvent<K, V>>> + Send + Unpin + 'static,
{
    let Watch {
        what,
        view,
        rejected,
        wake,
    } = watch;
    tokio::spawn(async move {
        // An outage gives an error per retry: log each new one.
        let mut last_error = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if last_error.take().is_some() {
                        info!(watch = what, "shared store watch back");
                    }
                    {
                        let mut view = view.lock().unwrap_or_else(|e| e.into_inner());
                        let event = match event {
                            StoreEvent::Upsert(key, value) => match check(&key, &value, &view) {
                                Ok(()) => StoreEvent::Upsert(key, value),
                                Err(refusal) => {
                                    rejected.inc();
                                    warn!(watch = what, ?key, %refusal, "shared store record refused");
                                    StoreEvent::Delete(key)
                                }
                            },
                            other => other,
                        };
                        let (map, synced) = part(&mut view);
                        apply(map, synced, event);
                    }
                    wake.wake();
                }
                Err(error) => {
                    let text = error.to_string();
                    if last_error.as_ref() != Some(&text) {
                        warn!(error = %text, watch = what, "shared store watch");
                    }
                    last_error = Some(text);
                }
            }
        }
    });
}

/// What `on_change` of the store's connection does: the state goes to
/// `/readyz` and `weir status` (through `status`) and to the
/// `weir_kvstore_connected` gauge registered in `registry`.
pub fn connection_reporter(
    status: SharedReconcileStatus,
    registry: &prometheus::Registry,
) -> impl Fn(&Connection) + Send + Sync + 'static {
    let connected = crate::registry::registered(
        registry,
        prometheus::IntGauge::new(
            "weir_kvstore_connected",
            "1 while the shared store (etcd, or the Kubernetes API in CRD mode) answers, 0 while \
             it does not",
        ),
    );
    move |connection| {
        connected.set(i64::from(connection.is_connected()));
        status.lock().unwrap_or_else(|e| e.into_inner()).kvstore = Some(connection.clone());
    }
}

/// Publishes this node's record once the store is connected, retrying
/// until it is written (the store then republishes it by itself if its
/// lease is lost).
pub fn spawn_node_publish(store: LazyEtcdStore, node: NodeRecord) {
    tokio::spawn(async move {
        store.connected().await;
        publish_node(&store, &node).await;
    });
}

/// Publishes this node's record, retrying until it is written (CRD mode:
/// a `WeirNode`, which lives until the operator removes it with the node).
pub fn spawn_node_publish_to(store: Arc<dyn SharedStore>, node: NodeRecord) {
    tokio::spawn(async move { publish_node(store.as_ref(), &node).await });
}

async fn publish_node(store: &dyn SharedStore, node: &NodeRecord) {
    let mut last_error = None;
    loop {
        match store.upsert_node(node).await {
            Ok(()) => {
                info!(node = %node.name, "node record published");
                return;
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    warn!(error = %text, "publishing the node record; retrying");
                }
                last_error = Some(text);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_identity::MemoryStore;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_list_again_changes_only_what_changed() {
        let mut map = BTreeMap::new();
        let mut synced = false;
        for event in [
            StoreEvent::Upsert(ip(1), "a"),
            StoreEvent::Upsert(ip(2), "b"),
            StoreEvent::Synced,
        ] {
            apply(&mut map, &mut synced, event);
        }
        assert!(synced);
        // After an outage the watch lists again: 2 went away, 1 changed,
        // 3 is new. No step of it drops a record that is still there, and
        // the view stays synced throughout.
        let relist = [
            StoreEvent::Delete(ip(2)),
            StoreEvent::Upsert(ip(1), "a2"),
            StoreEvent::Upsert(ip(3), "c"),
            StoreEvent::Synced,
        ];
        for event in relist {
            apply(&mut map, &mut synced, event);
            assert!(map.contains_key(&ip(1)));
            assert!(synced);
        }
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            vec![(ip(1), "a2"), (ip(3), "c")]
        );
    }

    #[tokio::test]
    async fn refused_records_stay_out_of_the_view_and_are_counted() {
        let store = MemoryStore::new("n2");
        let node = NodeRecord {
            name: "n2".into(),
            ip: "10.77.0.12".parse().unwrap(),
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
            pod_cidr_v6: None,
            ipv6: None,
        };
        store.upsert_node(&node).await.unwrap();
        let record = |identity| EndpointRecord {
            identity,
            node: "n2".into(),
            node_ip: node.ip,
            namespace: "x".into(),
            pod: "p".into(),
        };
        let good: IpAddr = "10.244.2.5".parse().unwrap();
        let host: IpAddr = "10.244.2.6".parse().unwrap();
        let foreign: IpAddr = "10.244.9.9".parse().unwrap();
        store.upsert_endpoint(good, &record(300)).await.unwrap();
        // A pod address claimed as `host` (every ingress policy passes it),
        // and one outside the node's range.
        store.upsert_endpoint(host, &record(1)).await.unwrap();
        store.upsert_endpoint(foreign, &record(300)).await.unwrap();

        let view = Arc::new(Mutex::new(SharedView::default()));
        let registry = prometheus::Registry::new();
        start_watches(Arc::new(store), view.clone(), &registry)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !view.lock().unwrap().synced() {
            assert!(std::time::Instant::now() < deadline, "never synced");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let view = view.lock().unwrap().clone();
        let trusted: Vec<IpAddr> = view.trusted_endpoints().map(|(a, _)| *a).collect();
        assert_eq!(trusted, [good]);
        assert!(!view.endpoints.contains_key(&host), "refused on arrival");
        let rejected: u64 = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "weir_kvstore_records_rejected_total")
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().value() as u64)
            })
            .sum();
        // `host` refused on arrival; `foreign` when its node was known (the
        // watches run in any order, so it may be left out at use instead).
        assert!((1..=2).contains(&rejected), "{rejected}");
    }
}
