//! CHECK: the attachment still looks like its `prevResult`, and the agent
//! still has its endpoint. Routes are not checked: later plugins in a chain
//! may change them.

use std::net::Ipv6Addr;

use weir_agent_api::v1;

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
    for address in &expected.ipv6 {
        if !pod_end.ipv6.iter().any(|(present, _)| present == address) {
            return Err(failed(format!(
                "interface {} lacks address {address}",
                expected.name
            ))
            .with_details(format!("present: {:?}", pod_end.ipv6)));
        }
        // Parsed, not compared as text: IPv6 has many spellings.
        if endpoint_ipv6(&endpoint) != Some(*address) {
            return Err(failed(format!(
                "the Weir agent's endpoint has address {:?}, prevResult says {address}",
                endpoint.ipv6
            )));
        }
    }
    Ok(())
}

/// The endpoint's IPv6 address without its prefix; `None` if it has none.
fn endpoint_ipv6(endpoint: &v1::Endpoint) -> Option<Ipv6Addr> {
    endpoint.ipv6.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_ipv6_address_is_read_with_or_without_prefix() {
        let address: Ipv6Addr = "fd00:10:244:1::5".parse().unwrap();
        for text in [
            "fd00:10:244:1::5/128",
            "fd00:10:244:1::5",
            "fd00:10:244:1:0:0:0:5/128",
        ] {
            let endpoint = v1::Endpoint {
                ipv6: text.into(),
                ..Default::default()
            };
            assert_eq!(endpoint_ipv6(&endpoint), Some(address), "{text}");
        }
        assert_eq!(endpoint_ipv6(&v1::Endpoint::default()), None);
    }
}
