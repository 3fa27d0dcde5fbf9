//! The kube-proxy iptables peer: Weir's service load balancing is compared
//! against what kube-proxy's iptables mode programs, rule for rule.
//!
//! kube-proxy itself is not run. Its proxier (pkg/proxy/iptables/proxier.go,
//! Kubernetes 1.28 and later) turns the service set into one
//! `iptables-restore` input per sync; [`render`] produces that same input
//! (chain names, rule shapes, order and count) for a [`BenchService`] set,
//! [`incremental`] the partial input of a sync after one service was added,
//! and [`apply`] writes either into a network namespace the way kube-proxy
//! does, timing it. [`latency`] measures new connections through the
//! result, and [`topology`] builds a client, a "node" and backend
//! namespaces to run it all over real sockets.
//!
//! What decides iptables' per-packet cost is the number and order of rules a
//! packet walks: every service's jump in `KUBE-SERVICES` is tried in turn
//! until one matches, so the last service costs far more than the first.

pub mod apply;
mod chains;
pub mod incremental;
mod jumps;
pub mod latency;
pub mod render;
pub mod topology;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use weir_types::Protocol;

pub use apply::{Backend, KubeProxyIptables, SyncTiming};
pub use incremental::render_incremental;
pub use latency::{connect_latency, greeting, percentile, Percentiles};
pub use render::{render, RenderOptions, Rendered};

/// The protocol as kube-proxy spells it in rules and chain-name hashes: the
/// Kubernetes name lowercased (`strings.ToLower` in the proxier).
pub fn protocol_name(protocol: Protocol) -> String {
    protocol.name().to_ascii_lowercase()
}

/// One service port with its ready endpoints: what kube-proxy's service and
/// endpoint maps hold for a ClusterIP service (traffic policy Cluster, no
/// session affinity, no NodePort, no external or load-balancer IPs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchService {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// Endpoint address and target port, in the order kube-proxy would
    /// write them. An empty list renders kube-proxy's REJECT rule.
    pub backends: Vec<(Ipv4Addr, u16)>,
}

impl BenchService {
    /// kube-proxy's `ServicePortName` string, `namespace/name:portname`.
    /// The port is named `p<port>` (as in kube-proxy's own tests), so the
    /// service port of `shop/cart` on 80 is `shop/cart:p80`.
    pub fn port_name(&self) -> String {
        format!("{}/{}:p{}", self.namespace, self.name, self.port)
    }
}
