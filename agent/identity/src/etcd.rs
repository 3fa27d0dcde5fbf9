//! [`SharedStore`] on etcd ("kvstore mode").
//!
//! Key layout: see [`keys`]. Each store handle holds one etcd lease for its
//! node; everything the node publishes (identity refs, endpoints, its node
//! record) is attached to it, so when the agent dies and stops renewing the
//! lease, etcd deletes those keys and every watcher sees the deletes.
//!
//! # Identity allocation
//!
//! An identity is two keys written together: `id/<n>` → labels and
//! `value/<labels>` → n. One transaction creates both only if neither exists
//! (`create_revision == 0` on each), plus this node's ref. So:
//! - two agents allocating the same labels race on `value/<labels>`: one
//!   transaction wins, the other fails, reads the winner's id from the
//!   failure branch and takes a ref to it;
//! - two agents picking the same number for different labels race on
//!   `id/<n>`: the loser picks another number.
//!
//! Taking a ref to an existing identity is itself conditional on
//! `value/<labels>` still having the create revision we read, and
//! [`EtcdStore::delete_identity_if_unreferenced`] deletes only while no ref
//! exists, so a garbage collector and an allocator cannot both win.
//!
//! Numbers are drawn at random from the range (as Cilium does) so concurrent
//! allocators of different labels rarely collide; after repeated collisions
//! the allocator lists the used numbers and draws from the free ones.

mod keys;
mod session;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, PutOptions, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::task::JoinHandle;

use crate::error::{Result, StoreError};
use crate::store::{
    precheck_allocation, require_cluster, EndpointEvent, EndpointRecord, EventStream,
    IdentityEvent, NodeEvent, NodeRecord, SharedStore,
};
use keys::Keys;
use session::Session;
use weir_abi::identity::{is_cluster, CLUSTER_MAX, CLUSTER_MIN};
use weir_types::LabelSet;

/// Transactions tried before an allocation gives up.
const MAX_ATTEMPTS: u32 = 64;
/// Random draws before listing the used numbers.
const RANDOM_PROBES: usize = 8;

/// How to reach etcd and who we are.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` (or `host:port`) of each etcd member.
    pub endpoints: Vec<String>,
    /// Key prefix of all Weir state, without trailing '/'.
    pub prefix: String,
    /// This node's name: used in identity refs. No '/'.
    pub node_name: String,
    /// Life of this node's records after its agent stops renewing them.
    pub lease_ttl: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Numbers allocated to identities: the cluster range unless a test
    /// wants a small one.
    pub identity_range: RangeInclusive<u32>,
    /// TLS to etcd (`https://` endpoints): the CA to trust and the client
    /// certificate to present. None: plaintext.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd as its `--client-cert-auth` expects: the CA etcd's serving
/// certificate chains to (never the system's roots) and this client's
/// certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// Reads the CA and, when given, the client certificate and its key.
    pub fn load(
        ca: &std::path::Path,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> std::io::Result<EtcdTls> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
            })
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an etcd client certificate needs its key, and the reverse",
                ))
            }
        };
        Ok(EtcdTls {
            ca: read(ca)?,
            identity,
        })
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let options = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca));
        match &self.identity {
            Some((cert, key)) => options.identity(etcd_client::Identity::from_pem(cert, key)),
            None => options,
        }
    }
}

impl EtcdConfig {
    /// Defaults: prefix `weir/state`, 60 s lease, 5 s timeouts, full range.
    pub fn new(endpoints: Vec<String>, node_name: impl Into<String>) -> Self {
        Self {
            endpoints,
            prefix: "weir/state".into(),
            node_name: node_name.into(),
            lease_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            identity_range: CLUSTER_MIN..=CLUSTER_MAX,
            tls: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(StoreError::Config(what));
        if self.endpoints.is_empty() {
            return bad("no etcd endpoints".into());
        }
        if self.node_name.is_empty() || self.node_name.contains('/') {
            return bad(format!(
                "node name {:?} must be non-empty without '/'",
                self.node_name
            ));
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return bad(format!(
                "lease TTL {:?} is under etcd's 2 s minimum",
                self.lease_ttl
            ));
        }
        let (min, max) = (*self.identity_range.start(), *self.identity_range.end());
        if min > max || !is_cluster(min) || !is_cluster(max) {
            return bad(format!(
                "identity range {min}..={max} is not inside the cluster range"
            ));
        }
        Ok(())
    }
}

/// A handle on the etcd store for one node. Cheap to clone; the lease is
/// renewed in the background until the last clone is dropped (or
/// [`EtcdStore::close`]).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    client: Client,
    keys: Keys,
    node: String,
    endpoints: String,
    ttl_secs: i64,
    range: RangeInclusive<u32>,
    /// The lease and what this node published under it. Held across the
    /// etcd calls that change either, so lease renewal re-publishes a
    /// consistent set and local ref counts match the refs in etcd.
    session: tokio::sync::Mutex<Session>,
    keepalive: StdMutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl EtcdStore {
    /// Connects, checks that etcd answers, and takes a lease for this node.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let endpoints = config.endpoints.join(",");
        let unreachable = |source| StoreError::Unreachable {
            endpoints: endpoints.clone(),
            source,
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), config.request_timeout)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.options());
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(unreachable)?;
        let ttl_secs = config.lease_ttl.as_secs() as i64;
        // The first request doubles as the reachability check. The channel
        // waits for a ready endpoint without bound, hence the outer timeout.
        let mut leases = client.lease_client();
        let grant = leases.grant(ttl_secs, None);
        let lease = tokio::time::timeout(config.connect_timeout + config.request_timeout, grant)
            .await
            .map_err(|_| unreachable(timed_out("no answer to a lease grant")))?
            .map_err(unreachable)?
            .id();
        let inner = Arc::new(Inner {
            client,
            keys: Keys::new(&config.prefix),
            node: config.node_name,
            endpoints,
            ttl_secs,
            range: config.identity_range,
            session: tokio::sync::Mutex::new(Session::new(lease)),
            keepalive: StdMutex::new(None),
        });
        let task = session::spawn_keepalive(Arc::downgrade(&inner), config.lease_ttl);
        *inner.keepalive.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        tracing::debug!(node = %inner.node, endpoints = %inner.endpoints, lease, "connected to etcd");
        Ok(Self { inner })
    }

    /// This node's current lease (it changes if the lease is lost and
    /// renewed).
    pub async fn lease_id(&self) -> i64 {
        self.inner.session.lock().await.lease
    }

    /// Leaves the cluster cleanly: stops renewing and revokes the lease, so
    /// everything this node published disappears now rather than after the
    /// TTL. Other clones of this handle stop working for writes.
    pub async fn close(self) -> Result<()> {
        if let Some(task) = self
            .inner
            .keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        let lease = self.lease_id().await;
        self.inner
            .client
            .lease_client()
            .revoke(lease)
            .await
            .map_err(|e| StoreError::etcd("lease revoke", lease.to_string(), e))?;
        Ok(())
    }

    /// One cheap read, to tell whether etcd answers.
    pub async fn ping(&self) -> Result<()> {
        let key = self.inner.keys.node(&self.inner.node);
        self.kv()
            .get(key.as_str(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| StoreError::etcd("get", &key, e))?;
        Ok(())
    }

    /// The identities `node` holds a reference to (for an operator, and
    /// for tests that look for leaked references).
    pub async fn referenced_by(&self, node: &str) -> Result<BTreeSet<u32>> {
        let keys = &self.inner.keys;
        let prefix = keys.identity_refs();
        let resp = self
            .kv()
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| StoreError::etcd("list", &prefix, e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| std::str::from_utf8(kv.key()).ok())
            .filter(|key| key.rsplit('/').next() == Some(node))
            .filter_map(|key| keys.ref_identity(key))
            .collect())
    }

    /// Deletes identity `id` if no node references it, atomically: an
    /// allocator taking a ref at the same time either makes this fail or
    /// finds the identity gone and allocates afresh. Returns whether it was
    /// deleted. For an operator's garbage collector.
    pub async fn delete_identity_if_unreferenced(&self, id: u32) -> Result<bool> {
        require_cluster(id)?;
        let keys = &self.inner.keys;
        let id_key = keys.identity_id(id);
        let mut kv = self.kv();
        let resp = kv
            .get(id_key.as_str(), None)
            .await
            .map_err(|e| StoreError::etcd("get", &id_key, e))?;
        let Some(found) = resp.kvs().first() else {
            return Ok(false);
        };
        let labels: LabelSet =
            serde_json::from_slice(found.value()).map_err(|e| StoreError::corrupt(&id_key, e))?;
        let value_key = keys.identity_value(&labels.canonical());
        // With a range, etcd applies the compare to every key in it and,
        // when there is none, to an empty key (create revision 0): true
        // exactly when no ref exists.
        let no_refs =
            Compare::create_revision(keys.identity_refs_of(id), CompareOp::Equal, 0).with_prefix();
        let unchanged =
            Compare::mod_revision(id_key.as_str(), CompareOp::Equal, found.mod_revision());
        let txn = Txn::new().when([no_refs, unchanged]).and_then([
            TxnOp::delete(id_key.as_str(), None),
            TxnOp::delete(value_key, None),
        ]);
        Ok(self.txn(txn, &id_key).await?.succeeded())
    }

    fn kv(&self) -> KvClient {
        self.inner.client.kv_client()
    }

    async fn txn(&self, txn: Txn, key: &str) -> Result<TxnResponse> {
        self.kv()
            .txn(txn)
            .await
            .map_err(|e| StoreError::etcd("txn", key, e))
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
        let prefix = self.inner.keys.identity_ids();
        let resp = self
            .kv()
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| StoreError::etcd("list", &prefix, e))?;
        let used: HashSet<u32> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(&prefix)?
                    .parse()
                    .ok()
            })
            .chain(taken.iter().copied())
            .collect();
        let free = range.clone().filter(|id| !used.contains(id)).count();
        if free == 0 {
            return Err(StoreError::Exhausted {
                min: *range.start(),
                max: *range.end(),
            });
        }
        let nth = fastrand::usize(..free);
        Ok(range
            .filter(|id| !used.contains(id))
            .nth(nth)
            .expect("nth < free count"))
    }

    async fn put_owned(&self, key: String, value: Vec<u8>, lease: i64) -> Result<()> {
        self.kv()
            .put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| StoreError::etcd("put", &key, e))?;
        Ok(())
    }

    /// Deletes `key` only if it is still attached to our lease (another
    /// node may have taken it over, e.g. a pod IP reused elsewhere).
    async fn delete_owned(&self, key: String, lease: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::lease(key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        Ok(self.txn(txn, &key).await?.succeeded())
    }

    async fn list_decoded<K, V>(&self, prefix: String) -> Result<BTreeMap<K, V>>
    where
        K: std::str::FromStr + Ord,
        V: serde::de::DeserializeOwned,
    {
        let (kvs, _) = watch::list(&self.inner.client, &prefix).await?;
        let mut out = BTreeMap::new();
        for kv in &kvs {
            match watch::decode(&prefix, kv) {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                // One bad record must not hide all the others.
                Err(e) => tracing::warn!(error = %e, "skipping malformed record"),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SharedStore for EtcdStore {
    fn node_name(&self) -> &str {
        &self.inner.node
    }

    async fn allocate_identity(&self, labels: &LabelSet) -> Result<u32> {
        if let Some(id) = precheck_allocation(labels)? {
            return Ok(id);
        }
        let keys = &self.inner.keys;
        let node = &self.inner.node;
        let value_key = keys.identity_value(&labels.canonical());
        let labels_json = serde_json::to_vec(labels).expect("labels serialise");
        let mut session = self.inner.session.lock().await;
        let lease = PutOptions::new().with_lease(session.lease);

        let resp = self
            .kv()
            .get(value_key.as_str(), None)
            .await
            .map_err(|e| StoreError::etcd("get", &value_key, e))?;
        let mut existing = resp.kvs().first().cloned();
        let mut taken = HashSet::new();
        for _ in 0..MAX_ATTEMPTS {
            if let Some(found) = existing.take() {
                let id = parse_id(&found)?;
                // Only while the identity we read is still there: a garbage
                // collector may have deleted it since.
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        value_key.as_str(),
                        CompareOp::Equal,
                        found.create_revision(),
                    )])
                    .and_then([TxnOp::put(
                        keys.identity_ref(id, node),
                        "",
                        Some(lease.clone()),
                    )])
                    .or_else([TxnOp::get(value_key.as_str(), None)]);
                let resp = self.txn(txn, &value_key).await?;
                if resp.succeeded() {
                    session.add_ref(id, labels);
                    return Ok(id);
                }
                existing = first_get(&resp);
                continue;
            }
            let id = self.candidate(&taken).await?;
            let id_key = keys.identity_id(id);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(value_key.as_str(), CompareOp::Equal, 0),
                    Compare::create_revision(id_key.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(id_key.as_str(), labels_json.clone(), None),
                    TxnOp::put(value_key.as_str(), id.to_string(), None),
                    TxnOp::put(keys.identity_ref(id, node), "", Some(lease.clone())),
                ])
                .or_else([TxnOp::get(value_key.as_str(), None)]);
            let resp = self.txn(txn, &value_key).await?;
            if resp.succeeded() {
                tracing::debug!(id, labels = %labels, "allocated identity");
                session.add_ref(id, labels);
                return Ok(id);
            }
            // Either someone allocated these labels (use theirs) or the
            // number was taken by other labels (try another).
            existing = first_get(&resp);
            if existing.is_none() {
                taken.insert(id);
            }
        }
        Err(StoreError::Contended(MAX_ATTEMPTS))
    }

    async fn release_identity(&self, id: u32) -> Result<bool> {
        require_cluster(id)?;
        let mut session = self.inner.session.lock().await;
        if session.ref_count(id) != 1 {
            // Not ours, or other users on this node still hold it.
            return Ok(session.drop_ref(id));
        }
        let key = self.inner.keys.identity_ref(id, &self.inner.node);
        self.kv()
            .delete(key.as_str(), None)
            .await
            .map_err(|e| StoreError::etcd("delete", &key, e))?;
        Ok(session.drop_ref(id))
    }

    async fn lookup_identity(&self, id: u32) -> Result<Option<LabelSet>> {
        if let Some(labels) = LabelSet::reserved(id) {
            return Ok(Some(labels));
        }
        if !is_cluster(id) {
            return Ok(None);
        }
        let key = self.inner.keys.identity_id(id);
        let resp = self
            .kv()
            .get(key.as_str(), None)
            .await
            .map_err(|e| StoreError::etcd("get", &key, e))?;
        resp.kvs()
            .first()
            .map(|kv| serde_json::from_slice(kv.value()).map_err(|e| StoreError::corrupt(&key, e)))
            .transpose()
    }

    async fn list_identities(&self) -> Result<BTreeMap<u32, LabelSet>> {
        self.list_decoded(self.inner.keys.identity_ids()).await
    }

    async fn watch_identities(&self) -> Result<EventStream<IdentityEvent>> {
        watch::list_and_watch(&self.inner.client, self.inner.keys.identity_ids()).await
    }

    async fn unreferenced_identities(&self) -> Result<Vec<u32>> {
        let keys = &self.inner.keys;
        let keys_only = || Some(GetOptions::new().with_prefix().with_keys_only());
        // Both reads in one transaction: one consistent revision.
        let txn = Txn::new().and_then([
            TxnOp::get(keys.identity_ids(), keys_only()),
            TxnOp::get(keys.identity_refs(), keys_only()),
        ]);
        let resp = self.txn(txn, &keys.identity_ids()).await?;
        let [TxnOpResponse::Get(ids), TxnOpResponse::Get(refs)] = &resp.op_responses()[..] else {
            return Err(StoreError::corrupt(
                keys.identity_ids(),
                "unexpected txn response",
            ));
        };
        let referenced: HashSet<u32> = refs
            .kvs()
            .iter()
            .filter_map(|kv| keys.ref_identity(std::str::from_utf8(kv.key()).ok()?))
            .collect();
        let prefix = keys.identity_ids();
        Ok(ids
            .kvs()
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(&prefix)?
                    .parse()
                    .ok()
            })
            .filter(|id| !referenced.contains(id))
            .collect())
    }

    async fn upsert_endpoint(&self, ip: IpAddr, record: &EndpointRecord) -> Result<()> {
        let value = serde_json::to_vec(record).expect("record serialises");
        let mut session = self.inner.session.lock().await;
        // Remembered first: if the put fails on a lost lease, renewal
        // publishes it.
        session.endpoints.insert(ip, value.clone());
        self.put_owned(self.inner.keys.endpoint(ip), value, session.lease)
            .await
    }

    async fn delete_endpoint(&self, ip: IpAddr) -> Result<bool> {
        let mut session = self.inner.session.lock().await;
        session.endpoints.remove(&ip);
        self.delete_owned(self.inner.keys.endpoint(ip), session.lease)
            .await
    }

    async fn list_endpoints(&self) -> Result<BTreeMap<IpAddr, EndpointRecord>> {
        self.list_decoded(self.inner.keys.endpoints()).await
    }

    async fn watch_endpoints(&self) -> Result<EventStream<EndpointEvent>> {
        watch::list_and_watch(&self.inner.client, self.inner.keys.endpoints()).await
    }

    async fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        if node.name.is_empty() || node.name.contains('/') {
            return Err(StoreError::Config(format!(
                "node name {:?} must be non-empty without '/'",
                node.name
            )));
        }
        let value = serde_json::to_vec(node).expect("record serialises");
        let mut session = self.inner.session.lock().await;
        session.nodes.insert(node.name.clone(), value.clone());
        self.put_owned(self.inner.keys.node(&node.name), value, session.lease)
            .await
    }

    async fn delete_node(&self, name: &str) -> Result<bool> {
        let mut session = self.inner.session.lock().await;
        session.nodes.remove(name);
        self.delete_owned(self.inner.keys.node(name), session.lease)
            .await
    }

    async fn list_nodes(&self) -> Result<BTreeMap<String, NodeRecord>> {
        self.list_decoded(self.inner.keys.nodes()).await
    }

    async fn watch_nodes(&self) -> Result<EventStream<NodeEvent>> {
        watch::list_and_watch(&self.inner.client, self.inner.keys.nodes()).await
    }
}

fn parse_id(kv: &KeyValue) -> Result<u32> {
    std::str::from_utf8(kv.value())
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|id| is_cluster(*id))
        .ok_or_else(|| StoreError::corrupt(kv.key(), "value is not a cluster identity"))
}

/// The key read by a transaction's single `get` branch, if it exists.
fn first_get(resp: &TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}

fn timed_out(what: &str) -> etcd_client::Error {
    etcd_client::Error::IoError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what.to_owned(),
    ))
}
