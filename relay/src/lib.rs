//! `weir-relay`: one Hubble-compatible Observer API over the Observer APIs
//! of many nodes, as Hubble Relay does for Hubble.
//!
//! * [`peers`]: the nodes (unix socket or TCP), their names and states.
//! * [`service`]: GetFlows fanned out and merged, ServerStatus summed,
//!   GetNodes listing every peer with its state.
//! * [`discovery`]: the peers from the cluster's `WeirNode`s.
//! * [`merge`]: the time-ordered merge of non-follow answers.
//! * [`metrics`]: `/metrics` (requests, peers by state) and `/healthz`.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod merge;
pub mod metrics;
pub mod peers;
pub mod service;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

pub use metrics::RelayMetrics;
pub use peers::Peers;
pub use service::RelayService;
use weir_observer::{Target, TargetError};

/// A relay over `targets`: each peer is dialled on first use, and each
/// connection attempt and unary call waits at most `timeout`.
pub fn relay(
    targets: Vec<Target>,
    timeout: Duration,
    metrics: RelayMetrics,
) -> Result<RelayService, TargetError> {
    let peers = Peers::new(targets, timeout, metrics.clone())?;
    Ok(RelayService::new(peers, metrics))
}

/// Binds the relay's unix socket, readable and writable by its owner only
/// (a stale socket file is replaced; the directory is created).
pub fn listen_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = weir_observer::bind_unix(path).map_err(std::io::Error::other)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
