//! `weir debug enable|disable|status`: the kernel programs' debug messages,
//! switched on the agent (`Monitor.SetDebug`), read with `weir monitor
//! --type debug`.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;

use crate::agent::{self, rpc_error};
use crate::args::DebugCommand;

#[derive(Serialize)]
struct StateJson {
    endpoint_ids: Vec<u32>,
    node: bool,
}

fn print(state: &v1::DebugState, json: bool) -> Result<()> {
    if json {
        let state = StateJson {
            endpoint_ids: state.endpoint_ids.clone(),
            node: state.node,
        };
        println!("{}", serde_json::to_string(&state)?);
        return Ok(());
    }
    let endpoints = if state.endpoint_ids.is_empty() {
        "none".to_string()
    } else {
        let ids: Vec<String> = state.endpoint_ids.iter().map(u32::to_string).collect();
        ids.join(", ")
    };
    println!(
        "debug messages: node {}, endpoints: {endpoints}",
        if state.node { "on" } else { "off" }
    );
    Ok(())
}

pub async fn run(socket: &Path, command: &DebugCommand, json: bool) -> Result<()> {
    let mut client = agent::monitor(socket).await?;
    let state = match command {
        DebugCommand::Enable { endpoint } | DebugCommand::Disable { endpoint } => {
            let request = v1::SetDebugRequest {
                endpoint_id: endpoint.map(u32::from).unwrap_or(0),
                enabled: matches!(command, DebugCommand::Enable { .. }),
            };
            client.set_debug(request).await
        }
        DebugCommand::Status => client.get_debug(v1::GetDebugRequest {}).await,
    }
    .map_err(rpc_error)?
    .into_inner();
    print(&state, json)
}
