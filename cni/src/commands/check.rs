//! CHECK: the attachment still looks like its `prevResult`, and the agent
//! still has its endpoint. Routes are not checked: later plugins in a chain
//! may change them.

use super::netns_unusable;
use crate::agent::AgentClient;
use crate::error::{CniError, ErrorCode};
use crate::request::CheckRequest;
use crate::{netlink, netns, veth};

pub async fn check(request: CheckRequest) -> Result<(), CniError> {
    let CheckRequest {
        attachment,
        netns: netns_path,
        config,
        expected,
    } = request;
    let failed = |msg: String| CniError::new(ErrorCode::CheckFailed, msg);

    let mut agent = AgentClient::connect(&config.agent_socket).await?;
    let endpoint = agent.get_endpoint(&attachment).await?.ok_or_else(|| {
        failed(format!(
            "the Weir agent has no endpoint for container {} interface {}",
            attachment.container_id, attachment.ifname
        ))
    })?;

    let host_ifname = attachment.host_ifname();
    let host = netns::connect().map_err(|error| error.into_cni("cannot open a netlink socket"))?;
    let host_link = netlink::link_by_name(&host, &host_ifname)
        .await
        .map_err(|error| error.into_cni(&format!("cannot look up {host_ifname}")))?
        .ok_or_else(|| failed(format!("host veth {host_ifname} does not exist")))?;
    if !host_link.up {
        return Err(failed(format!("host veth {host_ifname} is down")));
    }

    let pod_netns = netns::open(&netns_path).map_err(netns_unusable)?;
    let pod_end = veth::inspect_pod_end(&pod_netns, &expected.name)
        .await
        .map_err(|error| error.into_cni(&format!("cannot inspect {} in the pod", expected.name)))?
        .ok_or_else(|| {
            failed(format!(
                "interface {} does not exist in {}",
                expected.name,
                netns_path.display()
            ))
        })?;
    if !pod_end.link.up {
        return Err(failed(format!("interface {} is down", expected.name)));
    }
    if let Some(mac) = expected.mac {
        if pod_end.link.mac != Some(mac) {
            return Err(failed(format!(
                "interface {} has MAC {:?}, prevResult says {mac}",
                expected.name,
                pod_end.link.mac.map(|m| m.to_string())
            )));
        }
    }
    for address in &expected.ipv4 {
        if !pod_end.ipv4.iter().any(|(present, _)| present == address) {
            return Err(failed(format!(
                "interface {} lacks address {address}",
                expected.name
            ))
            .with_details(format!("present: {:?}", pod_end.ipv4)));
        }
        if endpoint.ipv4.split('/').next() != Some(address.to_string().as_str()) {
            return Err(failed(format!(
                "the Weir agent's endpoint has address {:?}, prevResult says {address}",
                endpoint.ipv4
            )));
        }
    }
    Ok(())
}
