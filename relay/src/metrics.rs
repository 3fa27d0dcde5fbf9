//! The relay's Prometheus metrics and the `/metrics` + `/healthz` server.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// `weir_relay_requests_total{method}` and `weir_relay_peers{state}`.
#[derive(Clone)]
pub struct RelayMetrics {
    registry: Registry,
    requests: IntCounterVec,
    peers: IntGaugeVec,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "weir_relay_requests_total",
                "Observer API requests served by the relay",
            ),
            &["method"],
        )
        .expect("valid metric");
        let peers = IntGaugeVec::new(
            Opts::new(
                "weir_relay_peers",
                "Peers by the outcome of the last call to them (connected, unavailable)",
            ),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(peers.clone()))
            .expect("unique metric");
        RelayMetrics {
            registry,
            requests,
            peers,
        }
    }

    pub fn request(&self, method: &str) {
        self.requests.with_label_values(&[method]).inc();
    }

    pub fn set_peers(&self, connected: usize, unavailable: usize) {
        self.peers
            .with_label_values(&["connected"])
            .set(connected as i64);
        self.peers
            .with_label_values(&["unavailable"])
            .set(unavailable as i64);
    }

    /// Every family in the text exposition format.
    pub fn render(&self) -> Result<String, String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

async fn render(State(metrics): State<RelayMetrics>) -> impl IntoResponse {
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

/// Serves `/metrics` and `/healthz` on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: RelayMetrics,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .with_state(metrics);
    axum::serve(listener, app).await
}
