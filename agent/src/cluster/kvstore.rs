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
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let mut view = view.lock().unwrap_or_else(|e| e.into_inner());
                    let (map, synced) = part(&mut view);
                    apply(map, synced, event);
                }
                Err(error) => warn!(%error, watch = what, "shared store watch"),
            }
        }
    });
}
