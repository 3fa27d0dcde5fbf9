//! Registration of the agent's Prometheus families. Every subsystem owns
//! its metrics (api, flows, reconcile, the metrics server) and registers
//! them here into the one registry `/metrics` serves.

use prometheus::core::Collector;
use prometheus::Registry;

/// Registers a newly built family and returns it. The names, help texts and
/// labels are the agent's own constants, so an invalid or duplicate family
/// is a programming error: it panics at start, never later.
pub fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    family: prometheus::Result<M>,
) -> M {
    let family = family.expect("a valid metric family");
    registry
        .register(Box::new(family.clone()))
        .expect("a metric family registered once");
    family
}
