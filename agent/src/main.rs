//! `weir-agent`: the node daemon.
//!
//! Loads the datapath (maps pinned under --bpffs-dir), attaches it to the
//! node devices given with --device, restores the endpoints of an earlier
//! run (re-attaching their programs), and serves the CNI-facing API on
//! --api-socket until SIGTERM or SIGINT. Programs stay attached after exit:
//! the pinned links keep traffic flowing through a restart.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use ipnetwork::Ipv4Network;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};
use weir_agent::agent::Agent;
use weir_agent::datapath::{Datapath, Hook, DEFAULT_PIN_DIR};
use weir_agent::ipam::Ipam;
use weir_agent::state::StateStore;
use weir_agent::{api, node};

#[derive(Parser, Debug)]
#[command(name = "weir-agent", version, about = "Weir's node agent")]
struct Args {
    /// This node's name.
    #[arg(long, env = "WEIR_NODE_NAME")]
    node_name: String,
    /// The node's pod CIDR (IPv4), from which pod addresses are allocated.
    #[arg(long, env = "WEIR_POD_CIDR")]
    pod_cidr: Ipv4Network,
    /// Where allocations and endpoints are persisted.
    #[arg(long, default_value = "/var/lib/weir")]
    state_dir: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    bpffs_dir: PathBuf,
    /// Unix socket of the local API (CNI plugin); created mode 0600.
    #[arg(long, default_value = weir_agent_api::DEFAULT_SOCKET)]
    api_socket: PathBuf,
    /// Node network devices to attach the netdev programs to (repeatable).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// MTU of pod interfaces.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    info!(node = %args.node_name, pod_cidr = %args.pod_cidr, "starting");
    node::enable_ipv4_forwarding().context("enabling IPv4 forwarding")?;

    let mut datapath = Datapath::load(&args.bpffs_dir).with_context(|| {
        format!(
            "loading the datapath (pins in {})",
            args.bpffs_dir.display()
        )
    })?;
    for device in &args.devices {
        datapath
            .attach(device, Hook::Netdev)
            .with_context(|| format!("attaching to node device {device}"))?;
        info!(%device, "netdev programs attached");
    }

    let store = StateStore::new(&args.state_dir)?;
    let state = store.load_or(Ipam::new(args.pod_cidr)?)?;
    let agent = Arc::new(Agent::new(
        args.node_name.clone(),
        args.mtu,
        store,
        state,
        datapath,
    ));
    for (endpoint, error) in agent.restore() {
        warn!(id = endpoint.id, host_ifname = %endpoint.host_ifname, %error,
              "could not re-attach restored endpoint");
    }
    info!(endpoints = agent.endpoints().len(), "endpoints restored");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        info!("shutting down; programs stay attached");
    };
    info!(socket = %args.api_socket.display(), "serving the local API");
    api::serve(agent, &args.api_socket, shutdown)
        .await
        .context("serving the local API")?;
    let _ = std::fs::remove_file(&args.api_socket);
    Ok(())
}
