//! The operator's Prometheus metrics (`weir_operator_*`).

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Every metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// 1 while this replica holds the lease.
    pub leader: IntGauge,
    /// Pool blocks: `state` = assigned | capacity.
    pub ipam_blocks: IntGaugeVec,
    /// Nodes that could not get a pod CIDR because the pool was exhausted.
    pub ipam_exhausted: IntCounter,
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
                "Pod CIDR blocks of the cluster pool, by state (assigned, capacity)",
            ),
            &["state"],
        )?;
        let ipam_exhausted = IntCounter::new(
            "weir_operator_ipam_exhausted_total",
            "Nodes refused a pod CIDR because the cluster pool was exhausted",
        )?;
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
