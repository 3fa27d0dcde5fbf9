//! Flows from datapath events: the event model, enrichment into Hubble
//! `flow.Flow` messages, Hubble filter semantics, the flow ring and a
//! Hubble-compatible `observer.Observer` gRPC server.
//!
//! The agent wires it as: ring-buffer record → [`DatapathEvent`] →
//! [`Parser::parse`] (with its [`Enricher`]) → [`FlowRing::push`]; and
//! [`serve`] an [`ObserverService`] over the same `Arc<FlowRing>` on
//! `/var/run/weir/hubble.sock` (or TCP :4244) so `hubble observe` works.
#![forbid(unsafe_code)]

pub mod agent_events;
pub mod client;
pub mod connections;
pub mod debug_events;
pub mod event;
pub mod event_ring;
pub mod filter;
pub mod health;
pub mod parser;
pub mod proto;
pub mod ring;
pub mod server;
#[cfg(any(test, feature = "test-util"))]
pub mod testutil;
pub mod tls;

pub use agent_events::{
    AgentEventFollower, AgentEventQuery, AgentEventRing, FollowedAgentEvent,
    DEFAULT_AGENT_EVENT_CAPACITY,
};
pub use client::{ConnectError, Target, TargetError};
pub use debug_events::{DebugEventRing, DEFAULT_DEBUG_EVENT_CAPACITY};
pub use event::{DatapathEvent, EventKind, PolicyDirection};
pub use filter::{FilterError, FlowFilters};
pub use health::Readiness;
pub use parser::{
    EndpointInfo, Enricher, NoEnrichment, Parser, ServiceInfo, WallClock, WorkloadInfo,
};
pub use ring::{FlowRing, Followed, Follower, Query, RingStatus, DEFAULT_CAPACITY};
pub use server::{
    bind_unix, serve, serve_with, Listener, NodeInfo, ObserverService, ServeError,
    DEFAULT_MAX_FOLLOWERS,
};
pub use tls::{ClientTls, ServerTls, TlsError};
