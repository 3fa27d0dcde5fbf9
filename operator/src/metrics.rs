//! The operator's Prometheus metrics (`weir_operator_*`).

use ipnetwork::Ipv4Network;
use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::ipam::Family;

/// Every metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// 1 while this replica holds the lease.
    pub leader: IntGauge,
    /// The IPv4 pool's blocks: `state` = assigned | capacity (the series
    /// of before dual stack, kept as they were).
    pub ipam_blocks: IntGaugeVec,
    /// Each pool's blocks: `family` = ipv4 | ipv6, `state` = assigned | capacity.
    pub ipam_pool_blocks: IntGaugeVec,
    /// Nodes that could not get a pod CIDR because a pool was exhausted, by
    /// the `family` of that pool.
    pub ipam_exhausted: IntCounterVec,
    /// LB IPAM addresses: `state` = assigned | capacity.
    pub lb_ipam_addresses: IntGaugeVec,
    /// Services refused an LB address because the pool was exhausted.
    pub lb_ipam_exhausted: IntCounter,
    /// Garbage-collection passes.
    pub gc_runs: IntCounter,
    /// Objects garbage-collected, by `kind`.
    pub gc_deleted: IntCounterVec,
    /// Failed reconciles, by `controller`.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile durations, by `controller`.
    pub reconcile_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let leader = IntGauge::new(
            "weir_operator_leader",
            "1 while this replica holds the leader lease",
        )?;
        let ipam_blocks = IntGaugeVec::new(
            Opts::new(
                "weir_operator_ipam_blocks",
                "Pod CIDR blocks of the IPv4 cluster pool, by state (assigned, capacity)",
            ),
            &["state"],
        )?;
        let ipam_pool_blocks = IntGaugeVec::new(
            Opts::new(
                "weir_operator_ipam_pool_blocks",
                "Pod CIDR blocks of each cluster pool, by family (ipv4, ipv6) and state \
                 (assigned, capacity)",
            ),
            &["family", "state"],
        )?;
        let ipam_exhausted = IntCounterVec::new(
            Opts::new(
                "weir_operator_ipam_exhausted_total",
                "Nodes refused a pod CIDR because a cluster pool was exhausted, by family",
            ),
            &["family"],
        )?;
        // There is always an IPv4 pool: its series exists (at 0) from the
        // start, as the counter did before it had a label.
        ipam_exhausted.with_label_values(&[Ipv4Network::NAME]);
        let lb_ipam_addresses = IntGaugeVec::new(
            Opts::new(
                "weir_operator_lb_ipam_addresses",
                "LoadBalancer addresses of the LB IPAM pool, by state (assigned, capacity)",
            ),
            &["state"],
        )?;
        let lb_ipam_exhausted = IntCounter::new(
            "weir_operator_lb_ipam_exhausted_total",
            "Services refused a LoadBalancer address because the pool was exhausted",
        )?;
        let gc_runs = IntCounter::new(
            "weir_operator_gc_runs_total",
            "Garbage-collection passes run",
        )?;
        let gc_deleted = IntCounterVec::new(
            Opts::new(
                "weir_operator_gc_deleted_total",
                "Objects deleted by garbage collection, by kind",
            ),
            &["kind"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "weir_operator_reconcile_errors_total",
                "Failed reconciles, by controller",
            ),
            &["controller"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_operator_reconcile_duration_seconds",
                "Time one reconcile took, by controller",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16)?),
            &["controller"],
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(ipam_blocks.clone()))?;
        registry.register(Box::new(ipam_pool_blocks.clone()))?;
        registry.register(Box::new(ipam_exhausted.clone()))?;
        registry.register(Box::new(lb_ipam_addresses.clone()))?;
        registry.register(Box::new(lb_ipam_exhausted.clone()))?;
        registry.register(Box::new(gc_runs.clone()))?;
        registry.register(Box::new(gc_deleted.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        Ok(Metrics {
            registry,
            leader,
            ipam_blocks,
            ipam_pool_blocks,
            ipam_exhausted,
            lb_ipam_addresses,
            lb_ipam_exhausted,
            gc_runs,
            gc_deleted,
            reconcile_errors,
            reconcile_duration,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipam_series_keep_their_names() {
        let metrics = Metrics::new().expect("metrics");
        metrics.ipam_blocks.with_label_values(&["assigned"]).set(4);
        metrics
            .ipam_pool_blocks
            .with_label_values(&["ipv6", "capacity"])
            .set(256);
        let text = metrics.render();
        for series in [
            "weir_operator_ipam_blocks{state=\"assigned\"} 4",
            "weir_operator_ipam_pool_blocks{family=\"ipv6\",state=\"capacity\"} 256",
            "weir_operator_ipam_exhausted_total{family=\"ipv4\"} 0",
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }
}
