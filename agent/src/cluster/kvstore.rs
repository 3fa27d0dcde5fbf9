//! What the agent knows of the rest of the cluster from the shared store:
//! every endpoint record (pod address → identity, node), every node record
//! and the labels of every identity, kept current by watch tasks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tracing::warn;
use weir_identity::{EndpointRecord, NodeRecord, SharedStore, StoreEvent};
use weir_types::LabelSet;

#[derive(Clone, Debug, Default)]
pub struct SharedView {
    pub endpoints: BTreeMap<IpAddr, EndpointRecord>,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub identities: BTreeMap<u32, LabelSet>,
    /// Each watch has delivered its initial full list.
    pub endpoints_synced: bool,
    pub nodes_synced: bool,
    pub identities_synced: bool,
    /// Bumped on every change, so readers can tell whether to recompute.
    pub revision: u64,
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

/// Starts the three watches, feeding `view`. Watch errors are logged; the
/// store's streams retry by themselves.
pub async fn start_watches(
    store: Arc<dyn SharedStore>,
    view: Arc<Mutex<SharedView>>,
) -> weir_identity::Result<()> {
    let mut endpoints = store.watch_endpoints().await?;
    let mut nodes = store.watch_nodes().await?;
    let mut identities = store.watch_identities().await?;
    let v = view.clone();
    tokio::spawn(async move {
        while let Some(event) = endpoints.next().await {
            match event {
                Ok(event) => {
                    let mut view = v.lock().unwrap_or_else(|e| e.into_inner());
                    let SharedView {
                        endpoints,
                        endpoints_synced,
                        ..
                    } = &mut *view;
                    apply(endpoints, endpoints_synced, event);
                    view.revision += 1;
                }
                Err(error) => warn!(%error, "endpoint watch"),
            }
        }
    });
    let v = view.clone();
    tokio::spawn(async move {
        while let Some(event) = nodes.next().await {
            match event {
                Ok(event) => {
                    let mut view = v.lock().unwrap_or_else(|e| e.into_inner());
                    let SharedView {
                        nodes,
                        nodes_synced,
                        ..
                    } = &mut *view;
                    apply(nodes, nodes_synced, event);
                    view.revision += 1;
                }
                Err(error) => warn!(%error, "node watch"),
            }
        }
    });
    tokio::spawn(async move {
        while let Some(event) = identities.next().await {
            match event {
                Ok(event) => {
                    let mut view = view.lock().unwrap_or_else(|e| e.into_inner());
                    let SharedView {
                        identities,
                        identities_synced,
                        ..
                    } = &mut *view;
                    apply(identities, identities_synced, event);
                    view.revision += 1;
                }
                Err(error) => warn!(%error, "identity watch"),
            }
        }
    });
    Ok(())
}
