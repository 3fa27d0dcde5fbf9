//! weir-operator: the cluster-wide half of Weir, as cilium-operator is.
//!
//! Every replica installs the CRDs and serves `/healthz`, `/readyz` and
//! `/metrics`; only the replica holding the `weir-operator` Lease acts:
//! cluster-pool pod CIDR IPAM ([`ipam`]) and garbage collection ([`gc`]).
//! A replica that loses the lease exits (its Deployment restarts it as a
//! follower), so two replicas never act at once; one stopped with SIGTERM
//! releases the lease first, so the other takes over at once.

mod crds;
mod events;
mod gc;
mod http;
mod ipam;
mod lb_ipam;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipnetwork::{Ipv4Network, Ipv6Network};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

/// The field manager of everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "weir-operator";
const LEASE_NAME: &str = "weir-operator";

#[derive(Parser, Debug)]
#[command(name = "weir-operator", version, about)]
struct Args {
    /// Kubeconfig to use; without it, the in-cluster service account, then
    /// `$KUBECONFIG` / `~/.kube/config`.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The pool every node's pod CIDR is carved from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_pool_ipv4_cidr: Ipv4Network,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    cluster_pool_ipv4_mask_size: u8,
    /// The IPv6 pool of a dual-stack cluster: with it, every node gets a
    /// block of each family (IPv4 first in `spec.podCIDRs`); IPv4 only
    /// without.
    #[arg(long)]
    cluster_pool_ipv6_cidr: Option<Ipv6Network>,
    /// The prefix length of each node's IPv6 pod CIDR (pool prefix ..= 126).
    /// 112 gives a node 65,536 addresses; Cilium's default is 120.
    #[arg(long, default_value_t = 112)]
    cluster_pool_ipv6_mask_size: u8,
    /// Addresses for `type: LoadBalancer` Services (LB IPAM; off without).
    #[arg(long)]
    lb_ipam_pool: Option<Ipv4Network>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "127.0.0.1:9963")]
    metrics_address: SocketAddr,
    /// This replica's name in the Lease (default: `$POD_NAME`, else the
    /// host name and process id).
    #[arg(long)]
    identity: Option<String>,
    /// The namespace of the Lease (default: `$POD_NAMESPACE`, else kube-system).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// How long a lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_s: u64,
    /// How long before expiry the holder renews it.
    #[arg(long, default_value_t = 5)]
    lease_renew_before_s: u64,
    /// Seconds between garbage-collection passes.
    #[arg(long, default_value_t = 300)]
    gc_interval_s: u64,
    /// How long an identity stays unused before it is deleted.
    #[arg(long, default_value_t = 900)]
    identity_gc_grace_s: u64,
    /// How long to wait for the CRDs to be Established.
    #[arg(long, default_value_t = 60)]
    crd_timeout_s: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.lease_renew_before_s >= args.lease_duration_s {
        bail!("--lease-renew-before-s must be shorter than --lease-duration-s");
    }
    let pools = cluster_pools(&args)?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "kube-system".into());

    let metrics = metrics::Metrics::new().context("metrics")?;
    let ready = Arc::new(AtomicBool::new(false));
    let _server = http::serve(args.metrics_address, metrics.clone(), ready.clone())
        .await
        .with_context(|| format!("listen on {}", args.metrics_address))?;

    let client = client(args.kubeconfig.as_deref()).await?;
    crds::install(&client, Duration::from_secs(args.crd_timeout_s))
        .await
        .context("install CRDs")?;
    ready.store(true, Ordering::Release);

    let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration_s)
        .with_grace(args.lease_renew_before_s)
        // A field manager per replica: taking a free lease is a server-side
        // apply of holderIdentity, and only a different manager's apply
        // conflicts. With one manager for all, two replicas racing for a
        // free lease both succeed and both lead.
        .with_field_manager(format!("{FIELD_MANAGER}-{identity}"))
        .build()
        .await
        .context("lease manager")?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(%identity, namespace = %lease_namespace, "waiting for the leader lease");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut controllers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    bail!("leader election stopped");
                }
                if *leading.borrow_and_update() {
                    info!(%identity, "leading: starting the controllers");
                    metrics.leader.set(1);
                    controllers = start_controllers(&client, &pools, &args, &metrics, &identity);
                } else if !controllers.is_empty() {
                    // Another replica may act from now on: stop at once.
                    metrics.leader.set(0);
                    bail!("leader lease lost");
                }
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for task in &controllers {
        task.abort();
    }
    // Dropping the receiver makes the lease task release the lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("lease released"),
        Ok(Ok(Err(error))) => warn!(%error, "lease not released"),
        Ok(Err(error)) => warn!(%error, "lease task failed"),
        Err(_) => warn!("lease not released in time"),
    }
    Ok(())
}

fn start_controllers(
    client: &Client,
    pools: &ipam::Pools,
    args: &Args,
    metrics: &metrics::Metrics,
    identity: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let events = events::Events::new(client.clone(), "weir-operator", identity);
    let cidrs = ipam::controller::NodeCidrs::new(
        client.clone(),
        pools.clone(),
        metrics.clone(),
        events.clone(),
    );
    let collector = gc::Collector::new(
        client.clone(),
        gc::GcOptions {
            interval: Duration::from_secs(args.gc_interval_s.max(1)),
            identity_grace: Duration::from_secs(args.identity_gc_grace_s),
        },
        metrics.clone(),
    );
    let mut tasks = Vec::new();
    if let Some(pool) = args.lb_ipam_pool {
        let lb = lb_ipam::controller::LbIpam::new(
            client.clone(),
            lb_ipam::AddressPool::new(pool),
            metrics.clone(),
            events.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(error) = lb.run().await {
                tracing::error!(%error, "LB IPAM controller stopped");
                std::process::exit(1);
            }
        }));
    }
    tasks.extend([
        tokio::spawn(async move {
            if let Err(error) = cidrs.run().await {
                // Without IPAM nodes get no CIDRs: let a restart retry.
                tracing::error!(%error, "pod CIDR controller stopped");
                std::process::exit(1);
            }
        }),
        tokio::spawn(collector.run()),
    ]);
    tasks
}

fn cluster_pools(args: &Args) -> Result<ipam::Pools> {
    let v4 = ipam::ClusterPool::new(
        args.cluster_pool_ipv4_cidr,
        args.cluster_pool_ipv4_mask_size,
    )
    .context("cluster pool")?;
    let v6 = args
        .cluster_pool_ipv6_cidr
        .map(|pool| ipam::ClusterPool::new(pool, args.cluster_pool_ipv6_mask_size))
        .transpose()
        .context("IPv6 cluster pool")?;
    Ok(ipam::Pools { v4, v6 })
}

fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "weir-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("weir-operator").chain(args.iter().copied()))
            .expect("arguments")
    }

    #[test]
    fn the_ipv6_pool_is_off_unless_given() {
        let pools = cluster_pools(&parse(&[])).expect("pools");
        assert_eq!(pools.v4.pool().to_string(), "10.244.0.0/16");
        assert!(pools.v6.is_none());
        let args = parse(&["--cluster-pool-ipv6-cidr", "fd00:10:244::/56"]);
        assert_eq!(args.cluster_pool_ipv6_mask_size, 112);
        let v6 = cluster_pools(&args)
            .expect("pools")
            .v6
            .expect("an IPv6 pool");
        assert_eq!(v6.pool().to_string(), "fd00:10:244::/56");
        assert_eq!(v6.capacity(), 1 << 56);
    }

    #[test]
    fn a_bad_ipv6_mask_is_refused_at_start() {
        let args = parse(&[
            "--cluster-pool-ipv6-cidr=fd00::/56",
            "--cluster-pool-ipv6-mask-size=127",
        ]);
        let error = cluster_pools(&args).expect_err("mask too long");
        assert!(
            format!("{error:#}").contains("IPv6 cluster pool"),
            "{error:#}"
        );
    }
}
