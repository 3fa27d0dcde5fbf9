//! The node's endpoints: the manager the CNI plugin drives ([`manager`]),
//! the registry of pod attachments ([`registry`]), pod addresses from the
//! node's pod CIDR ([`ipam`]) and the state persisted across restarts
//! ([`state`]).

pub mod ipam;
pub mod manager;
pub mod registry;
pub mod state;
