//! The nodes a relay reads from: where each one is, what it is called, and
//! whether the last call to it succeeded.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tonic::transport::Channel;
use weir_observer::proto::observer::observer_client::ObserverClient;
use weir_observer::proto::observer::{GetNodesRequest, Node};
use weir_observer::{Readiness, Target, TargetError};

use crate::metrics::RelayMetrics;

/// One node's Observer API.
pub struct Peer {
    pub target: Target,
    channel: Channel,
    state: Mutex<PeerState>,
}

#[derive(Debug, Clone, Default)]
struct PeerState {
    /// The node's own name, once it has told us.
    name: Option<String>,
    /// None until the first call; then whether the last call succeeded.
    connected: Option<bool>,
}

impl Peer {
    /// The node's name, or its address until it has answered once.
    pub fn name(&self) -> String {
        self.lock()
            .name
            .clone()
            .unwrap_or_else(|| self.target.to_string())
    }

    pub fn client(&self) -> ObserverClient<Channel> {
        ObserverClient::new(self.channel.clone())
    }

    pub fn is_connected(&self) -> bool {
        self.lock().connected == Some(true)
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// All peers, with the timeout applied to each unary call. The set can
/// change while the relay serves ([`Peers::set_targets`], peer discovery):
/// each request works on the set as it was when it started.
#[derive(Clone)]
pub struct Peers {
    peers: Arc<RwLock<Arc<Vec<Arc<Peer>>>>>,
    pub timeout: Duration,
    metrics: RelayMetrics,
    readiness: Readiness,
}

impl Peers {
    /// Channels to every target; nothing is dialled yet.
    pub fn new(
        targets: Vec<Target>,
        timeout: Duration,
        metrics: RelayMetrics,
    ) -> Result<Self, TargetError> {
        let peers = Peers {
            peers: Arc::default(),
            timeout,
            metrics,
            readiness: Readiness::new(false),
        };
        peers.set_targets(targets)?;
        Ok(peers)
    }

    /// The peers now.
    pub fn list(&self) -> Arc<Vec<Arc<Peer>>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the set: peers whose target stays keep their channel and
    /// state; new ones are dialled on first use; requests already running
    /// finish on the set they started with.
    pub fn set_targets(&self, targets: Vec<Target>) -> Result<(), TargetError> {
        let current = self.list();
        let peers = targets
            .into_iter()
            .map(|target| match current.iter().find(|p| p.target == target) {
                Some(kept) => Ok(kept.clone()),
                None => Ok(Arc::new(Peer {
                    channel: target.lazy_channel(self.timeout)?,
                    target,
                    state: Mutex::new(PeerState::default()),
                })),
            })
            .collect::<Result<Vec<_>, TargetError>>()?;
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(peers);
        self.publish();
        Ok(())
    }

    /// Up while at least one peer answers (as Hubble Relay's health check):
    /// a relay that reaches no node has no flows to serve.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Records the outcome of a call to `peer`.
    pub fn mark(&self, peer: &Peer, connected: bool) {
        peer.lock().connected = Some(connected);
        self.publish();
    }

    fn publish(&self) {
        let peers = self.list();
        let connected = peers.iter().filter(|p| p.is_connected()).count();
        self.metrics.set_peers(connected, peers.len() - connected);
        self.readiness.set(connected > 0);
    }

    /// Asks `peer` for its nodes (learning its name), within the timeout.
    pub async fn nodes_of(&self, peer: &Peer) -> Result<Vec<Node>, tonic::Status> {
        let mut client = peer.client();
        let result = self
            .within_timeout(client.get_nodes(GetNodesRequest {}))
            .await
            .map(|answer| answer.nodes);
        match &result {
            Ok(nodes) => {
                if let [node] = nodes.as_slice() {
                    if !node.name.is_empty() {
                        peer.lock().name = Some(node.name.clone());
                    }
                }
                self.mark(peer, true);
            }
            Err(_) => self.mark(peer, false),
        }
        result
    }

    /// The answer of a unary `call` to a peer, or DEADLINE_EXCEEDED past
    /// the peers' timeout.
    pub async fn within_timeout<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
        }
    }

    /// Asks `peer` (named first, so that it can be reported) with a unary
    /// `call` and marks it up or down by the answer.
    pub async fn ask<T, F, Fut>(&self, peer: &Peer, call: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(ObserverClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.ensure_named(peer).await;
        let answer = self.within_timeout(call(peer.client())).await;
        self.mark(peer, answer.is_ok());
        answer
    }

    /// Learns the name of `peer` if it is not known yet and the peer was not
    /// found down (a peer that was down is asked again by [`Peers::probe`]).
    pub async fn ensure_named(&self, peer: &Peer) {
        let ask = {
            let state = peer.lock();
            state.name.is_none() && state.connected != Some(false)
        };
        if ask {
            let _ = self.nodes_of(peer).await;
        }
    }

    /// Asks every peer for its nodes; refreshes names and states.
    pub async fn probe(&self) {
        let peers = self.list();
        futures::future::join_all(peers.iter().map(|peer| self.nodes_of(peer))).await;
    }
}
