//! The agent's configuration: its command line (each flag also documented
//! in docs/configuration.md), parsed and checked before anything starts.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ipnetwork::Ipv4Network;

pub use crate::datapath::{HostRouting, MonitorAggregation};

/// Backend selection for services without the
/// `service.weir.io/lb-algorithm` annotation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LbAlgorithm {
    Random,
    Maglev,
}

impl From<LbAlgorithm> for weir_lb::Algorithm {
    fn from(algorithm: LbAlgorithm) -> Self {
        match algorithm {
            LbAlgorithm::Random => weir_lb::Algorithm::Random,
            LbAlgorithm::Maglev => weir_lb::Algorithm::Maglev,
        }
    }
}

/// How pod traffic crosses between nodes (`--routing-mode`, Cilium's name).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RoutingMode {
    /// Natively routed on the underlay: routes to other nodes' pod CIDRs
    /// through their addresses (`--auto-direct-node-routes`, or the
    /// network's own).
    #[default]
    Native,
    /// In VXLAN through the tunnel device, the sender's identity in the
    /// VNI; the agent routes other nodes' pod CIDRs into it.
    Tunnel,
}

/// Where identities, endpoints and nodes are shared between agents
/// (`--identity-allocation-mode`, Cilium's name).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdentityAllocationMode {
    /// `WeirIdentity`, `WeirEndpoint` and `WeirNode` objects through the
    /// Kubernetes API.
    Crd,
    /// etcd at `--etcd-endpoints`.
    Kvstore,
}

impl IdentityAllocationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityAllocationMode::Crd => "crd",
            IdentityAllocationMode::Kvstore => "kvstore",
        }
    }
}

#[derive(Parser, Debug)]
#[command(name = "weir-agent", version, about = "Weir's node agent")]
pub struct Config {
    /// This node's name.
    #[arg(long, env = "WEIR_NODE_NAME")]
    pub node_name: String,
    /// The node's pod CIDR (IPv4), from which pod addresses are allocated
    /// (`--ipam static`).
    #[arg(long, env = "WEIR_POD_CIDR")]
    pub pod_cidr: Option<Ipv4Network>,
    /// The node's IPv6 pod CIDR (`--ipam static`): with it the node is
    /// dual stack, every pod also gets an IPv6 address from it. In the API
    /// modes it is the IPv6 CIDR assigned beside the IPv4 one.
    #[arg(long, env = "WEIR_POD_CIDR_V6")]
    pub pod_cidr_v6: Option<ipnetwork::Ipv6Network>,
    /// Where the pod CIDR comes from: `static` (`--pod-cidr`),
    /// `cluster-pool` (this node's WeirNode, assigned by weir-operator) or
    /// `kubernetes` (`Node.spec.podCIDRs`). The last two need `--k8s`.
    #[arg(long, value_enum, default_value_t = crate::cluster::node_ipam::IpamMode::Static)]
    pub ipam: crate::cluster::node_ipam::IpamMode,
    /// Install routes to the other nodes' pod CIDRs through their node
    /// addresses (native routing on one L2 segment), following the node
    /// records of the shared store.
    #[arg(long)]
    pub auto_direct_node_routes: bool,
    /// How pod traffic crosses between nodes: `native` (routed on the
    /// underlay) or `tunnel` (VXLAN through `weir_vxlan`, the sender's
    /// identity in the header; needs a shared store, `--node-ip` and a
    /// `--device`, the underlay).
    #[arg(long, value_enum, default_value_t = RoutingMode::Native)]
    pub routing_mode: RoutingMode,
    /// The tunnel's UDP port (tunnel mode).
    #[arg(long, default_value_t = weir_abi::overlay::DEFAULT_VXLAN_PORT)]
    pub tunnel_port: u16,
    /// Where allocations and endpoints are persisted.
    #[arg(long, default_value = "/var/lib/weir")]
    pub state_dir: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = crate::datapath::DEFAULT_PIN_DIR)]
    pub bpffs_dir: PathBuf,
    /// Unix socket of the local API (CNI plugin); created mode 0600.
    #[arg(long, default_value = weir_agent_api::DEFAULT_SOCKET)]
    pub api_socket: PathBuf,
    /// Node network devices to attach the netdev programs to (repeatable).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// MTU of pod interfaces. Default: 1500 in native routing; in tunnel
    /// mode the tunnel device's (the first `--device`'s minus 50).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// etcd endpoints of the shared store (kvstore mode), comma-separated.
    /// Without them, and without `--k8s`, the agent only does pod
    /// networking (no identities, ipcache or policy).
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// TLS to etcd (`https://` endpoints): the CA etcd's certificate
    /// chains to (the system's roots are never trusted)...
    #[arg(long)]
    pub etcd_ca_file: Option<PathBuf>,
    /// ...and the client certificate etcd's `--client-cert-auth` asks
    /// for...
    #[arg(long, requires = "etcd_ca_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// ...with its key.
    #[arg(long, requires = "etcd_ca_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// Where identities, endpoints and nodes are shared: `crd` (the
    /// Kubernetes API; the default with `--k8s`) or `kvstore` (etcd at
    /// `--etcd-endpoints`; the default without `--k8s`).
    #[arg(long, value_enum)]
    pub identity_allocation_mode: Option<IdentityAllocationMode>,
    /// This node's address as other nodes reach it (node record, ipcache).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// The node's IPv6 address on a dual-stack node: other nodes route its
    /// IPv6 pod CIDR through it (`--auto-direct-node-routes`). In
    /// Kubernetes mode the Node's first IPv6 `InternalIP` if not given.
    #[arg(long)]
    pub node_ipv6: Option<std::net::Ipv6Addr>,
    /// A directory of Kubernetes YAML manifests (Namespaces, Pods and
    /// policies) to read cluster state from, when there is no Kubernetes API.
    #[arg(long, conflicts_with_all = ["k8s", "kubeconfig"])]
    pub manifests_dir: Option<PathBuf>,
    /// Read cluster state from the Kubernetes API (watches) instead of a
    /// manifest directory; configured in-cluster or from the kubeconfig
    /// (`--kubeconfig`, else `$KUBECONFIG` / `~/.kube/config`).
    #[arg(long)]
    pub k8s: bool,
    /// The kubeconfig for `--k8s` (implies it).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The reconcile loop runs when something changes (watch and file
    /// events, CNI requests, retries); this is the longest it sleeps
    /// without one, a safety pass for a missed event (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    pub reconcile_interval_ms: u64,
    /// How long CNI ADD (CreateEndpoint) waits for a new endpoint's first
    /// regeneration (identity and policy in the kernel) before it fails;
    /// the pod's interface drops everything until then (seconds).
    #[arg(long, default_value_t = 20)]
    pub endpoint_regeneration_timeout_s: u64,
    /// Label filter patterns for security identities, added to the default
    /// filter (Cilium syntax: `key` includes, `!key` excludes, matched at the
    /// start of the key; any include keeps only included labels). Repeatable.
    #[arg(long = "label")]
    pub label_patterns: Vec<String>,
    /// Which packets produce flow events: `medium` (drops, new connections,
    /// TCP SYN/FIN/RST, policy verdicts) or `none` (every packet).
    #[arg(long, value_enum, default_value_t = MonitorAggregation::Medium)]
    pub monitor_aggregation: MonitorAggregation,
    /// How pods' packets are routed: `bpf` (the datapath redirects a
    /// packet to another pod, here or on another node, straight to the
    /// device the kernel's FIB routes it through, after its verdict, and a
    /// packet from the network to a local pod straight to its interface)
    /// or `legacy` (every packet goes up the host's IP stack). Traffic to
    /// the node and outside the cluster takes the stack either way.
    #[arg(long, value_enum, default_value_t = HostRouting::Bpf)]
    pub host_routing: HostRouting,
    /// Masquerade pods' TCP and UDP connections to destinations outside
    /// the cluster to the node's address in the datapath (BPF masquerading;
    /// needs `--node-ip`). Pod CIDRs, the cluster's nodes and
    /// `--non-masquerade-cidr` are left alone.
    #[arg(long)]
    pub enable_ipv4_masquerade: bool,
    /// A destination prefix masquerading leaves alone (ip-masq-agent's
    /// `nonMasqueradeCIDRs`); repeatable or comma-separated.
    #[arg(long = "non-masquerade-cidr", value_delimiter = ',')]
    pub non_masquerade_cidrs: Vec<Ipv4Network>,
    /// Policy audit mode for every endpoint of the node: what policy would
    /// drop is reported (flows with verdict AUDIT, counted in
    /// `hubble_policy_verdicts_total{action="audit"}`) and passes. A pod's
    /// or its namespace's `policy.weir.io/audit-mode` annotation ("true"
    /// or "false") overrides it.
    #[arg(long)]
    pub policy_audit_mode: bool,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g.
    /// 127.0.0.1:9962); off when not set.
    #[arg(long)]
    pub prometheus_address: Option<std::net::SocketAddr>,
    /// Unix socket of the Hubble-compatible Observer API (mode 0600).
    #[arg(long, default_value = "/var/run/weir/hubble.sock")]
    pub hubble_socket: PathBuf,
    /// Also serve the Observer API on this TCP address (e.g. 127.0.0.1:4244).
    #[arg(long)]
    pub hubble_address: Option<std::net::SocketAddr>,
    /// TLS on the Observer API's TCP address: this certificate (PEM,
    /// with its chain)...
    #[arg(long, requires = "hubble_address")]
    pub hubble_tls_cert_file: Option<PathBuf>,
    /// ...and its key.
    #[arg(long, requires = "hubble_address")]
    pub hubble_tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS, e.g.
    /// for the relay).
    #[arg(long, requires = "hubble_address")]
    pub hubble_tls_client_ca_files: Option<PathBuf>,
    /// The `hubble_*` flow metrics `/metrics` serves, as Hubble's
    /// `--metrics` option string: handlers (`flow`, `drop`, `tcp`,
    /// `port-distribution`, `icmp`, `policy`) separated by spaces, each
    /// with optional context options after a colon, e.g.
    /// `flow:sourceContext=namespace|pod;destinationContext=identity drop`.
    /// Empty: none.
    #[arg(long, default_value = crate::flows::metrics::options::DEFAULT,
          value_parser = crate::flows::metrics::options::parse)]
    pub hubble_metrics: crate::flows::metrics::options::MetricsConfig,
    /// Distinct context label sets (values of `source`, `destination` and
    /// `labelsContext` labels) each `hubble_*` family admits; flows with
    /// new ones beyond it count under the `__overflow__` context.
    #[arg(long, default_value_t = crate::flows::metrics::DEFAULT_MAX_CONTEXTS)]
    pub hubble_metrics_max_contexts: usize,
    /// Flows kept in memory.
    #[arg(long, default_value_t = weir_observer::DEFAULT_CAPACITY)]
    pub flow_ring_size: usize,
    /// Agent events (GetAgentEvents) kept in memory.
    #[arg(long, default_value_t = weir_observer::DEFAULT_AGENT_EVENT_CAPACITY)]
    pub agent_event_ring_size: usize,
    /// Export flows to this file as JSON lines (Hubble's exporter: what
    /// `hubble observe -o json` prints), mode 0600; off when not set.
    #[arg(long)]
    pub hubble_export_file_path: Option<PathBuf>,
    /// Rotate the export file before it grows past this many MiB...
    #[arg(long, default_value_t = 10, requires = "hubble_export_file_path")]
    pub hubble_export_file_max_size_mb: u64,
    /// ...keeping this many rotated files (`<path>.1` the newest).
    #[arg(long, default_value_t = 5, requires = "hubble_export_file_path")]
    pub hubble_export_file_max_backups: usize,
    /// Export only flows matching one of these FlowFilters (JSON objects,
    /// separated by commas, e.g. `{"verdict":["DROPPED"]}`); all if empty.
    #[arg(long, default_value = "", requires = "hubble_export_file_path")]
    pub hubble_export_allowlist: String,
    /// Never export flows matching one of these FlowFilters.
    #[arg(long, default_value = "", requires = "hubble_export_file_path")]
    pub hubble_export_denylist: String,
    /// Flows waiting for the export file's writer; beyond it a flow is
    /// dropped (and counted) rather than holding the event reader.
    #[arg(long, default_value_t = 4096, requires = "hubble_export_file_path")]
    pub hubble_export_queue_size: usize,
    /// New conntrack and service NAT entries one endpoint's packets may
    /// insert per second (0: unlimited); beyond it (and the burst) a new
    /// flow is dropped as "Rate limited" (198), so one pod cannot evict the
    /// other pods' entries from the shared maps.
    #[arg(long, default_value_t = crate::datapath::DEFAULT_CT_NEW_RATE)]
    pub conntrack_new_rate: u32,
    /// How many new entries an endpoint may insert at once above the rate.
    #[arg(long, default_value_t = crate::datapath::DEFAULT_CT_NEW_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub conntrack_new_burst: u32,
    /// How often expired conntrack entries are removed (seconds).
    #[arg(long, default_value_t = 30)]
    pub conntrack_gc_interval_s: u64,
    /// Socket LB: attach the service translation hooks (connect, sendmsg,
    /// recvmsg, getpeername) to this cgroup v2 directory, covering every
    /// socket of its subtree (the node's pods and host processes). Off when
    /// not set: services are then translated per packet at the node devices
    /// only (traffic from outside the node).
    #[arg(long)]
    pub socket_lb_cgroup: Option<PathBuf>,
    /// Maglev lookup table size per service: one of Cilium's primes (251,
    /// 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071).
    #[arg(long, default_value_t = crate::datapath::DEFAULT_MAGLEV_TABLE_SIZE,
          value_parser = parse_maglev_size)]
    pub maglev_table_size: u32,
    /// How many services can use Maglev at once (the map holds this many
    /// tables); services beyond it fall back to random selection, reported.
    #[arg(long, default_value_t = crate::datapath::DEFAULT_MAGLEV_TABLES)]
    pub maglev_tables: u32,
    /// Backend selection for services without the
    /// `service.weir.io/lb-algorithm` annotation.
    #[arg(long, value_enum, default_value_t = LbAlgorithm::Random)]
    pub lb_algorithm: LbAlgorithm,
    /// The NodePort range (inclusive), as `low-high`.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// Services' clusterIPs are accepted only from these (kube-apiserver's
    /// `--service-cluster-ip-range`; repeatable).
    #[arg(long = "service-cidr", default_value = "10.96.0.0/12")]
    pub service_cidrs: Vec<Ipv4Network>,
    /// Services' externalIPs are accepted only from these (repeatable; none
    /// by default: any Service could otherwise capture any address).
    #[arg(long = "external-ip-cidr")]
    pub external_ip_cidrs: Vec<Ipv4Network>,
    /// The cluster's pod address range(s) (repeatable): never a Service
    /// frontend, like this node's pod CIDR and address and the kvstore's.
    #[arg(long = "cluster-cidr")]
    pub cluster_cidrs: Vec<Ipv4Network>,
    /// Services' IPv6 clusterIPs are accepted only from these (the IPv6
    /// range of kube-apiserver's `--service-cluster-ip-range`;
    /// repeatable). Given, IPv6 Services are balanced; without it each
    /// IPv6 frontend is reported as a service problem and left out.
    #[arg(long = "service-cidr-v6")]
    pub service_cidrs_v6: Vec<ipnetwork::Ipv6Network>,
    /// Services' IPv6 externalIPs are accepted only from these
    /// (repeatable; none by default).
    #[arg(long = "external-ip-cidr-v6")]
    pub external_ip_cidrs_v6: Vec<ipnetwork::Ipv6Network>,
    /// The cluster's IPv6 pod address range(s) (repeatable): never a
    /// Service frontend, like this node's IPv6 pod CIDR and address.
    #[arg(long = "cluster-cidr-v6")]
    pub cluster_cidrs_v6: Vec<ipnetwork::Ipv6Network>,
}

impl Config {
    /// Which addresses Services may claim: the service and external IP
    /// ranges, and never the pods' (`--cluster-cidr`, this node's pod
    /// CIDR), this node's address or the kvstore's.
    pub fn frontend_addresses(&self, pod_cidr: Ipv4Network) -> weir_lb::FrontendAddresses {
        let mut reserved = self.cluster_cidrs.clone();
        reserved.push(pod_cidr);
        if let Some(std::net::IpAddr::V4(node)) = self.node_ip {
            reserved.extend(Ipv4Network::new(node, 32));
        }
        for endpoint in &self.etcd_endpoints {
            let host = endpoint
                .split("://")
                .last()
                .unwrap_or(endpoint)
                .split(['/', ':'])
                .next()
                .unwrap_or_default();
            if let Ok(address) = host.parse::<std::net::Ipv4Addr>() {
                reserved.extend(Ipv4Network::new(address, 32));
            }
        }
        weir_lb::FrontendAddresses {
            service_cidrs: Some(self.service_cidrs.clone()),
            external_ip_cidrs: Some(self.external_ip_cidrs.clone()),
            reserved,
        }
    }
}

impl Config {
    /// The node's IPv6 address: `--node-ipv6`, or `--node-ip` when that is
    /// an IPv6 one.
    pub fn node_ipv6_address(&self) -> Option<std::net::Ipv6Addr> {
        self.node_ipv6.or(match self.node_ip {
            Some(std::net::IpAddr::V6(address)) => Some(address),
            _ => None,
        })
    }

    /// IPv6 services: on with `--service-cidr-v6`, their clusterIPs held to
    /// it, externalIPs to `--external-ip-cidr-v6`, and never the cluster's
    /// or this node's IPv6 pod addresses or the node's own.
    pub fn ipv6_services(
        &self,
        pod_cidr_v6: Option<ipnetwork::Ipv6Network>,
    ) -> weir_lb::Ipv6Options {
        let mut reserved = self.cluster_cidrs_v6.clone();
        reserved.extend(pod_cidr_v6);
        let node = self.node_ipv6_address();
        reserved.extend(node.and_then(|address| ipnetwork::Ipv6Network::new(address, 128).ok()));
        weir_lb::Ipv6Options {
            enabled: !self.service_cidrs_v6.is_empty(),
            service_cidrs: Some(self.service_cidrs_v6.clone()),
            external_ip_cidrs: Some(self.external_ip_cidrs_v6.clone()),
            reserved,
        }
    }

    /// What tunnel mode needs and is missing, if anything.
    pub fn check_routing_mode(&self) -> Result<(), String> {
        if self.routing_mode != RoutingMode::Tunnel {
            return Ok(());
        }
        if self.auto_direct_node_routes {
            return Err("--auto-direct-node-routes is for native routing".into());
        }
        if self.devices.is_empty() {
            return Err("--routing-mode tunnel needs the underlay device (--device)".into());
        }
        match self.shared_store() {
            Ok(Some(_)) => Ok(()),
            _ => Err(
                "--routing-mode tunnel needs a shared store (the node records say \
                      where other nodes' pod CIDRs are): --k8s or --etcd-endpoints"
                    .into(),
            ),
        }
    }

    /// Whether the Kubernetes API is the agent's source (`--k8s`, or a
    /// `--kubeconfig` which implies it).
    pub fn kubernetes(&self) -> bool {
        self.k8s || self.kubeconfig.is_some()
    }

    /// The shared store the agent uses: the one asked for, else `crd` in
    /// Kubernetes mode, else `kvstore` when etcd endpoints are given; None
    /// without either (pod networking only). An error says what a mode
    /// asked for lacks.
    pub fn shared_store(&self) -> Result<Option<IdentityAllocationMode>, String> {
        use IdentityAllocationMode::{Crd, Kvstore};
        match self.identity_allocation_mode {
            Some(Kvstore) if self.etcd_endpoints.is_empty() => Err(
                "--identity-allocation-mode kvstore needs --etcd-endpoints (the etcd it shares \
                 identities through)"
                    .into(),
            ),
            Some(Crd) if !self.kubernetes() => Err(
                "--identity-allocation-mode crd needs the Kubernetes API (--k8s or --kubeconfig)"
                    .into(),
            ),
            Some(mode) => Ok(Some(mode)),
            None if self.kubernetes() => Ok(Some(Crd)),
            None if !self.etcd_endpoints.is_empty() => Ok(Some(Kvstore)),
            None => Ok(None),
        }
    }
}

pub fn parse_maglev_size(text: &str) -> Result<u32, String> {
    let size: u32 = text.parse().map_err(|e| format!("{e}"))?;
    weir_lb::maglev::check_size(size).map_err(|e| e.to_string())?;
    Ok(size)
}

pub fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("expected low-high, got {text:?}"))?;
    let low: u16 = low.trim().parse().map_err(|e| format!("{low:?}: {e}"))?;
    let high: u16 = high.trim().parse().map_err(|e| format!("{high:?}: {e}"))?;
    if low == 0 || low > high {
        return Err(format!(
            "{text:?} is not a range of ports (1 <= low <= high)"
        ));
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let base = [
            "weir-agent",
            "--node-name",
            "n1",
            "--pod-cidr",
            "10.244.1.0/24",
        ];
        Config::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn defaults_are_medium_aggregation_and_random_selection() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.monitor_aggregation, MonitorAggregation::Medium);
        assert_eq!(config.lb_algorithm, LbAlgorithm::Random);
        assert_eq!(config.node_port_range, 30000..=32767);
        assert_eq!(
            config.service_cidrs,
            ["10.96.0.0/12".parse::<Ipv4Network>().unwrap()]
        );
        assert!(config.external_ip_cidrs.is_empty());
    }

    #[test]
    fn ipv6_services_are_off_unless_an_ipv6_service_cidr_is_given() {
        let off = parse(&[]).unwrap().ipv6_services(None);
        assert!(!off.enabled);
        let on = parse(&[
            "--service-cidr-v6",
            "fd00:96::/108",
            "--cluster-cidr-v6",
            "fd00:10:244::/56",
            "--node-ipv6",
            "fd00:77::11",
        ])
        .unwrap()
        .ipv6_services(Some("fd00:10:244:1::/64".parse().unwrap()));
        assert!(on.enabled);
        assert_eq!(
            on.service_cidrs,
            Some(vec!["fd00:96::/108".parse().unwrap()])
        );
        let reserved: Vec<String> = on.reserved.iter().map(ToString::to_string).collect();
        assert_eq!(
            reserved,
            ["fd00:10:244::/56", "fd00:10:244:1::/64", "fd00:77::11/128"]
        );
        let cluster_ip = weir_lb::FrontendKind::ClusterIp;
        assert!(on
            .refusal(cluster_ip, "fd00:10:244:1::9".parse().unwrap())
            .is_some());
        assert_eq!(on.refusal(cluster_ip, "fd00:96::10".parse().unwrap()), None);
        // No IPv6 external IP range given: none is accepted.
        let external = weir_lb::FrontendKind::ExternalIp;
        assert!(on
            .refusal(external, "2001:db8::10".parse().unwrap())
            .is_some());
        let with_external = parse(&[
            "--service-cidr-v6",
            "fd00:96::/108",
            "--external-ip-cidr-v6",
            "2001:db8::/64",
        ])
        .unwrap()
        .ipv6_services(None);
        assert_eq!(
            with_external.refusal(external, "2001:db8::10".parse().unwrap()),
            None
        );
    }

    #[test]
    fn services_may_not_claim_pod_node_or_kvstore_addresses() {
        let config = Config::try_parse_from([
            "weir-agent",
            "--node-name",
            "n1",
            "--node-ip",
            "192.0.2.1",
            "--etcd-endpoints",
            "http://192.0.2.100:2379,etcd.example:2379",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--external-ip-cidr",
            "198.51.100.0/24",
        ])
        .unwrap();
        let addresses = config.frontend_addresses("10.244.1.0/24".parse().unwrap());
        let reserved: Vec<String> = addresses.reserved.iter().map(ToString::to_string).collect();
        assert_eq!(
            reserved,
            [
                "10.244.0.0/16",
                "10.244.1.0/24",
                "192.0.2.1/32",
                "192.0.2.100/32"
            ]
        );
        assert_eq!(addresses.external_ip_cidrs.unwrap().len(), 1);
    }

    #[test]
    fn enumerated_flags_take_only_their_values() {
        let config = parse(&["--monitor-aggregation", "none", "--lb-algorithm", "maglev"]).unwrap();
        assert_eq!(config.monitor_aggregation, MonitorAggregation::None);
        assert_eq!(
            weir_lb::Algorithm::from(config.lb_algorithm),
            weir_lb::Algorithm::Maglev
        );
        assert!(parse(&["--monitor-aggregation", "high"]).is_err());
        assert!(parse(&["--lb-algorithm", "ring"]).is_err());
    }

    #[test]
    fn the_shared_store_is_crd_in_kubernetes_mode_unless_kvstore_is_asked_for() {
        use IdentityAllocationMode::{Crd, Kvstore};
        let mode = |extra: &[&str]| parse(extra).unwrap().shared_store();
        assert_eq!(mode(&[]), Ok(None));
        assert_eq!(mode(&["--k8s"]), Ok(Some(Crd)));
        assert_eq!(mode(&["--kubeconfig", "/k"]), Ok(Some(Crd)));
        assert_eq!(
            mode(&["--etcd-endpoints", "http://e:2379"]),
            Ok(Some(Kvstore))
        );
        assert_eq!(
            mode(&["--k8s", "--etcd-endpoints", "http://e:2379"]),
            Ok(Some(Crd))
        );
        assert_eq!(
            mode(&[
                "--k8s",
                "--etcd-endpoints",
                "http://e:2379",
                "--identity-allocation-mode",
                "kvstore"
            ]),
            Ok(Some(Kvstore))
        );
        let error = mode(&["--k8s", "--identity-allocation-mode", "kvstore"]).unwrap_err();
        assert!(error.contains("needs --etcd-endpoints"), "{error}");
        let error = mode(&["--identity-allocation-mode", "crd"]).unwrap_err();
        assert!(error.contains("needs the Kubernetes API"), "{error}");
        assert!(parse(&["--identity-allocation-mode", "etcd"]).is_err());
    }

    #[test]
    fn hubble_metrics_take_hubbles_option_string() {
        use crate::flows::metrics::options::{ContextKind, Handler};
        let config = parse(&[]).unwrap();
        assert_eq!(config.hubble_metrics.handlers.len(), 4);
        assert_eq!(config.hubble_metrics_max_contexts, 1000);
        let config = parse(&[
            "--hubble-metrics",
            "drop:sourceContext=pod;destinationContext=namespace|reserved-identity icmp",
            "--hubble-metrics-max-contexts",
            "50",
        ])
        .unwrap();
        let handlers = &config.hubble_metrics.handlers;
        assert_eq!(handlers[0].handler, Handler::Drop);
        assert_eq!(
            handlers[0].context.destination,
            [ContextKind::Namespace, ContextKind::ReservedIdentity]
        );
        assert_eq!(handlers[1].handler, Handler::Icmp);
        assert_eq!(config.hubble_metrics_max_contexts, 50);
        assert!(parse(&["--hubble-metrics", ""])
            .unwrap()
            .hubble_metrics
            .handlers
            .is_empty());
        let error = parse(&["--hubble-metrics", "flow:sourceContext=node"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown context \"node\""), "{error}");
    }

    #[test]
    fn maglev_sizes_and_port_ranges_are_checked() {
        assert_eq!(parse_maglev_size("1021"), Ok(1021));
        assert!(parse_maglev_size("1000")
            .unwrap_err()
            .contains("one of the primes"));
        assert_eq!(parse_port_range("30000-30010"), Ok(30000..=30010));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("20-10").is_err());
        assert!(parse_port_range("80").is_err());
    }
}
