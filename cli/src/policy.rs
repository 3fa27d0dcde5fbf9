//! `weir policy get`, `weir policy trace` and `weir policy diff`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use weir_agent_api::v1;
use weir_types::NamespacedName;

use crate::agent::{self, rpc_error};
use crate::args::{PolicyCommand, PortProtocol, TlsArgs, TraceProtocol};
use crate::output::{self, enforcement};
use crate::recorded;

/// `policy get -o json` (fields in key order, see [`crate::output`]).
#[derive(Serialize)]
struct PolicyJson<'a> {
    endpoints: Vec<EndpointPolicyJson<'a>>,
    map_entries: u64,
    rejected: Vec<RejectedJson<'a>>,
    stale: Vec<StaleJson<'a>>,
}

#[derive(Serialize)]
struct EndpointPolicyJson<'a> {
    egress_enforced: bool,
    id: u32,
    identity: u32,
    ingress_enforced: bool,
    pod: String,
    rules: Vec<RuleJson<'a>>,
}

#[derive(Serialize)]
struct RuleJson<'a> {
    direction: &'static str,
    peer: &'a str,
    peer_labels: &'a [String],
    ports: &'a str,
    protocol: String,
    source: &'a str,
    verdict: &'static str,
}

#[derive(Serialize)]
struct RejectedJson<'a> {
    policy: &'a str,
    reasons: &'a [String],
}

/// An object whose previous valid version stays in force.
#[derive(Serialize)]
struct StaleJson<'a> {
    errors: &'a [String],
    object: &'a str,
}

/// `policy trace -o json`.
#[derive(Serialize)]
struct TraceJson<'a> {
    allowed: bool,
    explanation: &'a str,
}

impl<'a> From<&'a v1::GetPolicyResponse> for PolicyJson<'a> {
    fn from(response: &'a v1::GetPolicyResponse) -> Self {
        PolicyJson {
            endpoints: response.endpoints.iter().map(Into::into).collect(),
            map_entries: response.map_entries,
            rejected: response
                .rejected
                .iter()
                .map(|r| RejectedJson {
                    policy: &r.policy,
                    reasons: &r.reasons,
                })
                .collect(),
            stale: response
                .stale
                .iter()
                .map(|s| StaleJson {
                    errors: &s.errors,
                    object: &s.object,
                })
                .collect(),
        }
    }
}

impl<'a> From<&'a v1::EndpointPolicy> for EndpointPolicyJson<'a> {
    fn from(e: &'a v1::EndpointPolicy) -> Self {
        EndpointPolicyJson {
            egress_enforced: e.egress_enforced,
            id: e.endpoint_id,
            identity: e.identity,
            ingress_enforced: e.ingress_enforced,
            pod: pod(e).to_string(),
            rules: e.rules.iter().map(Into::into).collect(),
        }
    }
}

impl<'a> From<&'a v1::PolicyRule> for RuleJson<'a> {
    fn from(r: &'a v1::PolicyRule) -> Self {
        RuleJson {
            direction: output::direction(r.direction()),
            peer: &r.peer,
            peer_labels: &r.peer_labels,
            ports: &r.ports,
            // The policy API's spelling: `any`, `tcp`, `udp`, `sctp`.
            protocol: output::l4_protocol(r.protocol).to_ascii_lowercase(),
            source: &r.source,
            verdict: output::verdict(r.verdict()),
        }
    }
}

/// The endpoint's pod (`/` when the agent sent none).
fn pod(e: &v1::EndpointPolicy) -> NamespacedName {
    let pod = e.pod.clone().unwrap_or_default();
    NamespacedName::new(pod.namespace, pod.name)
}

fn pod_ref(pod: &NamespacedName) -> v1::PolicyPodRef {
    v1::PolicyPodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    }
}

fn trace_protocol(protocol: TraceProtocol) -> v1::L4Protocol {
    match protocol {
        TraceProtocol::Tcp => v1::L4Protocol::Tcp,
        TraceProtocol::Udp => v1::L4Protocol::Udp,
        TraceProtocol::Sctp => v1::L4Protocol::Sctp,
    }
}

pub async fn run(socket: &Path, command: &PolicyCommand, json: bool) -> Result<()> {
    match command {
        PolicyCommand::Get => get(socket, json).await,
        PolicyCommand::Trace { src, dst, port } => trace(socket, src, dst, *port, json).await,
        PolicyCommand::Diff {
            file,
            delete,
            since_seconds,
            server,
            tls,
        } => {
            let flows = match server {
                Some(server) => Flows::From(server, tls),
                None => Flows::Local,
            };
            diff(socket, file.as_deref(), delete, *since_seconds, flows, json).await
        }
    }
}

/// `policy diff -o json`: one line per changed group.
#[derive(Serialize)]
struct DiffJson<'a> {
    after: &'static str,
    before: &'static str,
    count: u64,
    decided_by: &'a str,
    destination: &'a str,
    port: u32,
    protocol: String,
    source: &'a str,
}

/// Whose recorded flows `policy diff` replays.
enum Flows<'a> {
    /// The agent's own observer's.
    Local,
    /// Those of the Observer API at this address (a relay's: every node's).
    From(&'a str, &'a TlsArgs),
}

async fn diff(
    socket: &Path,
    file: Option<&Path>,
    delete: &[String],
    since_seconds: Option<u64>,
    flows: Flows<'_>,
    json: bool,
) -> Result<()> {
    let candidate_yaml = match file {
        None => String::new(),
        Some(path) if path == Path::new("-") => std::io::read_to_string(std::io::stdin())?,
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    if candidate_yaml.trim().is_empty() && delete.is_empty() {
        bail!("nothing to preview: give the candidate policies with -f and/or --delete");
    }
    let mut read_from = None;
    let recorded = match flows {
        Flows::Local => None,
        Flows::From(server, tls) => {
            let read = recorded::read(server, tls, since_seconds)
                .await
                .with_context(|| format!("reading the flows of {server}"))?;
            for node in &read.unavailable {
                eprintln!("{node}: its flows are not replayed");
            }
            read_from = Some(read.nodes);
            Some(read.connections)
        }
    };
    let response = agent::policy(socket)
        .await?
        .diff(v1::DiffRequest {
            candidate_yaml,
            delete: delete.to_vec(),
            since_seconds: since_seconds.unwrap_or(0),
            recorded,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let verdict = |v: i32| {
        output::verdict(v1::PolicyVerdict::try_from(v).unwrap_or(v1::PolicyVerdict::Unspecified))
    };
    if json {
        output::json_lines(response.changes.iter().map(|c| DiffJson {
            after: verdict(c.after),
            before: verdict(c.before),
            count: c.count,
            decided_by: &c.decided_by,
            destination: &c.destination,
            port: c.port,
            protocol: output::l4_protocol(c.protocol),
            source: &c.source,
        }))?;
    } else {
        let nodes = match &read_from {
            None => String::new(),
            Some(nodes) => format!(
                " of {} node{} ({})",
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                nodes.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        println!(
            "{} groups of connections from {} flows{nodes} (the oldest {} s old) replayed; {} change:",
            response.groups,
            response.flows,
            response.oldest_flow_seconds,
            response.changes.len()
        );
        for c in &response.changes {
            let change = match (verdict(c.before), verdict(c.after)) {
                ("allow", "deny") => "newly denied ",
                ("deny", "allow") => "newly allowed",
                _ => "changed      ",
            };
            println!(
                "  {change} {} -> {} {}/{} ({} connection{})",
                c.source,
                c.destination,
                output::l4_protocol(c.protocol),
                c.port,
                c.count,
                if c.count == 1 { "" } else { "s" }
            );
            println!("      {}", c.decided_by);
        }
        for unknown in &response.unknown {
            println!("  not judged (a pod this agent no longer knows): {unknown}");
        }
    }
    if !response.changes.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

async fn get(socket: &Path, json: bool) -> Result<()> {
    let response = agent::policy(socket)
        .await?
        .get_policy(v1::GetPolicyRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_document(&PolicyJson::from(&response));
    }
    print_policy(&response);
    Ok(())
}

/// Prints the decision; a denied flow ends the process with status 1.
async fn trace(
    socket: &Path,
    src: &NamespacedName,
    dst: &NamespacedName,
    port: PortProtocol,
    json: bool,
) -> Result<()> {
    let response = agent::policy(socket)
        .await?
        .trace(v1::TraceRequest {
            src: Some(pod_ref(src)),
            dst: Some(pod_ref(dst)),
            protocol: trace_protocol(port.protocol).into(),
            port: port.port,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        output::json_lines([TraceJson {
            allowed: response.allowed,
            explanation: &response.explanation,
        }])?;
    } else {
        println!("{src} -> {dst} {port}");
        println!("{}", response.explanation);
    }
    if !response.allowed {
        std::process::exit(1);
    }
    Ok(())
}

fn print_policy(response: &v1::GetPolicyResponse) {
    for endpoint in &response.endpoints {
        println!(
            "endpoint {} {} identity {}: ingress {}, egress {}",
            endpoint.endpoint_id,
            pod(endpoint),
            endpoint.identity,
            enforcement(endpoint.ingress_enforced),
            enforcement(endpoint.egress_enforced)
        );
        for rule in endpoint.rules.iter().map(RuleJson::from) {
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
    for stale in &response.stale {
        println!("stale {} (previous version in force):", stale.object);
        for error in &stale.errors {
            println!("  {error}");
        }
    }
    println!("{} policy map entries", response.map_entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_json_is_unchanged() {
        let response = v1::GetPolicyResponse {
            endpoints: vec![
                v1::EndpointPolicy {
                    endpoint_id: 1,
                    pod: Some(v1::PolicyPodRef {
                        namespace: "x".into(),
                        name: "a".into(),
                    }),
                    identity: 14437,
                    ingress_enforced: true,
                    egress_enforced: false,
                    rules: vec![v1::PolicyRule {
                        direction: v1::TrafficDirection::Ingress.into(),
                        peer: "33020".into(),
                        peer_labels: vec!["k8s:ns=y".into()],
                        protocol: v1::L4Protocol::Tcp.into(),
                        ports: "80".into(),
                        verdict: v1::PolicyVerdict::Allow.into(),
                        source: "NetworkPolicy x/web (spec.ingress[0])".into(),
                    }],
                },
                v1::EndpointPolicy {
                    endpoint_id: 2,
                    pod: None,
                    ..Default::default()
                },
            ],
            rejected: vec![v1::RejectedPolicy {
                policy: "NetworkPolicy/y/bad".into(),
                reasons: vec!["port 70000".into()],
            }],
            map_entries: 6,
            stale: vec![v1::StaleObject {
                object: "WeirNetworkPolicy/x/deny".into(),
                errors: vec!["endPort 79 is below port 80".into()],
            }],
        };
        assert_eq!(
            serde_json::to_string_pretty(&PolicyJson::from(&response)).unwrap(),
            include_str!("../testdata/policy_get.json")
        );
    }

    #[test]
    fn trace_json_is_unchanged() {
        let trace = TraceJson {
            allowed: false,
            explanation: "a\nb \"q\"",
        };
        assert_eq!(
            serde_json::to_string(&trace).unwrap(),
            include_str!("../testdata/trace.json")
        );
    }
}
