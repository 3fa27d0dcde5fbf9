//! weir-lb: the pure service load-balancing engine of Weir (kube-proxy
//! replacement). No I/O, no kernel, no Kubernetes client.
//!
//! ```text
//! YAML doc ─Service::from_document───────▶ Service ──┬──derive_endpoint_slices(+ PodInfo)─┐
//! YAML doc ─EndpointSlice::from_document─▶ EndpointSlice ◀────────────────────────────────┘
//!   (service.rs, endpointslice.rs:           │
//!    every problem with its field path)      ▼
//!          Services + EndpointSlices + NodeContext + LbOptions ──compile──▶ LbState
//!                                  frontends (address, port, protocol, scope) → backends
//!                                  problems per service;  Frontend::maglev_table ─▶ maglev::Table
//! ```
//!
//! The agent keeps an [`LbCompiler`] (module [`incremental`]) rather than
//! calling [`compile()`]: it recompiles only the services whose Service or
//! slices changed and reports the frontends that changed, so one more
//! service among 10,000 does not recompile the other 9,999.
//!
//! # The rules of [`compile()`]
//!
//! **One lookup.** The datapath classifies a new connection by where its
//! client is and does a single lookup by (destination address, destination
//! port, protocol, [`Scope`]):
//!
//! - [`Scope::Internal`]: the client is in the cluster (a pod, or the host
//!   of this node);
//! - [`Scope::External`]: the packet arrived from outside on a node device.
//!
//! Every frontend is emitted once per scope it can be reached from, each
//! with the backend set for that kind of client:
//!
//! | frontend | External scope | Internal scope |
//! | --- | --- | --- |
//! | ClusterIP (each `clusterIP`) | not emitted (not reachable from outside, as Cilium's default) | all backends; this node's only with `internalTrafficPolicy: Local` |
//! | NodePort (each node address, `nodePort`), ExternalIP, LoadBalancer (status ingress IPs) | all backends; this node's only with `externalTrafficPolicy: Local` | all backends |
//!
//! In-cluster clients are never subject to `externalTrafficPolicy`
//! (kube-proxy's behaviour; Cilium gets the same with its two-scope
//! lookups), and `internalTrafficPolicy` applies to ClusterIPs only, as the
//! API defines it. "This node's" backends are the endpoints whose
//! `nodeName` is [`NodeContext::name`]. A frontend without backends is still
//! emitted, so the datapath drops its traffic rather than letting it reach
//! the host.
//!
//! **Backends** of a service port: the endpoints of the service's slices
//! whose slice port has the service port's name (unnamed matches unnamed)
//! and protocol, at the slice port's number. Ready endpoints are
//! [`BackendState::Active`]; not ready but serving and terminating ones are
//! [`BackendState::Terminating`] (kept so existing connections finish, never
//! chosen for a new one); the rest are left out. Deduplicated by (address,
//! port), sorted.
//!
//! **IPv6 and dual stack**: a Service's IPv6 cluster IP (`clusterIPs`,
//! either family first) is a ClusterIP frontend of its own
//! ([`LbState::frontends_v6`], [`Frontend`] over [`std::net::Ipv6Addr`]),
//! with the backends of the service's `addressType: IPv6` slices
//! ([`AnyEndpointSlice`]); a dual-stack service has one frontend per family
//! and port, each with its family's backends. IPv6 frontends are compiled
//! only with [`Ipv6Options::enabled`] (the agent turns it on when it
//! programs the IPv6 maps) and are otherwise each a [`ServiceProblem`];
//! IPv6 NodePort, externalIP and LoadBalancer frontends are always refused
//! with a problem naming them (socket LB, the only IPv6 datapath, serves
//! ClusterIPs), and an IPv6-only service gets no IPv4 NodePort.
//!
//! **Also**: headless services get no frontends; `sessionAffinity: ClientIP`
//! sets [`Frontend::affinity_timeout`]; the algorithm is the service's
//! `service.weir.io/lb-algorithm` annotation or
//! [`LbOptions::default_algorithm`]; a `nodePort` outside
//! [`LbOptions::node_port_range`], or one not set (Weir allocates neither
//! node ports nor cluster IPs), is a [`ServiceProblem`]; when two services
//! claim one (address, port, protocol), the first by (namespace, name)
//! keeps it and the other gets a problem. The output is sorted and does not
//! depend on the order of the input.
//!
//! Modules: [`service`], [`endpointslice`] (models and validation),
//! [`mod@derive`] (the endpoint-slice controller), [`maglev`], [`mod@compile`],
//! [`incremental`],
//! [`error`].

#![forbid(unsafe_code)]

pub mod compile;
pub mod derive;
pub mod endpointslice;
pub mod error;
pub mod family;
mod hash;
pub mod incremental;
pub mod maglev;
pub mod service;
mod validate;
mod yaml;

pub use compile::{
    compile, compile_dual_stack, Backend, BackendState, Frontend, FrontendAddresses, FrontendKey,
    FrontendKind, Ipv6Options, LbOptions, LbState, NodeContext, Scope, ServiceProblem,
};
pub use derive::{derive_endpoint_slices, derive_endpoint_slices_v6, NamedPort, PodInfo};
pub use endpointslice::{
    AnyEndpointSlice, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectRef,
};
pub use error::{FieldError, FieldErrors, MaglevError, OptionsError, Path};
pub use family::{IpFamily, LbAddress};
pub use incremental::{Changed, LbCompiler};
pub use maglev::BackendKey;
pub use service::{
    Algorithm, ClusterIps, Service, ServicePort, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy,
};
pub use weir_types::Protocol;
