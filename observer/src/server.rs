//! The Hubble-compatible `observer.Observer` gRPC service over a
//! [`FlowRing`], served on a unix socket or a TCP address.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::agent_events::AgentEventRing;
use crate::debug_events::DebugEventRing;
use crate::event_ring::{EventQuery, EventRing, FollowedEvent, RingResponse, WindowRequest};
use crate::health::{self, Readiness};
use crate::proto::flow::{
    agent_event, AgentEvent, AgentEventUnknown, DebugEvent, DebugEventType, Flow, LostEvent,
    LostEventSource,
};
use crate::proto::observer::observer_server::{Observer, ObserverServer};
use crate::proto::observer::{
    get_flows_response, GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
    GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
    GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest,
    ServerStatusResponse,
};
use crate::proto::relay::NodeState;
use crate::ring::{FlowRing, Followed, Query};

/// How many responses may queue per stream before the sender waits.
const STREAM_BUFFER: usize = 256;
/// Follow streams served at once by default: each holds a task and a
/// broadcast receiver; beyond this a client gets RESOURCE_EXHAUSTED.
pub const DEFAULT_MAX_FOLLOWERS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {path}")]
    Bind {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("gRPC server")]
    Transport(#[from] tonic::transport::Error),
}

/// This node as reported by `GetNodes` and in every response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub version: String,
    /// Address of this API endpoint, as clients should dial it.
    pub address: String,
}

/// The Observer service: answers from the ring it shares with the parser.
#[derive(Clone)]
pub struct ObserverService {
    ring: Arc<FlowRing>,
    /// The agent's events (GetAgentEvents); none: Unimplemented.
    agent_events: Option<Arc<AgentEventRing>>,
    /// The datapath's debug messages (GetDebugEvents); none: Unimplemented.
    debug_events: Option<Arc<DebugEventRing>>,
    node: NodeInfo,
    /// One permit per follow stream being served (flows and agent events).
    followers: Arc<tokio::sync::Semaphore>,
}

impl ObserverService {
    pub fn new(ring: Arc<FlowRing>, node: NodeInfo) -> Self {
        Self {
            ring,
            agent_events: None,
            debug_events: None,
            node,
            followers: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_FOLLOWERS)),
        }
    }

    /// Answers GetAgentEvents from `ring`.
    pub fn with_agent_events(mut self, ring: Arc<AgentEventRing>) -> Self {
        self.agent_events = Some(ring);
        self
    }

    /// Answers GetDebugEvents from `ring`.
    pub fn with_debug_events(mut self, ring: Arc<DebugEventRing>) -> Self {
        self.debug_events = Some(ring);
        self
    }

    /// Streams what `ring` holds for `request` (and, when it follows, what
    /// comes after); a follower that falls behind gets `lost(node, n)`.
    fn stream_events<R>(
        &self,
        ring: &EventRing<R>,
        request: &impl WindowRequest,
        lost: fn(&str, u64) -> R,
    ) -> Result<EventStream<R>, Status>
    where
        R: RingResponse + Clone,
    {
        let query = EventQuery::from_request(request);
        let permit = self.follow_permit(query.follow)?;
        let (history, follower) = ring.query(query);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.name.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for event in history {
                if tx.send(Ok(event.as_ref().clone())).await.is_err() {
                    return;
                }
            }
            let Some(mut follower) = follower else {
                return;
            };
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = follower.next() => next,
                };
                let response = match next {
                    FollowedEvent::Event(event) => event.as_ref().clone(),
                    FollowedEvent::Lost(n) => lost(&node, n),
                    FollowedEvent::Done => return,
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Holds a follow stream's permit, or refuses the request.
    fn follow_permit(
        &self,
        follow: bool,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Status> {
        if !follow {
            return Ok(None);
        }
        self.followers
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| {
                Status::resource_exhausted("too many follow streams on this node; try again later")
            })
    }

    /// Serves at most `max` follow streams at once.
    pub fn with_max_followers(mut self, max: usize) -> Self {
        self.followers = Arc::new(tokio::sync::Semaphore::new(max));
        self
    }
}

fn flow_response(flow: &Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time,
        response_types: Some(get_flows_response::ResponseTypes::Flow(flow.clone())),
    }
}

fn lost_response(node: &str, lost: u64) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: node.to_string(),
        time: Some(crate::proto::now()),
        response_types: Some(get_flows_response::ResponseTypes::LostEvents(LostEvent {
            source: LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: lost,
            cpu: None,
        })),
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;
type EventStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;
type AgentEventStream = EventStream<GetAgentEventsResponse>;
type DebugEventStream = EventStream<GetDebugEventsResponse>;

/// A follower that fell behind: Hubble has no lost-event message for agent
/// events, so it gets an `AGENT_EVENT_UNKNOWN` saying how many it missed.
fn agent_events_lost(node: &str, lost: u64) -> GetAgentEventsResponse {
    GetAgentEventsResponse {
        agent_event: Some(AgentEvent {
            r#type: 0,
            notification: Some(agent_event::Notification::Unknown(AgentEventUnknown {
                r#type: "lost".to_string(),
                notification: format!("{lost} agent events lost"),
            })),
        }),
        node_name: node.to_string(),
        time: Some(std::time::SystemTime::now().into()),
    }
}

/// A debug-event follower that fell behind: a `DBG_GENERIC` event saying
/// how many it missed.
fn debug_events_lost(node: &str, lost: u64) -> GetDebugEventsResponse {
    GetDebugEventsResponse {
        debug_event: Some(DebugEvent {
            r#type: DebugEventType::DbgGeneric as i32,
            message: format!("{lost} debug events lost"),
            ..DebugEvent::default()
        }),
        node_name: node.to_string(),
        time: Some(std::time::SystemTime::now().into()),
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = FlowStream;
    type GetAgentEventsStream = AgentEventStream;
    type GetDebugEventsStream = DebugEventStream;

    async fn get_debug_events(
        &self,
        request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<DebugEventStream>, Status> {
        let Some(ring) = &self.debug_events else {
            return Err(Status::unimplemented("this server keeps no debug events"));
        };
        let stream = self.stream_events(ring, request.get_ref(), debug_events_lost)?;
        Ok(Response::new(stream))
    }

    async fn get_agent_events(
        &self,
        request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<AgentEventStream>, Status> {
        let Some(ring) = &self.agent_events else {
            return Err(Status::unimplemented("this server keeps no agent events"));
        };
        let stream = self.stream_events(ring, request.get_ref(), agent_events_lost)?;
        Ok(Response::new(stream))
    }

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let query = Query::from_request(request.get_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Held by the stream's task until it ends.
        let permit = self.follow_permit(query.follow)?;
        let (history, follower) = self.ring.query(query);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.name.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for flow in history {
                if tx.send(Ok(flow_response(&flow))).await.is_err() {
                    return;
                }
            }
            let Some(mut follower) = follower else {
                return;
            };
            loop {
                // Stop as soon as the client goes away, even if no flows come.
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = follower.next() => next,
                };
                let response = match next {
                    Followed::Flow(flow) => flow_response(&flow),
                    Followed::Lost(n) => lost_response(&node, n),
                    Followed::Done => return,
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let s = self.ring.status();
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.node.name.clone(),
                version: self.node.version.clone(),
                address: self.node.address.clone(),
                // Answering is being connected.
                state: NodeState::NodeConnected as i32,
                tls: None,
                uptime_ns: s.uptime.as_nanos() as u64,
                num_flows: s.num_flows,
                max_flows: s.max_flows,
                seen_flows: s.seen_flows,
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let namespaces = self
            .ring
            .namespaces(std::time::SystemTime::now())
            .into_iter()
            .map(|(cluster, namespace)| Namespace { cluster, namespace })
            .collect();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let s = self.ring.status();
        Ok(Response::new(ServerStatusResponse {
            num_flows: s.num_flows,
            max_flows: s.max_flows,
            seen_flows: s.seen_flows,
            uptime_ns: s.uptime.as_nanos() as u64,
            // A single agent is its own only node.
            num_connected_nodes: Some(1),
            num_unavailable_nodes: Some(0),
            unavailable_nodes: Vec::new(),
            version: self.node.version.clone(),
            flows_rate: s.flows_rate,
        }))
    }
}

/// Where the service listens.
pub enum Listener {
    Tcp(TcpListener),
    /// TCP with TLS (and client certificates when the config asks).
    Tls(TcpListener, tonic::transport::ServerTlsConfig),
    Unix(UnixListener),
}

/// Bind a unix socket, replacing a stale socket file left by a previous run.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Bind {
        path: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    UnixListener::bind(path).map_err(err)
}

/// Serve the Observer API (and the health service, SERVING while
/// `readiness` is up) until `shutdown` completes.
pub async fn serve(
    service: ObserverService,
    listener: Listener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(service, listener, readiness, shutdown).await
}

/// Serve any implementation of the Observer API (a node's, a relay's),
/// with the gRPC health service beside it, until `shutdown` completes.
pub async fn serve_with<S: Observer>(
    service: S,
    listener: Listener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut builder = tonic::transport::Server::builder();
    if let Listener::Tls(_, config) = &listener {
        builder = builder.tls_config(config.clone())?;
    }
    let (health, follow_readiness) = health::service(&readiness).await;
    let follow_readiness = tokio::spawn(follow_readiness);
    let router = builder
        .add_service(health)
        .add_service(ObserverServer::new(service));
    let served = match listener {
        Listener::Tcp(l) | Listener::Tls(l, _) => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown)
                .await
        }
        Listener::Unix(l) => {
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                .await
        }
    };
    follow_readiness.abort();
    served?;
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod agent_event_tests;
