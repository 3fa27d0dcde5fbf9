//! What the service sync reports: per-frontend status for `weir service
//! list` and flow enrichment, and its Prometheus metrics.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_lb::{Frontend, FrontendKey, Scope};
use weir_types::NamespacedName;

use super::{LbMap, MapOperations};
use crate::registry::registered;

/// A frontend as written, for `weir service list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FrontendStatus<A = Ipv4Addr> {
    pub frontend: Frontend<A>,
    pub rev_nat_id: u16,
    /// Map ids of `frontend.backends`, in the same order.
    pub backend_ids: Vec<u32>,
    /// The frontend's Maglev table, when it selects through one.
    pub maglev_table: Option<u32>,
    /// Why the frontend is not (fully) as desired, if it is not.
    pub note: Option<String>,
}

/// Prometheus view of the service sync.
#[derive(Clone)]
pub struct LbMetrics {
    frontends: prometheus::IntGauge,
    backends: prometheus::IntGauge,
    problems: prometheus::IntGauge,
    write_failures: prometheus::IntCounter,
    operations: prometheus::IntCounterVec,
    sync_seconds: prometheus::Histogram,
    /// The operations counted so far, to add only what a pass did.
    counted: Arc<Mutex<MapOperations>>,
}

/// What one pass did, for [`LbMetrics::observe`].
pub struct PassReport {
    pub frontends: usize,
    pub backends: usize,
    pub problems: usize,
    /// It stopped on a failed map write.
    pub failed: bool,
    /// Operations since start ([`super::LbSync::map_operations`]).
    pub operations: MapOperations,
    pub took: Duration,
}

impl LbMetrics {
    pub fn new(registry: &prometheus::Registry) -> LbMetrics {
        let gauge =
            |name: &str, help: &str| registered(registry, prometheus::IntGauge::new(name, help));
        let write_failures = registered(
            registry,
            prometheus::IntCounter::new(
                "weir_services_map_write_failures_total",
                "Service sync passes stopped by a failed LB map write (e.g. a full map)",
            ),
        );
        let operations = registered(
            registry,
            prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "weir_services_map_operations_total",
                    "Successful LB map updates and deletes by the service sync",
                ),
                &["map_name", "operation"],
            ),
        );
        let sync_seconds = registered(
            registry,
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "weir_services_sync_duration_seconds",
                    "Service sync passes: compiling the changed services and writing their frontends",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 4.0, 9).expect("valid buckets")),
            ),
        );
        LbMetrics {
            frontends: gauge(
                "weir_services_frontends",
                "Service frontends programmed on this node",
            ),
            backends: gauge(
                "weir_services_backends",
                "Service backends in the LB maps of this node",
            ),
            problems: gauge(
                "weir_services_problems",
                "Services (partly) left out, e.g. a NodePort outside the range",
            ),
            write_failures,
            operations,
            sync_seconds,
            counted: Arc::default(),
        }
    }

    /// Records what a pass did and left.
    pub fn observe(&self, pass: &PassReport) {
        self.frontends.set(pass.frontends as i64);
        self.backends.set(pass.backends as i64);
        self.problems.set(pass.problems as i64);
        if pass.failed {
            self.write_failures.inc();
        }
        self.sync_seconds.observe(pass.took.as_secs_f64());
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        for map in LbMap::ALL {
            let updates = pass.operations.updates(map) - counted.updates(map);
            let deletes = pass.operations.deletes(map) - counted.deletes(map);
            self.operations
                .with_label_values(&[map.name(), "update"])
                .inc_by(updates);
            self.operations
                .with_label_values(&[map.name(), "delete"])
                .inc_by(deletes);
        }
        *counted = pass.operations;
    }
}

/// The sync's status, shared with the inspection API.
pub type SharedLbStatus = Arc<Mutex<LbStatus>>;

/// What the sync last did.
#[derive(Clone, Debug, Default)]
pub struct LbStatus {
    /// Every frontend the sync was given, programmed or not (see `note`).
    pub frontends: BTreeMap<FrontendKey, FrontendStatus>,
    /// The IPv6 frontends, likewise.
    pub frontends_v6: BTreeMap<FrontendKey<Ipv6Addr>, FrontendStatus<Ipv6Addr>>,
    /// Services (partly) left out, with the reason.
    pub problems: Vec<String>,
    /// Passes that stopped on a failed map write (a full map).
    pub write_failures: u64,
    pub last_error: Option<String>,
}

impl LbStatus {
    /// The service whose frontend is `address:port` for `protocol` (an IP
    /// protocol number), in any scope.
    pub fn service_at(
        &self,
        address: Ipv4Addr,
        port: u16,
        protocol: u8,
    ) -> Option<&NamespacedName> {
        let protocol = crate::datapath::maps::lb::protocol_of(protocol)?;
        [Scope::Internal, Scope::External]
            .into_iter()
            .find_map(|scope| {
                self.frontends.get(&FrontendKey {
                    address,
                    port,
                    protocol,
                    scope,
                })
            })
            .map(|status| &status.frontend.service)
    }
}
