//! `weir status`, `weir endpoint list|get`, `weir identity list|get` and
//! `weir bpf ipcache|ct|policy`: the agent's state and its datapath maps.
//! Lists print as aligned tables (text and `-o table` alike); `-o json`
//! prints JSON.

use anyhow::{Context, Result};
use serde_json::json;
use tonic::transport::Channel;
use weir_agent_api::v1;
use weir_agent_api::v1::inspect_client::InspectClient;

use crate::table::Table;
use crate::{
    rpc_error, BpfCommand, BpfPolicyCommand, Cli, Command, EndpointCommand, IdentityCommand, Output,
};

fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn client(cli: &Cli) -> Result<InspectClient<Channel>> {
    weir_agent_api::connect_inspect(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))
}

pub async fn run(cli: &Cli) -> Result<()> {
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Status => status(cli, json).await,
        Command::Endpoint {
            command: EndpointCommand::List,
        } => endpoint_list(cli, json).await,
        Command::Endpoint {
            command: EndpointCommand::Get { id },
        } => endpoint_get(cli, *id, json).await,
        Command::Identity {
            command: IdentityCommand::List,
        } => identity_list(cli, json).await,
        Command::Identity {
            command: IdentityCommand::Get { id },
        } => identity_get(cli, *id, json).await,
        Command::Bpf {
            command: BpfCommand::Ipcache { .. },
        } => ipcache(cli, json).await,
        Command::Bpf {
            command: BpfCommand::Ct { .. },
        } => conntrack(cli, json).await,
        Command::Bpf {
            command:
                BpfCommand::Policy {
                    command: BpfPolicyCommand::Get { endpoint },
                },
        } => policy_map(cli, *endpoint, json).await,
        _ => unreachable!("not an inspection command"),
    }
}

async fn status(cli: &Cli, json: bool) -> Result<()> {
    let s = client(cli)
        .await?
        .status(v1::StatusRequest2 {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return print_json(&json!({
            "node": s.node_name, "datapath_loaded": s.datapath_loaded,
            "endpoints": s.endpoints, "identities": s.identities,
            "policies_in_force": s.policies_in_force, "policies_rejected": s.policies_rejected,
            "policy_map_entries": s.policy_map_entries, "events_lost": s.events_lost,
            "kvstore_synced": s.kvstore_synced,
            "maps": s.maps.iter().map(|m| json!({"name": m.name, "entries": m.entries, "capacity": m.capacity})).collect::<Vec<_>>(),
        }));
    }
    let yes_no = |ok: bool, yes: &'static str, no: &'static str| if ok { yes } else { no };
    println!("node:        {}", s.node_name);
    println!(
        "datapath:    {}",
        yes_no(s.datapath_loaded, "ok", "not loaded")
    );
    println!(
        "kvstore:     {}",
        yes_no(s.kvstore_synced, "synced", "not synced")
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
    Ok(())
}

fn pod(p: &Option<v1::PodRef>) -> String {
    p.as_ref()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .unwrap_or_default()
}

async fn endpoint_list(cli: &Cli, json: bool) -> Result<()> {
    let mut client = weir_agent_api::connect(&cli.socket)
        .await
        .with_context(|| format!("cannot reach the agent at {}", cli.socket.display()))?;
    let response = client
        .list_endpoints(v1::ListEndpointsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        let rows: Vec<serde_json::Value> = response
            .endpoints
            .iter()
            .map(|e| {
                json!({"id": e.id, "pod": pod(&e.pod), "ipv4": e.ipv4, "host_ifname": e.host_ifname,
                    "host_ifindex": e.host_ifindex, "mac": e.mac})
            })
            .collect();
        return print_json(&json!(rows));
    }
    let mut table = Table::new(&["ID", "POD", "IPV4", "HOST IF", "MAC"]);
    for e in &response.endpoints {
        table.row(vec![
            e.id.to_string(),
            pod(&e.pod),
            e.ipv4.clone(),
            e.host_ifname.clone(),
            e.mac.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// `key:` and its value, values aligned.
fn field(key: &str, value: impl std::fmt::Display) {
    list(key, &[value.to_string()]);
}

/// `key:` then the first value, further values aligned under it.
fn list(key: &str, values: &[String]) {
    let label = format!("{key}:");
    match values.split_first() {
        None => println!("{label}"),
        Some((first, rest)) => {
            println!("{label:<17}{first}");
            for value in rest {
                println!("{:<17}{value}", "");
            }
        }
    }
}

fn enforcement(enforced: bool) -> String {
    if enforced { "enforced" } else { "allow-all" }.to_string()
}

async fn endpoint_get(cli: &Cli, id: u32, json: bool) -> Result<()> {
    let e = client(cli)
        .await?
        .get_endpoint(v1::EndpointDetailRequest { id })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return print_json(&json!({
            "id": e.id, "namespace": e.namespace, "pod": e.pod, "labels": e.labels,
            "identity": e.identity, "addresses": e.addresses, "ifindex": e.ifindex,
            "interface": e.interface, "mac": e.mac, "ingress_enforced": e.ingress_enforced,
            "egress_enforced": e.egress_enforced, "policy_map_entries": e.policy_map_entries,
            "container_id": e.container_id, "netns": e.netns,
        }));
    }
    field("ID", e.id);
    field("Pod", format!("{}/{}", e.namespace, e.pod));
    let identity = if e.identity == 0 {
        "none yet".to_string()
    } else {
        e.identity.to_string()
    };
    field("Identity", identity);
    list("Labels", &e.labels);
    list("Addresses", &e.addresses);
    field(
        "Interface",
        format!("{} (ifindex {})", e.interface, e.ifindex),
    );
    field("MAC", &e.mac);
    field("Ingress policy", enforcement(e.ingress_enforced));
    field("Egress policy", enforcement(e.egress_enforced));
    field("Policy map", format!("{} entries", e.policy_map_entries));
    field("Container", &e.container_id);
    field("Netns", &e.netns);
    Ok(())
}

async fn identity_list(cli: &Cli, json: bool) -> Result<()> {
    let r = client(cli)
        .await?
        .list_identities(v1::ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        for i in &r.identities {
            println!("{}", json!({"id": i.id, "labels": i.labels}));
        }
        return Ok(());
    }
    // One row per label, as `cilium identity list` prints them.
    let mut table = Table::new(&["ID", "LABELS"]);
    for i in &r.identities {
        let mut labels = i.labels.iter();
        table.row(vec![
            i.id.to_string(),
            labels.next().cloned().unwrap_or_default(),
        ]);
        for label in labels {
            table.row(vec![String::new(), label.clone()]);
        }
    }
    print!("{}", table.render());
    Ok(())
}

async fn identity_get(cli: &Cli, id: u32, json: bool) -> Result<()> {
    let i = client(cli)
        .await?
        .get_identity(v1::IdentityDetailRequest { id })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let endpoints: Vec<String> = i
        .endpoints
        .iter()
        .map(|e| format!("{} ({}/{})", e.id, e.namespace, e.pod))
        .collect();
    if json {
        return print_json(&json!({
            "id": i.id, "scope": i.scope, "labels": i.labels,
            "endpoints": i.endpoints.iter().map(|e| json!({"id": e.id, "pod": format!("{}/{}", e.namespace, e.pod)})).collect::<Vec<_>>(),
        }));
    }
    field("ID", i.id);
    field("Scope", &i.scope);
    list("Labels", &i.labels);
    if endpoints.is_empty() {
        field("Local endpoints", "none");
    } else {
        list("Local endpoints", &endpoints);
    }
    Ok(())
}

async fn ipcache(cli: &Cli, json: bool) -> Result<()> {
    let r = client(cli)
        .await?
        .list_ipcache(v1::ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        for e in &r.entries {
            println!(
                "{}",
                json!({"prefix": e.prefix, "identity": e.identity, "node_ip": e.node_ip})
            );
        }
        return Ok(());
    }
    let mut table = Table::new(&["PREFIX", "IDENTITY", "NODE"]);
    for e in &r.entries {
        table.row(vec![
            e.prefix.clone(),
            e.identity.to_string(),
            e.node_ip.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn conntrack(cli: &Cli, json: bool) -> Result<()> {
    let r = client(cli)
        .await?
        .list_conntrack(v1::ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        for e in &r.entries {
            println!(
                "{}",
                json!({"scope": e.scope, "protocol": e.protocol, "source": e.source,
                "destination": e.destination, "expires_in_seconds": e.expires_in_seconds,
                "packets_forward": e.packets_forward, "packets_reply": e.packets_reply, "tcp_flags": e.tcp_flags})
            );
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "SCOPE",
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "EXPIRES",
        "FWD",
        "REV",
        "FLAGS",
    ]);
    for e in &r.entries {
        table.row(vec![
            e.scope.clone(),
            e.protocol.clone(),
            e.source.clone(),
            e.destination.clone(),
            format!("{}s", e.expires_in_seconds),
            e.packets_forward.to_string(),
            e.packets_reply.to_string(),
            e.tcp_flags.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn policy_map(cli: &Cli, endpoint: u32, json: bool) -> Result<()> {
    let r = client(cli)
        .await?
        .policy_map(v1::PolicyMapRequest {
            endpoint_id: endpoint,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        for e in &r.entries {
            println!(
                "{}",
                json!({"direction": e.direction, "identity": e.identity,
                "protocol": e.protocol, "ports": e.ports, "verdict": e.verdict, "prefix_len": e.prefix_len})
            );
        }
        return Ok(());
    }
    let mut table = Table::new(&["DIRECTION", "VERDICT", "PEER", "PROTOCOL", "PORTS"]);
    for e in &r.entries {
        let peer = if e.identity == 0 {
            "any".to_string()
        } else {
            e.identity.to_string()
        };
        table.row(vec![
            e.direction.clone(),
            e.verdict.clone(),
            peer,
            e.protocol.clone(),
            e.ports.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
