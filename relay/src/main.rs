//! `weir-relay`: serves one Observer API over the Observer APIs of several
//! nodes (`--peer`, repeatable, and/or found from the cluster's `WeirNode`s
//! with `--peer-discovery weir-nodes`) on a TCP address and/or a unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};
use weir_observer::{ClientTls, Listener, ServerTls, Target};
use weir_relay::RelayMetrics;

#[derive(Parser, Debug)]
#[command(
    name = "weir-relay",
    version,
    about = "One Observer API over many nodes'"
)]
struct Args {
    /// A node's Observer API: unix:///PATH, http://HOST:PORT or
    /// https://HOST:PORT (with --tls-hubble-server-ca-files; repeatable).
    #[arg(long = "peer", value_parser = parse_target, required_unless_present = "peer_discovery")]
    peers: Vec<Target>,
    /// Find the peers in the cluster instead: `weir-nodes` reads every
    /// WeirNode's InternalIP at `--peer-port` and follows nodes as they
    /// come and go (needs the Kubernetes API).
    #[arg(long, value_enum, conflicts_with = "peers")]
    peer_discovery: Option<Discovery>,
    /// The agents' Observer API port (their `--hubble-address`).
    #[arg(long, default_value_t = 4244)]
    peer_port: u16,
    /// Kubeconfig for peer discovery; without it, the in-cluster service
    /// account, then `$KUBECONFIG` / `~/.kube/config`.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve on this TCP address (Hubble Relay's port is 4245).
    #[arg(long)]
    listen_address: Option<SocketAddr>,
    /// Serve on this unix socket (created mode 0600).
    #[arg(long)]
    listen_socket: Option<PathBuf>,
    /// Serve Prometheus `/metrics` and `/healthz` on this address.
    #[arg(long)]
    prometheus_address: Option<SocketAddr>,
    /// Longest wait for a peer to connect or answer a unary call (seconds).
    #[arg(long, default_value_t = 5)]
    peer_timeout_seconds: u64,
    /// How often every peer is asked for its state (seconds).
    #[arg(long, default_value_t = 10)]
    peer_check_interval_seconds: u64,
    /// TLS on --listen-address: this certificate (PEM, with its chain)...
    #[arg(long, requires = "listen_address")]
    tls_relay_server_cert_file: Option<PathBuf>,
    /// ...and its key.
    #[arg(long, requires = "listen_address")]
    tls_relay_server_key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA on --listen-address.
    #[arg(long, requires = "listen_address")]
    tls_relay_client_ca_files: Option<PathBuf>,
    /// Reach the peers over TLS, trusting this CA (discovered peers become
    /// https://; given peers must say https://).
    #[arg(long)]
    tls_hubble_server_ca_files: Option<PathBuf>,
    /// The certificate the relay presents to peers that require one...
    #[arg(long, requires = "tls_hubble_server_ca_files")]
    tls_hubble_client_cert_file: Option<PathBuf>,
    /// ...and its key.
    #[arg(long, requires = "tls_hubble_server_ca_files")]
    tls_hubble_client_key_file: Option<PathBuf>,
    /// The name the peers' certificates must carry (default: the host
    /// dialled, an IP address for discovered peers).
    #[arg(long, requires = "tls_hubble_server_ca_files")]
    tls_hubble_server_name: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Discovery {
    WeirNodes,
}

fn parse_target(text: &str) -> Result<Target, String> {
    Target::parse(text).map_err(|e| e.to_string())
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
    if args.listen_address.is_none() && args.listen_socket.is_none() {
        anyhow::bail!("nothing to serve on: give --listen-address and/or --listen-socket");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let metrics = RelayMetrics::new();
    let timeout = Duration::from_secs(args.peer_timeout_seconds.max(1));
    let peer_tls = args
        .tls_hubble_server_ca_files
        .as_deref()
        .map(|ca| {
            ClientTls::load(
                ca,
                args.tls_hubble_client_cert_file.as_deref(),
                args.tls_hubble_client_key_file.as_deref(),
                args.tls_hubble_server_name.clone(),
            )
        })
        .transpose()
        .context("the peers' TLS")?;
    let server_tls = ServerTls::from_options(
        args.tls_relay_server_cert_file.clone(),
        args.tls_relay_server_key_file.clone(),
        args.tls_relay_client_ca_files.clone(),
    )?
    .map(|tls| tls.config())
    .transpose()
    .context("the listener's TLS")?;
    let targets = args
        .peers
        .iter()
        .cloned()
        .map(|t| t.with_tls(peer_tls.as_ref()))
        .collect();
    let relay = weir_relay::relay(targets, timeout, metrics.clone())?;

    if let Some(address) = args.prometheus_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the metrics address {address}"))?;
        let address = listener.local_addr()?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = weir_relay::metrics::serve(listener, metrics).await {
                warn!(%error, "metrics server stopped");
            }
        });
        info!(%address, "serving /metrics and /healthz");
    }

    if let Some(Discovery::WeirNodes) = args.peer_discovery {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        tokio::spawn(weir_relay::discovery::follow_weir_nodes(
            client,
            args.peer_port,
            peer_tls.clone(),
            relay.peers().clone(),
        ));
        info!(port = args.peer_port, "peers from the cluster's WeirNodes");
    }

    // Learn names and states now, then keep them fresh.
    let peers = relay.peers().clone();
    let interval = Duration::from_secs(args.peer_check_interval_seconds.max(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            peers.probe().await;
        }
    });

    let (stop, stopped) = watch::channel(false);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    if let Some(address) = args.listen_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr()?;
        let listener = match server_tls {
            Some(config) => Listener::Tls(listener, config),
            None => Listener::Tcp(listener),
        };
        servers.spawn(weir_observer::serve_with(
            relay.clone(),
            listener,
            relay.peers().readiness(),
            shutdown(),
        ));
        info!(%address, "serving the Observer API");
    }
    if let Some(path) = &args.listen_socket {
        let listener =
            weir_relay::listen_unix(path).with_context(|| format!("binding {}", path.display()))?;
        servers.spawn(weir_observer::serve_with(
            relay.clone(),
            Listener::Unix(listener),
            relay.peers().readiness(),
            shutdown(),
        ));
        info!(socket = %path.display(), "serving the Observer API");
    }
    info!(peers = relay.peers().list().len(), "relaying");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
        Some(result) = servers.join_next() => {
            result?.context("serving the Observer API")?;
        }
    }
    let _ = stop.send(true);
    while let Some(result) = servers.join_next().await {
        if let Err(error) = result? {
            warn!(%error, "server stopped");
        }
    }
    if let Some(path) = &args.listen_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
