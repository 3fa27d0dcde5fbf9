//! [`SharedStore`] on etcd for an agent that must run without it: the
//! connection is made in the background (retrying with backoff), a check
//! every `check_interval` tracks whether etcd answers ([`Connection`]), and
//! while it does not every call fails at once with
//! [`StoreError::NotAnswering`] instead of waiting: the agent keeps
//! enforcing what it has and retries later. Calls that do go out are cut
//! after `call_timeout` (the client alone would wait for a ready endpoint
//! without bound).
//!
//! Watches open once connected and then follow the store's own
//! reconnecting watch (resume from the last revision, or list again and
//! report what vanished), so a consumer's view is never reset.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::connection::Connection;
use crate::error::{Result, StoreError};
use crate::etcd::{EtcdConfig, EtcdStore};
use crate::store::{
    EndpointEvent, EndpointRecord, EventStream, IdentityEvent, NodeEvent, NodeRecord, SharedStore,
};
use std::collections::BTreeMap;
use weir_types::LabelSet;

/// Timing of the background connection.
#[derive(Debug, Clone, Copy)]
pub struct LazyOptions {
    /// Longest wait for one call (and one check).
    pub call_timeout: Duration,
    /// How often a connected store is checked.
    pub check_interval: Duration,
    /// Longest wait between connection attempts (from 200 ms, doubling).
    pub retry_max: Duration,
}

impl Default for LazyOptions {
    /// 2 s calls, a check every 500 ms, attempts at most 1 s apart: an
    /// outage is seen within about 2.5 s and its end within 1 s.
    fn default() -> Self {
        LazyOptions {
            call_timeout: Duration::from_secs(2),
            check_interval: Duration::from_millis(500),
            retry_max: Duration::from_secs(1),
        }
    }
}

const RETRY_MIN: Duration = Duration::from_millis(200);
/// A watch's initial list can be several MB (every identity): longer than
/// a call, and waiting costs nothing but that watch.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

type OnChange = Box<dyn Fn(&Connection) + Send + Sync>;

/// A handle on etcd that connects in the background. Cheap to clone; the
/// background task ends when the last clone is dropped.
#[derive(Clone)]
pub struct LazyEtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    node: String,
    endpoints: String,
    options: LazyOptions,
    /// Set once connected; the store reconnects by itself afterwards.
    store: watch::Sender<Option<EtcdStore>>,
    state: Mutex<Connection>,
    on_change: OnChange,
}

impl LazyEtcdStore {
    /// Starts connecting to etcd in the background and returns at once.
    /// `on_change` is called with every new connection state (to publish
    /// it); it must not block. Fails only on an invalid configuration.
    pub fn start(
        config: EtcdConfig,
        options: LazyOptions,
        on_change: impl Fn(&Connection) + Send + Sync + 'static,
    ) -> Result<LazyEtcdStore> {
        config.validate()?;
        let state = Connection::starting_to("etcd", SystemTime::now());
        on_change(&state);
        let shared = Arc::new(Shared {
            node: config.node_name.clone(),
            endpoints: config.endpoints.join(","),
            options,
            store: watch::Sender::new(None),
            state: Mutex::new(state),
            on_change: Box::new(on_change),
        });
        tokio::spawn(run(Arc::downgrade(&shared), config));
        Ok(LazyEtcdStore { shared })
    }

    /// The connection as last seen.
    pub fn connection(&self) -> Connection {
        self.shared.state().clone()
    }

    /// The connected store, once there is one (waits for the first
    /// connection).
    pub async fn connected(&self) -> EtcdStore {
        let mut rx = self.shared.store.subscribe();
        loop {
            if let Some(store) = rx.borrow_and_update().clone() {
                return store;
            }
            // The sender lives as long as `self`.
            let _ = rx.changed().await;
        }
    }

    /// Runs `op` on the store if it answers now, for at most the call
    /// timeout; a call that gets no answer marks the store unreachable.
    async fn call<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T>
    where
        F: FnOnce(EtcdStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let store = self.shared.answering()?;
        let timeout = self.shared.options.call_timeout;
        match tokio::time::timeout(timeout, op(store)).await {
            Ok(Err(error)) if error.is_unanswered() => {
                self.shared.observe(Err(error.to_string()));
                Err(error)
            }
            Ok(result) => result,
            Err(_) => {
                let reason = format!("no answer within {timeout:?} ({what})");
                self.shared.observe(Err(reason.clone()));
                Err(self.shared.not_answering(reason))
            }
        }
    }

    /// A watch that opens once the store is connected (retrying the
    /// initial list until it answers) and then follows the store's watch.
    fn deferred<E, F, Fut>(&self, what: &'static str, open: F) -> EventStream<E>
    where
        E: Send + 'static,
        F: Fn(EtcdStore) -> Fut + Send + 'static,
        Fut: Future<Output = Result<EventStream<E>>> + Send,
    {
        let this = self.clone();
        let opened = async move {
            let mut backoff = RETRY_MIN;
            loop {
                let store = this.connected().await;
                let timeout = LIST_TIMEOUT;
                let error = match tokio::time::timeout(timeout, open(store)).await {
                    Ok(Ok(stream)) => return stream,
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {timeout:?} (initial list)"),
                };
                tracing::debug!(watch = what, %error, "opening a watch; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(this.shared.options.retry_max);
            }
        };
        Box::pin(futures_util::stream::once(opened).flatten())
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of a check or a call; logs and publishes a
    /// change of connected-ness.
    fn observe(&self, outcome: Result<(), String>) {
        let mut state = self.state();
        let next = state.after(SystemTime::now(), outcome);
        if next == *state {
            return;
        }
        match (state.is_connected(), &next) {
            (false, Connection::Connected { .. }) => {
                tracing::info!(etcd = %self.endpoints, "etcd answers")
            }
            (true, Connection::Unreachable { error, .. }) => {
                tracing::warn!(etcd = %self.endpoints, %error, "etcd stopped answering; enforcing what is known, retrying")
            }
            // Not connected yet: say why, once per reason.
            (
                false,
                Connection::Connecting {
                    error: Some(error), ..
                },
            ) => {
                tracing::warn!(etcd = %self.endpoints, %error, "etcd does not answer yet; running on what is known, retrying")
            }
            _ => {}
        }
        *state = next;
        (self.on_change)(&state);
    }

    /// The store, if connected and answering.
    fn answering(&self) -> Result<EtcdStore> {
        let reason = match &*self.state() {
            Connection::Connected { .. } => None,
            Connection::Connecting { error, .. } => {
                Some(error.clone().unwrap_or_else(|| "not connected yet".into()))
            }
            Connection::Unreachable { error, .. } => Some(error.clone()),
        };
        match (reason, self.store.borrow().clone()) {
            (None, Some(store)) => Ok(store),
            (Some(reason), _) => Err(self.not_answering(reason)),
            (None, None) => Err(self.not_answering("not connected yet".into())),
        }
    }

    fn not_answering(&self, reason: String) -> StoreError {
        StoreError::NotAnswering {
            endpoints: self.endpoints.clone(),
            reason,
        }
    }
}

/// Connects (retrying with backoff), then checks the store every
/// `check_interval`, until the handle is dropped.
async fn run(shared: Weak<Shared>, config: EtcdConfig) {
    let mut backoff = RETRY_MIN;
    let store = loop {
        let Some(options) = shared.upgrade().map(|s| s.options) else {
            return;
        };
        let attempt = EtcdStore::connect(config.clone()).await;
        let Some(this) = shared.upgrade() else { return };
        match attempt {
            Ok(store) => {
                this.store.send_replace(Some(store.clone()));
                this.observe(Ok(()));
                break store;
            }
            Err(error) => this.observe(Err(error.to_string())),
        }
        drop(this);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(options.retry_max);
    };
    loop {
        let Some(options) = shared.upgrade().map(|s| s.options) else {
            return;
        };
        tokio::time::sleep(options.check_interval).await;
        let outcome = match tokio::time::timeout(options.call_timeout, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no answer within {:?} (check)",
                options.call_timeout
            )),
        };
        let Some(this) = shared.upgrade() else { return };
        this.observe(outcome);
    }
}

#[async_trait]
impl SharedStore for LazyEtcdStore {
    fn node_name(&self) -> &str {
        &self.shared.node
    }

    async fn allocate_identity(&self, labels: &LabelSet) -> Result<u32> {
        // Reserved sets need no store.
        if let Some(id) = crate::store::precheck_allocation(labels)? {
            return Ok(id);
        }
        self.call("identity allocation", |s| async move {
            s.allocate_identity(labels).await
        })
        .await
    }

    async fn release_identity(&self, id: u32) -> Result<bool> {
        self.call("identity release", |s| async move {
            s.release_identity(id).await
        })
        .await
    }

    async fn lookup_identity(&self, id: u32) -> Result<Option<LabelSet>> {
        self.call(
            "identity lookup",
            |s| async move { s.lookup_identity(id).await },
        )
        .await
    }

    async fn list_identities(&self) -> Result<BTreeMap<u32, LabelSet>> {
        self.call(
            "identity list",
            |s| async move { s.list_identities().await },
        )
        .await
    }

    async fn watch_identities(&self) -> Result<EventStream<IdentityEvent>> {
        Ok(self.deferred("identity", |s| async move { s.watch_identities().await }))
    }

    async fn unreferenced_identities(&self) -> Result<Vec<u32>> {
        self.call("identity list", |s| async move {
            s.unreferenced_identities().await
        })
        .await
    }

    async fn upsert_endpoint(&self, ip: IpAddr, record: &EndpointRecord) -> Result<()> {
        self.call("endpoint put", |s| async move {
            s.upsert_endpoint(ip, record).await
        })
        .await
    }

    async fn delete_endpoint(&self, ip: IpAddr) -> Result<bool> {
        self.call(
            "endpoint delete",
            |s| async move { s.delete_endpoint(ip).await },
        )
        .await
    }

    async fn list_endpoints(&self) -> Result<BTreeMap<IpAddr, EndpointRecord>> {
        self.call("endpoint list", |s| async move { s.list_endpoints().await })
            .await
    }

    async fn watch_endpoints(&self) -> Result<EventStream<EndpointEvent>> {
        Ok(self.deferred("endpoint", |s| async move { s.watch_endpoints().await }))
    }

    async fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        self.call("node put", |s| async move { s.upsert_node(node).await })
            .await
    }

    async fn delete_node(&self, name: &str) -> Result<bool> {
        self.call("node delete", |s| async move { s.delete_node(name).await })
            .await
    }

    async fn list_nodes(&self) -> Result<BTreeMap<String, NodeRecord>> {
        self.call("node list", |s| async move { s.list_nodes().await })
            .await
    }

    async fn watch_nodes(&self) -> Result<EventStream<NodeEvent>> {
        Ok(self.deferred("node", |s| async move { s.watch_nodes().await }))
    }
}
