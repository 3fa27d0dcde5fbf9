//! weir-crds: Weir's CustomResourceDefinitions, defined once in Rust.
//!
//! | kind | scope | short names | what |
//! | --- | --- | --- | --- |
//! | [`WeirNetworkPolicy`] | namespaced | `wnp` | a policy (CiliumNetworkPolicy's shape) |
//! | [`WeirClusterwideNetworkPolicy`] | cluster | `wcnp` | the same, cluster-wide |
//! | [`WeirIdentity`] | cluster | `wid` | the security labels of one numeric identity |
//! | [`WeirEndpoint`] | namespaced | `wep` | one pod: identity, addresses, node, enforcement |
//! | [`WeirNode`] | cluster | `wn` | one node: addresses, pod CIDRs, health |
//!
//! **Group and version: `weir.io/v1`.** Every policy written for Weir so far
//! (examples, lab manifests, tests, docs) says `apiVersion: weir.io/v1`, and
//! the manifest directory reads exactly that; the CRDs serve the same group
//! and version so those documents apply unchanged with `kubectl apply`.
//! A `v1alpha1` would have renamed every document for no gain in what the
//! API server checks. Schema changes from here on are additive (new optional
//! fields); a breaking one needs a new version with conversion.
//!
//! The policy specs are weir-policy's own types ([`weir_policy::weir`]),
//! so the schema the API server checks and the parser the agent runs cannot
//! drift apart; validation stays in weir-policy, which reports every problem
//! with its path ([`PolicyStatus`] carries those per node).
//!
//! Every schema is structural (`apiextensions.k8s.io/v1`, no CEL: the lab's
//! API server is Kubernetes 1.20). `cargo xtask crds` writes the YAML under
//! `deploy/crds/` ([`files`]); a test fails when those files and these types
//! disagree.

#![forbid(unsafe_code)]

pub mod endpoint;
pub mod identity;
pub mod node;
pub mod policy;
pub mod render;
pub mod schema;
#[cfg(test)]
mod test_util;

pub use endpoint::{
    EndpointAddresses, EndpointState, NamedPort, PolicyEnforcement, WeirEndpoint, WeirEndpointSpec,
    WeirEndpointStatus,
};
pub use identity::{WeirIdentity, WeirIdentitySpec};
pub use node::{
    HealthState, NodeAddress, NodeAddressType, NodeHealth, WeirNode, WeirNodeSpec, WeirNodeStatus,
};
pub use policy::{
    FieldErrorStatus, NodePolicyStatus, PolicyCondition, PolicyStatus,
    WeirClusterwideNetworkPolicy, WeirNetworkPolicy,
};
pub use render::{crds, drift, files, render, DriftError, RenderError, GENERATED_HEADER};

/// `group/version`, as written in `apiVersion`: the one the manifest
/// directory's policy documents carry (weir-policy's constant). The derive
/// takes literals, so the derived kinds spell it out; a test holds them to
/// this.
pub const API_VERSION: &str = weir_policy::document::WEIR_API_VERSION;
/// The API group of every Weir kind.
pub const GROUP: &str = "weir.io";
/// The served and stored version.
pub const VERSION: &str = "v1";

#[cfg(test)]
mod tests;
