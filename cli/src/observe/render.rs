//! A flow as `weir observe` prints it: Hubble's compact line, a table row,
//! or a JSON object; and a relay's node status for stderr.

use serde::Serialize;
use weir_observer::proto::flow::{self, Flow};
use weir_observer::proto::relay::{NodeState, NodeStatusEvent};
use weir_types::NamespacedName;

use crate::time;

fn endpoint(ep: &Option<flow::Endpoint>, ip: &str, port: Option<u32>) -> String {
    let name = match ep {
        Some(e) if !e.pod_name.is_empty() => {
            NamespacedName::new(&e.namespace, &e.pod_name).to_string()
        }
        _ => ip.to_string(),
    };
    match port {
        Some(p) if p != 0 => format!("{name}:{p}"),
        _ => name,
    }
}

fn identity(ep: &Option<flow::Endpoint>) -> u32 {
    ep.as_ref().map_or(0, |e| e.identity)
}

/// Source and destination port of a TCP, UDP or SCTP flow.
fn ports(f: &Flow) -> (Option<u32>, Option<u32>) {
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(flow::layer4::Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
        Some(flow::layer4::Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
        Some(flow::layer4::Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
        _ => (None, None),
    }
}

fn verdict(f: &Flow) -> &'static str {
    flow::Verdict::try_from(f.verdict).map_or("UNKNOWN", |v| v.as_str_name())
}

/// One flow's printable parts.
struct Row {
    time: String,
    source: String,
    destination: String,
    kind: String,
    verdict: &'static str,
}

fn row(f: &Flow) -> Row {
    let (src_ip, dst_ip) = f.ip.as_ref().map_or((String::new(), String::new()), |ip| {
        (ip.source.clone(), ip.destination.clone())
    });
    let (sport, dport) = ports(f);
    let kind = match f.event_type.as_ref().map(|e| e.r#type) {
        Some(1) => {
            let reason = flow::DropReason::try_from(f.drop_reason_desc)
                .map_or("UNKNOWN".to_string(), |r| r.as_str_name().to_string());
            format!("drop ({reason})")
        }
        Some(5) => "policy-verdict".to_string(),
        _ => flow::TraceObservationPoint::try_from(f.trace_observation_point)
            .map_or("trace".to_string(), |p| {
                p.as_str_name().to_lowercase().replace('_', "-")
            }),
    };
    Row {
        time: f.time.as_ref().map(time::clock).unwrap_or_default(),
        source: endpoint(&f.source, &src_ip, sport),
        destination: endpoint(&f.destination, &dst_ip, dport),
        kind,
        verdict: verdict(f),
    }
}

/// Hubble's compact line: time, source -> destination, what, verdict, summary.
pub fn compact(f: &Flow) -> String {
    let r = row(f);
    format!(
        "{} [{}]: {} (ID:{}) -> {} (ID:{}) {} {} ({})",
        r.time,
        f.node_name,
        r.source,
        identity(&f.source),
        r.destination,
        identity(&f.destination),
        r.kind,
        r.verdict,
        f.summary
    )
}

/// The table's columns (Hubble's `-o table`), NODE only when asked for.
pub fn table_headers(node: bool) -> Vec<&'static str> {
    let mut headers = vec![
        "TIME",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ];
    if node {
        headers.insert(1, "NODE");
    }
    headers
}

/// The first widths of a table printed as flows arrive.
pub fn streaming_widths(node: bool) -> &'static [usize] {
    if node {
        &[12, 8, 30, 30, 14, 9]
    } else {
        &[12, 30, 30, 14, 9]
    }
}

pub fn table_cells(f: &Flow, node: bool) -> Vec<String> {
    let r = row(f);
    let mut cells = vec![
        r.time,
        r.source,
        r.destination,
        r.kind,
        r.verdict.to_string(),
        f.summary.clone(),
    ];
    if node {
        cells.insert(1, f.node_name.clone());
    }
    cells
}

/// What a relay says about its nodes, for the user (stderr).
pub fn node_status(event: &NodeStatusEvent) -> Option<String> {
    let state = match NodeState::try_from(event.state_change) {
        Ok(NodeState::NodeConnected) | Ok(NodeState::UnknownNodeState) => return None,
        Ok(NodeState::NodeUnavailable) => "unavailable",
        Ok(NodeState::NodeGone) => "gone",
        Ok(NodeState::NodeError) | Err(_) => "failed",
    };
    let detail = if event.message.is_empty() {
        String::new()
    } else {
        format!(": {}", event.message)
    };
    Some(format!(
        "node {} {state}{detail}",
        event.node_names.join(", ")
    ))
}

/// One line of `observe -o json`: Hubble's field names, in key order (see
/// [`crate::output`]; the capitalised `IP` and `Summary` sort first).
#[derive(Serialize)]
pub struct FlowJson<'a> {
    #[serde(rename = "IP")]
    ip: Option<IpJson<'a>>,
    #[serde(rename = "Summary")]
    summary: &'a str,
    destination: Option<EndpointJson<'a>>,
    destination_port: Option<u32>,
    destination_service: Option<ServiceJson<'a>>,
    drop_reason_desc: &'static str,
    event_type: Option<i32>,
    is_reply: Option<bool>,
    node_name: &'a str,
    source: Option<EndpointJson<'a>>,
    source_port: Option<u32>,
    source_service: Option<ServiceJson<'a>>,
    time: Option<String>,
    traffic_direction: &'static str,
    verdict: &'static str,
}

#[derive(Serialize)]
struct EndpointJson<'a> {
    identity: u32,
    labels: &'a [String],
    namespace: &'a str,
    pod_name: &'a str,
}

#[derive(Serialize)]
struct ServiceJson<'a> {
    name: &'a str,
    namespace: &'a str,
}

#[derive(Serialize)]
struct IpJson<'a> {
    destination: &'a str,
    source: &'a str,
}

impl<'a> From<&'a flow::Endpoint> for EndpointJson<'a> {
    fn from(e: &'a flow::Endpoint) -> Self {
        EndpointJson {
            identity: e.identity,
            labels: &e.labels,
            namespace: &e.namespace,
            pod_name: &e.pod_name,
        }
    }
}

impl<'a> From<&'a flow::Service> for ServiceJson<'a> {
    fn from(s: &'a flow::Service) -> Self {
        ServiceJson {
            name: &s.name,
            namespace: &s.namespace,
        }
    }
}

impl<'a> From<&'a Flow> for FlowJson<'a> {
    fn from(f: &'a Flow) -> Self {
        let (source_port, destination_port) = ports(f);
        FlowJson {
            ip: f.ip.as_ref().map(|ip| IpJson {
                destination: &ip.destination,
                source: &ip.source,
            }),
            summary: &f.summary,
            destination: f.destination.as_ref().map(Into::into),
            destination_port,
            destination_service: f.destination_service.as_ref().map(Into::into),
            drop_reason_desc: flow::DropReason::try_from(f.drop_reason_desc)
                .map_or("UNKNOWN", |r| r.as_str_name()),
            event_type: f.event_type.as_ref().map(|e| e.r#type),
            is_reply: f.is_reply,
            node_name: &f.node_name,
            source: f.source.as_ref().map(Into::into),
            source_port,
            source_service: f.source_service.as_ref().map(Into::into),
            time: time::json(&f.time),
            traffic_direction: flow::TrafficDirection::try_from(f.traffic_direction)
                .map_or("UNKNOWN", |d| d.as_str_name()),
            verdict: verdict(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_observer::testutil::flow_on;

    use super::*;

    fn json(f: &Flow) -> String {
        serde_json::to_string(&FlowJson::from(f)).unwrap()
    }

    #[test]
    fn json_is_unchanged() {
        assert_eq!(
            json(&flow_on("n1", 3, 1003, true)),
            include_str!("../../testdata/flow_dropped.json")
        );
        assert_eq!(
            json(&flow_on("n2", 4, 1004, false)),
            include_str!("../../testdata/flow_fwd.json")
        );
        assert_eq!(
            json(&Flow::default()),
            include_str!("../../testdata/flow_empty.json")
        );
        let mut rich = flow_on("n1", 5, 39294, true);
        rich.source_service = Some(flow::Service {
            name: "web".into(),
            namespace: "x".into(),
        });
        rich.is_reply = Some(false);
        if let Some(s) = rich.source.as_mut() {
            s.namespace = "y".into();
            s.pod_name = "b".into();
            s.labels = vec!["k8s:pod=b".into()];
        }
        assert_eq!(json(&rich), include_str!("../../testdata/flow_rich.json"));
    }

    #[test]
    fn compact_and_table_name_pods_ports_and_verdict() {
        let mut f = flow_on("n1", 5, 39294, true);
        if let Some(s) = f.source.as_mut() {
            s.namespace = "y".into();
            s.pod_name = "b".into();
        }
        let line = compact(&f);
        assert!(
            line.starts_with(
                "00:00:05.000 [n1]: y/b:39294 (ID:100) -> 10.0.0.2:80 (ID:200) drop ("
            ),
            "{line}"
        );
        assert!(line.contains(") DROPPED ("), "{line}");
        let cells = table_cells(&f, true);
        assert_eq!(cells.len(), table_headers(true).len());
        assert_eq!(cells[1], "n1");
        assert_eq!(table_cells(&f, false).len(), table_headers(false).len());
    }
}
