//! weir-agent: the per-node daemon that programs Weir's datapath.
//!
//! Layers point down; a module only uses the ones below it:
//!
//! * [`api`] and [`metrics`]: the local gRPC services and the Prometheus
//!   endpoint. They read what the layers below publish (the endpoint
//!   registry, the snapshots the reconcilers write, the datapath's maps)
//!   and never compute desired state themselves.
//! * [`reconcile`]: cluster state to this node's maps, one reconciler per
//!   concern (identities, ipcache, endpoints map, policy, services) under a
//!   small orchestrator; [`flows`]: datapath events to Hubble flows.
//! * [`cluster`]: the typed model of the cluster and its sources (the
//!   manifest directory, the kvstore's shared view).
//!   [`endpoint`]: the node's endpoints, their addresses (IPAM) and the
//!   state persisted across restarts.
//! * [`datapath`]: loading the kernel programs, pins, attachment, and one
//!   typed module per map family.

pub mod api;
pub mod cluster;
pub mod config;
pub mod datapath;
pub mod endpoint;
pub mod flows;
pub mod metrics;
pub mod policy_preview;
pub mod reconcile;
pub mod registry;
pub mod wake;
