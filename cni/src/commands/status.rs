//! STATUS: ready when the agent answers and has addresses left.

use crate::agent::AgentClient;
use crate::config::NetworkConfig;
use crate::error::{CniError, ErrorCode};

pub async fn status(config: &NetworkConfig) -> Result<(), CniError> {
    let not_available = |details: String| {
        CniError::new(ErrorCode::PluginNotAvailable, "Weir agent is not available")
            .with_details(details)
    };
    let mut agent = AgentClient::connect(&config.agent_socket)
        .await
        .map_err(|error| not_available(error.to_string()))?;
    let status = agent
        .status()
        .await
        .map_err(|error| not_available(error.to_string()))?;
    readiness(&status)
}

/// The agent is up; whether it can serve ADD. Running out of addresses only
/// stops new pods (existing ones keep working), which the specification
/// files under 50, "cannot service ADD requests".
pub fn readiness(status: &weir_agent_api::v1::StatusResponse) -> Result<(), CniError> {
    if status.addresses_free == 0 {
        return Err(
            CniError::new(ErrorCode::PluginNotAvailable, "no free pod addresses").with_details(
                format!(
                    "node {} pod CIDR {}: all {} addresses in use",
                    status.node_name, status.pod_cidr, status.addresses_total
                ),
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use weir_agent_api::v1::StatusResponse;

    use super::*;

    #[test]
    fn ready_with_free_addresses() {
        let status = StatusResponse {
            addresses_total: 254,
            addresses_free: 1,
            ..Default::default()
        };
        assert_eq!(readiness(&status), Ok(()));
    }

    #[test]
    fn exhausted_addresses_are_not_available() {
        let status = StatusResponse {
            node_name: "n1".into(),
            pod_cidr: "10.244.1.0/24".into(),
            addresses_total: 254,
            addresses_free: 0,
            endpoints: 254,
        };
        let error = readiness(&status).unwrap_err();
        assert_eq!(error.code, ErrorCode::PluginNotAvailable);
        assert!(error.details.contains("10.244.1.0/24"));
    }
}
