//! The endpoints service (`agent/api/proto/weir/agent/v1/endpoints.proto`):
//! what the CNI plugin calls to allocate addresses and create, check and
//! delete endpoints, adapted onto the endpoint manager.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use weir_agent_api::v1;
use weir_agent_api::v1::endpoints_server::Endpoints;
use weir_types::NamespacedName;

use crate::endpoint::ipam::{AttachmentKey, IpamError};
use crate::endpoint::manager::{EndpointDatapath, EndpointManager, ManagerError, NewEndpoint};
use crate::endpoint::readiness::EndpointReadiness;
use crate::endpoint::registry::{Endpoint, PortMapping};

pub struct EndpointsService<D: EndpointDatapath> {
    agent: Arc<EndpointManager<D>>,
    wait: Option<WaitForPolicy>,
    /// The node's address: the one `hostIP` a port mapping may name.
    node_ip: Option<std::net::IpAddr>,
}

/// CreateEndpoint answers only once the endpoint's first regeneration is in
/// the kernel, or fails after `timeout` (the pod stays closed; the plugin
/// undoes the ADD).
pub struct WaitForPolicy {
    pub readiness: Arc<EndpointReadiness>,
    pub timeout: Duration,
}

impl<D: EndpointDatapath> EndpointsService<D> {
    pub fn new(agent: Arc<EndpointManager<D>>, wait: Option<WaitForPolicy>) -> Self {
        EndpointsService {
            agent,
            wait,
            node_ip: None,
        }
    }

    /// The node's address, which port mappings may name as their `hostIP`.
    pub fn with_node_ip(mut self, node_ip: Option<std::net::IpAddr>) -> Self {
        self.node_ip = node_ip;
        self
    }
}

fn to_status(error: ManagerError) -> Status {
    match &error {
        ManagerError::Invalid(_) => Status::invalid_argument(error.to_string()),
        ManagerError::NotFound { .. } => Status::not_found(error.to_string()),
        ManagerError::Ipam(IpamError::Exhausted { .. }) => {
            Status::resource_exhausted(error.to_string())
        }
        _ => Status::internal(error.to_string()),
    }
}

fn attachment(a: Option<v1::Attachment>) -> Result<AttachmentKey, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("attachment is required"))?;
    Ok(AttachmentKey {
        container_id: a.container_id,
        ifname: a.ifname,
    })
}

fn to_proto_attachment(a: &AttachmentKey) -> v1::Attachment {
    v1::Attachment {
        container_id: a.container_id.clone(),
        ifname: a.ifname.clone(),
    }
}

fn to_proto_endpoint(e: &Endpoint) -> v1::Endpoint {
    v1::Endpoint {
        id: u32::from(e.id),
        attachment: Some(to_proto_attachment(&e.attachment)),
        pod: Some(v1::PodRef {
            namespace: e.pod.namespace.clone(),
            name: e.pod.name.clone(),
        }),
        netns: e.netns.clone(),
        host_ifname: e.host_ifname.clone(),
        host_ifindex: e.host_ifindex,
        ipv4: format!("{}/32", e.ipv4),
        ipv6: e.ipv6.map(|a| format!("{a}/128")).unwrap_or_default(),
        mac: e.mac.clone(),
        netns_cookie: e.netns_cookie,
        port_mappings: e
            .port_mappings
            .iter()
            .map(|m| v1::PortMapping {
                host_port: u32::from(m.host_port),
                container_port: u32::from(m.container_port),
                protocol: m.protocol.name().to_ascii_lowercase(),
                host_ip: String::new(),
            })
            .collect(),
    }
}

/// The host ports of a CreateEndpoint request, checked: ports 1-65535, a
/// known protocol, and no host address but the node's (the frontend is on
/// the node's address; `hostIP` naming another is refused, not ignored).
fn port_mappings(
    requested: &[v1::PortMapping],
    node_ip: Option<std::net::IpAddr>,
) -> Result<Vec<PortMapping>, Status> {
    let port = |value: u32, what: &str| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument(format!("{what} {value} is not a port")))
    };
    let mut mappings = Vec::with_capacity(requested.len());
    for mapping in requested {
        let protocol: weir_types::Protocol = mapping
            .protocol
            .to_ascii_uppercase()
            .parse()
            .map_err(|e: weir_types::ProtocolError| Status::invalid_argument(e.to_string()))?;
        let host_ip = mapping.host_ip.trim();
        if !host_ip.is_empty() && host_ip != "0.0.0.0" {
            let address: std::net::IpAddr = host_ip.parse().map_err(|_| {
                Status::invalid_argument(format!("hostIP {host_ip:?} is not an address"))
            })?;
            if Some(address) != node_ip {
                return Err(Status::invalid_argument(format!(
                    "hostIP {address} is not this node's address: host ports are served on the node's address only"
                )));
            }
        }
        mappings.push(PortMapping {
            host_port: port(mapping.host_port, "hostPort")?,
            container_port: port(mapping.container_port, "containerPort")?,
            protocol,
        });
    }
    mappings.sort();
    mappings.dedup();
    Ok(mappings)
}

/// Accepts "10.244.1.5" or "10.244.1.5/32".
fn parse_ipv4(text: &str) -> Result<Ipv4Addr, Status> {
    text.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| Status::invalid_argument(format!("invalid IPv4 address {text:?}")))
}

/// Accepts "", "fd00::5" or "fd00::5/128"; empty is no address.
fn parse_ipv6(text: &str) -> Result<Option<Ipv6Addr>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument(format!("invalid IPv6 address {text:?}")))
}

#[tonic::async_trait]
impl<D: EndpointDatapath + 'static> Endpoints for EndpointsService<D> {
    async fn allocate(
        &self,
        request: Request<v1::AllocateRequest>,
    ) -> Result<Response<v1::AllocateResponse>, Status> {
        let request = request.into_inner();
        let key = attachment(request.attachment)?;
        let allocation = self.agent.allocate(&key).map_err(to_status)?;
        Ok(Response::new(v1::AllocateResponse {
            ipv4: format!("{}/{}", allocation.address, allocation.pod_cidr.prefix()),
            ipv4_gateway: allocation.gateway.to_string(),
            pod_cidr: allocation.pod_cidr.to_string(),
            mtu: allocation.mtu,
            ipv6: allocation
                .ipv6
                .as_ref()
                .map(|v6| format!("{}/{}", v6.address, v6.pod_cidr.prefix()))
                .unwrap_or_default(),
            ipv6_gateway: allocation
                .ipv6
                .as_ref()
                .map(|v6| v6.gateway.to_string())
                .unwrap_or_default(),
            pod_cidr_v6: allocation
                .ipv6
                .as_ref()
                .map(|v6| v6.pod_cidr.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn create_endpoint(
        &self,
        request: Request<v1::CreateEndpointRequest>,
    ) -> Result<Response<v1::Endpoint>, Status> {
        let request = request.into_inner();
        let key = attachment(request.attachment)?;
        let pod = request.pod.unwrap_or_default();
        let host_ifindex =
            nix::net::if_::if_nametoindex(request.host_ifname.as_str()).map_err(|e| {
                Status::failed_precondition(format!(
                    "host interface {:?} not found on this node: {e}",
                    request.host_ifname
                ))
            })?;
        let endpoint = self
            .agent
            .create_endpoint(NewEndpoint {
                attachment: key,
                pod: NamespacedName::new(pod.namespace, pod.name),
                netns: request.netns,
                host_ifname: request.host_ifname,
                host_ifindex,
                ipv4: parse_ipv4(&request.ipv4)?,
                ipv6: parse_ipv6(&request.ipv6)?,
                mac: request.mac,
                netns_cookie: request.netns_cookie,
                port_mappings: port_mappings(&request.port_mappings, self.node_ip)?,
            })
            .map_err(to_status)?;
        if let Some(wait) = &self.wait {
            wait.readiness.kick();
            wait.readiness
                .wait(&endpoint, wait.timeout)
                .await
                .map_err(|error| Status::unavailable(error.to_string()))?;
        }
        Ok(Response::new(to_proto_endpoint(&endpoint)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<v1::DeleteEndpointRequest>,
    ) -> Result<Response<v1::DeleteEndpointResponse>, Status> {
        let key = attachment(request.into_inner().attachment)?;
        let existed = self.agent.delete_endpoint(&key).map_err(to_status)?;
        // The loop removes its identity, map entries and policy.
        if let Some(wait) = &self.wait {
            wait.readiness.kick();
        }
        Ok(Response::new(v1::DeleteEndpointResponse { existed }))
    }

    async fn get_endpoint(
        &self,
        request: Request<v1::GetEndpointRequest>,
    ) -> Result<Response<v1::Endpoint>, Status> {
        let key = attachment(request.into_inner().attachment)?;
        let endpoint = self.agent.endpoint(&key).map_err(to_status)?;
        Ok(Response::new(to_proto_endpoint(&endpoint)))
    }

    async fn list_endpoints(
        &self,
        _request: Request<v1::ListEndpointsRequest>,
    ) -> Result<Response<v1::ListEndpointsResponse>, Status> {
        let endpoints = self
            .agent
            .endpoints()
            .iter()
            .map(to_proto_endpoint)
            .collect();
        Ok(Response::new(v1::ListEndpointsResponse { endpoints }))
    }

    async fn garbage_collect(
        &self,
        request: Request<v1::GarbageCollectRequest>,
    ) -> Result<Response<v1::GarbageCollectResponse>, Status> {
        let valid: Vec<AttachmentKey> = request
            .into_inner()
            .valid
            .into_iter()
            .map(|a| attachment(Some(a)))
            .collect::<Result<_, _>>()?;
        let released = self.agent.garbage_collect(&valid).map_err(to_status)?;
        Ok(Response::new(v1::GarbageCollectResponse {
            released: released.iter().map(to_proto_attachment).collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let status = self.agent.status();
        Ok(Response::new(v1::StatusResponse {
            node_name: status.node_name,
            pod_cidr: status.pod_cidr.to_string(),
            addresses_total: status.addresses_total,
            addresses_free: status.addresses_free,
            endpoints: status.endpoints as u32,
        }))
    }
}
