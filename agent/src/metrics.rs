//! Prometheus metrics (`/metrics`), liveness (`/healthz`) and readiness
//! (`/readyz`: every reconcile step's last run succeeded) of the agent, on
//! a configured address.
//!
//! Datapath counters live in the per-CPU metrics map; at each scrape the
//! map is read and the Prometheus counters advanced by what changed since
//! the previous scrape, so the exported series are true counters. Names
//! follow cilium-agent's with the `weir_` prefix.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::registry::registered;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use weir_abi::{Reason, TrafficDirection};

use crate::datapath::{maps, MetricsSnapshot, SharedDatapath};
use crate::reconcile::snapshot::SharedSnapshot;
use crate::reconcile::status::SharedReconcileStatus;

/// The agent's metric families and the state needed to fill them.
pub struct AgentMetrics {
    registry: Registry,
    forward_count: IntCounterVec,
    forward_bytes: IntCounterVec,
    drop_count: IntCounterVec,
    drop_bytes: IntCounterVec,
    events_lost: IntGauge,
    endpoints: IntGauge,
    identities: IntGauge,
    policy_entries: IntGauge,
    policies_rejected: IntGauge,
    /// Objects whose previous valid version stays in force, by kind.
    stale: prometheus::IntGaugeVec,
    map_pressure: GaugeVec,
    datapath: SharedDatapath,
    policy: SharedSnapshot,
    last: Mutex<MetricsSnapshot>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

/// The kinds `weir_policy_stale` always reports (0 when none is stale).
const STALE_KINDS: [&str; 5] = [
    "Namespace",
    "Pod",
    "NetworkPolicy",
    "WeirNetworkPolicy",
    "WeirClusterwideNetworkPolicy",
];

fn stale_gauge(registry: &Registry) -> prometheus::IntGaugeVec {
    registered(
        registry,
        prometheus::IntGaugeVec::new(
            Opts::new(
                "weir_policy_stale",
                "Objects whose latest version is invalid while the previous valid one stays in force",
            ),
            &["kind"],
        ),
    )
}

impl AgentMetrics {
    /// The agent's families, registered into `registry` (which may already
    /// hold others, such as the flow metrics).
    pub fn new(
        datapath: SharedDatapath,
        policy: SharedSnapshot,
        registry: Registry,
    ) -> Arc<AgentMetrics> {
        // Counted by the map writers themselves (process-wide).
        registered(&registry, Ok(maps::ops::family()));
        let map_pressure = registered(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "weir_bpf_map_pressure",
                    "Fill of each datapath map: entries over capacity (0 to 1)",
                ),
                &["map_name"],
            ),
        );
        Arc::new(AgentMetrics {
            forward_count: counter(
                &registry,
                "weir_forward_count_total",
                "Packets forwarded by the datapath",
                &["direction"],
            ),
            forward_bytes: counter(
                &registry,
                "weir_forward_bytes_total",
                "Bytes forwarded by the datapath",
                &["direction"],
            ),
            drop_count: counter(
                &registry,
                "weir_drop_count_total",
                "Packets dropped by the datapath",
                &["reason", "direction"],
            ),
            drop_bytes: counter(
                &registry,
                "weir_drop_bytes_total",
                "Bytes dropped by the datapath",
                &["reason", "direction"],
            ),
            events_lost: gauge(
                &registry,
                "weir_datapath_events_lost_total",
                "Datapath events lost because the ring buffer was full",
            ),
            endpoints: gauge(
                &registry,
                "weir_endpoint",
                "Local endpoints with an identity",
            ),
            identities: gauge(&registry, "weir_identity", "Identities known to the agent"),
            policy_entries: gauge(
                &registry,
                "weir_policy_map_entries",
                "Entries the agent keeps in the policy map",
            ),
            policies_rejected: gauge(
                &registry,
                "weir_policy_rejected",
                "Policies rejected by validation",
            ),
            stale: stale_gauge(&registry),
            map_pressure,
            registry,
            datapath,
            policy,
            last: Mutex::new(MetricsSnapshot::default()),
        })
    }

    /// Reads the datapath and renders every family in the text format.
    pub fn render(&self) -> Result<String, String> {
        // The endpoints map holds the local endpoints that have an identity.
        let (endpoints, policy_entries) = {
            let policy = self.policy.lock().unwrap_or_else(|e| e.into_inner());
            (policy.local.len() as u64, policy.map_entries as u64)
        };
        let (now, lost, fill) = {
            let mut datapath = self.datapath.lock();
            let now = datapath.metrics().map_err(|e| e.to_string())?;
            let lost = maps::events_lost(datapath.ebpf_mut()).unwrap_or(0);
            let fill = maps::fill::map_fill(&mut datapath, endpoints, policy_entries)
                .map_err(|e| e.to_string())?;
            (now, lost, fill)
        };
        for map in &fill {
            self.map_pressure
                .with_label_values(&[map.name])
                .set(map.ratio());
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            for (reason, direction, delta) in now.since(&last).iter() {
                let direction =
                    TrafficDirection::from_u8(direction).map_or("unknown", |d| d.as_str());
                match Reason::from_u8(reason) {
                    Some(Reason::Forwarded) => {
                        self.forward_count
                            .with_label_values(&[direction])
                            .inc_by(delta.packets);
                        self.forward_bytes
                            .with_label_values(&[direction])
                            .inc_by(delta.bytes);
                    }
                    known => {
                        let reason = known.map_or_else(
                            || format!("code {reason}"),
                            |r| r.description().to_string(),
                        );
                        self.drop_count
                            .with_label_values(&[&reason, direction])
                            .inc_by(delta.packets);
                        self.drop_bytes
                            .with_label_values(&[&reason, direction])
                            .inc_by(delta.bytes);
                    }
                }
            }
            *last = now;
        }
        self.events_lost.set(lost as i64);
        {
            let policy = self.policy.lock().unwrap_or_else(|e| e.into_inner());
            self.endpoints.set(policy.local.len() as i64);
            self.identities.set(policy.view.identities.len() as i64);
            self.policy_entries.set(policy.map_entries as i64);
            self.policies_rejected.set(policy.rejected.len() as i64);
            let mut stale: std::collections::BTreeMap<&str, i64> =
                STALE_KINDS.iter().map(|kind| (*kind, 0)).collect();
            for key in policy.stale.keys() {
                let kind = key.split('/').next().unwrap_or_default();
                *stale.entry(kind).or_default() += 1;
            }
            for (kind, count) in stale {
                self.stale.with_label_values(&[kind]).set(count);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

async fn render(State(metrics): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    match metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every reconcile step's last run succeeded, 503 otherwise; the
/// body lists each step.
pub fn readiness(status: &SharedReconcileStatus) -> (StatusCode, String) {
    let status = status.lock().unwrap_or_else(|e| e.into_inner());
    let code = if status.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, status.render())
}

async fn readyz(State(status): State<SharedReconcileStatus>) -> impl IntoResponse {
    readiness(&status)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task
/// is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    status: SharedReconcileStatus,
) -> std::io::Result<()> {
    let ready = Router::new()
        .route("/readyz", get(readyz))
        .with_state(status);
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .with_state(metrics)
        .merge(ready);
    axum::serve(listener, app).await
}

/// Binds `address` (it must be given explicitly: metrics are never exposed
/// on an address nobody chose).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}
