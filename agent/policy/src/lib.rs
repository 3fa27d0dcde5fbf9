//! weir-policy: the pure policy engine of Weir.
//!
//! It turns Kubernetes NetworkPolicy and Weir's `WeirNetworkPolicy` /
//! `WeirClusterwideNetworkPolicy` into per-endpoint policy state keyed by
//! peer identity. No I/O, no kernel, no Kubernetes client: callers give a
//! [`ClusterView`] (identities with labels and named ports, local endpoints)
//! and validated [`Policy`] values, and get a [`Compiled`] state, a
//! [`diff()`] between two states and [`EndpointPolicy::verdict`] traces.
//!
//! ```text
//! YAML ──parse_policy──▶ Policy (rule.rs) ──compile──▶ Compiled ──diff──▶ Vec<Change>
//!        (k8s.rs, weir.rs        ▲                        │
//!         validate everything)   ClusterView + CidrIdentities    └─ EndpointPolicy::verdict / trace_flow
//! ```
//!
//! Modules: [`labels`] (label sets, label filter), [`selector`] (label
//! selectors), [`identity`] (reserved identities, cluster view, CIDR
//! identities), [`k8s`] and [`weir`] (front ends), [`rule`] (normalized
//! form), [`mod@compile`], [`mapstate`] (compiled state), [`trace`], [`mod@diff`],
//! [`error`].

#![forbid(unsafe_code)]

pub mod compile;
pub mod diff;
pub mod document;
pub mod error;
pub mod identity;
pub mod k8s;
pub mod labels;
pub mod mapstate;
pub mod rule;
pub mod selector;
pub mod trace;
pub mod validate;
pub mod weir;

pub use compile::{compile, compile_with, CompileOptions, Compiled};
pub use diff::{diff, Change};
pub use document::{parse_policies, parse_policy, PolicyDocument};
pub use error::{FieldError, FieldErrors, Path, PolicyError};
pub use identity::{
    reserved, CidrIdentities, ClusterView, Endpoint, EndpointId, Identity, LocalCidrAllocator,
    NamedPorts, NumericIdentity,
};
pub use labels::{pod_security_labels, LabelFilter, LabelSet};
pub use mapstate::{DirectionPolicy, EndpointPolicy, Entry, EntryKey, PeerKey, Ports, Provenance};
pub use rule::{Direction, Policy, PolicyId, PolicyKind, Protocol, Verdict};
pub use selector::Selector;
pub use trace::{trace_flow, Decision, FlowSide, FlowTrace, Reason};
