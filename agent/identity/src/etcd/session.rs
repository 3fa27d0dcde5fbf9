//! This node's lease and what it published under it.
//!
//! The lease is renewed every third of its TTL. If it is lost anyway (etcd
//! was out of reach for longer than the TTL, or someone revoked it), etcd
//! has deleted everything attached to it; a new lease is taken and
//! everything this node still holds is published again, so a partition
//! heals without the agent doing anything.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Weak;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::task::JoinHandle;

use super::Inner;
use weir_types::LabelSet;

pub(crate) struct Session {
    pub lease: i64,
    /// Identities this node uses, with how many local users each has.
    refs: HashMap<u32, (LabelSet, usize)>,
    /// Encoded records this node published.
    pub endpoints: HashMap<IpAddr, Vec<u8>>,
    pub nodes: HashMap<String, Vec<u8>>,
}

impl Session {
    pub fn new(lease: i64) -> Self {
        Self {
            lease,
            refs: HashMap::new(),
            endpoints: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    pub fn add_ref(&mut self, id: u32, labels: &LabelSet) {
        self.refs.entry(id).or_insert_with(|| (labels.clone(), 0)).1 += 1;
    }

    pub fn ref_count(&self, id: u32) -> usize {
        self.refs.get(&id).map_or(0, |(_, n)| *n)
    }

    /// Drops one local user; true when that was the last.
    pub fn drop_ref(&mut self, id: u32) -> bool {
        let Some((_, n)) = self.refs.get_mut(&id) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.refs.remove(&id);
            return true;
        }
        false
    }
}

pub(crate) fn spawn_keepalive(inner: Weak<Inner>, ttl: Duration) -> JoinHandle<()> {
    let period = (ttl / 3).max(Duration::from_millis(500));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            // The store is gone: let the lease run out.
            let Some(inner) = inner.upgrade() else { return };
            inner.keep_alive().await;
        }
    })
}

impl Inner {
    async fn keep_alive(&self) {
        let lease = self.session.lock().await.lease;
        match self.client.lease_client().keep_alive(lease).await {
            Ok(_) => {}
            // Answered, but the lease no longer exists.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                tracing::warn!(node = %self.node, lease, "etcd lease lost; taking a new one");
                if let Err(e) = self.renew(lease).await {
                    tracing::warn!(node = %self.node, error = %e, "renewing the etcd lease failed");
                }
            }
            // Not answered: keep trying; the lease may still be alive.
            Err(e) => {
                tracing::warn!(node = %self.node, lease, error = %e, "etcd lease keep-alive failed")
            }
        }
    }

    /// Takes a new lease and publishes everything again under it.
    async fn renew(&self, lost: i64) -> Result<(), etcd_client::Error> {
        let mut session = self.session.lock().await;
        if session.lease != lost {
            return Ok(());
        }
        session.lease = self
            .client
            .lease_client()
            .grant(self.ttl_secs, None)
            .await?
            .id();
        let with_lease = || Some(PutOptions::new().with_lease(session.lease));
        let mut kv = self.client.kv_client();
        for (ip, value) in &session.endpoints {
            kv.put(self.keys.endpoint(*ip), value.clone(), with_lease())
                .await?;
        }
        for (name, value) in &session.nodes {
            kv.put(self.keys.node(name), value.clone(), with_lease())
                .await?;
        }
        for (id, (labels, _)) in &session.refs {
            let id_key = self.keys.identity_id(*id);
            let value_key = self.keys.identity_value(&labels.canonical());
            let ref_put = || TxnOp::put(self.keys.identity_ref(*id, &self.node), "", with_lease());
            // Still there: take the ref again.
            let txn = Txn::new()
                .when([Compare::value(
                    value_key.as_str(),
                    CompareOp::Equal,
                    id.to_string(),
                )])
                .and_then([ref_put()]);
            if kv.txn(txn).await?.succeeded() {
                continue;
            }
            // Collected meanwhile: our pods still use the number, so claim it
            // again if nobody else has.
            let json = serde_json::to_vec(labels).expect("labels serialise");
            let txn = Txn::new()
                .when([
                    Compare::create_revision(value_key.as_str(), CompareOp::Equal, 0),
                    Compare::create_revision(id_key.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(id_key.as_str(), json, None),
                    TxnOp::put(value_key.as_str(), id.to_string(), None),
                    ref_put(),
                ]);
            if !kv.txn(txn).await?.succeeded() {
                tracing::error!(id, labels = %labels, "identity was collected and reused while this node still uses it");
            }
        }
        tracing::info!(node = %self.node, lease = session.lease, "etcd lease renewed and records published again");
        Ok(())
    }
}
