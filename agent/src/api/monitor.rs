//! `weir monitor`: the datapath's events as decoded, before enrichment, for
//! whoever is listening (like `cilium monitor`). The flow reader publishes
//! every decoded event on a broadcast feed; each `Monitor.Events` stream
//! subscribes to it.

use std::pin::Pin;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use weir_agent_api::v1;
use weir_agent_api::v1::monitor_server::Monitor;
use weir_observer::event::{
    drop_reason_text, ip_proto, observation_point_text, tcp_flag, trace_reason,
};
use weir_observer::parser::WallClock;
use weir_observer::{DatapathEvent, EventKind, PolicyDirection};

use crate::datapath::debug::{self, DebugFeed, DebugMessage, DebugTarget};
use crate::datapath::SharedDatapath;
use crate::flows::feed::MonitorFeed;

/// The kind names `weir monitor --type` accepts.
pub const KINDS: [&str; 4] = ["drop", "trace", "policy-verdict", DEBUG];

/// The kind of the programs' debug messages (Cilium's monitor message
/// type 2, `MessageTypeDebug`).
const DEBUG: &str = "debug";
const DEBUG_CODE: u32 = 2;

/// The wire form of one debug message.
pub fn debug_to_proto(message: &DebugMessage, node_name: &str) -> v1::MonitorEvent {
    let time = prost_types::Timestamp::from(message.time);
    v1::MonitorEvent {
        time: Some(time),
        kind: DEBUG.into(),
        kind_code: DEBUG_CODE,
        endpoint_id: u32::from(message.endpoint_id),
        message: message.text.clone(),
        node_name: node_name.into(),
        ..Default::default()
    }
}

pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Drop { .. } => "drop",
        EventKind::Trace { .. } => "trace",
        EventKind::PolicyVerdict { .. } => "policy-verdict",
    }
}

fn trace_reason_name(reason: u8) -> &'static str {
    match reason & !trace_reason::ENCRYPTED_MASK {
        trace_reason::POLICY => "new",
        trace_reason::CT_ESTABLISHED => "established",
        trace_reason::CT_REPLY => "reply",
        trace_reason::CT_RELATED => "related",
        trace_reason::CT_REOPENED => "reopened",
        _ => "unknown",
    }
}

fn tcp_flags(event: &DatapathEvent) -> String {
    if event.protocol != ip_proto::TCP {
        return String::new();
    }
    [
        (tcp_flag::SYN, "SYN"),
        (tcp_flag::ACK, "ACK"),
        (tcp_flag::FIN, "FIN"),
        (tcp_flag::RST, "RST"),
        (tcp_flag::PSH, "PSH"),
        (tcp_flag::URG, "URG"),
    ]
    .iter()
    .filter(|(bit, _)| event.tcp_flags & bit != 0)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join("|")
}

/// The wire form of one event, names included so clients need no tables.
pub fn to_proto(event: &DatapathEvent, clock: &WallClock, node_name: &str) -> v1::MonitorEvent {
    let mut out = v1::MonitorEvent {
        time: Some({
            let t = clock.timestamp(event.timestamp_ns);
            prost_types::Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            }
        }),
        kind: kind_name(&event.kind).into(),
        kind_code: event.kind.message_type() as u32,
        src_identity: event.src_identity,
        dst_identity: event.dst_identity,
        src_ip: event.src_ip.to_string(),
        dst_ip: event.dst_ip.to_string(),
        src_port: u32::from(event.src_port),
        dst_port: u32::from(event.dst_port),
        protocol: u32::from(event.protocol),
        protocol_name: ip_proto::Named(event.protocol).to_string(),
        tcp_flags: tcp_flags(event),
        icmp_type: u32::from(event.icmp_type),
        ifindex: event.ifindex,
        endpoint_id: u32::from(event.endpoint_id),
        packet_len: event.packet_len,
        ct_direction: match event.is_reply {
            Some(true) => "reply".into(),
            Some(false) => "original".into(),
            None => String::new(),
        },
        node_name: node_name.into(),
        ..Default::default()
    };
    match event.kind {
        EventKind::Drop { reason } => {
            out.reason = u32::from(reason);
            out.reason_name = drop_reason_text(reason).into();
        }
        EventKind::Trace {
            observation_point,
            reason,
        } => {
            out.reason = u32::from(reason);
            out.reason_name = trace_reason_name(reason).into();
            out.observation_point = u32::from(observation_point);
            out.observation_point_name = observation_point_text(observation_point).into();
        }
        EventKind::PolicyVerdict {
            allowed,
            audited,
            direction,
            match_type,
            reason,
        } => {
            out.reason = u32::from(reason);
            if reason != 0 {
                out.reason_name = drop_reason_text(reason).into();
            }
            out.set_direction(match direction {
                PolicyDirection::Ingress => v1::TrafficDirection::Ingress,
                PolicyDirection::Egress => v1::TrafficDirection::Egress,
            });
            out.set_verdict(match (audited, allowed) {
                (true, _) => v1::PolicyVerdict::Audit,
                (false, true) => v1::PolicyVerdict::Allow,
                (false, false) => v1::PolicyVerdict::Deny,
            });
            out.match_type = weir_abi::events::match_type_name(match_type).into();
        }
    }
    out
}

/// The `Monitor` service on the agent's socket.
pub struct MonitorService {
    feed: MonitorFeed,
    clock: WallClock,
    node_name: String,
    /// The programs' debug messages and their switch (none: SetDebug and
    /// GetDebug answer Unimplemented, no debug events).
    debug: Option<(DebugFeed, SharedDatapath)>,
}

impl MonitorService {
    pub fn new(feed: MonitorFeed, clock: WallClock, node_name: String) -> Self {
        MonitorService {
            feed,
            clock,
            node_name,
            debug: None,
        }
    }

    /// Streams `feed`'s messages as debug events; SetDebug writes the
    /// switch in `datapath`.
    pub fn with_debug(mut self, feed: DebugFeed, datapath: SharedDatapath) -> Self {
        self.debug = Some((feed, datapath));
        self
    }

    fn debug_state(datapath: &SharedDatapath) -> Result<v1::DebugState, Status> {
        let (node, endpoints) = debug::debug_state(datapath.lock().ebpf_mut())
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        Ok(v1::DebugState {
            node,
            endpoint_ids: endpoints.into_iter().map(u32::from).collect(),
        })
    }

    fn debug_datapath(&self) -> Result<&SharedDatapath, Status> {
        self.debug
            .as_ref()
            .map(|(_, datapath)| datapath)
            .ok_or_else(|| Status::unimplemented("this agent has no datapath debug messages"))
    }
}

/// How many responses may queue per stream before events count as lost.
const STREAM_BUFFER: usize = 256;

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::MonitorResponse, Status>> + Send>>;

fn event_response(event: v1::MonitorEvent) -> v1::MonitorResponse {
    v1::MonitorResponse {
        response: Some(v1::monitor_response::Response::Event(event)),
    }
}

#[tonic::async_trait]
impl Monitor for MonitorService {
    type EventsStream = EventStream;

    async fn events(
        &self,
        request: Request<v1::MonitorRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let types = request.into_inner().types;
        if let Some(bad) = types.iter().find(|t| !KINDS.contains(&t.as_str())) {
            return Err(Status::invalid_argument(format!(
                "unknown event type {bad:?} (drop, trace, policy-verdict, debug)"
            )));
        }
        let wants = |kind: &str| types.is_empty() || types.iter().any(|t| t == kind);
        // Subscribed before answering: every event after this call is seen.
        let mut debug_feed = match &self.debug {
            Some((feed, _)) if wants(DEBUG) => Some(feed.subscribe()),
            _ => None,
        };
        let mut feed = self.feed.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (clock, node) = (self.clock, self.node_name.clone());
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = feed.recv() => next,
                    message = async { debug_feed.as_mut()?.recv().await.ok() }, if debug_feed.is_some() => {
                        match message {
                            Some(message) => {
                                let event = debug_to_proto(&message, &node);
                                if tx.send(Ok(event_response(event))).await.is_err() {
                                    return;
                                }
                            }
                            // Lagged or closed: debug messages are best effort.
                            None => debug_feed = None,
                        }
                        continue;
                    }
                };
                let response = match next {
                    Ok(event) => {
                        let kind = kind_name(&event.kind);
                        if !types.is_empty() && !types.iter().any(|t| t == kind) {
                            continue;
                        }
                        event_response(to_proto(&event, &clock, &node))
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => v1::MonitorResponse {
                        response: Some(v1::monitor_response::Response::Lost(n)),
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn set_debug(
        &self,
        request: Request<v1::SetDebugRequest>,
    ) -> Result<Response<v1::DebugState>, Status> {
        let datapath = self.debug_datapath()?;
        let request = request.into_inner();
        let target = match request.endpoint_id {
            0 => DebugTarget::Node,
            id => DebugTarget::Endpoint(u16::try_from(id).map_err(|_| {
                Status::invalid_argument(format!("endpoint id {id} is out of range (1-65535)"))
            })?),
        };
        debug::set_debug(datapath.lock().ebpf_mut(), target, request.enabled)
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        tracing::info!(
            ?target,
            enabled = request.enabled,
            "datapath debug messages switched"
        );
        Ok(Response::new(Self::debug_state(datapath)?))
    }

    async fn get_debug(
        &self,
        _: Request<v1::GetDebugRequest>,
    ) -> Result<Response<v1::DebugState>, Status> {
        Ok(Response::new(Self::debug_state(self.debug_datapath()?)?))
    }
}

#[cfg(test)]
mod tests;
