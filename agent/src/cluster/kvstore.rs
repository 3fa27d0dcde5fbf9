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
/// per change); the store's streams retry by themselves.
pub async fn start_watches(
    store: Arc<dyn SharedStore>,
    view: Arc<Mutex<SharedView>>,
) -> weir_identity::Result<()> {
    let endpoints = store.watch_endpoints().await?;
    let nodes = store.watch_nodes().await?;
    let identities = store.watch_identities().await?;
    spawn_watch("endpoint", endpoints, view.clone(), |v| {
        (&mut v.endpoints, &mut v.endpoints_synced)
    });
    spawn_watch("node", nodes, view.clone(), |v| {
        (&mut v.nodes, &mut v.nodes_synced)
    });
    spawn_watch("identity", identities, view, |v| {
        (&mut v.identities, &mut v.identities_synced)
    });
    Ok(())
}

/// Feeds one watch stream into the part of the view `part` selects.
fn spawn_watch<K, V, S>(
    what: &'static str,
    mut events: S,
    view: Arc<Mutex<SharedView>>,
    part: fn(&mut SharedView) -> (&mut BTreeMap<K, V>, &mut bool),
) where
    K: Ord + Send + 'static,
    V: Send + 'static,
    S: futures::Stream<Item = weir_identity::Result<StoreEvent<K, V>>> + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        // An outage gives an error per retry: log each new one.
        let mut last_error = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if last_error.take().is_some() {
                        info!(watch = what, "shared store watch back");
                    }
                    let mut view = view.lock().unwrap_or_else(|e| e.into_inner());
                    let (map, synced) = part(&mut view);
                    apply(map, synced, event);
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
}
