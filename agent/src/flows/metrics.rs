//! Flow metrics under Hubble's names, counted as flows are produced:
//! `hubble_flows_processed_total{type,subtype,verdict}`,
//! `hubble_drop_total{reason,protocol}`, `hubble_tcp_flags_total{flag,family}`
//! and `hubble_policy_verdicts_total{direction,match,action}`.

use prometheus::{IntCounterVec, Opts, Registry};
use weir_observer::event::message_type;
use weir_observer::proto::flow::{self, Flow};

use crate::registry::registered;

#[derive(Clone)]
pub struct FlowMetrics {
    processed: IntCounterVec,
    drops: IntCounterVec,
    tcp_flags: IntCounterVec,
    policy_verdicts: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn protocol(f: &Flow) -> &'static str {
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(flow::layer4::Protocol::Tcp(_)) => "TCP",
        Some(flow::layer4::Protocol::Udp(_)) => "UDP",
        Some(flow::layer4::Protocol::Sctp(_)) => "SCTP",
        Some(flow::layer4::Protocol::IcmPv4(_)) => "ICMPv4",
        Some(flow::layer4::Protocol::IcmPv6(_)) => "ICMPv6",
        _ => "Unknown",
    }
}

impl FlowMetrics {
    pub fn new(registry: &Registry) -> FlowMetrics {
        FlowMetrics {
            processed: counter(
                registry,
                "hubble_flows_processed_total",
                "Flows processed",
                &["type", "subtype", "verdict"],
            ),
            drops: counter(
                registry,
                "hubble_drop_total",
                "Dropped packets",
                &["reason", "protocol"],
            ),
            tcp_flags: counter(
                registry,
                "hubble_tcp_flags_total",
                "TCP flags seen",
                &["flag", "family"],
            ),
            policy_verdicts: counter(
                registry,
                "hubble_policy_verdicts_total",
                "Policy verdicts",
                &["direction", "match", "action"],
            ),
        }
    }

    pub fn observe(&self, f: &Flow) {
        let verdict = flow::Verdict::try_from(f.verdict).map_or("UNKNOWN", |v| v.as_str_name());
        let (kind, subtype) = match f.event_type.as_ref().map(|e| e.r#type) {
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
        self.processed
            .with_label_values(&[kind, &subtype, verdict])
            .inc();
        if kind == "Drop" {
            let reason = flow::DropReason::try_from(f.drop_reason_desc)
                .map_or("UNKNOWN", |r| r.as_str_name());
            self.drops.with_label_values(&[reason, protocol(f)]).inc();
        }
        if kind == "PolicyVerdict" {
            let direction = flow::TrafficDirection::try_from(f.traffic_direction)
                .map_or("UNKNOWN", |d| d.as_str_name());
            let matched =
                u8::try_from(f.policy_match_type).map_or("none", weir_abi::events::match_type_name);
            let action = if verdict == "FORWARDED" {
                "forwarded"
            } else {
                "dropped"
            };
            self.policy_verdicts
                .with_label_values(&[direction, matched, action])
                .inc();
        }
        if let Some(flow::layer4::Protocol::Tcp(tcp)) =
            f.l4.as_ref().and_then(|l4| l4.protocol.as_ref())
        {
            if let Some(flags) = &tcp.flags {
                let family =
                    f.ip.as_ref()
                        .map_or("", |ip| if ip.ip_version == 2 { "IPv6" } else { "IPv4" });
                for (set, name) in [
                    (flags.syn && !flags.ack, "SYN"),
                    (flags.syn && flags.ack, "SYN-ACK"),
                    (flags.fin, "FIN"),
                    (flags.rst, "RST"),
                ] {
                    if set {
                        self.tcp_flags.with_label_values(&[name, family]).inc();
                    }
                }
            }
        }
    }
}
