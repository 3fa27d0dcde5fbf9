//! `weir status`: the agent's health.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;

use crate::agent::{self, rpc_error};
use crate::output;

/// `-o json` (fields in key order, see [`crate::output`]).
#[derive(Serialize)]
struct StatusJson<'a> {
    datapath_loaded: bool,
    endpoints: u32,
    events_lost: u64,
    identities: u32,
    kvstore_connection: &'a str,
    kvstore_synced: bool,
    maps: Vec<MapFillJson<'a>>,
    node: &'a str,
    policies_in_force: u32,
    policies_rejected: u32,
    policy_map_entries: u64,
    reconcile_steps: Vec<StepJson<'a>>,
}

#[derive(Serialize)]
struct StepJson<'a> {
    consecutive_failures: u32,
    last_error: &'a str,
    name: &'a str,
    state: &'a str,
}

#[derive(Serialize)]
struct MapFillJson<'a> {
    capacity: u64,
    entries: u64,
    name: &'a str,
}

impl<'a> From<&'a v1::AgentStatus> for StatusJson<'a> {
    fn from(s: &'a v1::AgentStatus) -> Self {
        StatusJson {
            datapath_loaded: s.datapath_loaded,
            endpoints: s.endpoints,
            events_lost: s.events_lost,
            identities: s.identities,
            kvstore_connection: &s.kvstore_connection,
            kvstore_synced: s.kvstore_synced,
            maps: s
                .maps
                .iter()
                .map(|m| MapFillJson {
                    capacity: m.capacity,
                    entries: m.entries,
                    name: &m.name,
                })
                .collect(),
            node: &s.node_name,
            policies_in_force: s.policies_in_force,
            policies_rejected: s.policies_rejected,
            policy_map_entries: s.policy_map_entries,
            reconcile_steps: s
                .reconcile_steps
                .iter()
                .map(|step| StepJson {
                    consecutive_failures: step.consecutive_failures,
                    last_error: &step.last_error,
                    name: &step.name,
                    state: &step.state,
                })
                .collect(),
        }
    }
}

pub async fn run(socket: &Path, json: bool) -> Result<()> {
    let s = agent::inspect(socket)
        .await?
        .status(v1::StatusRequest2 {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_document(&StatusJson::from(&s));
    }
    print_text(&s);
    Ok(())
}

fn print_text(s: &v1::AgentStatus) {
    let yes_no = |ok: bool, yes: &'static str, no: &'static str| if ok { yes } else { no };
    println!("node:        {}", s.node_name);
    println!(
        "datapath:    {}",
        yes_no(s.datapath_loaded, "ok", "not loaded")
    );
    println!(
        "kvstore:     {}",
        kvstore_line(s.kvstore_synced, &s.kvstore_connection)
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
    for step in &s.reconcile_steps {
        println!("{}", step_line(step));
    }
}

/// `synced` or `not synced`, then the connection when there is one:
/// `synced, unreachable for 12 s: <error>`.
fn kvstore_line(synced: bool, connection: &str) -> String {
    let synced = if synced { "synced" } else { "not synced" };
    if connection.is_empty() {
        synced.to_string()
    } else {
        format!("{synced}, {connection}")
    }
}

/// `step <name> <state>`, with the failures in a row and the last error of
/// a failing step.
fn step_line(step: &v1::ReconcileStep) -> String {
    let mut line = format!("step {:<11} {}", step.name, step.state);
    if step.consecutive_failures > 0 {
        line.push_str(&format!(
            " ({} failures in a row)",
            step.consecutive_failures
        ));
    }
    if !step.last_error.is_empty() {
        line.push_str(&format!(": {}", step.last_error));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_unchanged() {
        let s = v1::AgentStatus {
            node_name: "n1".into(),
            datapath_loaded: true,
            maps: vec![
                v1::MapFill {
                    name: "weir_ipcache".into(),
                    entries: 3,
                    capacity: 512,
                },
                v1::MapFill {
                    name: "weir_ct".into(),
                    entries: 0,
                    capacity: 65536,
                },
            ],
            endpoints: 2,
            identities: 7,
            policies_in_force: 1,
            policies_rejected: 0,
            policy_map_entries: 6,
            events_lost: 9,
            kvstore_synced: false,
            kvstore_connection: "unreachable for 12 s: connection refused".into(),
            reconcile_steps: vec![
                v1::ReconcileStep {
                    name: "services".into(),
                    state: "failing".into(),
                    consecutive_failures: 3,
                    last_error: "LB map full".into(),
                },
                v1::ReconcileStep {
                    name: "policy".into(),
                    state: "ok".into(),
                    consecutive_failures: 0,
                    last_error: String::new(),
                },
            ],
        };
        assert_eq!(
            serde_json::to_string_pretty(&StatusJson::from(&s)).unwrap(),
            include_str!("../testdata/status.json")
        );
    }

    #[test]
    fn the_kvstore_line_says_sync_and_connection() {
        assert_eq!(kvstore_line(true, ""), "synced");
        assert_eq!(
            kvstore_line(true, "unreachable for 12 s: connection refused"),
            "synced, unreachable for 12 s: connection refused"
        );
    }

    #[test]
    fn a_failing_step_shows_its_failures_and_error() {
        let step = v1::ReconcileStep {
            name: "services".into(),
            state: "failing".into(),
            consecutive_failures: 3,
            last_error: "LB map full".into(),
        };
        assert_eq!(
            step_line(&step),
            "step services    failing (3 failures in a row): LB map full"
        );
    }
}
