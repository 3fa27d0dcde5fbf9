//! `weir`: the node CLI, talking to the local agent over its unix socket.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use weir_agent_api::v1;

mod observe;
mod services;

#[derive(Parser)]
#[command(name = "weir", version, about = "Inspect a Weir agent")]
pub struct Cli {
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
    /// Agent health: datapath, map fill, endpoints, identities, policy, event loss.
    Status,
    /// Local endpoints.
    Endpoint {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Identities known to this agent.
    Identity {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Services this node balances: frontends and their backends.
    Service {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Content of the datapath maps.
    Bpf {
        #[command(subcommand)]
        command: BpfCommand,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    List,
}

#[derive(Subcommand)]
enum BpfCommand {
    /// The ipcache: prefix -> identity.
    Ipcache {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Connection tracking entries.
    Ct {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Policy map entries of an endpoint.
    Policy {
        #[command(subcommand)]
        command: BpfPolicyCommand,
    },
    /// The load-balancing maps: services and backend slots, backends,
    /// reverse NAT (and with flags the Maglev tables and NAT mappings).
    Lb {
        #[command(subcommand)]
        command: BpfLbCommand,
    },
}

#[derive(Subcommand)]
enum BpfLbCommand {
    List {
        /// Also print every Maglev table.
        #[arg(long)]
        maglev: bool,
        /// Also print the per-packet NAT mappings.
        #[arg(long)]
        nat: bool,
    },
}

#[derive(Subcommand)]
enum BpfPolicyCommand {
    /// `weir bpf policy get ENDPOINT_ID`
    Get { endpoint: u32 },
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
    // Behave like other CLIs in a pipeline: `weir ... | head` ends quietly.
    // SAFETY: restoring the default disposition of SIGPIPE before any other
    // thread or handler exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Observe(args) => return observe::run(args, json).await,
        Command::Service { .. } => return services::list(&cli, json).await,
        Command::Bpf {
            command:
                BpfCommand::Lb {
                    command: BpfLbCommand::List { maglev, nat },
                },
        } => return services::lb_maps(&cli, json, *maglev, *nat).await,
        Command::Status | Command::Identity { .. } | Command::Bpf { .. } => {
            return inspect(&cli, json).await;
        }
        Command::Endpoint { .. } => return endpoints(&cli, json).await,
        Command::Policy { .. } => {}
    }
    let mut client = weir_agent_api::connect_policy(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    match cli.command {
        Command::Observe(_)
        | Command::Service { .. }
        | Command::Status
        | Command::Endpoint { .. }
        | Command::Identity { .. }
        | Command::Bpf { .. } => unreachable!("handled above"),
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

async fn endpoints(cli: &Cli, json: bool) -> Result<()> {
    let mut client = weir_agent_api::connect(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    let response = client
        .list_endpoints(v1::ListEndpointsRequest {})
        .await?
        .into_inner();
    if json {
        let rows: Vec<serde_json::Value> = response
            .endpoints
            .iter()
            .map(|e| {
                let pod = e.pod.clone().unwrap_or_default();
                serde_json::json!({"id": e.id, "pod": format!("{}/{}", pod.namespace, pod.name),
                    "ipv4": e.ipv4, "host_ifname": e.host_ifname, "host_ifindex": e.host_ifindex, "mac": e.mac})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<30} {:<18} {:<16} MAC",
        "ID", "POD", "IPV4", "HOST IF"
    );
    for e in &response.endpoints {
        let pod = e.pod.clone().unwrap_or_default();
        println!(
            "{:<6} {:<30} {:<18} {:<16} {}",
            e.id,
            format!("{}/{}", pod.namespace, pod.name),
            e.ipv4,
            e.host_ifname,
            e.mac
        );
    }
    Ok(())
}

async fn inspect(cli: &Cli, json: bool) -> Result<()> {
    let mut client = weir_agent_api::connect_inspect(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    match &cli.command {
        Command::Status => {
            let s = client.status(v1::StatusRequest2 {}).await?.into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "node": s.node_name, "datapath_loaded": s.datapath_loaded,
                        "endpoints": s.endpoints, "identities": s.identities,
                        "policies_in_force": s.policies_in_force, "policies_rejected": s.policies_rejected,
                        "policy_map_entries": s.policy_map_entries, "events_lost": s.events_lost,
                        "kvstore_synced": s.kvstore_synced,
                        "maps": s.maps.iter().map(|m| serde_json::json!({"name": m.name, "entries": m.entries, "capacity": m.capacity})).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!("node:        {}", s.node_name);
                println!(
                    "datapath:    {}",
                    if s.datapath_loaded {
                        "ok"
                    } else {
                        "not loaded"
                    }
                );
                println!(
                    "kvstore:     {}",
                    if s.kvstore_synced {
                        "synced"
                    } else {
                        "not synced"
                    }
                );
                println!("endpoints:   {}", s.endpoints);
                println!("identities:  {}", s.identities);
                println!(
                    "policies:    {} in force, {} rejected, {} map entries",
                    s.policies_in_force, s.policies_rejected, s.policy_map_entries
                );
                println!("events lost: {}", s.events_lost);
                for m in &s.maps {
                    let pct = if m.capacity == 0 {
                        0.0
                    } else {
                        100.0 * m.entries as f64 / m.capacity as f64
                    };
                    println!(
                        "map {:<16} {:>7} / {:<7} ({pct:.1}%)",
                        m.name, m.entries, m.capacity
                    );
                }
            }
        }
        Command::Identity { .. } => {
            let r = client
                .list_identities(v1::ListRequest {})
                .await?
                .into_inner();
            for i in &r.identities {
                if json {
                    println!("{}", serde_json::json!({"id": i.id, "labels": i.labels}));
                } else {
                    println!("{:<10} {}", i.id, i.labels.join(" "));
                }
            }
        }
        Command::Bpf {
            command: BpfCommand::Ipcache { .. },
        } => {
            let r = client.list_ipcache(v1::ListRequest {}).await?.into_inner();
            for e in &r.entries {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"prefix": e.prefix, "identity": e.identity, "node_ip": e.node_ip})
                    );
                } else {
                    println!(
                        "{:<22} identity={:<10} node={}",
                        e.prefix, e.identity, e.node_ip
                    );
                }
            }
        }
        Command::Bpf {
            command: BpfCommand::Ct { .. },
        } => {
            let r = client
                .list_conntrack(v1::ListRequest {})
                .await?
                .into_inner();
            for e in &r.entries {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"scope": e.scope, "protocol": e.protocol, "source": e.source,
                        "destination": e.destination, "expires_in_seconds": e.expires_in_seconds,
                        "packets_forward": e.packets_forward, "packets_reply": e.packets_reply, "tcp_flags": e.tcp_flags})
                    );
                } else {
                    println!(
                        "{:<7} {:<6} {} -> {} expires {}s fwd={} rev={} {}",
                        e.scope,
                        e.protocol,
                        e.source,
                        e.destination,
                        e.expires_in_seconds,
                        e.packets_forward,
                        e.packets_reply,
                        e.tcp_flags
                    );
                }
            }
        }
        Command::Bpf {
            command:
                BpfCommand::Policy {
                    command: BpfPolicyCommand::Get { endpoint },
                },
        } => {
            let r = client
                .policy_map(v1::PolicyMapRequest {
                    endpoint_id: *endpoint,
                })
                .await?
                .into_inner();
            for e in &r.entries {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"direction": e.direction, "identity": e.identity,
                        "protocol": e.protocol, "ports": e.ports, "verdict": e.verdict, "prefix_len": e.prefix_len})
                    );
                } else {
                    let peer = if e.identity == 0 {
                        "any".to_string()
                    } else {
                        e.identity.to_string()
                    };
                    println!(
                        "{:<8} {:<5} peer {:<10} {:<6} {}",
                        e.direction, e.verdict, peer, e.protocol, e.ports
                    );
                }
            }
        }
        _ => unreachable!("not an inspection command"),
    }
    Ok(())
}
