//! How long the reconcile loop takes to get policy into the datapath:
//! `weir_endpoint_regeneration_seconds` (from the start of a pass to an
//! endpoint's changed policy entries and flags being written) and
//! `weir_policy_propagation_seconds` (from the agent first seeing a changed
//! policy set to the pass that wrote it completing).

use std::time::{Duration, Instant};

use prometheus::{exponential_buckets, Histogram, HistogramOpts, Registry};

#[derive(Clone)]
pub struct ReconcileMetrics {
    regeneration: Histogram,
    propagation: Histogram,
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    // 0.5 ms to about 16 s.
    let opts = HistogramOpts::new(name, help)
        .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"));
    let histogram = Histogram::with_opts(opts).expect("valid metric");
    registry
        .register(Box::new(histogram.clone()))
        .expect("unique metric");
    histogram
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
}
