//! `weir`: the node CLI, talking to the local agent over its unix socket
//! (and, for `observe`, to a node's or a relay's Observer API).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

mod inspect;
mod monitor;
mod observe;
mod policy;
mod services;
mod table;

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
    /// Lines for people (`observe`: Hubble's compact lines).
    #[value(alias = "compact")]
    Text,
    Json,
    /// Aligned columns with a header.
    Table,
}

#[derive(Subcommand)]
enum Command {
    /// Policy in force on this node's endpoints.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Flows seen by this node's datapath, or by every node through a
    /// relay (Hubble's `observe`).
    Observe(ObserveArgs),
    /// The datapath's raw events as they happen (like `cilium monitor`).
    Monitor(MonitorArgs),
    /// Agent health: datapath, map fill, endpoints, identities, policy, event loss.
    Status,
    /// Local endpoints.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Identities known to this agent.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
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
enum EndpointCommand {
    /// Every local endpoint.
    List,
    /// One endpoint in full: pod, identity and labels, addresses,
    /// interface, policy enforcement, policy map entries.
    Get { id: u32 },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Every identity known to this agent.
    List,
    /// One identity: its labels, scope and the local endpoints that have it.
    Get { id: u32 },
}

#[derive(clap::Args)]
struct MonitorArgs {
    /// Only these kinds of events (repeatable; default all).
    #[arg(long = "type", value_parser = ["drop", "trace", "policy-verdict"])]
    types: Vec<String>,
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
    /// The Observer API: a node's or a relay's unix socket (unix:///PATH or
    /// just /PATH) or TCP address (http://HOST:PORT).
    #[arg(long, default_value = "unix:///var/run/weir/hubble.sock")]
    server: String,
    /// Add a NODE column to `-o table`.
    #[arg(long)]
    print_node_name: bool,
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

/// A gRPC error as the user should read it.
fn rpc_error(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            anyhow::anyhow!("{}", status.message())
        }
        code => anyhow::anyhow!("the agent answered {code:?}: {}", status.message()),
    }
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
    match &cli.command {
        Command::Observe(args) => observe::run(args, cli.output).await,
        Command::Monitor(args) => monitor::run(&cli, args).await,
        Command::Policy { command } => policy::run(&cli, command).await,
        Command::Service { .. } => services::list(&cli, cli.output == Output::Json).await,
        Command::Bpf {
            command:
                BpfCommand::Lb {
                    command: BpfLbCommand::List { maglev, nat },
                },
        } => services::lb_maps(&cli, cli.output == Output::Json, *maglev, *nat).await,
        Command::Status
        | Command::Endpoint { .. }
        | Command::Identity { .. }
        | Command::Bpf { .. } => inspect::run(&cli).await,
    }
}
