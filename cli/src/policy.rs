//! `weir policy get` and `weir policy trace`.

use anyhow::{Context, Result};
use weir_agent_api::v1;

use crate::{rpc_error, Cli, Output, PolicyCommand};

fn pod_ref(text: &str) -> Result<v1::PolicyPodRef> {
    let (namespace, name) = text
        .split_once('/')
        .with_context(|| format!("expected NAMESPACE/POD, got {text:?}"))?;
    Ok(v1::PolicyPodRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

pub async fn run(cli: &Cli, command: &PolicyCommand) -> Result<()> {
    let mut client = weir_agent_api::connect_policy(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    match command {
        PolicyCommand::Get => {
            let response = client
                .get_policy(v1::GetPolicyRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&json_policy(&response))?);
            } else {
                print_policy(&response);
            }
        }
        PolicyCommand::Trace { src, dst, port } => {
            let (port, protocol) = port
                .split_once('/')
                .with_context(|| format!("expected PORT/PROTO, got {port:?}"))?;
            let port: u32 = port.parse().with_context(|| format!("bad port {port:?}"))?;
            let response = client
                .trace(v1::TraceRequest {
                    src: Some(pod_ref(src)?),
                    dst: Some(pod_ref(dst)?),
                    protocol: protocol.into(),
                    port,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if cli.output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"allowed": response.allowed, "explanation": response.explanation})
                );
            } else {
                println!("{src} -> {dst} {port}/{protocol}");
                println!("{}", response.explanation);
            }
            if !response.allowed {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn print_policy(response: &v1::GetPolicyResponse) {
    for endpoint in &response.endpoints {
        let pod = endpoint.pod.clone().unwrap_or_default();
        let mode = |enforced| if enforced { "enforced" } else { "allow-all" };
        println!(
            "endpoint {} {}/{} identity {}: ingress {}, egress {}",
            endpoint.endpoint_id,
            pod.namespace,
            pod.name,
            endpoint.identity,
            mode(endpoint.ingress_enforced),
            mode(endpoint.egress_enforced)
        );
        for rule in &endpoint.rules {
            println!(
                "  {:<7} {:<5} peer {:<10} {:<4} {:<11} {}{}",
                rule.direction,
                rule.verdict,
                rule.peer,
                rule.protocol,
                rule.ports,
                rule.source,
                if rule.peer_labels.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", rule.peer_labels.join(","))
                }
            );
        }
    }
    if response.endpoints.is_empty() {
        println!("no local endpoints");
    }
    for rejected in &response.rejected {
        println!("rejected {}:", rejected.policy);
        for reason in &rejected.reasons {
            println!("  {reason}");
        }
    }
    println!("{} policy map entries", response.map_entries);
}

fn json_policy(response: &v1::GetPolicyResponse) -> serde_json::Value {
    serde_json::json!({
        "endpoints": response.endpoints.iter().map(|e| {
            let pod = e.pod.clone().unwrap_or_default();
            serde_json::json!({
                "id": e.endpoint_id,
                "pod": format!("{}/{}", pod.namespace, pod.name),
                "identity": e.identity,
                "ingress_enforced": e.ingress_enforced,
                "egress_enforced": e.egress_enforced,
                "rules": e.rules.iter().map(|r| serde_json::json!({
                    "direction": r.direction, "verdict": r.verdict, "peer": r.peer,
                    "peer_labels": r.peer_labels, "protocol": r.protocol, "ports": r.ports,
                    "source": r.source,
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "rejected": response.rejected.iter().map(|r| serde_json::json!({
            "policy": r.policy, "reasons": r.reasons,
        })).collect::<Vec<_>>(),
        "map_entries": response.map_entries,
    })
}
