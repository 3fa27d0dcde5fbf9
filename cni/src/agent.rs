//! The plugin's side of the agent's gRPC API: typed calls with timeouts, and
//! the mapping of failures to CNI errors (unreachable agent → 11).

use std::fmt::Display;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnetwork::{Ipv4Network, Ipv6Network};
use tonic::transport::Channel;
use tonic::Code;
use weir_agent_api::v1::{self, endpoints_client::EndpointsClient};

use crate::attachment::{Attachment, PodRef};
use crate::error::{CniError, ErrorCode};
use crate::mac::MacAddr;

/// A local agent that does not accept a connection this quickly is not
/// coming; the runtime retries on error 11.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Generous: CreateEndpoint loads and attaches datapath programs.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// No connection, connection lost, or no answer in time: transient.
    #[error("agent at {} is unavailable: {reason}", socket.display())]
    Unavailable { socket: PathBuf, reason: String },
    /// The agent answered with a gRPC error.
    #[error("agent {rpc} failed: {code:?}: {message}")]
    Rejected {
        rpc: &'static str,
        code: Code,
        message: String,
    },
    /// The agent answered with something the plugin cannot use.
    #[error("agent {rpc} returned invalid data: {reason}")]
    InvalidResponse { rpc: &'static str, reason: String },
}

impl From<AgentError> for CniError {
    fn from(error: AgentError) -> Self {
        let (code, msg) = match &error {
            AgentError::Unavailable { .. } => {
                (ErrorCode::TryAgainLater, "Weir agent is unavailable")
            }
            AgentError::Rejected { .. } => {
                (ErrorCode::AgentRejected, "Weir agent rejected the request")
            }
            AgentError::InvalidResponse { .. } => (
                ErrorCode::AgentResponseInvalid,
                "Weir agent returned invalid data",
            ),
        };
        CniError::new(code, msg).with_details(error.to_string())
    }
}

/// The address the agent reserved for an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The pod's address within the pod CIDR (e.g. 10.244.1.5/24).
    pub address: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub pod_cidr: Ipv4Network,
    /// `None` when the agent leaves the MTU to the configuration.
    pub mtu: Option<u32>,
    /// `None` on an IPv4-only node.
    pub ipv6: Option<Ipv6Allocation>,
}

/// The IPv6 address the agent reserved on a dual-stack node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Allocation {
    /// The pod's address within the IPv6 pod CIDR (e.g. fd00:10:244:1::5/112).
    pub address: Ipv6Network,
    pub gateway: Ipv6Addr,
    pub pod_cidr: Ipv6Network,
}

impl Allocation {
    /// Validates the agent's answer; the reason is reported as error 103.
    pub fn from_response(response: &v1::AllocateResponse) -> Result<Self, String> {
        let address: Ipv4Network = parse_field("ipv4", &response.ipv4)?;
        let gateway: Ipv4Addr = parse_field("ipv4_gateway", &response.ipv4_gateway)?;
        let pod_cidr: Ipv4Network = parse_field("pod_cidr", &response.pod_cidr)?;
        if address.ip() == gateway {
            return Err(format!("ipv4 {} is the gateway", address.ip()));
        }
        if !pod_cidr.contains(address.ip()) {
            return Err(format!(
                "ipv4 {} is outside pod_cidr {pod_cidr}",
                address.ip()
            ));
        }
        let mtu = match response.mtu {
            0 => None,
            mtu @ 68..=65535 => Some(mtu),
            mtu => return Err(format!("mtu {mtu} is out of range")),
        };
        Ok(Self {
            address,
            gateway,
            pod_cidr,
            mtu,
            ipv6: Ipv6Allocation::from_response(response)?,
        })
    }
}

impl Ipv6Allocation {
    /// The IPv6 part of the agent's answer: `None` when all three fields
    /// are empty (an IPv4-only node), an error when only some are set.
    fn from_response(response: &v1::AllocateResponse) -> Result<Option<Self>, String> {
        let fields = [
            &response.ipv6,
            &response.ipv6_gateway,
            &response.pod_cidr_v6,
        ];
        if fields.iter().all(|field| field.is_empty()) {
            return Ok(None);
        }
        if fields.iter().any(|field| field.is_empty()) {
            return Err(format!(
                "ipv6 {:?}, ipv6_gateway {:?} and pod_cidr_v6 {:?} must be all set or all empty",
                response.ipv6, response.ipv6_gateway, response.pod_cidr_v6
            ));
        }
        let address: Ipv6Network = parse_field("ipv6", &response.ipv6)?;
        let gateway: Ipv6Addr = parse_field("ipv6_gateway", &response.ipv6_gateway)?;
        let pod_cidr: Ipv6Network = parse_field("pod_cidr_v6", &response.pod_cidr_v6)?;
        if address.ip() == gateway {
            return Err(format!("ipv6 {} is the gateway", address.ip()));
        }
        if !pod_cidr.contains(address.ip()) {
            return Err(format!(
                "ipv6 {} is outside pod_cidr_v6 {pod_cidr}",
                address.ip()
            ));
        }
        Ok(Some(Self {
            address,
            gateway,
            pod_cidr,
        }))
    }
}

/// Parses one field of an answer; the reason names the field and its text.
fn parse_field<T>(name: &str, text: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse()
        .map_err(|error| format!("{name} {text:?}: {error}"))
}

/// What the plugin made for an attachment, for CreateEndpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub attachment: Attachment,
    pub pod: PodRef,
    pub netns: PathBuf,
    pub host_ifname: String,
    pub pod_ip: Ipv4Addr,
    /// `None` on an IPv4-only node.
    pub pod_ipv6: Option<Ipv6Addr>,
    pub pod_mac: MacAddr,
    /// `SO_NETNS_COOKIE` of the pod's namespace.
    pub netns_cookie: u64,
    /// The pod's host ports (`runtimeConfig.portMappings`).
    pub port_mappings: Vec<crate::config::PortMapping>,
}

pub struct AgentClient {
    socket: PathBuf,
    client: EndpointsClient<Channel>,
}

impl AgentClient {
    pub async fn connect(socket: &Path) -> Result<Self, AgentError> {
        let unavailable = |reason: String| AgentError::Unavailable {
            socket: socket.to_path_buf(),
            reason,
        };
        let client = tokio::time::timeout(CONNECT_TIMEOUT, weir_agent_api::connect(socket))
            .await
            .map_err(|_| unavailable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| unavailable(error_chain(&error)))?;
        Ok(Self {
            socket: socket.to_path_buf(),
            client,
        })
    }

    pub async fn allocate(
        &mut self,
        attachment: &Attachment,
        pod: &PodRef,
    ) -> Result<Allocation, AgentError> {
        let request = v1::AllocateRequest {
            attachment: Some(to_proto(attachment)),
            pod: Some(pod_to_proto(pod)),
        };
        let mut client = self.client.clone();
        let response = self.call("Allocate", client.allocate(request)).await?;
        Allocation::from_response(&response).map_err(|reason| AgentError::InvalidResponse {
            rpc: "Allocate",
            reason,
        })
    }

    pub async fn create_endpoint(
        &mut self,
        spec: &EndpointSpec,
    ) -> Result<v1::Endpoint, AgentError> {
        let request = create_endpoint_request(spec);
        let mut client = self.client.clone();
        self.call("CreateEndpoint", client.create_endpoint(request))
            .await
    }

    /// Removes the endpoint and releases its address; `false` if there was
    /// nothing to remove.
    pub async fn delete_endpoint(&mut self, attachment: &Attachment) -> Result<bool, AgentError> {
        let request = v1::DeleteEndpointRequest {
            attachment: Some(to_proto(attachment)),
        };
        let mut client = self.client.clone();
        match self
            .call("DeleteEndpoint", client.delete_endpoint(request))
            .await
        {
            Ok(response) => Ok(response.existed),
            // The API promises `existed: false`, but NOT_FOUND means the same.
            Err(AgentError::Rejected {
                code: Code::NotFound,
                ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// `None` if the agent has no endpoint for the attachment.
    pub async fn get_endpoint(
        &mut self,
        attachment: &Attachment,
    ) -> Result<Option<v1::Endpoint>, AgentError> {
        let request = v1::GetEndpointRequest {
            attachment: Some(to_proto(attachment)),
        };
        let mut client = self.client.clone();
        match self.call("GetEndpoint", client.get_endpoint(request)).await {
            Ok(endpoint) => Ok(Some(endpoint)),
            Err(AgentError::Rejected {
                code: Code::NotFound,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Releases everything not in `valid`; returns what was released.
    pub async fn garbage_collect(
        &mut self,
        valid: &[Attachment],
    ) -> Result<Vec<Attachment>, AgentError> {
        let request = v1::GarbageCollectRequest {
            valid: valid.iter().map(to_proto).collect(),
        };
        let mut client = self.client.clone();
        let response = self
            .call("GarbageCollect", client.garbage_collect(request))
            .await?;
        Ok(response
            .released
            .into_iter()
            .map(|attachment| Attachment {
                container_id: attachment.container_id,
                ifname: attachment.ifname,
            })
            .collect())
    }

    pub async fn status(&mut self) -> Result<v1::StatusResponse, AgentError> {
        let mut client = self.client.clone();
        self.call("Status", client.status(v1::StatusRequest {}))
            .await
    }

    /// Runs one RPC with the call timeout and classifies its failure.
    async fn call<T>(
        &self,
        rpc: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => Err(AgentError::Unavailable {
                socket: self.socket.clone(),
                reason: format!("{rpc} got no answer within {CALL_TIMEOUT:?}"),
            }),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(&self.socket, rpc, &status)),
        }
    }
}

/// `UNAVAILABLE` is what tonic reports when the connection is refused or
/// lost, and what a server says when it cannot serve yet: both are
/// "try again later".
fn classify(socket: &Path, rpc: &'static str, status: &tonic::Status) -> AgentError {
    match status.code() {
        Code::Unavailable => AgentError::Unavailable {
            socket: socket.to_path_buf(),
            reason: format!("{rpc}: {}", status.message()),
        },
        code => AgentError::Rejected {
            rpc,
            code,
            message: status.message().to_string(),
        },
    }
}

fn create_endpoint_request(spec: &EndpointSpec) -> v1::CreateEndpointRequest {
    v1::CreateEndpointRequest {
        attachment: Some(to_proto(&spec.attachment)),
        pod: Some(pod_to_proto(&spec.pod)),
        netns: spec.netns.to_string_lossy().into_owned(),
        host_ifname: spec.host_ifname.clone(),
        ipv4: format!("{}/32", spec.pod_ip),
        mac: spec.pod_mac.to_string(),
        netns_cookie: spec.netns_cookie,
        port_mappings: spec
            .port_mappings
            .iter()
            .map(|m| v1::PortMapping {
                host_port: u32::from(m.host_port),
                container_port: u32::from(m.container_port),
                protocol: m.protocol.clone(),
                host_ip: m.host_ip.clone(),
            })
            .collect(),
        // Empty, as the API has it, on an IPv4-only node.
        ipv6: spec
            .pod_ipv6
            .map(|ip| format!("{ip}/128"))
            .unwrap_or_default(),
    }
}

fn to_proto(attachment: &Attachment) -> v1::Attachment {
    v1::Attachment {
        container_id: attachment.container_id.clone(),
        ifname: attachment.ifname.clone(),
    }
}

fn pod_to_proto(pod: &PodRef) -> v1::PodRef {
    v1::PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    }
}

/// The error and its sources: tonic's top-level message ("transport error")
/// alone does not say that the socket is missing.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> v1::AllocateResponse {
        v1::AllocateResponse {
            ipv4: "10.244.1.5/24".into(),
            ipv4_gateway: "10.244.1.1".into(),
            pod_cidr: "10.244.1.0/24".into(),
            mtu: 0,
            ..Default::default()
        }
    }

    fn dual_stack_response() -> v1::AllocateResponse {
        v1::AllocateResponse {
            ipv6: "fd00:10:244:1::5/112".into(),
            ipv6_gateway: "fd00:10:244:1::1".into(),
            pod_cidr_v6: "fd00:10:244:1::/112".into(),
            ..response()
        }
    }

    #[test]
    fn allocation_is_parsed_and_mtu_0_means_config() {
        let allocation = Allocation::from_response(&response()).unwrap();
        assert_eq!(allocation.address.ip(), Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(allocation.address.prefix(), 24);
        assert_eq!(allocation.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(allocation.pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(allocation.mtu, None);
        let with_mtu = v1::AllocateResponse {
            mtu: 1450,
            ..response()
        };
        assert_eq!(
            Allocation::from_response(&with_mtu).unwrap().mtu,
            Some(1450)
        );
    }

    #[test]
    fn malformed_allocations_are_rejected() {
        let cases = [
            v1::AllocateResponse {
                ipv4: "nonsense".into(),
                ..response()
            },
            v1::AllocateResponse {
                ipv4: "fd00::5/64".into(),
                ..response()
            },
            v1::AllocateResponse {
                ipv4_gateway: "".into(),
                ..response()
            },
            v1::AllocateResponse {
                ipv4_gateway: "10.244.1.5".into(),
                ..response()
            },
            v1::AllocateResponse {
                pod_cidr: "10.245.0.0/24".into(),
                ..response()
            },
            v1::AllocateResponse {
                pod_cidr: "".into(),
                ..response()
            },
            v1::AllocateResponse {
                mtu: 67,
                ..response()
            },
            v1::AllocateResponse {
                mtu: 70000,
                ..response()
            },
        ];
        for case in &cases {
            assert!(Allocation::from_response(case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn an_address_without_prefix_is_a_host_address() {
        // ipnetwork reads "a.b.c.d" as /32; still inside the pod CIDR, so it
        // is usable (the pod gets a /32 anyway).
        let bare = v1::AllocateResponse {
            ipv4: "10.244.1.5".into(),
            ..response()
        };
        assert_eq!(
            Allocation::from_response(&bare).unwrap().address.prefix(),
            32
        );
    }

    #[test]
    fn an_ipv4_only_answer_has_no_ipv6_part() {
        assert_eq!(Allocation::from_response(&response()).unwrap().ipv6, None);
    }

    #[test]
    fn the_ipv6_part_is_parsed() {
        let allocation = Allocation::from_response(&dual_stack_response()).unwrap();
        assert_eq!(allocation.address.to_string(), "10.244.1.5/24");
        let ipv6 = allocation.ipv6.expect("dual stack");
        assert_eq!(
            ipv6.address.ip(),
            "fd00:10:244:1::5".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ipv6.address.prefix(), 112);
        assert_eq!(
            ipv6.gateway,
            "fd00:10:244:1::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ipv6.pod_cidr.to_string(), "fd00:10:244:1::/112");
        // As for IPv4, a bare address is a host address.
        let bare = v1::AllocateResponse {
            ipv6: "fd00:10:244:1::5".into(),
            ..dual_stack_response()
        };
        let ipv6 = Allocation::from_response(&bare).unwrap().ipv6.unwrap();
        assert_eq!(ipv6.address.prefix(), 128);
    }

    #[test]
    fn malformed_ipv6_parts_are_rejected() {
        let cases = [
            // Some but not all of the three.
            (
                v1::AllocateResponse {
                    ipv6: "".into(),
                    ..dual_stack_response()
                },
                "all set or all empty",
            ),
            (
                v1::AllocateResponse {
                    ipv6_gateway: "".into(),
                    ..dual_stack_response()
                },
                "all set or all empty",
            ),
            (
                v1::AllocateResponse {
                    pod_cidr_v6: "".into(),
                    ..dual_stack_response()
                },
                "all set or all empty",
            ),
            (
                v1::AllocateResponse {
                    ipv6: "nonsense".into(),
                    ..dual_stack_response()
                },
                "ipv6 \"nonsense\"",
            ),
            (
                v1::AllocateResponse {
                    ipv6: "10.244.1.5/24".into(),
                    ..dual_stack_response()
                },
                "ipv6 \"10.244.1.5/24\"",
            ),
            (
                v1::AllocateResponse {
                    ipv6_gateway: "10.244.1.1".into(),
                    ..dual_stack_response()
                },
                "ipv6_gateway \"10.244.1.1\"",
            ),
            (
                v1::AllocateResponse {
                    pod_cidr_v6: "fd00:10:244:1::/129".into(),
                    ..dual_stack_response()
                },
                "pod_cidr_v6 \"fd00:10:244:1::/129\"",
            ),
            (
                v1::AllocateResponse {
                    ipv6_gateway: "fd00:10:244:1::5".into(),
                    ..dual_stack_response()
                },
                "ipv6 fd00:10:244:1::5 is the gateway",
            ),
            (
                v1::AllocateResponse {
                    pod_cidr_v6: "fd00:10:244:2::/112".into(),
                    ..dual_stack_response()
                },
                "ipv6 fd00:10:244:1::5 is outside pod_cidr_v6 fd00:10:244:2::/112",
            ),
        ];
        for (case, reason) in &cases {
            let error = Allocation::from_response(case).unwrap_err();
            assert!(error.contains(reason), "{error:?} for {case:?}");
        }
    }

    #[test]
    fn a_bad_ipv4_part_is_rejected_on_a_dual_stack_node_too() {
        let case = v1::AllocateResponse {
            ipv4_gateway: "10.244.1.5".into(),
            ..dual_stack_response()
        };
        assert_eq!(
            Allocation::from_response(&case).unwrap_err(),
            "ipv4 10.244.1.5 is the gateway"
        );
    }

    fn endpoint_spec(pod_ipv6: Option<Ipv6Addr>) -> EndpointSpec {
        EndpointSpec {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            pod: PodRef::default(),
            netns: PathBuf::from("/run/netns/pod"),
            host_ifname: "lxc0".into(),
            pod_ip: Ipv4Addr::new(10, 244, 1, 5),
            pod_ipv6,
            pod_mac: MacAddr::local_unicast([0; 6]),
            netns_cookie: 7,
            port_mappings: Vec::new(),
        }
    }

    #[test]
    fn create_endpoint_sends_the_ipv6_host_address_if_any() {
        let request = create_endpoint_request(&endpoint_spec(None));
        assert_eq!(request.ipv4, "10.244.1.5/32");
        assert_eq!(request.ipv6, "");
        let ipv6 = "fd00:10:244:1::5".parse().unwrap();
        let request = create_endpoint_request(&endpoint_spec(Some(ipv6)));
        assert_eq!(request.ipv4, "10.244.1.5/32");
        assert_eq!(request.ipv6, "fd00:10:244:1::5/128");
    }

    #[test]
    fn unavailable_maps_to_try_again_later() {
        let error = classify(
            Path::new("/run/a.sock"),
            "Allocate",
            &tonic::Status::unavailable("connection refused"),
        );
        assert!(matches!(error, AgentError::Unavailable { .. }));
        assert_eq!(CniError::from(error).code, ErrorCode::TryAgainLater);
    }

    #[test]
    fn other_statuses_map_to_agent_rejected() {
        for status in [
            tonic::Status::resource_exhausted("no free addresses"),
            tonic::Status::invalid_argument("bad"),
            tonic::Status::internal("boom"),
            tonic::Status::not_found("no endpoint"),
        ] {
            let error = CniError::from(classify(Path::new("/s"), "Allocate", &status));
            assert_eq!(error.code, ErrorCode::AgentRejected);
            assert!(
                error.details.contains(status.message()),
                "{}",
                error.details
            );
        }
    }

    #[test]
    fn invalid_response_maps_to_103() {
        let error = AgentError::InvalidResponse {
            rpc: "Allocate",
            reason: "x".into(),
        };
        assert_eq!(CniError::from(error).code, ErrorCode::AgentResponseInvalid);
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable() {
        let socket =
            std::env::temp_dir().join(format!("weir-cni-missing-{}.sock", std::process::id()));
        let error = AgentClient::connect(&socket).await.err().unwrap();
        assert!(matches!(error, AgentError::Unavailable { .. }), "{error}");
        assert_eq!(CniError::from(error).code, ErrorCode::TryAgainLater);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable() {
        // A bound socket whose listener is gone refuses connections.
        let socket =
            std::env::temp_dir().join(format!("weir-cni-refused-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let error = AgentClient::connect(&socket).await.err().unwrap();
        std::fs::remove_file(&socket).unwrap();
        assert!(matches!(error, AgentError::Unavailable { .. }), "{error}");
    }
}
