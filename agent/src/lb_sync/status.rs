//! What the service sync reports: per-frontend status for `weir service
//! list` and flow enrichment, and its Prometheus metrics.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use weir_lb::{Frontend, FrontendKey, ServiceName};

/// A frontend as written, for `weir service list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FrontendStatus {
    pub frontend: Frontend,
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
}

impl LbMetrics {
    pub fn new(registry: &prometheus::Registry) -> LbMetrics {
        let gauge = |name: &str, help: &str| {
            let gauge = prometheus::IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
            gauge
        };
        let write_failures = prometheus::IntCounter::new(
            "weir_services_map_write_failures_total",
            "Service sync passes stopped by a failed LB map write (e.g. a full map)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(write_failures.clone()))
            .expect("unique metric");
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
        }
    }

    /// Records what a pass left (`failed`: it stopped on a map write).
    pub fn observe(&self, frontends: usize, backends: usize, problems: usize, failed: bool) {
        self.frontends.set(frontends as i64);
        self.backends.set(backends as i64);
        self.problems.set(problems as i64);
        if failed {
            self.write_failures.inc();
        }
    }
}

/// The sync's status, shared with the inspection API.
pub type SharedLbStatus = std::sync::Arc<std::sync::Mutex<LbStatus>>;

/// What the sync last did.
#[derive(Clone, Debug, Default)]
pub struct LbStatus {
    /// Every frontend the sync was given, programmed or not (see `note`).
    pub frontends: BTreeMap<FrontendKey, FrontendStatus>,
    /// The service of each frontend (address, port, protocol), for naming
    /// services in flows.
    pub by_frontend: HashMap<(Ipv4Addr, u16, u8), ServiceName>,
    /// Services (partly) left out, with the reason.
    pub problems: Vec<String>,
    /// Passes that stopped on a failed map write (a full map).
    pub write_failures: u64,
    pub last_error: Option<String>,
}

impl LbStatus {
    /// The service whose frontend is `address:port` for `protocol` (an IP
    /// protocol number), in any scope.
    pub fn service_at(&self, address: Ipv4Addr, port: u16, protocol: u8) -> Option<&ServiceName> {
        self.by_frontend.get(&(address, port, protocol))
    }
}
