//! The relay's Observer service: every request fanned out to all peers,
//! their answers merged. A peer that cannot be reached is reported (node
//! status events, unavailable counts, its state in GetNodes), never fatal.

use std::pin::Pin;
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::codec::Streaming;
use tonic::{Code, Request, Response, Status};
use weir_observer::proto::observer::observer_server::Observer;
use weir_observer::proto::observer::{
    get_flows_response, GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
    GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
    GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest,
    ServerStatusResponse,
};
use weir_observer::proto::relay::{NodeState, NodeStatusEvent};
use weir_observer::Query;

use crate::merge;
use crate::metrics::RelayMetrics;
use crate::peers::{Peer, Peers};

/// How many responses may queue per client stream before peers wait.
const STREAM_BUFFER: usize = 256;

#[derive(Clone)]
pub struct RelayService {
    peers: Peers,
    metrics: RelayMetrics,
    version: String,
    /// One permit per follow stream being relayed: each one holds a stream
    /// to every peer, so clients cannot open them without bound.
    followers: Arc<tokio::sync::Semaphore>,
}

impl RelayService {
    pub fn new(peers: Peers, metrics: RelayMetrics) -> Self {
        RelayService {
            peers,
            metrics,
            version: format!("weir-relay {}", env!("CARGO_PKG_VERSION")),
            followers: Arc::new(tokio::sync::Semaphore::new(
                weir_observer::DEFAULT_MAX_FOLLOWERS,
            )),
        }
    }

    /// Relays at most `max` follow streams at once.
    pub fn with_max_followers(mut self, max: usize) -> Self {
        self.followers = Arc::new(tokio::sync::Semaphore::new(max));
        self
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;
type Tx = mpsc::Sender<Result<GetFlowsResponse, Status>>;

/// Unreachable (or too slow) peers are unavailable; any other failure is
/// the peer's error.
fn state_of(status: &Status) -> NodeState {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => NodeState::NodeUnavailable,
        _ => NodeState::NodeError,
    }
}

fn node_status(state: NodeState, names: Vec<String>, message: String) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: String::new(),
        time: Some(weir_observer::proto::now()),
        response_types: Some(get_flows_response::ResponseTypes::NodeStatus(
            NodeStatusEvent {
                state_change: state as i32,
                node_names: names,
                message,
            },
        )),
    }
}

/// Names the node a response came from when the peer did not.
fn stamp(peer_name: &str, mut response: GetFlowsResponse) -> GetFlowsResponse {
    if let Some(get_flows_response::ResponseTypes::Flow(flow)) = &mut response.response_types {
        if flow.node_name.is_empty() {
            flow.node_name = peer_name.to_string();
        }
        if response.node_name.is_empty() {
            response.node_name = flow.node_name.clone();
        }
    }
    if response.node_name.is_empty() && response.response_types.is_some() {
        response.node_name = peer_name.to_string();
    }
    response
}

/// An open stream from one peer.
struct Opened {
    peer: Arc<Peer>,
    name: String,
    stream: Streaming<GetFlowsResponse>,
}

impl RelayService {
    /// Opens GetFlows on every peer; reports who answered and who did not.
    async fn open_all(&self, request: &GetFlowsRequest, tx: &Tx) -> Vec<Opened> {
        let peers = self.peers.list();
        let calls = peers.iter().map(|peer| {
            let request = request.clone();
            async move {
                self.peers.ensure_named(peer).await;
                let result = peer.client().get_flows(request).await;
                (peer.clone(), result)
            }
        });
        let mut opened = Vec::new();
        let mut connected = Vec::new();
        let mut failed: Vec<(NodeState, String, String)> = Vec::new();
        for (peer, result) in join_all(calls).await {
            let name = peer.name();
            match result {
                Ok(response) => {
                    self.peers.mark(&peer, true);
                    connected.push(name.clone());
                    opened.push(Opened {
                        peer,
                        name,
                        stream: response.into_inner(),
                    });
                }
                Err(status) => {
                    self.peers.mark(&peer, false);
                    failed.push((state_of(&status), name, status.message().to_string()));
                }
            }
        }
        let mut events = Vec::new();
        if !connected.is_empty() {
            events.push(node_status(
                NodeState::NodeConnected,
                connected,
                String::new(),
            ));
        }
        for (state, name, message) in failed {
            events.push(node_status(state, vec![name], message));
        }
        for event in events {
            let _ = tx.send(Ok(event)).await;
        }
        opened
    }

    /// Follow: every peer's responses passed on as they come.
    /// `permit` is held until the last peer's stream ends.
    fn interleave(
        &self,
        opened: Vec<Opened>,
        tx: Tx,
        permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) {
        for mut one in opened {
            let tx = tx.clone();
            let peers = self.peers.clone();
            let permit = permit.clone();
            tokio::spawn(async move {
                let _permit = permit;
                loop {
                    // Stop as soon as the client goes away.
                    let next = tokio::select! {
                        _ = tx.closed() => return,
                        next = one.stream.message() => next,
                    };
                    let response = match next {
                        Ok(Some(response)) => stamp(&one.name, response),
                        Ok(None) => return,
                        Err(status) => {
                            peers.mark(&one.peer, false);
                            node_status(
                                state_of(&status),
                                vec![one.name.clone()],
                                status.message().to_string(),
                            )
                        }
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// No follow: every peer's answer read whole, then merged by time.
    async fn merge(&self, opened: Vec<Opened>, request: &GetFlowsRequest, tx: Tx) {
        let reads = opened.into_iter().map(|mut one| async move {
            let mut flows = Vec::new();
            let mut other = Vec::new();
            loop {
                match one.stream.message().await {
                    Ok(Some(response)) => {
                        let response = stamp(&one.name, response);
                        match response.response_types {
                            Some(get_flows_response::ResponseTypes::Flow(_)) => {
                                flows.push(response)
                            }
                            _ => other.push(response),
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        self.peers.mark(&one.peer, false);
                        other.push(node_status(
                            state_of(&status),
                            vec![one.name.clone()],
                            status.message().to_string(),
                        ));
                        break;
                    }
                }
            }
            (flows, other)
        });
        let mut per_node = Vec::new();
        for (flows, other) in join_all(reads).await {
            for response in other {
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            per_node.push(flows);
        }
        for response in merge::by_time(per_node, request.number, request.first) {
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Observer for RelayService {
    type GetFlowsStream = FlowStream;
    type GetAgentEventsStream =
        Pin<Box<dyn Stream<Item = Result<GetAgentEventsResponse, Status>> + Send>>;

    /// As Hubble Relay: agent events are asked of a node, not merged.
    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        self.metrics.request("GetAgentEvents");
        Err(Status::unimplemented("GetAgentEvents not yet implemented"))
    }

    type GetDebugEventsStream =
        Pin<Box<dyn Stream<Item = Result<GetDebugEventsResponse, Status>> + Send>>;

    /// As Hubble Relay: debug events are asked of a node, not merged.
    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        self.metrics.request("GetDebugEvents");
        Err(Status::unimplemented("GetDebugEvents not yet implemented"))
    }

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        self.metrics.request("GetFlows");
        let request = request.into_inner();
        // Bad filters are the client's error, answered here once rather
        // than by every peer.
        Query::from_request(&request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let permit = if request.follow {
            let permit = self.followers.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted("too many follow streams on this relay; try again later")
            })?;
            Some(Arc::new(permit))
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let relay = self.clone();
        tokio::spawn(async move {
            let opened = relay.open_all(&request, &tx).await;
            if let Some(permit) = permit {
                relay.interleave(opened, tx, permit);
            } else {
                relay.merge(opened, &request, tx).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        self.metrics.request("GetNodes");
        let peers = self.peers.list();
        let answers = join_all(
            peers
                .iter()
                .map(|peer| async move { (peer.clone(), self.peers.nodes_of(peer).await) }),
        )
        .await;
        let mut nodes = Vec::new();
        for (peer, answer) in answers {
            match answer {
                // A single node: report it at the address the relay uses.
                Ok(mut theirs) if theirs.len() == 1 => {
                    let node = &mut theirs[0];
                    node.address = peer.target.to_string();
                    node.state = NodeState::NodeConnected as i32;
                    nodes.append(&mut theirs);
                }
                // Another relay: its nodes as it reports them.
                Ok(mut theirs) => nodes.append(&mut theirs),
                Err(status) => nodes.push(Node {
                    name: peer.name(),
                    address: peer.target.to_string(),
                    state: state_of(&status) as i32,
                    ..Default::default()
                }),
            }
        }
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        self.metrics.request("GetNamespaces");
        let peers = self.peers.list();
        let answers = join_all(peers.iter().map(|peer| {
            self.peers.ask(peer, |mut client| async move {
                client.get_namespaces(GetNamespacesRequest {}).await
            })
        }))
        .await;
        // The union over the nodes that answered, sorted as each node's.
        let mut namespaces: Vec<Namespace> = answers
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|answer| answer.namespaces)
            .collect();
        namespaces.sort_by(|a, b| (&a.cluster, &a.namespace).cmp(&(&b.cluster, &b.namespace)));
        namespaces.dedup();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        self.metrics.request("ServerStatus");
        let peers = self.peers.list();
        let answers = join_all(peers.iter().map(|peer| async move {
            let answer = self
                .peers
                .ask(peer, |mut client| async move {
                    client.server_status(ServerStatusRequest {}).await
                })
                .await;
            (peer.name(), answer)
        }))
        .await;
        let mut total = ServerStatusResponse {
            version: self.version.clone(),
            ..Default::default()
        };
        let (mut connected, mut unavailable) = (0u32, 0u32);
        for (name, answer) in answers {
            match answer {
                Ok(s) => {
                    total.num_flows += s.num_flows;
                    total.max_flows += s.max_flows;
                    total.seen_flows += s.seen_flows;
                    total.flows_rate += s.flows_rate;
                    // The oldest peer's uptime: summing uptimes means nothing.
                    total.uptime_ns = total.uptime_ns.max(s.uptime_ns);
                    // A peer may itself be a relay of several nodes.
                    connected += s.num_connected_nodes.unwrap_or(1);
                    unavailable += s.num_unavailable_nodes.unwrap_or(0);
                    total.unavailable_nodes.extend(s.unavailable_nodes);
                }
                Err(_) => {
                    unavailable += 1;
                    total.unavailable_nodes.push(name);
                }
            }
        }
        total.num_connected_nodes = Some(connected);
        total.num_unavailable_nodes = Some(unavailable);
        Ok(Response::new(total))
    }
}
