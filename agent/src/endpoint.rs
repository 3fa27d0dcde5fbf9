//! The node's endpoints: the manager the CNI plugin drives ([`manager`]),
//! the registry of pod attachments ([`registry`]), pod addresses from the
//! node's pod CIDR ([`ipam`]), the state persisted across restarts
//! ([`state`]) and when a new endpoint's policy is in the kernel
//! ([`readiness`]).

pub mod ipam;
pub mod manager;
pub mod readiness;
pub mod registry;
pub mod state;
