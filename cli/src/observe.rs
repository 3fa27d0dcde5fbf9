//! `weir observe`: flows from a node's Observer API or a relay's, one line
//! each, a table, or JSON, with Hubble-like filters.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use weir_observer::proto::flow::{self, EventTypeFilter, Flow, FlowFilter};
use weir_observer::proto::observer::{get_flows_response, GetFlowsRequest};
use weir_observer::proto::relay::{NodeState, NodeStatusEvent};
use weir_observer::Target;

use crate::table::{StreamingTable, Table};
use crate::{ObserveArgs, Output};

/// How long to wait for the Observer API to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn verdict_number(text: &str) -> Result<i32> {
    flow::Verdict::from_str_name(&text.to_ascii_uppercase())
        .map(|v| v as i32)
        .with_context(|| format!("unknown verdict {text:?}"))
}

fn event_type_number(text: &str) -> Result<i32> {
    match text {
        "drop" => Ok(1),
        "trace" => Ok(4),
        "policy-verdict" => Ok(5),
        other => anyhow::bail!("unknown event type {other:?} (drop, trace, policy-verdict)"),
    }
}

/// The whitelist: every flag ANDed into one filter; `--namespace` makes two
/// (from or to that namespace).
fn filters(args: &ObserveArgs) -> Result<Vec<FlowFilter>> {
    let mut base = FlowFilter {
        source_pod: args.from_pod.clone(),
        destination_pod: args.to_pod.clone(),
        protocol: args.protocol.clone(),
        ..Default::default()
    };
    for v in &args.verdict {
        base.verdict.push(verdict_number(v)?);
    }
    for t in &args.event_type {
        base.event_type.push(EventTypeFilter {
            r#type: event_type_number(t)?,
            match_sub_type: false,
            sub_type: 0,
        });
    }
    let mut out = Vec::new();
    let with_ports = |filter: FlowFilter| -> Vec<FlowFilter> {
        if args.port.is_empty() {
            return vec![filter];
        }
        vec![
            FlowFilter {
                source_port: args.port.clone(),
                ..filter.clone()
            },
            FlowFilter {
                destination_port: args.port.clone(),
                ..filter
            },
        ]
    };
    match &args.namespace {
        Some(ns) => {
            let ns = format!("{}/", ns.trim_end_matches('/'));
            out.extend(with_ports(FlowFilter {
                source_pod: vec![ns.clone()],
                ..base.clone()
            }));
            out.extend(with_ports(FlowFilter {
                destination_pod: vec![ns],
                ..base
            }));
        }
        None => out.extend(with_ports(base)),
    }
    Ok(out)
}

fn endpoint(ep: &Option<flow::Endpoint>, ip: &str, port: Option<u32>) -> String {
    let name = match ep {
        Some(e) if !e.pod_name.is_empty() => format!("{}/{}", e.namespace, e.pod_name),
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

fn ports(f: &Flow) -> (Option<u32>, Option<u32>) {
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(flow::layer4::Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
        Some(flow::layer4::Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
        Some(flow::layer4::Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
        _ => (None, None),
    }
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
    let time = f
        .time
        .as_ref()
        .map(|t| {
            let d = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
            humantime(SystemTime::UNIX_EPOCH + d)
        })
        .unwrap_or_default();
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
        time,
        source: endpoint(&f.source, &src_ip, sport),
        destination: endpoint(&f.destination, &dst_ip, dport),
        kind,
        verdict: flow::Verdict::try_from(f.verdict).map_or("UNKNOWN", |v| v.as_str_name()),
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
fn table_headers(node: bool) -> Vec<&'static str> {
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

fn table_cells(f: &Flow, node: bool) -> Vec<String> {
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
fn node_status_text(event: &NodeStatusEvent) -> Option<String> {
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

fn humantime(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", since.subsec_millis())
}

/// Where the flows go: printed as they come, or a table printed at the end.
enum Sink {
    Lines(Output),
    Streaming(StreamingTable),
    Whole(Table),
}

pub async fn run(args: &ObserveArgs, output: Output) -> Result<()> {
    let target = Target::parse(&args.server)?;
    let mut client = target.connect(CONNECT_TIMEOUT).await?;
    let since = args.since_seconds.map(|s| {
        let t = SystemTime::now() - Duration::from_secs(s);
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    });
    let request = GetFlowsRequest {
        number: args.last.unwrap_or(if args.follow { 0 } else { 20 }),
        follow: args.follow,
        whitelist: filters(args)?,
        since,
        ..Default::default()
    };
    let mut stream = client.get_flows(request).await?.into_inner();
    let mut stdout = std::io::stdout().lock();
    let headers = table_headers(args.print_node_name);
    let mut sink = match output {
        Output::Table if args.follow => {
            let mut table = StreamingTable::new(&[12, 30, 30, 14, 9]);
            if args.print_node_name {
                table = StreamingTable::new(&[12, 8, 30, 30, 14, 9]);
            }
            if writeln!(stdout, "{}", table.header(&headers)).is_err() {
                return Ok(());
            }
            Sink::Streaming(table)
        }
        Output::Table => Sink::Whole(Table::new(&headers)),
        other => Sink::Lines(other),
    };
    while let Some(response) = stream.message().await? {
        match response.response_types {
            Some(get_flows_response::ResponseTypes::Flow(f)) => {
                let line = match &mut sink {
                    Sink::Whole(table) => {
                        table.row(table_cells(&f, args.print_node_name));
                        continue;
                    }
                    Sink::Streaming(table) => table.line(&table_cells(&f, args.print_node_name)),
                    Sink::Lines(Output::Json) => serde_json::to_string(&flow_json(&f))?,
                    Sink::Lines(_) => compact(&f),
                };
                // A reader that went away (`| head`) ends the stream quietly.
                if writeln!(stdout, "{line}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
            Some(get_flows_response::ResponseTypes::NodeStatus(event)) => {
                if let Some(text) = node_status_text(&event) {
                    eprintln!("{text}");
                }
            }
            Some(get_flows_response::ResponseTypes::LostEvents(lost)) => {
                eprintln!("lost {} flows", lost.num_events_lost);
            }
            None => {}
        }
    }
    if let Sink::Whole(table) = sink {
        // Ends quietly in a closed pipe, like the lines above.
        let _ = write!(stdout, "{}", table.render());
    }
    Ok(())
}

fn flow_json(f: &Flow) -> serde_json::Value {
    let (sport, dport) = ports(f);
    let ep = |e: &Option<flow::Endpoint>| {
        e.as_ref().map(|e| {
            serde_json::json!({
                "namespace": e.namespace, "pod_name": e.pod_name, "identity": e.identity, "labels": e.labels,
            })
        })
    };
    let service = |s: &Option<flow::Service>| {
        s.as_ref()
            .map(|s| serde_json::json!({"name": s.name, "namespace": s.namespace}))
    };
    serde_json::json!({
        "time": f.time.as_ref().map(|t| format!("{}.{:09}", t.seconds, t.nanos)),
        "node_name": f.node_name,
        "verdict": flow::Verdict::try_from(f.verdict).map_or("UNKNOWN", |v| v.as_str_name()),
        "drop_reason_desc": flow::DropReason::try_from(f.drop_reason_desc).map_or("UNKNOWN", |r| r.as_str_name()),
        "event_type": f.event_type.as_ref().map(|e| e.r#type),
        "source": ep(&f.source),
        "destination": ep(&f.destination),
        "IP": f.ip.as_ref().map(|ip| serde_json::json!({"source": ip.source, "destination": ip.destination})),
        "source_port": sport,
        "destination_port": dport,
        "source_service": service(&f.source_service),
        "destination_service": service(&f.destination_service),
        "traffic_direction": flow::TrafficDirection::try_from(f.traffic_direction).map_or("UNKNOWN", |d| d.as_str_name()),
        "is_reply": f.is_reply,
        "Summary": f.summary,
    })
}
