//! DEL: idempotent removal, the pod's links first, then the endpoint.
//! Local cleanup happens even when the agent is unreachable; the agent's
//! failure is reported afterwards so the runtime retries and the address is
//! eventually released.

use tracing::info;

use super::also_failed;
use crate::agent::AgentClient;
use crate::error::CniError;
use crate::request::DelRequest;
use crate::{netlink, netns, veth};

pub async fn del(request: DelRequest) -> Result<(), CniError> {
    let DelRequest {
        attachment,
        netns: netns_path,
        config,
    } = request;

    // The link first: until it is gone the agent's programs stay attached
    // and the endpoint enforced, so no packet passes unfiltered.
    let host_ifname = attachment.host_ifname();
    let mut local_result = async {
        let host = netns::connect()?;
        let deleted = netlink::delete_link_if_exists(&host, &host_ifname).await?;
        info!(%host_ifname, deleted, "host veth");
        Ok(())
    }
    .await
    .map_err(|error: netlink::NetlinkError| {
        error.into_cni(&format!("cannot delete {host_ifname}"))
    });

    // Usually already gone with its peer; covers a pod end left alone. An
    // interface of that name that is not ours (e.g. the one that made ADD
    // fail) is kept.
    if let Some(path) = &netns_path {
        match veth::delete_pod_end(path, &attachment.ifname, attachment.pod_mac()).await {
            Ok(outcome) => info!(ifname = %attachment.ifname, ?outcome, "pod end"),
            Err(error) => {
                let doing = format!("cannot delete {} in {}", attachment.ifname, path.display());
                local_result = match local_result {
                    Ok(()) => Err(error.into_cni(&doing)),
                    Err(first) => Err(also_failed(first, &doing, error)),
                };
            }
        }
    }

    let agent_result = match AgentClient::connect(&config.agent_socket).await {
        Ok(mut agent) => agent
            .delete_endpoint(&attachment)
            .await
            .map_err(CniError::from),
        Err(error) => Err(CniError::from(error)),
    };

    match (agent_result, local_result) {
        (Ok(_), Ok(())) => Ok(()),
        (Err(agent_error), Ok(())) => Err(agent_error),
        (Ok(_), Err(local_error)) => Err(local_error),
        (Err(agent_error), Err(local_error)) => {
            Err(also_failed(agent_error, "local cleanup", local_error))
        }
    }
}
