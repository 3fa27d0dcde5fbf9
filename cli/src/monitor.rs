//! `weir monitor`: the datapath's raw events, one line each (or JSON), as
//! they happen, until interrupted.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;

use crate::agent::{self, rpc_error};
use crate::args::{MonitorArgs, MonitorType};
use crate::{output, time};
use weir_observer::proto::observer::{GetAgentEventsRequest, GetAgentEventsResponse};

fn address(ip: &str, port: u32) -> String {
    match (ip.contains(':'), port) {
        (_, 0) => ip.to_string(),
        (true, p) => format!("[{ip}]:{p}"),
        (false, p) => format!("{ip}:{p}"),
    }
}

/// One event: time, node, kind with its own fields (reason code and name,
/// observation point, verdict), where it was seen, identities, addresses.
pub fn line(e: &v1::MonitorEvent) -> String {
    if e.kind == "debug" {
        return format!(
            "{} [{}] debug: {}",
            e.time.as_ref().map(time::clock).unwrap_or_default(),
            e.node_name,
            e.message
        );
    }
    let what = match e.kind.as_str() {
        "drop" => format!("drop reason {} ({})", e.reason, e.reason_name),
        "trace" => format!(
            "trace {} ({}) ct {}",
            e.observation_point_name, e.observation_point, e.reason_name
        ),
        "policy-verdict" => {
            let mut text = format!(
                "policy-verdict {} {} match {}",
                output::direction(e.direction()),
                output::verdict(e.verdict()),
                e.match_type
            );
            if e.reason != 0 {
                text.push_str(&format!(" reason {} ({})", e.reason, e.reason_name));
            }
            text
        }
        other => format!("{other} ({})", e.kind_code),
    };
    let mut packet = format!(
        "{} -> {} {}",
        address(&e.src_ip, e.src_port),
        address(&e.dst_ip, e.dst_port),
        e.protocol_name
    );
    if !e.tcp_flags.is_empty() {
        packet.push(' ');
        packet.push_str(&e.tcp_flags);
    }
    if e.protocol_name.starts_with("ICMP") {
        packet.push_str(&format!(" type {}", e.icmp_type));
    }
    if !e.ct_direction.is_empty() {
        packet.push_str(&format!(" ({})", e.ct_direction));
    }
    format!(
        "{} [{}] {what}, endpoint {}, ifindex {}, identity {}->{}: {packet}, {} bytes",
        e.time.as_ref().map(time::clock).unwrap_or_default(),
        e.node_name,
        e.endpoint_id,
        e.ifindex,
        e.src_identity,
        e.dst_identity,
        e.packet_len
    )
}

/// One line of `monitor -o json`: every field by name (in key order, see
/// [`crate::output`]).
#[derive(Serialize)]
struct EventJson<'a> {
    ct_direction: &'a str,
    direction: &'static str,
    dst_identity: u32,
    dst_ip: &'a str,
    dst_port: u32,
    endpoint_id: u32,
    icmp_type: u32,
    ifindex: u32,
    kind: &'a str,
    kind_code: u32,
    match_type: &'a str,
    /// Debug events only.
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    node_name: &'a str,
    observation_point: u32,
    observation_point_name: &'a str,
    packet_len: u32,
    protocol: u32,
    protocol_name: &'a str,
    reason: u32,
    reason_name: &'a str,
    src_identity: u32,
    src_ip: &'a str,
    src_port: u32,
    tcp_flags: &'a str,
    time: Option<String>,
    verdict: &'static str,
}

impl<'a> From<&'a v1::MonitorEvent> for EventJson<'a> {
    fn from(e: &'a v1::MonitorEvent) -> Self {
        EventJson {
            ct_direction: &e.ct_direction,
            direction: output::direction(e.direction()),
            dst_identity: e.dst_identity,
            dst_ip: &e.dst_ip,
            dst_port: e.dst_port,
            endpoint_id: e.endpoint_id,
            icmp_type: e.icmp_type,
            ifindex: e.ifindex,
            kind: &e.kind,
            kind_code: e.kind_code,
            match_type: &e.match_type,
            message: &e.message,
            node_name: &e.node_name,
            observation_point: e.observation_point,
            observation_point_name: &e.observation_point_name,
            packet_len: e.packet_len,
            protocol: e.protocol,
            protocol_name: &e.protocol_name,
            reason: e.reason,
            reason_name: &e.reason_name,
            src_identity: e.src_identity,
            src_ip: &e.src_ip,
            src_port: e.src_port,
            tcp_flags: &e.tcp_flags,
            time: time::json(&e.time),
            verdict: output::verdict(e.verdict()),
        }
    }
}

/// Datapath events from the agent's socket and, with `--type agent` (or
/// no `--type`), the agent's events from the node's Observer API,
/// interleaved as they come.
pub async fn run(socket: &Path, args: &MonitorArgs, json: bool) -> Result<()> {
    let all = args.types.is_empty();
    let datapath: Vec<String> = args
        .types
        .iter()
        .filter_map(|t| t.monitor_kind())
        .map(str::to_string)
        .collect();
    let want_agent = all || args.types.contains(&MonitorType::Agent);
    let want_datapath = all || !datapath.is_empty();
    let mut datapath_stream = if want_datapath {
        Some(
            agent::monitor(socket)
                .await?
                .events(v1::MonitorRequest { types: datapath })
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    } else {
        None
    };
    let mut agent_stream = if want_agent {
        let opened = async {
            let mut client = crate::observe::connect_plain(&args.server).await?;
            let request = GetAgentEventsRequest {
                follow: true,
                ..Default::default()
            };
            anyhow::Ok(client.get_agent_events(request).await?.into_inner())
        }
        .await;
        match opened {
            Ok(stream) => Some(stream),
            // Asked for by name: an error. Implied by "all": datapath only.
            Err(error) if all => {
                eprintln!("agent events unavailable ({}): {error:#}", args.server);
                None
            }
            Err(error) => return Err(error),
        }
    } else {
        None
    };
    // On stderr, so JSON output stays clean; printed once subscribed.
    let what = match (&datapath_stream, &agent_stream) {
        (Some(_), Some(_)) => "datapath and agent events",
        (None, Some(_)) => "agent events",
        _ => "datapath events",
    };
    eprintln!("Listening for {what} (Ctrl-C to quit)...");
    let mut stdout = std::io::stdout().lock();
    loop {
        let next = tokio::select! {
            message = async { datapath_stream.as_mut()?.message().await.transpose() }, if datapath_stream.is_some() => {
                match message {
                    Some(m) => Next::Datapath(m.map_err(rpc_error)?),
                    None => Next::DatapathDone,
                }
            }
            message = async { agent_stream.as_mut()?.message().await.transpose() }, if agent_stream.is_some() => {
                match message {
                    Some(m) => Next::Agent(m?),
                    None => Next::AgentDone,
                }
            }
            else => return Ok(()),
        };
        let response = match next {
            Next::DatapathDone => {
                datapath_stream = None;
                continue;
            }
            Next::AgentDone => {
                agent_stream = None;
                continue;
            }
            Next::Agent(event) => {
                if !output::stream_line(&mut stdout, &crate::agent_events::render(&event, json)?) {
                    return Ok(());
                }
                continue;
            }
            Next::Datapath(response) => response,
        };
        match response.response {
            Some(v1::monitor_response::Response::Event(e)) => {
                let text = if json {
                    serde_json::to_string(&EventJson::from(&e))?
                } else {
                    line(&e)
                };
                if !output::stream_line(&mut stdout, &text) {
                    return Ok(());
                }
            }
            Some(v1::monitor_response::Response::Lost(n)) => {
                eprintln!("lost {n} events: the listener fell behind");
            }
            None => {}
        }
    }
}

enum Next {
    Datapath(v1::MonitorResponse),
    DatapathDone,
    Agent(GetAgentEventsResponse),
    AgentDone,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_event() -> v1::MonitorEvent {
        v1::MonitorEvent {
            time: Some(prost_types::Timestamp {
                seconds: 3661,
                nanos: 5_000_000,
            }),
            kind: "drop".into(),
            kind_code: 1,
            reason: 133,
            reason_name: "Policy denied".into(),
            src_identity: 33020,
            dst_identity: 14437,
            src_ip: "10.0.1.5".into(),
            dst_ip: "10.0.2.3".into(),
            src_port: 39294,
            dst_port: 80,
            protocol: u32::from(weir_abi::ip_proto::TCP),
            protocol_name: "TCP".into(),
            tcp_flags: "SYN".into(),
            ifindex: 12,
            endpoint_id: 3,
            packet_len: 60,
            node_name: "n1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_drop_line_shows_its_raw_fields() {
        assert_eq!(
            line(&drop_event()),
            "01:01:01.005 [n1] drop reason 133 (Policy denied), endpoint 3, ifindex 12, \
             identity 33020->14437: 10.0.1.5:39294 -> 10.0.2.3:80 TCP SYN, 60 bytes"
        );
    }

    #[test]
    fn traces_and_verdicts_name_point_and_match() {
        let trace = v1::MonitorEvent {
            kind: "trace".into(),
            kind_code: 4,
            reason: 2,
            reason_name: "reply".into(),
            observation_point: 0,
            observation_point_name: "to-endpoint".into(),
            ct_direction: "reply".into(),
            ..drop_event()
        };
        assert!(line(&trace).contains(
            "trace to-endpoint (0) ct reply, endpoint 3, ifindex 12, identity 33020->14437: \
             10.0.1.5:39294 -> 10.0.2.3:80 TCP SYN (reply)"
        ));
        let verdict = v1::MonitorEvent {
            kind: "policy-verdict".into(),
            kind_code: 5,
            direction: v1::TrafficDirection::Ingress.into(),
            verdict: v1::PolicyVerdict::Deny.into(),
            match_type: "none".into(),
            ..drop_event()
        };
        assert!(line(&verdict)
            .contains("policy-verdict ingress deny match none reason 133 (Policy denied),"));
    }

    #[test]
    fn json_keeps_every_field() {
        let v = serde_json::to_value(EventJson::from(&drop_event())).unwrap();
        assert_eq!(v["reason"], 133);
        assert_eq!(v["reason_name"], "Policy denied");
        assert_eq!(v["ifindex"], 12);
        assert_eq!(v["src_port"], 39294);
        assert_eq!(v["time"], "3661.005000000");
    }

    #[test]
    fn json_is_unchanged() {
        let json = |e: &v1::MonitorEvent| serde_json::to_string(&EventJson::from(e)).unwrap();
        assert_eq!(
            json(&drop_event()),
            include_str!("../testdata/monitor.json")
        );
        assert_eq!(
            json(&v1::MonitorEvent::default()),
            include_str!("../testdata/monitor_empty.json")
        );
    }
}
