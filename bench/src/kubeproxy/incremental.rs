//! The `iptables-restore` input of a partial sync: what kube-proxy writes
//! when one service was added to a set it already programmed.
//!
//! Since Kubernetes 1.28 (MinimizeIPTablesRestore, GA) a sync that is not a
//! full one writes only the per-service chains of services whose Service or
//! EndpointSlices changed, with `--noflush` so every other chain stays as
//! it is. The top-level chains are still rewritten whole: KUBE-SERVICES
//! gets one jump per service (every service, not only the new one), and the
//! filter table is written in full. So adding one service to 10,000 still
//! rewrites 10,000 KUBE-SERVICES rules.

use super::render::{render_sync, RenderOptions, Rendered};
use super::BenchService;

/// The partial-sync input after `new` was added to `existing` (which is
/// what the table already holds). The new service's jump goes last in
/// KUBE-SERVICES.
pub fn render_incremental(
    existing: &[BenchService],
    new: &BenchService,
    options: &RenderOptions,
) -> Rendered {
    render_incremental_with(existing, new, &[], options)
}

/// As [`render_incremental`], also deleting stale chains found in
/// `existing_nat_chains` (kube-proxy reads them back with iptables-save on
/// syncs outside large-cluster mode).
pub fn render_incremental_with(
    existing: &[BenchService],
    new: &BenchService,
    existing_nat_chains: &[String],
    options: &RenderOptions,
) -> Rendered {
    let mut all = Vec::with_capacity(existing.len() + 1);
    all.extend_from_slice(existing);
    all.push(new.clone());
    render_sync(
        &all,
        existing.len()..all.len(),
        existing_nat_chains,
        options,
    )
}
