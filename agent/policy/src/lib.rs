//! weir-policy: the pure policy engine of Weir.
//!
//! It turns Kubernetes NetworkPolicy and Weir's `WeirNetworkPolicy` /
//! `WeirClusterwideNetworkPolicy` into per-endpoint policy state keyed by
//! peer identity. No I/O, no kernel, no Kubernetes client: callers give a
//! [`ClusterView`] (identities with labels and named ports, local endpoints)
//! and validated [`Policy`] values, and get a [`Compiled`] state,
//! [`EndpointPolicy::verdict`] traces, and the [`MapState`] the policy map
//! must hold ([`lower()`]: deny precedence and port blocks, no kernel
//! layout).
//!
//! ```text
//! YAML ──parse_policy──▶ Policy (rule.rs) ──compile──▶ Compiled ──lower──▶ MapState
//!        (k8s.rs, weir.rs        ▲                        │
//!         validate everything)   ClusterView + CidrIdentities    └─ EndpointPolicy::verdict / trace_flow
//!                                (LocalIdentities)
//! ```
//!
//! Modules: [`labels`] (label sets, label filter), [`selector`] (label
//! selectors), [`identity`] (reserved identities, cluster view),
//! [`local_identities`] (the CIDR identity allocator), [`k8s`] and [`weir`]
//! (front ends), [`rule`] (normalized form), [`mod@compile`], [`incremental`]
//! (the same result kept current by changes: selector cache, per-endpoint
//! policy), [`mapstate`]
//! (compiled state), [`mod@lower`] (policy map content), [`trace`],
//! [`error`].

#![forbid(unsafe_code)]

pub mod compile;
pub mod document;
pub mod error;
pub mod identity;
pub mod incremental;
pub mod k8s;
mod label_index;
pub mod labels;
pub mod local_identities;
pub mod lower;
pub mod mapstate;
pub mod rule;
pub mod selector;
pub mod trace;
pub mod validate;
pub mod weir;

pub use compile::{compile, compile_with, CompileOptions, Compiled};
pub use document::{parse_policies, parse_policy, PolicyDocument};
pub use error::{FieldError, FieldErrors, Path, PolicyError};
pub use identity::{
    reserved, CidrIdentities, ClusterView, Endpoint, EndpointId, Identity, NamedPorts,
    NumericIdentity,
};
pub use labels::{pod_security_labels, LabelFilter, LabelSet};
pub use local_identities::{LocalIdentities, LocalIdentityError};
pub use lower::{lower, L4Prefix, MapEntry, MapKey, MapState, MatchKind, PortPrefix};
pub use mapstate::{DirectionPolicy, EndpointPolicy, Entry, EntryKey, PeerKey, Ports, Provenance};
pub use rule::{CidrScope, Direction, Policy, PolicyId, PolicyKind, Protocol, Verdict};
pub use selector::Selector;
pub use trace::{trace_flow, Decision, FlowSide, FlowTrace, Reason};
