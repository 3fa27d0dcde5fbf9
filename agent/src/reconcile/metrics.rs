//! How long the reconcile loop takes to get policy into the datapath:
//! `weir_endpoint_regeneration_seconds` (from the start of a pass to an
//! endpoint's changed policy entries and flags being written) and
//! `weir_policy_propagation_seconds` (from the agent first seeing a changed
//! policy set to the pass that wrote it completing); and per reconcile
//! step, `weir_reconcile_errors_total{step}` and
//! `weir_reconcile_step_consecutive_failures{step}`, and
//! `weir_map_full_total{map}` (step runs that failed on a full map).

use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::registry::registered;

#[derive(Clone)]
pub struct ReconcileMetrics {
    regeneration: Histogram,
    propagation: Histogram,
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    // 0.5 ms to about 16 s.
    let opts = HistogramOpts::new(name, help)
        .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"));
    registered(registry, Histogram::with_opts(opts))
}

impl ReconcileMetrics {
    pub fn new(registry: &Registry) -> Self {
        ReconcileMetrics {
            regeneration: histogram(
                registry,
                "weir_endpoint_regeneration_seconds",
                "From the start of a reconcile pass to an endpoint's changed policy being written to the datapath",
            ),
            propagation: histogram(
                registry,
                "weir_policy_propagation_seconds",
                "From the agent seeing a changed policy set to that policy being in the datapath maps",
            ),
        }
    }

    pub fn endpoint_regenerated(&self, took: Duration) {
        self.regeneration.observe(took.as_secs_f64());
    }

    pub fn policy_propagated(&self, took: Duration) {
        self.propagation.observe(took.as_secs_f64());
    }

    pub fn regenerations(&self) -> u64 {
        self.regeneration.get_sample_count()
    }

    pub fn propagations(&self) -> u64 {
        self.propagation.get_sample_count()
    }
}

/// Errors of each reconcile step, and the runs that failed on a full map.
#[derive(Clone)]
pub struct StepMetrics {
    errors: IntCounterVec,
    failing: IntGaugeVec,
    map_full: IntCounterVec,
}

/// The maps the steps write, with a zero `weir_map_full_total` series each.
const WRITTEN_MAPS: [&str; 7] = [
    weir_abi::map_names::POLICY,
    weir_abi::map_names::ENDPOINTS,
    weir_abi::map_names::IPCACHE,
    weir_abi::map_names::POD_CIDRS,
    weir_abi::map_names::LB4_SERVICES,
    weir_abi::map_names::LB4_BACKENDS,
    weir_abi::map_names::LB4_REVNAT,
];

impl StepMetrics {
    /// Registers the families with a zero series for each of `steps`.
    pub fn new(registry: &Registry, steps: &[&str]) -> Self {
        let errors = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weir_reconcile_errors_total",
                    "Failed runs of each reconcile step",
                ),
                &["step"],
            ),
        );
        let failing = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "weir_reconcile_step_consecutive_failures",
                    "Runs of each reconcile step that failed in a row (0: its last run succeeded)",
                ),
                &["step"],
            ),
        );
        let map_full = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weir_map_full_total",
                    "Reconcile step runs that failed because a datapath map was full (the change not written)",
                ),
                &["map"],
            ),
        );
        for step in steps {
            errors.with_label_values(&[step]);
            failing.with_label_values(&[step]).set(0);
        }
        for map in WRITTEN_MAPS {
            map_full.with_label_values(&[map]);
        }
        StepMetrics {
            errors,
            failing,
            map_full,
        }
    }

    /// A step's run failed because `map` was full.
    pub fn map_full(&self, map: &str) {
        self.map_full.with_label_values(&[map]).inc();
    }

    pub fn map_full_count(&self, map: &str) -> u64 {
        self.map_full.with_label_values(&[map]).get()
    }

    /// A run of `step` ended, leaving it at `failures` in a row.
    pub fn ran(&self, step: &str, failures: u32) {
        if failures > 0 {
            self.errors.with_label_values(&[step]).inc();
        }
        self.failing
            .with_label_values(&[step])
            .set(i64::from(failures));
    }

    pub fn errors(&self, step: &str) -> u64 {
        self.errors.with_label_values(&[step]).get()
    }
}

/// When the oldest policy change not yet in the datapath was seen. A pass
/// that fails leaves it pending, so the measure covers the retries.
#[derive(Debug, Default)]
pub struct PropagationClock {
    since: Option<Instant>,
}

impl PropagationClock {
    /// The policy set changed at `now` (an earlier unwritten change keeps
    /// its time).
    pub fn changed(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Everything seen so far is written at `now`: how long it took, if
    /// anything was pending.
    pub fn written(&mut self, now: Instant) -> Option<Duration> {
        self.since
            .take()
            .map(|since| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_runs_from_the_first_unwritten_change() {
        let t0 = Instant::now();
        let mut clock = PropagationClock::default();
        assert_eq!(clock.written(t0), None);
        clock.changed(t0);
        // A second change before the write does not restart the clock.
        clock.changed(t0 + Duration::from_millis(50));
        assert_eq!(
            clock.written(t0 + Duration::from_millis(80)),
            Some(Duration::from_millis(80))
        );
        assert_eq!(clock.written(t0 + Duration::from_millis(90)), None);
    }

    #[test]
    fn histograms_are_registered_and_observed() {
        let registry = Registry::new();
        let metrics = ReconcileMetrics::new(&registry);
        metrics.endpoint_regenerated(Duration::from_millis(3));
        metrics.endpoint_regenerated(Duration::from_millis(4));
        metrics.policy_propagated(Duration::from_millis(10));
        assert_eq!((metrics.regenerations(), metrics.propagations()), (2, 1));
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "weir_endpoint_regeneration_seconds",
                "weir_policy_propagation_seconds"
            ]
        );
    }

    #[test]
    fn step_errors_are_counted_per_step() {
        let registry = Registry::new();
        let metrics = StepMetrics::new(&registry, &["services", "policy"]);
        metrics.ran("services", 1);
        metrics.ran("services", 2);
        metrics.ran("policy", 0);
        assert_eq!(
            (metrics.errors("services"), metrics.errors("policy")),
            (2, 0)
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains("weir_reconcile_errors_total{step=\"services\"} 2"));
        assert!(text.contains("weir_reconcile_errors_total{step=\"policy\"} 0"));
        assert!(text.contains("weir_reconcile_step_consecutive_failures{step=\"services\"} 2"));
    }
}
