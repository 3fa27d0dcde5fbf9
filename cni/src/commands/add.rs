//! ADD: reserve an address, wire the pod (host end down), register the
//! endpoint and wait for its policy, bring the host end up; undo it all if
//! any step fails.

use serde_json::Value;
use tracing::{info, warn};

use super::{also_failed, netns_unusable};
use crate::agent::{AgentClient, AgentError, EndpointSpec};
use crate::attachment::Attachment;
use crate::error::CniError;
use crate::request::AddRequest;
use crate::result::AddResult;
use crate::veth::{self, PodIpv6, PodNetworkSpec};
use crate::{netlink, netns};

pub async fn add(request: AddRequest) -> Result<Value, CniError> {
    let AddRequest {
        attachment,
        pod,
        netns: netns_path,
        config,
    } = request;
    // Before Allocate, so a bad CNI_NETNS never reserves an address.
    let pod_netns = netns::open(&netns_path).map_err(netns_unusable)?;
    let host = netns::connect().map_err(|error| error.into_cni("cannot open a netlink socket"))?;

    let mut agent = AgentClient::connect(&config.agent_socket).await?;
    let allocation = match agent.allocate(&attachment, &pod).await {
        Ok(allocation) => allocation,
        // The agent did reserve something; give it back.
        Err(error @ AgentError::InvalidResponse { .. }) => {
            return Err(release(&mut agent, &attachment, error.into()).await)
        }
        Err(error) => return Err(error.into()),
    };
    info!(
        container_id = %attachment.container_id,
        ifname = %attachment.ifname,
        address = %allocation.address,
        ipv6 = allocation.ipv6.map(|ipv6| tracing::field::display(ipv6.address)),
        "allocated"
    );

    let spec = PodNetworkSpec {
        host_ifname: attachment.host_ifname(),
        pod_ifname: attachment.ifname.clone(),
        peer_temp_ifname: attachment.peer_temp_ifname(),
        pod_mac: attachment.pod_mac(),
        mtu: allocation.mtu.unwrap_or(config.mtu),
        pod_ip: allocation.address.ip(),
        gateway: allocation.gateway,
        ipv6: allocation.ipv6.map(|ipv6| PodIpv6 {
            address: ipv6.address.ip(),
            gateway: ipv6.gateway,
        }),
    };
    let network = match veth::setup(&host, &pod_netns, &spec).await {
        Ok(network) => network,
        Err(error) => {
            let error = error.into_cni("cannot set up the pod network");
            return Err(release(&mut agent, &attachment, error).await);
        }
    };

    let endpoint = EndpointSpec {
        attachment: attachment.clone(),
        pod,
        netns: netns_path.clone(),
        host_ifname: spec.host_ifname.clone(),
        pod_ip: spec.pod_ip,
        pod_ipv6: spec.ipv6.map(|ipv6| ipv6.address),
        pod_mac: spec.pod_mac,
        netns_cookie: network.netns_cookie,
        port_mappings: config.port_mappings.clone(),
    };
    // The agent attaches its programs and closes the endpoint, and answers
    // once the endpoint's policy is in the kernel; only then does the host
    // end come up (see `veth`).
    let activated = match agent.create_endpoint(&endpoint).await {
        Ok(_) => veth::activate(&host, &spec, &network)
            .await
            .map_err(|error| error.into_cni("cannot bring up the pod network")),
        Err(error) => Err(CniError::from(error)),
    };
    if let Err(mut error) = activated {
        if let Err(cleanup) = netlink::delete_link_if_exists(&host, &spec.host_ifname).await {
            error = also_failed(error, &format!("deleting {}", spec.host_ifname), cleanup);
        }
        return Err(release(&mut agent, &attachment, error).await);
    }

    Ok(AddResult {
        host_ifname: spec.host_ifname,
        host_mac: network.host_mac,
        pod_ifname: spec.pod_ifname,
        pod_mac: spec.pod_mac,
        sandbox: netns_path.to_string_lossy().into_owned(),
        pod_ip: spec.pod_ip,
        gateway: spec.gateway,
        ipv6: spec.ipv6,
        mtu: spec.mtu,
    }
    .to_json(config.cni_version))
}

/// Releases the attachment's address after a failed ADD and returns the
/// original error (with the release failure appended, if any).
async fn release(agent: &mut AgentClient, attachment: &Attachment, error: CniError) -> CniError {
    match agent.delete_endpoint(attachment).await {
        Ok(_) => error,
        Err(release_error) => {
            warn!(%release_error, "cannot release the address of a failed ADD");
            also_failed(error, "releasing the address", release_error)
        }
    }
}
