//! `weir`: the node CLI, talking to the local agent over its unix socket.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use weir_agent_api::v1;

mod observe;

#[derive(Parser)]
#[command(name = "weir", version, about = "Inspect a Weir agent")]
struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, default_value = weir_agent_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Policy in force on this node's endpoints.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Flows seen by this node's datapath (Hubble's `observe`).
    Observe(ObserveArgs),
}

#[derive(clap::Args)]
struct ObserveArgs {
    /// The Observer API's unix socket.
    #[arg(long, default_value = "/var/run/weir/hubble.sock")]
    server: PathBuf,
    /// Keep streaming new flows.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Show the last N flows (default 20 unless following).
    #[arg(long)]
    last: Option<u64>,
    /// Only flows from this pod (`NAMESPACE/POD`, or `NAMESPACE/` for all).
    #[arg(long)]
    from_pod: Vec<String>,
    /// Only flows to this pod.
    #[arg(long)]
    to_pod: Vec<String>,
    /// Only flows from or to this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// FORWARDED, DROPPED, ...
    #[arg(long)]
    verdict: Vec<String>,
    /// drop, trace or policy-verdict.
    #[arg(long = "type")]
    event_type: Vec<String>,
    /// tcp, udp, icmp, ...
    #[arg(long)]
    protocol: Vec<String>,
    /// Source or destination port.
    #[arg(long)]
    port: Vec<String>,
    /// Only flows newer than this many seconds.
    #[arg(long)]
    since_seconds: Option<u64>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// What is in force, per endpoint, and which policies were rejected.
    Get,
    /// Would SRC reach DST on PORT/PROTO? Names the policy and rule that decide.
    Trace {
        /// NAMESPACE/POD
        #[arg(long)]
        src: String,
        /// NAMESPACE/POD
        #[arg(long)]
        dst: String,
        /// PORT/PROTO, e.g. 80/tcp
        #[arg(long)]
        port: String,
    },
}

fn pod_ref(text: &str) -> Result<v1::PolicyPodRef> {
    let (namespace, name) = text
        .split_once('/')
        .with_context(|| format!("expected NAMESPACE/POD, got {text:?}"))?;
    Ok(v1::PolicyPodRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Observe(args) = &cli.command {
        return observe::run(args, cli.output == Output::Json).await;
    }
    let mut client = weir_agent_api::connect_policy(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    match cli.command {
        Command::Observe(_) => unreachable!("handled above"),
        Command::Policy {
            command: PolicyCommand::Get,
        } => {
            let response = client
                .get_policy(v1::GetPolicyRequest {})
                .await?
                .into_inner();
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&json_policy(&response))?);
            } else {
                print_policy(&response);
            }
        }
        Command::Policy {
            command: PolicyCommand::Trace { src, dst, port },
        } => {
            let (port, protocol) = port
                .split_once('/')
                .with_context(|| format!("expected PORT/PROTO, got {port:?}"))?;
            let port: u32 = port.parse().with_context(|| format!("bad port {port:?}"))?;
            let response = client
                .trace(v1::TraceRequest {
                    src: Some(pod_ref(&src)?),
                    dst: Some(pod_ref(&dst)?),
                    protocol: protocol.into(),
                    port,
                })
                .await?
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
