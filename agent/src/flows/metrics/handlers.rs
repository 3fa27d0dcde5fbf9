//! What each of Hubble's L3/L4 handlers counts: its family's name, help
//! and own labels, and for one flow the values of those labels, one row per
//! increment (none when the handler ignores the flow). Context labels are
//! added after these by the caller.

use weir_observer::event::message_type;
use weir_observer::proto::flow::{self, layer4::Protocol, Flow, Verdict};

use super::options::Handler;

/// The family's name and help.
pub fn family(handler: Handler) -> (&'static str, &'static str) {
    match handler {
        Handler::Flow => (
            "hubble_flows_processed_total",
            "Total number of flows processed",
        ),
        Handler::Drop => ("hubble_drop_total", "Number of drops"),
        Handler::Tcp => ("hubble_tcp_flags_total", "TCP flag occurrences"),
        Handler::PortDistribution => (
            "hubble_port_distribution_total",
            "Numbers of packets distributed by destination port",
        ),
        Handler::Icmp => ("hubble_icmp_total", "Number of ICMP messages"),
        Handler::Policy => (
            "hubble_policy_verdicts_total",
            "Total number of network policy verdicts",
        ),
    }
}

/// The handler's own labels, Hubble's, in the order of [`rows`]' values.
pub fn label_names(handler: Handler) -> &'static [&'static str] {
    match handler {
        Handler::Flow => &["protocol", "type", "subtype", "verdict"],
        Handler::Drop => &["reason", "protocol"],
        Handler::Tcp => &["flag", "family"],
        Handler::PortDistribution => &["protocol", "port"],
        Handler::Icmp => &["family", "type"],
        Handler::Policy => &["direction", "match", "action"],
    }
}

/// The values of the handler's labels for each increment `f` makes.
pub fn rows(handler: Handler, f: &Flow) -> Vec<Vec<String>> {
    match handler {
        Handler::Flow => vec![flow_row(f)],
        Handler::Drop => drop_row(f).into_iter().collect(),
        Handler::Tcp => tcp_rows(f),
        Handler::PortDistribution => port_row(f).into_iter().collect(),
        Handler::Icmp => icmp_row(f).into_iter().collect(),
        Handler::Policy => policy_row(f).into_iter().collect(),
    }
}

fn l4(f: &Flow) -> Option<&Protocol> {
    f.l4.as_ref().and_then(|l4| l4.protocol.as_ref())
}

/// Hubble's protocol name of a flow.
fn protocol(f: &Flow) -> &'static str {
    match l4(f) {
        Some(Protocol::Tcp(_)) => "TCP",
        Some(Protocol::Udp(_)) => "UDP",
        Some(Protocol::Sctp(_)) => "SCTP",
        Some(Protocol::IcmPv4(_)) => "ICMPv4",
        Some(Protocol::IcmPv6(_)) => "ICMPv6",
        _ => "Unknown",
    }
}

fn verdict(f: &Flow) -> Option<Verdict> {
    Verdict::try_from(f.verdict).ok()
}

fn verdict_name(f: &Flow) -> &'static str {
    verdict(f).map_or("VERDICT_UNKNOWN", |v| v.as_str_name())
}

fn family_name(f: &Flow) -> &'static str {
    match f.ip.as_ref().map(|ip| ip.ip_version) {
        Some(v) if v == flow::IpVersion::IPv6 as i32 => "IPv6",
        Some(v) if v == flow::IpVersion::IPv4 as i32 => "IPv4",
        _ => "IP_NOT_USED",
    }
}

fn message(f: &Flow) -> Option<i32> {
    f.event_type.as_ref().map(|e| e.r#type)
}

fn flow_row(f: &Flow) -> Vec<String> {
    let (kind, subtype) = match message(f) {
        Some(message_type::DROP) => ("Drop", String::new()),
        Some(message_type::POLICY_VERDICT) => ("PolicyVerdict", String::new()),
        _ => (
            "Trace",
            flow::TraceObservationPoint::try_from(f.trace_observation_point)
                .map_or("unknown".to_string(), |p| {
                    p.as_str_name().to_lowercase().replace('_', "-")
                }),
        ),
    };
    vec![
        protocol(f).into(),
        kind.into(),
        subtype,
        verdict_name(f).into(),
    ]
}

fn drop_row(f: &Flow) -> Option<Vec<String>> {
    if verdict(f) != Some(Verdict::Dropped) {
        return None;
    }
    let reason = flow::DropReason::try_from(f.drop_reason_desc)
        .map_or("DROP_REASON_UNKNOWN", |r| r.as_str_name());
    Some(vec![reason.into(), protocol(f).into()])
}

/// Forwarded TCP only, as Hubble: one row per flag of interest.
fn tcp_rows(f: &Flow) -> Vec<Vec<String>> {
    let Some(Protocol::Tcp(tcp)) = l4(f) else {
        return Vec::new();
    };
    let Some(flags) = tcp.flags.as_ref() else {
        return Vec::new();
    };
    if verdict(f) != Some(Verdict::Forwarded) || f.ip.is_none() {
        return Vec::new();
    }
    [
        (flags.fin, "FIN"),
        (flags.syn && flags.ack, "SYN-ACK"),
        (flags.syn && !flags.ack, "SYN"),
        (flags.rst, "RST"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| vec![name.to_string(), family_name(f).to_string()])
    .collect()
}

/// Forwarded (or redirected) flows known not to be replies, by destination
/// port; ICMP has no port (0).
fn port_row(f: &Flow) -> Option<Vec<String>> {
    if !matches!(verdict(f), Some(Verdict::Forwarded | Verdict::Redirected))
        || f.is_reply != Some(false)
    {
        return None;
    }
    let port = match l4(f)? {
        Protocol::Tcp(tcp) => tcp.destination_port,
        Protocol::Udp(udp) => udp.destination_port,
        Protocol::Sctp(sctp) => sctp.destination_port,
        Protocol::IcmPv4(_) | Protocol::IcmPv6(_) => 0,
    };
    Some(vec![protocol(f).into(), port.to_string()])
}

/// ICMP messages by family and type. Datapath events carry the type but
/// not the code, so the type's name stands alone.
fn icmp_row(f: &Flow) -> Option<Vec<String>> {
    let (family, name) = match l4(f)? {
        Protocol::IcmPv4(icmp) => ("IPv4", icmpv4_type(icmp.r#type)),
        Protocol::IcmPv6(icmp) => ("IPv6", icmpv6_type(icmp.r#type)),
        _ => return None,
    };
    Some(vec![family.into(), name])
}

fn icmpv4_type(t: u32) -> String {
    match t {
        0 => "EchoReply".into(),
        3 => "DestinationUnreachable".into(),
        4 => "SourceQuench".into(),
        5 => "Redirect".into(),
        8 => "EchoRequest".into(),
        9 => "RouterAdvertisement".into(),
        10 => "RouterSolicitation".into(),
        11 => "TimeExceeded".into(),
        12 => "ParameterProblem".into(),
        13 => "TimestampRequest".into(),
        14 => "TimestampReply".into(),
        other => other.to_string(),
    }
}

fn icmpv6_type(t: u32) -> String {
    match t {
        1 => "DestinationUnreachable".into(),
        2 => "PacketTooBig".into(),
        3 => "TimeExceeded".into(),
        4 => "ParameterProblem".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        133 => "RouterSolicitation".into(),
        134 => "RouterAdvertisement".into(),
        135 => "NeighborSolicitation".into(),
        136 => "NeighborAdvertisement".into(),
        137 => "Redirect".into(),
        other => other.to_string(),
    }
}

/// Policy verdict events, except from the host (always allowed to its
/// endpoints), as Hubble.
fn policy_row(f: &Flow) -> Option<Vec<String>> {
    if message(f) != Some(message_type::POLICY_VERDICT) {
        return None;
    }
    if f.source.as_ref().map(|s| s.identity) == Some(weir_abi::identity::HOST) {
        return None;
    }
    let direction = flow::TrafficDirection::try_from(f.traffic_direction)
        .map_or("traffic_direction_unknown", |d| d.as_str_name());
    let matched =
        u8::try_from(f.policy_match_type).map_or("none", weir_abi::events::match_type_name);
    Some(vec![
        direction.to_lowercase(),
        matched.into(),
        verdict_name(f).to_lowercase(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_observer::proto::flow::{
        CiliumEventType, Endpoint, IcmPv4, IcmPv6, Ip, Layer4, Tcp, TcpFlags, Udp,
    };

    fn tcp_flow(verdict: Verdict, flags: TcpFlags) -> Flow {
        Flow {
            verdict: verdict as i32,
            ip: Some(Ip {
                ip_version: flow::IpVersion::IPv4 as i32,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    destination_port: 80,
                    flags: Some(flags),
                    ..Default::default()
                })),
            }),
            event_type: Some(CiliumEventType {
                r#type: message_type::TRACE,
                sub_type: 0,
            }),
            trace_observation_point: flow::TraceObservationPoint::ToEndpoint as i32,
            is_reply: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn every_row_matches_its_label_names() {
        let f = tcp_flow(Verdict::Forwarded, TcpFlags::default());
        for handler in Handler::ALL {
            for row in rows(handler, &f) {
                assert_eq!(row.len(), label_names(handler).len(), "{handler:?}");
            }
        }
    }

    #[test]
    fn flow_drop_and_tcp() {
        let syn = TcpFlags {
            syn: true,
            ..Default::default()
        };
        let f = tcp_flow(Verdict::Forwarded, syn);
        assert_eq!(
            rows(Handler::Flow, &f),
            [["TCP", "Trace", "to-endpoint", "FORWARDED"]]
        );
        assert!(rows(Handler::Drop, &f).is_empty());
        assert_eq!(rows(Handler::Tcp, &f), [["SYN", "IPv4"]]);
        let synack_fin = TcpFlags {
            syn: true,
            ack: true,
            fin: true,
            ..Default::default()
        };
        assert_eq!(
            rows(Handler::Tcp, &tcp_flow(Verdict::Forwarded, synack_fin)),
            [["FIN", "IPv4"], ["SYN-ACK", "IPv4"]]
        );

        let mut dropped = tcp_flow(Verdict::Dropped, syn);
        dropped.event_type = Some(CiliumEventType {
            r#type: message_type::DROP,
            sub_type: 133,
        });
        dropped.drop_reason_desc = flow::DropReason::PolicyDenied as i32;
        assert_eq!(
            rows(Handler::Flow, &dropped),
            [["TCP", "Drop", "", "DROPPED"]]
        );
        assert_eq!(rows(Handler::Drop, &dropped), [["POLICY_DENIED", "TCP"]]);
        assert!(
            rows(Handler::Tcp, &dropped).is_empty(),
            "tcp counts forwarded flows"
        );
    }

    #[test]
    fn port_distribution_counts_forwarded_requests_only() {
        let f = tcp_flow(Verdict::Forwarded, TcpFlags::default());
        assert_eq!(rows(Handler::PortDistribution, &f), [["TCP", "80"]]);
        let mut reply = f.clone();
        reply.is_reply = Some(true);
        assert!(rows(Handler::PortDistribution, &reply).is_empty());
        let mut unknown = f.clone();
        unknown.is_reply = None;
        assert!(rows(Handler::PortDistribution, &unknown).is_empty());
        let mut udp = f.clone();
        udp.l4 = Some(Layer4 {
            protocol: Some(Protocol::Udp(Udp {
                destination_port: 53,
                ..Default::default()
            })),
        });
        assert_eq!(rows(Handler::PortDistribution, &udp), [["UDP", "53"]]);
        assert!(rows(
            Handler::PortDistribution,
            &tcp_flow(Verdict::Dropped, TcpFlags::default())
        )
        .is_empty());
    }

    #[test]
    fn icmp_by_family_and_type() {
        let mut f = tcp_flow(Verdict::Forwarded, TcpFlags::default());
        f.l4 = Some(Layer4 {
            protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
        });
        assert_eq!(rows(Handler::Icmp, &f), [["IPv4", "EchoRequest"]]);
        assert_eq!(rows(Handler::PortDistribution, &f), [["ICMPv4", "0"]]);
        f.l4 = Some(Layer4 {
            protocol: Some(Protocol::IcmPv6(IcmPv6 {
                r#type: 135,
                code: 0,
            })),
        });
        assert_eq!(rows(Handler::Icmp, &f), [["IPv6", "NeighborSolicitation"]]);
        assert!(rows(
            Handler::Icmp,
            &tcp_flow(Verdict::Forwarded, TcpFlags::default())
        )
        .is_empty());
    }

    #[test]
    fn policy_verdicts_lowercase_except_from_the_host() {
        let mut f = tcp_flow(Verdict::Dropped, TcpFlags::default());
        f.event_type = Some(CiliumEventType {
            r#type: message_type::POLICY_VERDICT,
            sub_type: 0,
        });
        f.traffic_direction = flow::TrafficDirection::Ingress as i32;
        f.policy_match_type = u32::from(weir_abi::events::MATCH_L3_L4);
        assert_eq!(rows(Handler::Policy, &f), [["ingress", "l3-l4", "dropped"]]);
        f.source = Some(Endpoint {
            identity: weir_abi::identity::HOST,
            ..Default::default()
        });
        assert!(rows(Handler::Policy, &f).is_empty());
        assert!(rows(
            Handler::Policy,
            &tcp_flow(Verdict::Forwarded, TcpFlags::default())
        )
        .is_empty());
    }
}
