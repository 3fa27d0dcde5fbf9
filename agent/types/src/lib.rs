//! weir-types: the words Weir's crates share, each defined once.
//!
//! - [`LabelSet`]: the `source:key=value` labels an identity stands for and
//!   selectors match (the identity allocator stores it, the policy engine
//!   selects on it).
//! - [`Protocol`]: the Kubernetes transport protocol (`TCP`, `UDP`, `SCTP`)
//!   of manifests, policies and services, with its IP protocol number.
//! - [`IntOrString`]: Kubernetes' integer-or-string fields (`port: http`).
//! - [`NamespacedName`]: `namespace/name`, the key of namespaced objects.
//!
//! Plain data, no I/O; numbers the kernel also uses (IP protocols, reserved
//! identities) come from `weir_abi`.

#![forbid(unsafe_code)]

pub mod int_or_string;
pub mod labels;
pub mod namespaced_name;
pub mod protocol;

pub use int_or_string::IntOrString;
pub use labels::{LabelSet, LabelsError};
pub use namespaced_name::{NamespacedName, NamespacedNameError};
pub use protocol::{Protocol, ProtocolError};
