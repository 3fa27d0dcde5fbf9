//! `weir-agent`: the node daemon.
//!
//! Loads the datapath (maps pinned under --bpffs-dir), attaches it to the
//! node devices given with --device, restores the endpoints of an earlier
//! run (re-attaching their programs), and serves the CNI-facing API on
//! --api-socket until SIGTERM or SIGINT. Programs stay attached after exit:
//! the pinned links keep traffic flowing through a restart.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};
use weir_agent::cluster::kvstore::{self, SharedView};
use weir_agent::cluster::manifest_dir::ManifestDir;
use weir_agent::cluster::node_ipam::PodCidrs;
use weir_agent::config::{Config, IdentityAllocationMode, RoutingMode};
use weir_agent::datapath::node_routes::RouteVia;
use weir_agent::datapath::sysctl;
use weir_agent::datapath::tunnel::TunnelDevice;
use weir_agent::datapath::{Datapath, Hook, LoadOptions, SharedDatapath};
use weir_agent::endpoint::ipam::{Ipam, Ipam6};
use weir_agent::endpoint::manager::{BeforePolicy, EndpointManager};
use weir_agent::endpoint::readiness::EndpointReadiness;
use weir_agent::endpoint::state::StateStore;
use weir_agent::reconcile::identities::IdentitySync;
use weir_agent::reconcile::lb_sync::{LbSync, SharedLbStatus};
use weir_agent::reconcile::services::ServiceSync;
use weir_agent::reconcile::snapshot::SharedSnapshot;
use weir_agent::reconcile::status::{ReconcileStatus, SharedReconcileStatus};
use weir_agent::reconcile::{driver, Reconciler};
use weir_agent::wake::Wake;
use weir_agent::{api, metrics};
use weir_identity::{
    CrdConfig, CrdStore, EtcdConfig, LazyEtcdStore, LazyOptions, NodeRecord, SharedStore,
};
use weir_policy::LabelFilter;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Config::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(mut args: Config) -> Result<()> {
    // Where identities, endpoints and nodes are shared (None: no shared
    // store, pod networking only).
    let shared_store = args.shared_store().map_err(anyhow::Error::msg)?;
    args.check_routing_mode().map_err(anyhow::Error::msg)?;
    // Everything below needs the pod CIDR: with `--ipam cluster-pool` or
    // `kubernetes` the agent waits for its assignment first.
    let pod_cidrs = resolve_node_network(&mut args).await?;
    let pod_cidr = pod_cidrs.v4;
    info!(
        node = %args.node_name,
        %pod_cidr,
        pod_cidr_v6 = ?pod_cidrs.v6,
        ipam = ?args.ipam,
        "starting"
    );
    sysctl::enable_ipv4_forwarding().context("enabling IPv4 forwarding")?;
    if pod_cidrs.v6.is_some() {
        sysctl::enable_ipv6_forwarding().context("enabling IPv6 forwarding (dual stack)")?;
    }
    // Tunnel mode: the VXLAN device, before the programs attach to it.
    let tunnel = match args.routing_mode {
        RoutingMode::Tunnel => {
            let underlay = &args.devices[0];
            let ipv6 = pod_cidrs.v6.is_some();
            let device = weir_agent::datapath::tunnel::ensure(underlay, args.tunnel_port, ipv6)
                .await
                .with_context(|| format!("the tunnel device over {underlay}"))?;
            info!(
                device = weir_abi::overlay::DEVICE,
                mtu = device.mtu,
                port = args.tunnel_port,
                "tunnel device ready"
            );
            Some(device)
        }
        RoutingMode::Native => None,
    };
    let pod_mtu = pod_mtu(args.mtu, tunnel.as_ref());

    let options = LoadOptions {
        monitor_aggregation: args.monitor_aggregation,
        node_ipv4: match args.node_ip {
            Some(std::net::IpAddr::V4(address)) => Some(address),
            _ => None,
        },
        node_ipv6: args.node_ipv6_address(),
        maglev_table_size: args.maglev_table_size,
        maglev_tables: args.maglev_tables,
        ct_new_rate: args.conntrack_new_rate,
        ct_new_burst: args.conntrack_new_burst,
        host_routing: args.host_routing,
        masquerade: args.enable_ipv4_masquerade,
        tunnel_programs: args.routing_mode == RoutingMode::Tunnel,
        ..LoadOptions::default()
    };
    let mut datapath = Datapath::load_with(&args.bpffs_dir, &options).with_context(|| {
        format!(
            "loading the datapath (pins in {})",
            args.bpffs_dir.display()
        )
    })?;
    for pin in datapath.replaced_pins() {
        warn!(map = %pin.map, reason = %pin.reason, "pinned map replaced");
    }
    // Anti-spoofing on the node devices: this node's pod CIDR is in the
    // map before the programs are attached (other nodes' follow their
    // records, in the reconcile loop).
    weir_agent::reconcile::pod_cidrs::claim_local(datapath.ebpf_mut(), pod_cidrs, node_ipv4(&args))
        .context("writing this node's pod CIDR into the anti-spoofing map")?;
    weir_agent::datapath::maps::set_non_masquerade(datapath.ebpf_mut(), &args.non_masquerade_cidrs)
        .context("writing the non-masquerade prefixes")?;
    if args.enable_ipv4_masquerade && node_ipv4(&args).is_unspecified() {
        anyhow::bail!("--enable-ipv4-masquerade needs the node's IPv4 address (--node-ip)");
    }
    // The node's own namespace: what its processes connect to and the
    // socket LB refuses is reported as the host's.
    let node_netns = weir_agent_api::netns_cookie().context("reading this node's netns cookie")?;
    weir_agent::datapath::maps::set_netns_owner(
        datapath.ebpf_mut(),
        node_netns,
        weir_abi::endpoint::NetnsOwner::node(node_ipv4(&args).octets()),
    )
    .context("writing the node's namespace into weir_netns_owners")?;
    // Replaced maps are empty: the programs attached keep the old ones
    // until the reconcile loop has filled the new ones (see datapath::pins).
    let defer_attach = datapath.fill_before_attach() && shared_store.is_some();
    let node = NodeAttachments {
        devices: args.devices.clone(),
        overlay: tunnel.is_some(),
        socket_lb_cgroup: args.socket_lb_cgroup.clone(),
    };
    if !defer_attach {
        attach_node(&mut datapath, &node)?;
        datapath
            .serving()
            .context("recording the pins' ABI version")?;
    }

    let store = StateStore::new(&args.state_dir)?;
    let ipam6 = pod_cidrs.v6.map(Ipam6::new).transpose()?;
    let state = store.load_or(Ipam::new(pod_cidr)?, ipam6)?;
    let datapath = SharedDatapath::new(datapath);
    // Without a shared store there is no reconcile loop and no policy: a
    // new pod's interface is open at once. With one, it is closed until
    // its first regeneration, which CNI ADD waits for.
    let (before_policy, readiness) = if shared_store.is_none() {
        (BeforePolicy::Open, None)
    } else {
        (
            BeforePolicy::Closed,
            Some(Arc::new(EndpointReadiness::default())),
        )
    };
    let agent = Arc::new(
        EndpointManager::new(
            args.node_name.clone(),
            pod_mtu,
            store,
            state,
            datapath.clone(),
        )
        .with_before_policy(before_policy),
    );
    if !defer_attach {
        restore(&agent);
    }

    spawn_conntrack_gc(datapath.clone(), args.conntrack_gc_interval_s);
    let snapshot = SharedSnapshot::default();
    let view = Arc::new(std::sync::Mutex::new(SharedView::default()));
    let registry = prometheus::Registry::new();
    let deferred = pin_metrics(&registry, datapath.lock().replaced_pins());
    deferred.set(i64::from(defer_attach));
    let lb_status = SharedLbStatus::default();
    // Without a shared store no reconcile loop runs: nothing to be ready for.
    let reconcile_status =
        SharedReconcileStatus::new(std::sync::Mutex::new(if shared_store.is_none() {
            ReconcileStatus::default()
        } else {
            ReconcileStatus::pending(&Reconciler::STEPS)
        }));
    // The agent's events: started first, then what the reconcile loop
    // changes (served by GetAgentEvents on the Observer API).
    let agent_events = Arc::new(weir_observer::AgentEventRing::new(
        args.agent_event_ring_size,
        args.node_name.clone(),
    ));
    weir_agent::flows::agent_events::AgentEvents::agent_started(
        &agent_events,
        std::time::SystemTime::now(),
    );
    let (monitor, flow_ring) = start_observer(
        &args,
        agent_events.clone(),
        agent.clone(),
        datapath.clone(),
        view.clone(),
        lb_status.clone(),
        &registry,
    )
    .await?;
    if let Some(address) = args.prometheus_address {
        let listener = metrics::bind(address)
            .await
            .with_context(|| format!("binding the metrics address {address}"))?;
        let metrics =
            metrics::AgentMetrics::new(datapath.clone(), snapshot.clone(), registry.clone());
        let status = reconcile_status.clone();
        tokio::spawn(async move {
            if let Err(error) = metrics::serve(listener, metrics, status).await {
                warn!(%error, "metrics server stopped");
            }
        });
        info!(%address, "serving /metrics, /healthz and /readyz");
    }
    if let Some(mode) = shared_store {
        start_cluster_sync(
            &args,
            ClusterSetup {
                mode,
                pod_cidrs,
                tunnel,
            },
            agent.clone(),
            datapath.clone(),
            Published {
                snapshot: snapshot.clone(),
                lb_status: lb_status.clone(),
                status: reconcile_status.clone(),
                readiness: readiness.clone().unwrap_or_default(),
                agent_events,
            },
            view.clone(),
            &registry,
        )
        .await?;
    }

    if defer_attach {
        warn!(
            "pinned maps were replaced: the programs attached keep enforcing the old maps \
               until the reconcile loop has converged on the new ones"
        );
        tokio::spawn(attach_when_converged(
            node,
            agent.clone(),
            datapath.clone(),
            reconcile_status.clone(),
            deferred,
        ));
    }

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
    let inspect = api::inspect::InspectService {
        node_name: args.node_name.clone(),
        agent: agent.clone(),
        datapath: datapath.clone(),
        policy: snapshot.clone(),
        view,
        reconcile: reconcile_status,
    };
    let services = api::services::ServicesService {
        datapath: datapath.clone(),
        status: lb_status,
        maglev_table_size: args.maglev_table_size,
    };
    let local_api = api::LocalApi {
        agent,
        node_ip: args.node_ip,
        readiness: readiness.map(|readiness| api::endpoints::WaitForPolicy {
            readiness,
            timeout: std::time::Duration::from_secs(args.endpoint_regeneration_timeout_s),
        }),
        policy: api::policy::PolicyService::new(snapshot).with_flows(flow_ring),
        inspect,
        monitor,
        services,
        metrics: api::metrics::ApiMetricsLayer::new(&registry),
    };
    api::serve(local_api, &args.api_socket, shutdown)
        .await
        .context("serving the local API")?;
    let _ = std::fs::remove_file(&args.api_socket);
    Ok(())
}

/// The node's IPv4 underlay address (unspecified when it has none).
fn node_ipv4(args: &Config) -> std::net::Ipv4Addr {
    match args.node_ip {
        Some(std::net::IpAddr::V4(address)) => address,
        _ => std::net::Ipv4Addr::UNSPECIFIED,
    }
}

/// What the reconcile loop publishes for the API and the metrics server.
struct Published {
    snapshot: SharedSnapshot,
    lb_status: SharedLbStatus,
    status: SharedReconcileStatus,
    readiness: Arc<EndpointReadiness>,
    agent_events: Arc<weir_observer::AgentEventRing>,
}

/// How this node takes part in the cluster: where its shared state lives
/// and its pod CIDR (as `--ipam` found it).
struct ClusterSetup {
    /// The tunnel device (tunnel mode).
    tunnel: Option<TunnelDevice>,
    mode: IdentityAllocationMode,
    pod_cidrs: PodCidrs,
}

/// With a shared store (CRD or kvstore mode): publish this node, watch the
/// cluster's shared state, and run the reconcile loop (identities,
/// ipcache, endpoints map, policy). Never waits for the store: see
/// `shared_store`.
async fn start_cluster_sync(
    args: &Config,
    setup: ClusterSetup,
    agent: Arc<EndpointManager<SharedDatapath>>,
    datapath: SharedDatapath,
    published: Published,
    view: Arc<std::sync::Mutex<SharedView>>,
    registry: &prometheus::Registry,
) -> Result<()> {
    let ClusterSetup {
        mode,
        pod_cidrs,
        tunnel,
    } = setup;
    let pod_cidr = pod_cidrs.v4;
    let Published {
        snapshot,
        lb_status,
        status,
        readiness,
        agent_events,
    } = published;
    let node_ip = args
        .node_ip
        .context("--node-ip is required with a shared store (--k8s or --etcd-endpoints)")?;
    let client = if args.kubernetes() {
        Some(
            weir_agent::cluster::kubernetes::client(args.kubeconfig.as_deref())
                .await
                .context("Kubernetes client")?,
        )
    } else {
        None
    };
    let node_record = NodeRecord {
        name: args.node_name.clone(),
        ip: node_ip,
        pod_cidr: pod_cidr.into(),
        pod_cidr_v6: pod_cidrs.v6.map(Into::into),
        ipv6: args.node_ipv6,
    };
    let store = shared_store(args, mode, client.clone(), node_record, &status, registry)?;
    // Every source rings `wake` on a change: the loop sleeps until then.
    let wake = Wake::default();
    kvstore::start_watches_waking(store.clone(), view.clone(), registry, wake.clone())
        .await
        .context("watching the shared store")?;
    let route_via = match tunnel {
        Some(device) => Some(RouteVia::Tunnel {
            ifindex: device.ifindex,
            source: node_ipv4(args),
        }),
        None if args.auto_direct_node_routes => Some(RouteVia::Native),
        None => None,
    };
    if let Some(via) = route_via {
        spawn_node_routes(view.clone(), args.node_name.clone(), via, status.clone());
    }
    let manifests = match args.manifests_dir.as_deref() {
        Some(path) => {
            let mut dir = ManifestDir::new(path);
            // Without file events changes are still seen, by the safety
            // pass (--reconcile-interval-ms).
            if let Err(error) = dir.watch(wake.clone()) {
                warn!(%error, dir = %path.display(), "cannot watch the manifest directory");
            }
            Some(dir)
        }
        None => None,
    };
    let kubernetes = if let Some(client) = client {
        let source =
            weir_agent::cluster::kubernetes::KubernetesSource::start_waking(client, wake.clone())
                .await
                .context("watching the Kubernetes API")?;
        Some(source)
    } else {
        None
    };
    let filter = if args.label_patterns.is_empty() {
        LabelFilter::default()
    } else {
        let patterns: Vec<&str> = args.label_patterns.iter().map(String::as_str).collect();
        LabelFilter::with_user_patterns(&patterns).map_err(|e| anyhow::anyhow!("--label: {e}"))?
    };
    let lb_options = weir_lb::LbOptions {
        node_port_range: args.node_port_range.clone(),
        default_algorithm: args.lb_algorithm.into(),
        maglev_table_size: args.maglev_table_size,
        addresses: args.frontend_addresses(pod_cidr),
    };
    lb_options
        .validate()
        .map_err(|e| anyhow::anyhow!("service options: {e}"))?;
    let node_addresses = match node_ip {
        std::net::IpAddr::V4(address) => vec![address],
        std::net::IpAddr::V6(_) => Vec::new(),
    };
    let node = weir_lb::NodeContext {
        name: args.node_name.clone(),
        addresses: node_addresses,
        addresses_v6: args.node_ipv6_address().into_iter().collect(),
    };
    let services = ServiceSync::new(
        node,
        lb_options,
        LbSync::new(
            args.node_name.clone(),
            args.maglev_table_size,
            args.maglev_tables,
            lb_status,
        ),
    )
    .with_ipv6(args.ipv6_services(pod_cidrs.v6))
    .with_metrics(weir_agent::reconcile::lb_sync::LbMetrics::new(registry));
    let identities = IdentitySync::new(args.node_name.clone(), node_ip, store, filter);
    let mut reconciler = Reconciler::new(
        identities, agent, datapath, view, manifests, snapshot, services,
    )
    .with_metrics(weir_agent::reconcile::metrics::ReconcileMetrics::new(
        registry,
    ))
    .with_step_metrics(weir_agent::reconcile::metrics::StepMetrics::new(
        registry,
        &Reconciler::STEPS,
    ))
    .with_status(status)
    .with_readiness(readiness.clone())
    .with_pod_cidrs(pod_cidrs, node_ipv4(args))
    .with_policy_audit_mode(args.policy_audit_mode)
    .with_agent_events(agent_events);
    if let Some(source) = kubernetes {
        reconciler = reconciler.with_kubernetes(source);
    }
    let triggers = driver::Triggers {
        wake,
        readiness,
        resync: std::time::Duration::from_millis(args.reconcile_interval_ms.max(10)),
    };
    tokio::spawn(driver::run(reconciler, triggers));
    info!(store = mode.as_str(), "cluster sync started");
    Ok(())
}

/// The shared store of `mode`, publishing this node's record once it
/// answers. Neither mode waits for its server: the store connects in the
/// background and runs on what it knows meanwhile; its connection state
/// goes to `/readyz`, `weir status` and `weir_kvstore_connected`.
fn shared_store(
    args: &Config,
    mode: IdentityAllocationMode,
    client: Option<kube::Client>,
    node: NodeRecord,
    status: &SharedReconcileStatus,
    registry: &prometheus::Registry,
) -> Result<Arc<dyn SharedStore>> {
    let reporter = kvstore::connection_reporter(status.clone(), registry);
    match mode {
        IdentityAllocationMode::Kvstore => {
            if args.kubernetes() {
                info!(
                    "kvstore mode: identities, endpoints and nodes in etcd, not the Kubernetes API"
                );
            }
            let mut etcd = EtcdConfig::new(args.etcd_endpoints.clone(), args.node_name.clone());
            etcd.connect_timeout = std::time::Duration::from_secs(2);
            etcd.request_timeout = std::time::Duration::from_secs(2);
            etcd.tls = args
                .etcd_ca_file
                .as_deref()
                .map(|ca| {
                    weir_identity::EtcdTls::load(
                        ca,
                        args.etcd_cert_file.as_deref(),
                        args.etcd_key_file.as_deref(),
                    )
                })
                .transpose()
                .context("the etcd TLS files")?;
            let lazy = LazyEtcdStore::start(etcd, LazyOptions::default(), reporter)
                .context("the etcd configuration")?;
            kvstore::spawn_node_publish(lazy.clone(), node);
            Ok(Arc::new(lazy))
        }
        IdentityAllocationMode::Crd => {
            let client = client.context("CRD mode needs the Kubernetes API")?;
            if !args.etcd_endpoints.is_empty() {
                warn!("CRD mode: --etcd-endpoints is not used (--identity-allocation-mode kvstore uses it)");
            }
            let crd = CrdStore::new(client, CrdConfig::new(args.node_name.clone()))
                .context("the CRD store")?;
            // The check ends with the store.
            crd.spawn_connection_check(std::time::Duration::from_millis(500), reporter);
            let store: Arc<dyn SharedStore> = Arc::new(crd);
            kvstore::spawn_node_publish_to(store.clone(), node);
            Ok(store)
        }
    }
}

/// Where the node's programs attach: its devices, the tunnel device in
/// tunnel mode, and the socket LB cgroup.
struct NodeAttachments {
    devices: Vec<String>,
    overlay: bool,
    socket_lb_cgroup: Option<std::path::PathBuf>,
}

/// The pod interfaces' MTU: `--mtu`, else the tunnel device's in tunnel
/// mode (a pod's packet plus the VXLAN headers must fit the underlay),
/// else 1500.
fn pod_mtu(flag: Option<u32>, tunnel: Option<&TunnelDevice>) -> u32 {
    match (flag, tunnel) {
        (Some(mtu), Some(device)) if mtu > device.mtu => {
            warn!(mtu, tunnel_mtu = device.mtu,
                "--mtu is above the tunnel device's: pods' full-size packets will be fragmented or dropped");
            mtu
        }
        (Some(mtu), _) => mtu,
        (None, Some(device)) => device.mtu,
        (None, None) => 1500,
    }
}

/// Attaches the programs to the node devices and the socket LB cgroup.
fn attach_node(datapath: &mut Datapath, node: &NodeAttachments) -> Result<()> {
    for device in &node.devices {
        datapath
            .attach(device, Hook::Netdev)
            .with_context(|| format!("attaching to node device {device}"))?;
        info!(%device, "netdev programs attached");
    }
    if node.overlay {
        let device = weir_abi::overlay::DEVICE;
        datapath
            .attach(device, Hook::Overlay)
            .with_context(|| format!("attaching to the tunnel device {device}"))?;
        info!(%device, "overlay programs attached");
    }
    if let Some(cgroup) = &node.socket_lb_cgroup {
        datapath
            .attach_cgroup(cgroup)
            .with_context(|| format!("attaching socket LB to {}", cgroup.display()))?;
        info!(cgroup = %cgroup.display(), "socket LB attached");
    }
    Ok(())
}

/// `weir_datapath_pins_replaced{map}` (1 for each pin this start replaced)
/// and `weir_datapath_attach_deferred` (1 while the programs attached still
/// use replaced maps), which is returned.
fn pin_metrics(
    registry: &prometheus::Registry,
    replaced: &[weir_agent::datapath::pins::StalePin],
) -> prometheus::IntGauge {
    use weir_agent::registry::registered;
    let pins = registered(
        registry,
        prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "weir_datapath_pins_replaced",
                "Pinned maps replaced at this start because their layout or ABI version \
                 did not match the datapath",
            ),
            &["map"],
        ),
    );
    for pin in replaced {
        pins.with_label_values(&[pin.map.as_str()]).set(1);
    }
    registered(
        registry,
        prometheus::IntGauge::new(
            "weir_datapath_attach_deferred",
            "1 while the programs attached still use replaced maps (the new ones are being filled)",
        ),
    )
}

/// Re-attaches the programs of the endpoints an earlier run left.
fn restore(agent: &EndpointManager<SharedDatapath>) {
    for (endpoint, error) in agent.restore() {
        warn!(id = endpoint.id, host_ifname = %endpoint.host_ifname, %error,
              "could not re-attach restored endpoint");
    }
    info!(endpoints = agent.endpoints().len(), "endpoints restored");
}

/// After pinned maps were replaced: waits until the reconcile loop has
/// written the whole desired state into the new maps (a pass on a synced
/// view with every step ok), then swaps the programs of the node devices
/// and the restored endpoints (TCX link updates, atomic) and records the
/// pins as serving. Until then the old programs enforce the old maps, as
/// while the agent is down; a failure to attach is retried.
async fn attach_when_converged(
    node: NodeAttachments,
    agent: Arc<EndpointManager<SharedDatapath>>,
    datapath: SharedDatapath,
    status: SharedReconcileStatus,
    deferred: prometheus::IntGauge,
) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        ticker.tick().await;
        if !status.lock().unwrap_or_else(|e| e.into_inner()).converged() {
            continue;
        }
        let attached = {
            let mut datapath = datapath.lock();
            attach_node(&mut datapath, &node)
        };
        if let Err(error) = attached {
            warn!(
                error = format!("{error:#}"),
                "attaching after a map replacement; retrying"
            );
            continue;
        }
        restore(&agent);
        deferred.set(0);
        match datapath.lock().serving() {
            Ok(()) => {
                info!("new maps filled and programs attached: the replaced maps are released")
            }
            Err(error) => warn!(%error, "recording the pins' ABI version"),
        }
        return;
    }
}

/// Removes expired conntrack entries periodically (the LRU only evicts under
/// pressure, so idle entries would otherwise linger and keep replies of long
/// dead connections allowed).
/// The node's pod CIDR (`--ipam`), and its address from the Node when
/// `--node-ip` is not given in Kubernetes mode (written into `args`).
async fn resolve_node_network(args: &mut Config) -> Result<PodCidrs> {
    use weir_agent::cluster::node_ipam::{self, IpamMode};
    let kubernetes = args.k8s || args.kubeconfig.is_some();
    let client = if kubernetes && (args.ipam != IpamMode::Static || args.node_ip.is_none()) {
        Some(
            weir_agent::cluster::kubernetes::client(args.kubeconfig.as_deref())
                .await
                .context("Kubernetes client")?,
        )
    } else {
        None
    };
    let flags = (args.pod_cidr, args.pod_cidr_v6);
    let pod_cidrs = node_ipam::pod_cidrs(args.ipam, flags, client.as_ref(), &args.node_name)
        .await
        .context("the node's pod CIDR")?;
    if let (None, Some(client)) = (args.node_ip, &client) {
        let (ip, ipv6) = node_ipam::node_ips(client, &args.node_name)
            .await
            .context("the node's address")?;
        args.node_ip = Some(ip);
        args.node_ipv6 = args.node_ipv6.or(ipv6);
    }
    Ok(pod_cidrs)
}

/// Keeps the routes to the other nodes' pod CIDRs equal to the node records
/// (`--auto-direct-node-routes`). Checks the view twice a second: a route
/// is needed before the first pod of a new node talks across, which takes
/// longer than that to schedule and wire. Their state goes to `/readyz`
/// and `weir status` (`node-routes`): ok once they match a complete node
/// list, so a restarted agent is not ready before its pods can reach the
/// other nodes' pods again.
fn spawn_node_routes(
    view: Arc<std::sync::Mutex<SharedView>>,
    own_node: String,
    via: RouteVia,
    status: SharedReconcileStatus,
) {
    use weir_agent::datapath::node_routes::{NodeRouteSet, NodeRoutes};
    use weir_agent::reconcile::status::{StepReport, StepState};
    let publish = move |report: StepReport| {
        status.lock().unwrap_or_else(|e| e.into_inner()).node_routes = Some(report);
    };
    let mut report = StepReport::pending("node-routes");
    // Before the loop's first pass can make the agent ready.
    publish(report.clone());
    tokio::spawn(async move {
        let mut routes = match NodeRoutes::open(via).await {
            Ok(routes) => routes,
            Err(error) => {
                warn!(%error, "node routes unavailable");
                report.state = StepState::Failing;
                report.consecutive_failures = 1;
                report.last_error = error.to_string();
                publish(report);
                return;
            }
        };
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            ticker.tick().await;
            let (desired, complete) = {
                let view = view.lock().unwrap_or_else(|e| e.into_inner());
                let desired: NodeRouteSet = view
                    .nodes
                    .values()
                    .filter(|node| node.name != own_node)
                    .flat_map(|node| -> Vec<_> {
                        match via {
                            RouteVia::Native => node.pod_routes().collect(),
                            // Every CIDR to the node's IPv4 address, the
                            // tunnel's outer destination.
                            RouteVia::Tunnel { .. } => {
                                node.pod_cidrs().map(|cidr| (cidr, node.ip)).collect()
                            }
                        }
                    })
                    .collect();
                (desired, view.nodes_synced)
            };
            let synced = if routes.is_current(&desired) && complete {
                Ok(())
            } else {
                routes.sync(&desired, complete).await
            };
            let before = report.clone();
            match synced {
                Ok(()) => {
                    // The routes of the nodes known so far are in; ok only
                    // once every node is known.
                    report.state = if complete {
                        StepState::Ok
                    } else {
                        StepState::Pending
                    };
                    report.consecutive_failures = 0;
                    report.last_error.clear();
                }
                Err(error) => {
                    let text = error.to_string();
                    if text != report.last_error {
                        warn!(%error, "node routes");
                    }
                    report.state = StepState::Failing;
                    report.consecutive_failures += 1;
                    report.last_error = text;
                }
            }
            if report != before {
                publish(report.clone());
            }
        }
    });
}

fn spawn_conntrack_gc(datapath: SharedDatapath, interval_s: u64) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(interval_s.max(1)));
        loop {
            ticker.tick().await;
            let now = weir_agent::datapath::maps::monotonic_now_ns();
            match weir_agent::datapath::maps::conntrack_gc(datapath.lock().ebpf_mut(), now) {
                Ok(0) => {}
                Ok(removed) => info!(removed, "conntrack entries expired"),
                Err(error) => warn!(%error, "conntrack GC"),
            }
        }
    });
}

/// The flow exporter `--hubble-export-file-path` asks for.
fn flow_exporter(
    args: &Config,
    registry: &prometheus::Registry,
) -> Result<Option<weir_agent::flows::export::Exporter>> {
    use weir_agent::flows::export::{parse_filter_list, ExportConfig, ExportMetrics, Exporter};
    let Some(path) = args.hubble_export_file_path.clone() else {
        return Ok(None);
    };
    let filters = |flag: &str, text: &str| {
        parse_filter_list(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let config = ExportConfig {
        path,
        max_size_bytes: args.hubble_export_file_max_size_mb.saturating_mul(1 << 20),
        max_backups: args.hubble_export_file_max_backups,
        queue: args.hubble_export_queue_size,
        allow: filters("hubble-export-allowlist", &args.hubble_export_allowlist)?,
        deny: filters("hubble-export-denylist", &args.hubble_export_denylist)?,
    };
    info!(path = %config.path.display(), "exporting flows");
    let exporter = Exporter::start(config, args.node_name.clone(), ExportMetrics::new(registry))?;
    Ok(Some(exporter))
}

/// Flows: read datapath events into the flow ring and serve the Observer API
/// on the unix socket (and a TCP address if configured). Returns the
/// monitor service, fed the same decoded events, for the local API.
async fn start_observer(
    args: &Config,
    agent_events: Arc<weir_observer::AgentEventRing>,
    agent: Arc<EndpointManager<SharedDatapath>>,
    datapath: SharedDatapath,
    view: Arc<std::sync::Mutex<SharedView>>,
    services: SharedLbStatus,
    registry: &prometheus::Registry,
) -> Result<(api::monitor::MonitorService, Arc<weir_observer::FlowRing>)> {
    use std::os::unix::fs::PermissionsExt;
    use weir_observer::{FlowRing, Listener, NodeInfo, ObserverService, Parser, Readiness};

    let ring = Arc::new(FlowRing::new(args.flow_ring_size.max(1)));
    let events = datapath
        .lock()
        .take_events()
        .context("the event ring buffer")?;
    let enricher = Arc::new(weir_agent::flows::AgentEnricher {
        agent,
        view: view.clone(),
        services,
    });
    let clock = weir_agent::flows::wall_clock();
    let parser = Parser::new(args.node_name.clone(), enricher, clock);
    let metrics = weir_agent::flows::metrics::FlowMetrics::new(
        registry,
        &args.hubble_metrics,
        args.hubble_metrics_max_contexts,
    );
    tokio::spawn(weir_agent::flows::metrics_sweeper(metrics.clone(), view));
    let feed = weir_agent::flows::feed::MonitorFeed::default();
    let exporter = flow_exporter(args, registry)?;
    let readiness = Readiness::new(false);
    tokio::spawn(weir_agent::flows::run(
        events,
        parser,
        ring.clone(),
        metrics,
        feed.clone(),
        exporter,
        readiness.clone(),
    ));
    // The programs' debug messages (off until `weir debug enable`), kept
    // for GetDebugEvents too.
    let debug_events = Arc::new(weir_observer::DebugEventRing::new(
        weir_observer::DEFAULT_DEBUG_EVENT_CAPACITY,
        args.node_name.clone(),
    ));
    let debug_feed =
        weir_agent::datapath::debug::DebugFeed::default().with_ring(debug_events.clone());
    let reader = weir_agent::datapath::debug::DebugReader::new(
        datapath.lock().ebpf_mut(),
        debug_feed.clone(),
    );
    match reader {
        Ok(reader) => {
            tokio::spawn(reader.run());
        }
        Err(error) => warn!(error = %format!("{error:#}"), "no datapath debug messages"),
    }
    let monitor = api::monitor::MonitorService::new(feed, clock, args.node_name.clone())
        .with_debug(debug_feed, datapath.clone());

    let node = |address: String| NodeInfo {
        name: args.node_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        address,
    };
    if let Some(dir) = args.hubble_socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let unix = weir_observer::bind_unix(&args.hubble_socket)?;
    std::fs::set_permissions(&args.hubble_socket, std::fs::Permissions::from_mode(0o600))?;
    let service =
        ObserverService::new(ring.clone(), node(args.hubble_socket.display().to_string()))
            .with_agent_events(agent_events.clone())
            .with_debug_events(debug_events.clone());
    let unix_readiness = readiness.clone();
    tokio::spawn(async move {
        let listener = Listener::Unix(unix);
        if let Err(error) =
            weir_observer::serve(service, listener, unix_readiness, std::future::pending()).await
        {
            warn!(%error, "observer API (unix socket) stopped");
        }
    });
    if let Some(address) = args.hubble_address {
        let tls = weir_observer::ServerTls::from_options(
            args.hubble_tls_cert_file.clone(),
            args.hubble_tls_key_file.clone(),
            args.hubble_tls_client_ca_files.clone(),
        )?
        .map(|tls| tls.config())
        .transpose()?;
        let tcp = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the observer address {address}"))?;
        let listener = match tls {
            Some(config) => Listener::Tls(tcp, config),
            None => Listener::Tcp(tcp),
        };
        let service = ObserverService::new(ring.clone(), node(address.to_string()))
            .with_agent_events(agent_events)
            .with_debug_events(debug_events);
        tokio::spawn(async move {
            if let Err(error) =
                weir_observer::serve(service, listener, readiness, std::future::pending()).await
            {
                warn!(%error, "observer API (TCP) stopped");
            }
        });
    }
    info!(socket = %args.hubble_socket.display(), "serving the Observer API");
    Ok((monitor, ring))
}
