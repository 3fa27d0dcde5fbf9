//! Turns a [`DatapathEvent`] into a Hubble [`Flow`], enriched with what the
//! agent knows about the addresses involved.
//!
//! The mapping follows Hubble's L3/L4 parser (`pkg/hubble/parser/threefour`):
//! verdict from the event kind, direction from which endpoint emitted the
//! event, reply-ness from the conntrack trace reason.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{
    ip_proto, observation_point, tcp_flag, trace_reason, DatapathEvent, EventKind, PolicyDirection,
};
use crate::proto::flow::{
    layer4, CiliumEventType, DropReason, Endpoint, Flow, FlowType, IcmPv4, IcmPv6, Ip, IpVersion,
    Layer4, NetworkInterface, Sctp, Service, Tcp, TcpFlags, TraceObservationPoint, TraceReason,
    TrafficDirection, Udp, Verdict, Workload,
};

/// What the agent knows about an endpoint (pod) owning an IP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Weir endpoint ID (0 when the IP is not a local endpoint).
    pub id: u32,
    pub identity: u32,
    pub namespace: String,
    pub pod_name: String,
    /// Labels in Cilium's `source:key=value` form.
    pub labels: Vec<String>,
    pub workloads: Vec<WorkloadInfo>,
}

/// The controller owning a pod (`Deployment`, `DaemonSet`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub name: String,
    pub kind: String,
}

/// A Kubernetes service a frontend address belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
}

/// Lookups the agent provides so flows carry names, not just numbers.
/// Every method may return nothing; the flow then carries only what the
/// datapath reported.
pub trait Enricher: Send + Sync {
    /// The endpoint or pod owning `ip`, local or remote.
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<EndpointInfo>;

    /// Labels of a security identity, used when the endpoint is unknown
    /// (remote pods, reserved identities such as `reserved:world`).
    fn identity_labels(&self, _identity: u32) -> Vec<String> {
        Vec::new()
    }

    /// The service whose frontend is `ip:port` for `protocol`.
    fn service_by_frontend(&self, _ip: IpAddr, _port: u16, _protocol: u8) -> Option<ServiceInfo> {
        None
    }

    /// Name of the network interface with this index.
    fn interface_name(&self, _ifindex: u32) -> Option<String> {
        None
    }
}

/// An enricher that knows nothing; flows carry only datapath facts.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnrichment;

impl Enricher for NoEnrichment {
    fn endpoint_by_ip(&self, _ip: IpAddr) -> Option<EndpointInfo> {
        None
    }
}

/// Converts the datapath's monotonic nanoseconds into wall-clock time.
/// The datapath stamps events with `bpf_ktime_get_ns` (CLOCK_MONOTONIC),
/// which has no relation to the epoch, so the agent samples both clocks once
/// and hands the difference here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Wall-clock nanoseconds since the epoch at monotonic time zero.
    offset_ns: i128,
}

impl WallClock {
    /// Offset from one simultaneous reading of both clocks.
    pub fn from_sample(monotonic_ns: u64, wall: SystemTime) -> Self {
        let wall_ns = match wall.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Self {
            offset_ns: wall_ns - i128::from(monotonic_ns),
        }
    }

    /// Offset given directly in nanoseconds (wall = monotonic + offset).
    pub fn from_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Wall-clock time of a monotonic timestamp.
    pub fn timestamp(&self, monotonic_ns: u64) -> crate::proto::Timestamp {
        let ns = i128::from(monotonic_ns) + self.offset_ns;
        let seconds = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000);
        crate::proto::Timestamp {
            seconds: seconds.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            nanos: nanos as i32,
        }
    }
}

/// Builds flows for one node.
#[derive(Clone)]
pub struct Parser {
    node_name: String,
    enricher: Arc<dyn Enricher>,
    clock: WallClock,
}

impl Parser {
    pub fn new(
        node_name: impl Into<String>,
        enricher: Arc<dyn Enricher>,
        clock: WallClock,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            enricher,
            clock,
        }
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The Hubble flow for one datapath event.
    pub fn parse(&self, ev: &DatapathEvent) -> Flow {
        let src_info = self.enricher.endpoint_by_ip(ev.src_ip);
        let dst_info = self.enricher.endpoint_by_ip(ev.dst_ip);
        let src_ep_id = src_info.as_ref().map_or(0, |i| i.id);
        let source = self.endpoint(src_info, ev.src_identity);
        let destination = self.endpoint(dst_info, ev.dst_identity);

        let (verdict, drop_reason) = verdict_of(&ev.kind);
        let l4 = layer4_of(ev);
        let mut flow = Flow {
            time: Some(self.clock.timestamp(ev.timestamp_ns)),
            verdict: verdict as i32,
            drop_reason: u32::from(drop_reason),
            drop_reason_desc: drop_reason_desc(drop_reason) as i32,
            ip: Some(Ip {
                source: ev.src_ip.to_string(),
                destination: ev.dst_ip.to_string(),
                ip_version: match ev.src_ip {
                    IpAddr::V4(_) => IpVersion::IPv4,
                    IpAddr::V6(_) => IpVersion::IPv6,
                } as i32,
                encrypted: matches!(ev.kind, EventKind::Trace { reason, .. }
                    if reason & trace_reason::ENCRYPTED_MASK != 0),
                // Datapath events carry no post-SNAT source.
                source_xlated: String::new(),
            }),
            summary: summary(ev),
            l4,
            source: Some(source),
            destination: Some(destination),
            r#type: FlowType::L3L4 as i32,
            node_name: self.node_name.clone(),
            event_type: Some(CiliumEventType {
                r#type: ev.kind.message_type(),
                sub_type: ev.kind.sub_type(),
            }),
            traffic_direction: direction(ev, src_ep_id) as i32,
            ..Default::default()
        };
        flow.source_service = self.service(ev.src_ip, ev.src_port, ev.protocol);
        flow.destination_service = self.service(ev.dst_ip, ev.dst_port, ev.protocol);
        if ev.ifindex != 0 {
            flow.interface = Some(NetworkInterface {
                index: ev.ifindex,
                name: self.enricher.interface_name(ev.ifindex).unwrap_or_default(),
            });
        }
        match ev.kind {
            EventKind::Trace {
                observation_point,
                reason,
            } => {
                flow.trace_observation_point = observation_point_of(observation_point) as i32;
                flow.trace_reason = trace_reason_of(reason) as i32;
            }
            EventKind::PolicyVerdict { match_type, .. } => {
                flow.policy_match_type = u32::from(match_type);
            }
            EventKind::Drop { .. } => {}
        }
        flow.is_reply = is_reply(ev);
        flow.reply = flow.is_reply.unwrap_or(false);
        flow
    }

    fn endpoint(&self, info: Option<EndpointInfo>, event_identity: u32) -> Endpoint {
        let info = info.unwrap_or_default();
        // The datapath's identity is what policy acted on; prefer it.
        let identity = if event_identity != 0 {
            event_identity
        } else {
            info.identity
        };
        let mut labels = if identity != 0 {
            self.enricher.identity_labels(identity)
        } else {
            Vec::new()
        };
        if labels.is_empty() {
            labels = info.labels;
        }
        labels.sort();
        Endpoint {
            id: info.id,
            identity,
            namespace: info.namespace,
            labels,
            pod_name: info.pod_name,
            workloads: info
                .workloads
                .into_iter()
                .map(|w| Workload {
                    name: w.name,
                    kind: w.kind,
                })
                .collect(),
            cluster_name: String::new(),
        }
    }

    fn service(&self, ip: IpAddr, port: u16, protocol: u8) -> Option<Service> {
        self.enricher
            .service_by_frontend(ip, port, protocol)
            .map(|s| Service {
                name: s.name,
                namespace: s.namespace,
            })
    }
}

/// Verdict and drop reason (0 if not dropped).
fn verdict_of(kind: &EventKind) -> (Verdict, u8) {
    match *kind {
        EventKind::Drop { reason } => (Verdict::Dropped, reason),
        EventKind::Trace { .. } => (Verdict::Forwarded, 0),
        EventKind::PolicyVerdict {
            allowed,
            audited,
            reason,
            ..
        } => {
            // Audit mode reports what would have been dropped, so AUDIT wins.
            let reason = if allowed { 0 } else { reason };
            match (audited, allowed) {
                (true, _) => (Verdict::Audit, reason),
                (false, true) => (Verdict::Forwarded, 0),
                (false, false) => (Verdict::Dropped, reason),
            }
        }
    }
}

fn drop_reason_desc(reason: u8) -> DropReason {
    DropReason::try_from(i32::from(reason)).unwrap_or(DropReason::Unknown)
}

/// Hubble numbers the observation points 1:1 except TO_LXC (0), which it
/// moves to TO_ENDPOINT (101) so that 0 can mean "unknown".
fn observation_point_of(point: u8) -> TraceObservationPoint {
    if point == observation_point::TO_LXC {
        return TraceObservationPoint::ToEndpoint;
    }
    TraceObservationPoint::try_from(i32::from(point)).unwrap_or(TraceObservationPoint::UnknownPoint)
}

/// Hubble's TraceReason is the datapath reason plus one below UNKNOWN.
fn trace_reason_of(reason: u8) -> TraceReason {
    match reason & !trace_reason::ENCRYPTED_MASK {
        r @ trace_reason::POLICY..=trace_reason::CT_REOPENED => {
            TraceReason::try_from(i32::from(r) + 1).unwrap_or(TraceReason::Unknown)
        }
        trace_reason::SRV6_ENCAP => TraceReason::Srv6Encap,
        trace_reason::SRV6_DECAP => TraceReason::Srv6Decap,
        trace_reason::ENCRYPT_OVERLAY => TraceReason::EncryptOverlay,
        _ => TraceReason::Unknown,
    }
}

fn trace_reason_known(reason: u8) -> bool {
    reason & !trace_reason::ENCRYPTED_MASK != trace_reason::UNKNOWN
}

/// Direction relative to the local endpoint that emitted the event.
fn direction(ev: &DatapathEvent, src_ep_id: u32) -> TrafficDirection {
    let emitted_by_source = ev.endpoint_id != 0 && u32::from(ev.endpoint_id) == src_ep_id;
    match ev.kind {
        EventKind::PolicyVerdict { direction, .. } => match direction {
            PolicyDirection::Ingress => TrafficDirection::Ingress,
            PolicyDirection::Egress => TrafficDirection::Egress,
        },
        _ if ev.endpoint_id == 0 => TrafficDirection::Unknown,
        EventKind::Drop { .. } => {
            if emitted_by_source {
                TrafficDirection::Egress
            } else {
                TrafficDirection::Ingress
            }
        }
        EventKind::Trace { reason, .. } => {
            // A reply leaving the endpoint belongs to an ingress connection.
            let reply = trace_reason_known(reason)
                && reason & !trace_reason::ENCRYPTED_MASK == trace_reason::CT_REPLY;
            if emitted_by_source != reply {
                TrafficDirection::Egress
            } else {
                TrafficDirection::Ingress
            }
        }
    }
}

fn is_reply(ev: &DatapathEvent) -> Option<bool> {
    match ev.kind {
        EventKind::Trace { reason, .. } if trace_reason_known(reason) => {
            let r = reason & !trace_reason::ENCRYPTED_MASK;
            if r == trace_reason::SRV6_ENCAP || r == trace_reason::SRV6_DECAP {
                None
            } else {
                Some(r == trace_reason::CT_REPLY)
            }
        }
        // Verdicts are emitted for a connection's first packet only.
        EventKind::PolicyVerdict { allowed: true, .. } => Some(false),
        _ => ev.is_reply,
    }
}

fn tcp_flags(bits: u16) -> TcpFlags {
    TcpFlags {
        fin: bits & tcp_flag::FIN != 0,
        syn: bits & tcp_flag::SYN != 0,
        rst: bits & tcp_flag::RST != 0,
        psh: bits & tcp_flag::PSH != 0,
        ack: bits & tcp_flag::ACK != 0,
        urg: bits & tcp_flag::URG != 0,
        ece: bits & tcp_flag::ECE != 0,
        cwr: bits & tcp_flag::CWR != 0,
        ns: bits & tcp_flag::NS != 0,
    }
}

fn layer4_of(ev: &DatapathEvent) -> Option<Layer4> {
    let (src, dst) = (u32::from(ev.src_port), u32::from(ev.dst_port));
    let protocol = match ev.protocol {
        ip_proto::TCP => layer4::Protocol::Tcp(Tcp {
            source_port: src,
            destination_port: dst,
            flags: Some(tcp_flags(ev.tcp_flags)),
        }),
        ip_proto::UDP => layer4::Protocol::Udp(Udp {
            source_port: src,
            destination_port: dst,
        }),
        ip_proto::SCTP => layer4::Protocol::Sctp(Sctp {
            source_port: src,
            destination_port: dst,
        }),
        ip_proto::ICMP => layer4::Protocol::IcmPv4(IcmPv4 {
            r#type: u32::from(ev.icmp_type),
            code: u32::from(ev.icmp_code),
        }),
        ip_proto::ICMPV6 => layer4::Protocol::IcmPv6(IcmPv6 {
            r#type: u32::from(ev.icmp_type),
            code: u32::from(ev.icmp_code),
        }),
        _ => return None,
    };
    Some(Layer4 {
        protocol: Some(protocol),
    })
}

/// The one-line summary Hubble prints in compact output, e.g.
/// `TCP Flags: SYN, ACK` or `ICMPv4 EchoRequest`.
pub fn summary(ev: &DatapathEvent) -> String {
    match ev.protocol {
        ip_proto::TCP => {
            let names = [
                (tcp_flag::SYN, "SYN"),
                (tcp_flag::FIN, "FIN"),
                (tcp_flag::RST, "RST"),
                (tcp_flag::PSH, "PSH"),
                (tcp_flag::ACK, "ACK"),
                (tcp_flag::URG, "URG"),
                (tcp_flag::ECE, "ECE"),
                (tcp_flag::CWR, "CWR"),
                (tcp_flag::NS, "NS"),
            ];
            let set: Vec<&str> = names
                .iter()
                .filter(|(bit, _)| ev.tcp_flags & bit != 0)
                .map(|(_, n)| *n)
                .collect();
            format!("TCP Flags: {}", set.join(", "))
        }
        ip_proto::UDP => "UDP".to_string(),
        ip_proto::SCTP => "SCTP".to_string(),
        ip_proto::ICMP => format!("ICMPv4 {}", icmpv4_name(ev.icmp_type, ev.icmp_code)),
        ip_proto::ICMPV6 => format!("ICMPv6 {}", icmpv6_name(ev.icmp_type, ev.icmp_code)),
        p => format!("IP protocol {p}"),
    }
}

fn icmpv4_name(ty: u8, code: u8) -> String {
    let name = match ty {
        0 => "EchoReply",
        3 => "DestinationUnreachable",
        5 => "Redirect",
        8 => "EchoRequest",
        11 => "TimeExceeded",
        12 => "ParameterProblem",
        _ => return format!("type {ty} code {code}"),
    };
    name.to_string()
}

fn icmpv6_name(ty: u8, code: u8) -> String {
    let name = match ty {
        1 => "DestinationUnreachable",
        2 => "PacketTooBig",
        3 => "TimeExceeded",
        128 => "EchoRequest",
        129 => "EchoReply",
        133 => "RouterSolicitation",
        134 => "RouterAdvertisement",
        135 => "NeighborSolicitation",
        136 => "NeighborAdvertisement",
        _ => return format!("type {ty} code {code}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests;
