//! weir-lb: the pure service load-balancing engine of Weir (kube-proxy
//! replacement). No I/O, no kernel, no Kubernetes client.
//!
//! ```text
//! YAML doc ─Service::from_document───────▶ Service
//! YAML doc ─EndpointSlice::from_document─▶ EndpointSlice
//!   (service.rs, endpointslice.rs: every problem with its field path)
//!
//! backends (address:port) ──maglev::Table::build──▶ Maglev lookup table
//! ```
//!
//! Modules: [`service`], [`endpointslice`] (models and validation),
//! [`maglev`], [`error`].

#![forbid(unsafe_code)]

pub mod endpointslice;
pub mod error;
mod hash;
pub mod maglev;
pub mod service;
mod validate;
mod yaml;

pub use endpointslice::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectRef};
pub use error::{FieldError, FieldErrors, MaglevError, Path};
pub use maglev::BackendKey;
pub use service::{
    Algorithm, ClusterIps, Service, ServiceName, ServicePort, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy,
};
pub use validate::Protocol;
