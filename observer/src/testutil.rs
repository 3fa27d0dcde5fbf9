//! Shared builders for tests (this crate's, and other crates' with the
//! `test-util` feature): real `DatapathEvent` values turned into flows by
//! the real parser.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::event::{ip_proto, tcp_flag, DatapathEvent, EventKind};
use crate::parser::{NoEnrichment, Parser, WallClock};
use crate::proto::flow::Flow;

/// A TCP SYN from 10.0.0.1:`port` to 10.0.0.2:80 at `secs` seconds after
/// the epoch, dropped by policy when `dropped`, else forwarded.
pub fn event(secs: u64, port: u16, dropped: bool) -> DatapathEvent {
    DatapathEvent {
        kind: if dropped {
            EventKind::Drop { reason: 133 }
        } else {
            EventKind::Trace {
                observation_point: 0,
                reason: 0,
            }
        },
        timestamp_ns: secs * 1_000_000_000,
        ifindex: 2,
        endpoint_id: 1,
        src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        protocol: ip_proto::TCP,
        src_port: port,
        dst_port: 80,
        tcp_flags: tcp_flag::SYN,
        icmp_type: 0,
        icmp_code: 0,
        src_identity: 100,
        dst_identity: 200,
        is_reply: None,
        packet_len: 60,
    }
}

pub fn parser() -> Parser {
    parser_on("test-node")
}

/// A parser for the node `node` whose wall clock equals the monotonic one.
pub fn parser_on(node: &str) -> Parser {
    Parser::new(
        node.to_string(),
        Arc::new(NoEnrichment),
        WallClock::from_offset_ns(0),
    )
}

pub fn flow(secs: u64, port: u16, dropped: bool) -> Flow {
    parser().parse(&event(secs, port, dropped))
}

/// [`flow`] as seen by the node `node`.
pub fn flow_on(node: &str, secs: u64, port: u16, dropped: bool) -> Flow {
    parser_on(node).parse(&event(secs, port, dropped))
}

pub fn src_port(flow: &Flow) -> u32 {
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(crate::proto::flow::layer4::Protocol::Tcp(t)) => t.source_port,
        _ => 0,
    }
}
