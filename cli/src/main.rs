//! `weir`: the node CLI, talking to the local agent over its unix socket
//! (and, for `observe`, to a node's or a relay's Observer API).

use anyhow::Result;
use clap::Parser;

use args::{
    BpfCommand, BpfLbCommand, BpfPolicyCommand, Cli, Command, EndpointCommand, IdentityCommand,
    Output,
};

mod agent;
mod agent_events;
mod args;
mod bpf;
mod debug;
mod debug_events;
mod endpoint;
mod identity;
mod monitor;
mod observe;
mod output;
mod policy;
mod recorded;
mod services;
mod status;
mod table;
mod time;

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
    let socket = cli.socket.as_path();
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Observe(args) => observe::run(args, cli.output).await,
        Command::Monitor(args) => monitor::run(socket, args, json).await,
        Command::Debug { command } => debug::run(socket, command, json).await,
        Command::Policy { command } => policy::run(socket, command, json).await,
        Command::Status => status::run(socket, json).await,
        Command::Endpoint { command } => match command {
            EndpointCommand::List => endpoint::list(socket, json).await,
            EndpointCommand::Get { id } => endpoint::get(socket, *id, json).await,
        },
        Command::Identity { command } => match command {
            IdentityCommand::List => identity::list(socket, json).await,
            IdentityCommand::Get { id } => identity::get(socket, *id, json).await,
        },
        Command::Service { .. } => services::list(socket, json).await,
        Command::Bpf { command } => match command {
            BpfCommand::Ipcache { .. } => bpf::ipcache(socket, json).await,
            BpfCommand::Ct { .. } => bpf::conntrack(socket, json).await,
            BpfCommand::Policy {
                command: BpfPolicyCommand::Get { endpoint },
            } => bpf::policy_map(socket, *endpoint, json).await,
            BpfCommand::Lb {
                command: BpfLbCommand::List { maglev, nat },
            } => services::lb_maps(socket, json, *maglev, *nat).await,
        },
    }
}
