//! The agent's local API: gRPC services on a unix socket that only root can
//! open. Each service adapts one part of the agent: [`endpoints`] (the CNI
//! plugin's calls), [`policy`], [`inspect`], [`services`] and [`monitor`]
//! (what the CLI reads). They answer from what the layers below publish and
//! never compute desired state themselves.

pub mod endpoints;
pub mod inspect;
pub mod metrics;
pub mod monitor;
pub mod policy;
pub mod services;
#[cfg(test)]
mod test_socket;
mod wire;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use weir_agent_api::services::services_server::ServicesServer;
use weir_agent_api::v1::endpoints_server::EndpointsServer;
use weir_agent_api::v1::inspect_server::InspectServer;
use weir_agent_api::v1::monitor_server::MonitorServer;
use weir_agent_api::v1::policy_server::PolicyServer;

use crate::endpoint::manager::{EndpointDatapath, EndpointManager};
use endpoints::EndpointsService;
use inspect::InspectService;
use metrics::ApiMetricsLayer;
use monitor::MonitorService;
use policy::PolicyService;
use services::ServicesService;

/// Everything served on the agent's socket.
pub struct LocalApi<D: EndpointDatapath> {
    pub agent: Arc<EndpointManager<D>>,
    /// The node's address (host ports are served on it).
    pub node_ip: Option<std::net::IpAddr>,
    /// CreateEndpoint waits for the endpoint's first regeneration (with a
    /// reconcile loop; without one there is no policy to wait for).
    pub readiness: Option<endpoints::WaitForPolicy>,
    pub policy: PolicyService,
    pub inspect: InspectService,
    pub monitor: MonitorService,
    pub services: ServicesService,
    /// Times every call (`weir_api_request_duration_seconds`).
    pub metrics: ApiMetricsLayer,
}

/// Serves the API on `socket` until `shutdown` resolves. A stale socket
/// file from an earlier run is replaced; the new one is mode 0600.
pub async fn serve<D: EndpointDatapath + 'static>(
    api: LocalApi<D>,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    tonic::transport::Server::builder()
        .layer(api.metrics)
        .add_service(EndpointsServer::new(
            EndpointsService::new(api.agent, api.readiness).with_node_ip(api.node_ip),
        ))
        .add_service(PolicyServer::new(api.policy))
        .add_service(InspectServer::new(api.inspect))
        .add_service(MonitorServer::new(api.monitor))
        .add_service(ServicesServer::new(api.services))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(std::io::Error::other)
}
