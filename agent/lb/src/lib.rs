//! weir-lb: the pure service load-balancing engine of Weir (kube-proxy
//! replacement). No I/O, no kernel, no Kubernetes client.
//!
//! ```text
//! YAML doc ─Service::from_document───────▶ Service ──┬──derive_endpoint_slices(+ PodInfo)─┐
//! YAML doc ─EndpointSlice::from_document─▶ EndpointSlice ◀────────────────────────────────┘
//!   (service.rs, endpointslice.rs: every problem with its field path)
//!
//! backends (address:port) ──maglev::Table::build──▶ Maglev lookup table
//! ```
//!
//! Modules: [`service`], [`endpointslice`] (models and validation),
//! [`mod@derive`] (the endpoint-slice controller), [`maglev`], [`error`].

#![forbid(unsafe_code)]

pub mod derive;
pub mod endpointslice;
pub mod error;
mod hash;
pub mod maglev;
pub mod service;
mod validate;
mod yaml;

pub use derive::{derive_endpoint_slices, NamedPort, PodInfo};
pub use endpointslice::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectRef};
pub use error::{FieldError, FieldErrors, MaglevError, Path};
pub use maglev::BackendKey;
pub use service::{
    Algorithm, ClusterIps, Service, ServiceName, ServicePort, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy,
};
pub use validate::Protocol;
