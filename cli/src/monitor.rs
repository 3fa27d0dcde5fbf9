//! `weir monitor`: the datapath's raw events, one line each (or JSON), as
//! they happen, until interrupted.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::json;
use weir_agent_api::v1;

use crate::{rpc_error, Cli, MonitorArgs, Output};

fn time(t: &Option<prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let since = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    let secs = (SystemTime::UNIX_EPOCH + since)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", since.subsec_millis())
}

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
    let what = match e.kind.as_str() {
        "drop" => format!("drop reason {} ({})", e.reason, e.reason_name),
        "trace" => format!(
            "trace {} ({}) ct {}",
            e.observation_point_name, e.observation_point, e.reason_name
        ),
        "policy-verdict" => {
            let mut text = format!(
                "policy-verdict {} {} match {}",
                e.direction, e.verdict, e.match_type
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
        time(&e.time),
        e.node_name,
        e.endpoint_id,
        e.ifindex,
        e.src_identity,
        e.dst_identity,
        e.packet_len
    )
}

pub fn event_json(e: &v1::MonitorEvent) -> serde_json::Value {
    json!({
        "time": e.time.as_ref().map(|t| format!("{}.{:09}", t.seconds, t.nanos)),
        "node_name": e.node_name,
        "kind": e.kind, "kind_code": e.kind_code,
        "reason": e.reason, "reason_name": e.reason_name,
        "observation_point": e.observation_point,
        "observation_point_name": e.observation_point_name,
        "direction": e.direction, "verdict": e.verdict, "match_type": e.match_type,
        "src_identity": e.src_identity, "dst_identity": e.dst_identity,
        "src_ip": e.src_ip, "dst_ip": e.dst_ip,
        "src_port": e.src_port, "dst_port": e.dst_port,
        "protocol": e.protocol, "protocol_name": e.protocol_name,
        "tcp_flags": e.tcp_flags, "icmp_type": e.icmp_type,
        "ifindex": e.ifindex, "endpoint_id": e.endpoint_id,
        "packet_len": e.packet_len, "ct_direction": e.ct_direction,
    })
}

pub async fn run(cli: &Cli, args: &MonitorArgs) -> Result<()> {
    let mut client = weir_agent_api::connect_monitor(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    let mut stream = client
        .events(v1::MonitorRequest {
            types: args.types.clone(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    // On stderr, so JSON output stays clean; printed once subscribed.
    eprintln!("Listening for datapath events (Ctrl-C to quit)...");
    let mut stdout = std::io::stdout().lock();
    while let Some(response) = stream.message().await.map_err(rpc_error)? {
        match response.response {
            Some(v1::monitor_response::Response::Event(e)) => {
                let text = if cli.output == Output::Json {
                    event_json(&e).to_string()
                } else {
                    line(&e)
                };
                // A reader that went away (`| head`) ends the stream quietly.
                if writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
            Some(v1::monitor_response::Response::Lost(n)) => {
                eprintln!("lost {n} events: the listener fell behind");
            }
            None => {}
        }
    }
    Ok(())
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
            protocol: 6,
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
            direction: "ingress".into(),
            verdict: "deny".into(),
            match_type: "none".into(),
            ..drop_event()
        };
        assert!(line(&verdict)
            .contains("policy-verdict ingress deny match none reason 133 (Policy denied),"));
    }

    #[test]
    fn json_keeps_every_field() {
        let v = event_json(&drop_event());
        assert_eq!(v["reason"], 133);
        assert_eq!(v["reason_name"], "Policy denied");
        assert_eq!(v["ifindex"], 12);
        assert_eq!(v["src_port"], 39294);
        assert_eq!(v["time"], "3661.005000000");
    }
}
