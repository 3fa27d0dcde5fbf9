//! weir-agent: the per-node daemon that programs Weir's datapath.
//!
//! * [`datapath`]: load the embedded kernel programs, pin their maps,
//!   attach them to interfaces, read their maps.
//! * [`ipam`], [`endpoints`], [`state`]: the node's address allocations and
//!   endpoint registry, persisted across restarts.
//! * [`agent`]: the endpoint logic the CNI plugin drives; [`api`] serves it
//!   over gRPC on a unix socket.
//! * [`node`]: node-level kernel settings the agent owns.
//! * [`reconcile`]: cluster state to maps: identities, ipcache, policy
//!   ([`policy_sync`]) and services ([`lb_sync`]).

pub mod agent;
pub mod api;
pub mod api_metrics;
pub mod datapath;
pub mod endpoints;
pub mod flow_metrics;
pub mod flows;
pub mod inspect_api;
pub mod inspect_detail;
pub mod ipam;
pub mod ipcache;
pub mod lb_sync;
pub mod manifest;
pub mod map_fill;
pub mod metrics_server;
pub mod monitor;
pub mod node;
pub mod policy_api;
pub mod policy_sync;
pub mod reconcile;
pub mod reconcile_metrics;
pub mod services_api;
pub mod shared;
pub mod source;
pub mod state;
#[cfg(test)]
mod test_socket;
