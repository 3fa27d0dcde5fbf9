//! The agent's local API, spoken by the CNI plugin over a unix socket.
//!
//! Generated from `proto/weir/agent/v1/endpoints.proto`; [`connect`] opens a
//! client on a socket path.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("weir.agent.v1");
}

/// The services API (`weir service list`, `weir bpf lb list`).
pub mod services {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("weir.services.v1");
}

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/weir/agent.sock";

/// A client of the agent's endpoint API on the unix socket at `path`.
pub async fn connect(
    path: &Path,
) -> Result<v1::endpoints_client::EndpointsClient<Channel>, tonic::transport::Error> {
    Ok(v1::endpoints_client::EndpointsClient::new(
        channel(path).await?,
    ))
}

/// A client of the agent's inspection API on the unix socket at `path`.
pub async fn connect_inspect(
    path: &Path,
) -> Result<v1::inspect_client::InspectClient<Channel>, tonic::transport::Error> {
    Ok(v1::inspect_client::InspectClient::new(channel(path).await?))
}

/// A client of the agent's policy API on the unix socket at `path`.
pub async fn connect_policy(
    path: &Path,
) -> Result<v1::policy_client::PolicyClient<Channel>, tonic::transport::Error> {
    Ok(v1::policy_client::PolicyClient::new(channel(path).await?))
}

/// A client of the agent's services API on the unix socket at `path`.
pub async fn connect_services(
    path: &Path,
) -> Result<services::services_client::ServicesClient<Channel>, tonic::transport::Error> {
    Ok(services::services_client::ServicesClient::new(
        channel(path).await?,
    ))
}

/// A client of the agent's datapath event stream on the unix socket at `path`.
pub async fn connect_monitor(
    path: &Path,
) -> Result<v1::monitor_client::MonitorClient<Channel>, tonic::transport::Error> {
    Ok(v1::monitor_client::MonitorClient::new(channel(path).await?))
}

/// A gRPC channel over the unix socket at `path`.
pub async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}
