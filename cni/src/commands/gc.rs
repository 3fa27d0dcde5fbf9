//! GC: the agent releases every attachment not listed as valid; the plugin
//! then removes the host veths of what was released.

use std::collections::HashSet;

use tracing::info;

use super::also_failed;
use crate::agent::AgentClient;
use crate::attachment::host_ifname;
use crate::error::CniError;
use crate::request::GcRequest;
use crate::{netlink, netns};

pub async fn gc(request: GcRequest) -> Result<(), CniError> {
    let mut agent = AgentClient::connect(&request.config.agent_socket).await?;
    let released = agent.garbage_collect(&request.valid).await?;
    info!(released = released.len(), "agent garbage collected");

    // The host veth is named after the container alone, so it stays while
    // any of the container's attachments is valid.
    let in_use: HashSet<&str> = request
        .valid
        .iter()
        .map(|attachment| attachment.container_id.as_str())
        .collect();
    let stale: HashSet<String> = released
        .iter()
        .filter(|attachment| !in_use.contains(attachment.container_id.as_str()))
        .map(|attachment| host_ifname(&attachment.container_id))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }

    let host = netns::connect().map_err(|error| error.into_cni("cannot open a netlink socket"))?;
    // Remove as much as possible, then report the first failure.
    let mut result: Result<(), CniError> = Ok(());
    for name in stale {
        if let Err(error) = netlink::delete_link_if_exists(&host, &name).await {
            let doing = format!("cannot delete {name}");
            result = match result {
                Ok(()) => Err(error.into_cni(&doing)),
                Err(first) => Err(also_failed(first, &doing, error)),
            };
        }
    }
    result
}
