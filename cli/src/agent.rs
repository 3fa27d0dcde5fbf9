//! Clients of the local agent's API, and its errors as the user should
//! read them.

use std::path::Path;

use anyhow::{Context, Result};
use tonic::transport::Channel;
use weir_agent_api::services::services_client::ServicesClient;
use weir_agent_api::v1::endpoints_client::EndpointsClient;
use weir_agent_api::v1::inspect_client::InspectClient;
use weir_agent_api::v1::monitor_client::MonitorClient;
use weir_agent_api::v1::policy_client::PolicyClient;

fn unreachable(socket: &Path) -> String {
    format!("cannot reach the agent at {}", socket.display())
}

pub async fn endpoints(socket: &Path) -> Result<EndpointsClient<Channel>> {
    weir_agent_api::connect(socket)
        .await
        .with_context(|| unreachable(socket))
}

pub async fn inspect(socket: &Path) -> Result<InspectClient<Channel>> {
    weir_agent_api::connect_inspect(socket)
        .await
        .with_context(|| unreachable(socket))
}

pub async fn policy(socket: &Path) -> Result<PolicyClient<Channel>> {
    weir_agent_api::connect_policy(socket)
        .await
        .with_context(|| unreachable(socket))
}

pub async fn services(socket: &Path) -> Result<ServicesClient<Channel>> {
    weir_agent_api::connect_services(socket)
        .await
        .with_context(|| unreachable(socket))
}

pub async fn monitor(socket: &Path) -> Result<MonitorClient<Channel>> {
    weir_agent_api::connect_monitor(socket)
        .await
        .with_context(|| unreachable(socket))
}

/// A gRPC error as the user should read it: the agent's own words for a
/// wrong request, the code too for anything else.
pub fn rpc_error(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            anyhow::anyhow!("{}", status.message())
        }
        code => anyhow::anyhow!("the agent answered {code:?}: {}", status.message()),
    }
}
