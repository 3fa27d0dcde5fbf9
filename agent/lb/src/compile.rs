//! The desired load-balancer state of one node: every frontend (address,
//! port, protocol, scope) with its backends, from validated Services and
//! EndpointSlices. The rules, with kube-proxy's and Cilium's semantics, are
//! in the crate documentation; each is tested in `compile/tests.rs`.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use serde::Serialize;
use weir_types::{NamespacedName, Protocol};

use crate::endpointslice::EndpointSlice;
use crate::error::{MaglevError, OptionsError};
use crate::family::LbAddress;
use crate::maglev::{self, BackendKey, Table};
use crate::service::{
    Algorithm, ClusterIps, Service, ServicePort, ServiceType, SessionAffinity, TrafficPolicy,
};

/// The node the state is compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeContext {
    /// Matched against endpoints' `nodeName` for the Local traffic policies.
    pub name: String,
    /// The node's addresses: NodePort frontends listen on each.
    pub addresses: Vec<Ipv4Addr>,
    /// The node's IPv6 addresses: IPv6 NodePort frontends listen on each
    /// (with [`Ipv6Options::enabled`]).
    pub addresses_v6: Vec<Ipv6Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LbOptions {
    /// kube-apiserver's `--service-node-port-range`.
    pub node_port_range: RangeInclusive<u16>,
    /// For services without the `service.weir.io/lb-algorithm` annotation.
    pub default_algorithm: Algorithm,
    /// For building Maglev tables ([`Frontend::maglev_table`]).
    pub maglev_table_size: u32,
    /// Which addresses a Service may claim as frontends.
    pub addresses: FrontendAddresses,
}

/// Which addresses a Service may claim (issue 16 item 7, the
/// CVE-2020-8554 class: a Service that names any address as its clusterIP
/// or externalIP captures every `connect()` to it, in every pod and on every
/// host). `None` accepts any address: the library's default, for tests and
/// benchmarks; the agent always configures both lists (its flags default to
/// Kubernetes' service range and no external IPs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FrontendAddresses {
    /// clusterIPs only from these (kube-apiserver's
    /// `--service-cluster-ip-range`).
    pub service_cidrs: Option<Vec<ipnetwork::Ipv4Network>>,
    /// externalIPs only from these.
    pub external_ip_cidrs: Option<Vec<ipnetwork::Ipv4Network>>,
    /// Never a frontend of any kind: pod and node addresses, the kvstore.
    pub reserved: Vec<ipnetwork::Ipv4Network>,
}

impl FrontendAddresses {
    /// Why `kind` may not use `address`, if it may not.
    pub fn refusal(&self, kind: FrontendKind, address: Ipv4Addr) -> Option<String> {
        // A NodePort frontend's address is the node's own, by construction.
        if matches!(kind, FrontendKind::NodePort | FrontendKind::HostPort) {
            return None;
        }
        if let Some(range) = self.reserved.iter().find(|r| r.contains(address)) {
            return Some(format!(
                "{address} is inside {range}, reserved for pods, nodes or the kvstore"
            ));
        }
        let (allowed, what) = match kind {
            FrontendKind::ClusterIp => (&self.service_cidrs, "the service CIDRs"),
            FrontendKind::ExternalIp => (&self.external_ip_cidrs, "the allowed external IP CIDRs"),
            FrontendKind::NodePort | FrontendKind::LoadBalancer | FrontendKind::HostPort => {
                return None
            }
        };
        let allowed = allowed.as_ref()?;
        if allowed.iter().any(|r| r.contains(address)) {
            return None;
        }
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        Some(format!(
            "{address} is outside {what} ({})",
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        ))
    }
}

/// IPv6 frontends (the agent's `Ipv6Options`): off by default, and then
/// every IPv6 cluster IP is a [`ServiceProblem`] rather than a frontend, so
/// an agent that does not program the IPv6 maps says so instead of
/// dropping them silently. Every kind is balanced over IPv6, under the
/// same address rules as IPv4 ([`FrontendAddresses`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ipv6Options {
    /// IPv6 frontends are compiled (the agent programs them).
    pub enabled: bool,
    /// clusterIPs only from these (the IPv6 range of kube-apiserver's
    /// `--service-cluster-ip-range`); `None` accepts any address.
    pub service_cidrs: Option<Vec<ipnetwork::Ipv6Network>>,
    /// externalIPs only from these; `None` accepts any address.
    pub external_ip_cidrs: Option<Vec<ipnetwork::Ipv6Network>>,
    /// Never a frontend: pod and node addresses.
    pub reserved: Vec<ipnetwork::Ipv6Network>,
}

impl Ipv6Options {
    /// Why `kind` may not use the IPv6 `address`, if it may not.
    pub fn refusal(&self, kind: FrontendKind, address: Ipv6Addr) -> Option<String> {
        if !self.enabled {
            return Some(
                "IPv6 services are not enabled on this agent (it programs IPv4 frontends only)"
                    .into(),
            );
        }
        // A NodePort frontend's address is the node's own, by construction.
        if matches!(kind, FrontendKind::NodePort | FrontendKind::HostPort) {
            return None;
        }
        if let Some(range) = self.reserved.iter().find(|r| r.contains(address)) {
            return Some(format!(
                "{address} is inside {range}, reserved for pods or nodes"
            ));
        }
        let (allowed, what) = match kind {
            FrontendKind::ClusterIp => (&self.service_cidrs, "the IPv6 service CIDRs"),
            FrontendKind::ExternalIp => (
                &self.external_ip_cidrs,
                "the allowed IPv6 external IP CIDRs",
            ),
            FrontendKind::NodePort | FrontendKind::LoadBalancer | FrontendKind::HostPort => {
                return None
            }
        };
        let allowed = allowed.as_ref()?;
        if allowed.iter().any(|r| r.contains(address)) {
            return None;
        }
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        Some(format!(
            "{address} is outside {what} ({})",
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        ))
    }
}

impl Default for LbOptions {
    fn default() -> Self {
        Self {
            node_port_range: 30000..=32767,
            default_algorithm: Algorithm::Random,
            maglev_table_size: 1021,
            addresses: FrontendAddresses::default(),
        }
    }
}

impl LbOptions {
    /// Checks the options once, where the agent reads its configuration.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let (start, end) = (*self.node_port_range.start(), *self.node_port_range.end());
        if start == 0 || start > end {
            return Err(OptionsError::NodePortRange { start, end });
        }
        maglev::check_size(self.maglev_table_size)?;
        Ok(())
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
    /// A pod's hostPort (CNI `portMappings`), made by the agent from its
    /// endpoints rather than compiled from a Service.
    HostPort,
}

/// Which clients a frontend entry serves; see the crate docs for the rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scope {
    /// Clients outside the cluster (packets arriving on a node device).
    External,
    /// Clients in the cluster (pods, and the host of this node).
    Internal,
}

/// What the datapath looks a new connection up by.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FrontendKey<A = Ipv4Addr> {
    pub address: A,
    pub port: u16,
    pub protocol: Protocol,
    pub scope: Scope,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum BackendState {
    /// Takes new connections.
    Active,
    /// Terminating but still serving: kept so existing connections finish;
    /// never picked for a new connection.
    Terminating,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Backend<A = Ipv4Addr> {
    pub address: A,
    pub port: u16,
    pub state: BackendState,
    /// The endpoint's `nodeName`.
    pub node: Option<String>,
    /// The pod, from a `targetRef` of kind Pod.
    pub pod: Option<NamespacedName>,
}

impl<A: LbAddress> Backend<A> {
    pub fn key(&self) -> BackendKey {
        BackendKey::new(self.address, self.port)
    }
}

/// A frontend of IPv4 (the default) or, with `A = Ipv6Addr`, IPv6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frontend<A = Ipv4Addr> {
    pub service: NamespacedName,
    pub port_name: Option<String>,
    pub address: A,
    pub port: u16,
    pub protocol: Protocol,
    pub kind: FrontendKind,
    pub scope: Scope,
    /// Sorted by (address, port), no duplicates; may be empty (the datapath
    /// then drops the service's traffic).
    pub backends: Vec<Backend<A>>,
    pub algorithm: Algorithm,
    /// `Some(seconds)` with `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
}

impl<A: LbAddress> Frontend<A> {
    pub fn key(&self) -> FrontendKey<A> {
        FrontendKey {
            address: self.address,
            port: self.port,
            protocol: self.protocol,
            scope: self.scope,
        }
    }

    /// The backends that take new connections.
    pub fn active_backends(&self) -> impl Iterator<Item = &Backend<A>> {
        self.backends
            .iter()
            .filter(|b| b.state == BackendState::Active)
    }

    /// The Maglev table over the active backends; its slots index
    /// [`Frontend::backends`]. [`MaglevError::NoBackends`] when none is
    /// active.
    pub fn maglev_table(&self, size: u32) -> Result<Table, MaglevError> {
        let (indexes, keys): (Vec<u32>, Vec<BackendKey>) = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.state == BackendState::Active)
            .map(|(i, b)| (i as u32, b.key()))
            .unzip();
        let table = Table::build(&keys, size)?;
        let slots: Vec<u32> = table.slots().iter().map(|&s| indexes[s as usize]).collect();
        Ok(Table::from_slots(slots))
    }
}

/// Something in a service that kept (part of) it out of the state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceProblem {
    pub service: NamespacedName,
    pub message: String,
}

/// The desired state: frontends sorted by [`FrontendKey`] (unique), and the
/// problems in the order of services by (namespace, name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LbState {
    pub frontends: Vec<Frontend>,
    /// The IPv6 frontends (ClusterIPs), sorted by key; empty unless
    /// [`Ipv6Options::enabled`].
    pub frontends_v6: Vec<Frontend<Ipv6Addr>>,
    pub problems: Vec<ServiceProblem>,
}

impl LbState {
    pub fn get(&self, key: &FrontendKey) -> Option<&Frontend> {
        self.frontends
            .binary_search_by(|f| f.key().cmp(key))
            .ok()
            .map(|i| &self.frontends[i])
    }

    pub fn get_v6(&self, key: &FrontendKey<Ipv6Addr>) -> Option<&Frontend<Ipv6Addr>> {
        self.frontends_v6
            .binary_search_by(|f| f.key().cmp(key))
            .ok()
            .map(|i| &self.frontends_v6[i])
    }

    /// The datapath's lookup.
    pub fn lookup(
        &self,
        address: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        scope: Scope,
    ) -> Option<&Frontend> {
        self.get(&FrontendKey {
            address,
            port,
            protocol,
            scope,
        })
    }
}

/// Compiles the state of `node` in one go (the agent keeps an
/// [`crate::LbCompiler`] and feeds it changes instead). Services are visited
/// in (namespace, name) order; when two claim the same (address, port,
/// protocol) the first keeps it and the other gets a [`ServiceProblem`].
/// Deterministic: the same input in any order gives the same state (only
/// when one service is given twice does the input order pick the
/// definition used).
pub fn compile(
    services: &[Service],
    slices: &[EndpointSlice],
    node: &NodeContext,
    options: &LbOptions,
) -> LbState {
    let mut compiler = crate::LbCompiler::new(node.clone(), options.clone());
    compiler.update(services, slices);
    compiler.state()
}

/// [`compile()`] for dual stack: slices of either address type, IPv6
/// frontends per `ipv6`.
pub fn compile_dual_stack(
    services: &[Service],
    slices: &[crate::AnyEndpointSlice],
    node: &NodeContext,
    options: &LbOptions,
    ipv6: &Ipv6Options,
) -> LbState {
    let mut compiler =
        crate::LbCompiler::new(node.clone(), options.clone()).with_ipv6(ipv6.clone());
    compiler.update_any(services, slices);
    compiler.state()
}

/// What a frontend is claimed by: (address, port, protocol). One service
/// holds it, in both scopes.
pub(crate) type ClaimKey<A = Ipv4Addr> = (A, u16, Protocol);

/// One step of compiling a service on its own, in order: a problem of its
/// own, or a claim with the frontends it installs when no service earlier
/// in (namespace, name) order holds the same [`ClaimKey`]. Claims between
/// services are settled by [`crate::LbCompiler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step<A = Ipv4Addr> {
    Problem(String),
    Claim(Claim<A>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim<A = Ipv4Addr> {
    pub(crate) key: ClaimKey<A>,
    pub(crate) kind: FrontendKind,
    /// One frontend per scope the claim is reachable from.
    pub(crate) frontends: Vec<Frontend<A>>,
}

/// How problems name a claim.
pub(crate) fn describe<A: LbAddress>(key: ClaimKey<A>, kind: FrontendKind) -> String {
    let (address, port, protocol) = key;
    format!("{kind:?} frontend {}/{protocol}", address.with_port(port))
}

struct Candidate<'b, A> {
    kind: FrontendKind,
    address: A,
    port: u16,
    scopes: Vec<(Scope, &'b [Backend<A>])>,
}

/// Compiles one service with its own slices (sorted by name) for `node`
/// (addresses sorted, no duplicates).
pub(crate) fn compile_service(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeContext,
    options: &LbOptions,
) -> Vec<Step> {
    let mut compiler = ServiceCompiler {
        held: BTreeMap::new(),
        steps: Vec::new(),
    };
    compiler.service(service, slices, node, options);
    compiler.steps
}

/// The IPv6 side of [`compile_service`]: a frontend per IPv6 cluster IP and
/// port (internal scope, as every ClusterIP) over the IPv6 slices' backends,
/// or a problem per IPv6 cluster IP when IPv6 is off or the address is
/// refused; a problem for each IPv6 frontend of a kind not balanced over
/// IPv6 yet (NodePort, externalIP, LoadBalancer).
pub(crate) fn compile_service_v6(
    service: &Service,
    slices: &[&EndpointSlice<Ipv6Addr>],
    node: &NodeContext,
    options: &LbOptions,
    ipv6: &Ipv6Options,
) -> Vec<Step<Ipv6Addr>> {
    let mut compiler = ServiceCompiler {
        held: BTreeMap::new(),
        steps: Vec::new(),
    };
    compiler.service_v6(service, slices, node, options, ipv6);
    compiler.steps
}

struct ServiceCompiler<A = Ipv4Addr> {
    /// The service's own claims: kind and port name.
    held: BTreeMap<ClaimKey<A>, (FrontendKind, Option<String>)>,
    steps: Vec<Step<A>>,
}

impl<A: LbAddress> ServiceCompiler<A> {
    fn problem(&mut self, message: impl Into<String>) {
        self.steps.push(Step::Problem(message.into()));
    }

    /// The node port of `port`, if it is set and inside the range; with
    /// `report`, a missing or out-of-range one is a problem (each Service's
    /// is reported by one family).
    fn node_port(
        &mut self,
        service: &Service,
        port: &ServicePort,
        options: &LbOptions,
        report: bool,
    ) -> Option<u16> {
        match port.node_port {
            Some(node_port) if options.node_port_range.contains(&node_port) => {
                return Some(node_port)
            }
            Some(node_port) if report => self.problem(format!(
                "port {}: nodePort {node_port} is outside the node port range {}-{}: no NodePort frontend",
                port_label(port),
                options.node_port_range.start(),
                options.node_port_range.end()
            )),
            None if report
                && (service.service_type == ServiceType::NodePort
                    || service.allocate_load_balancer_node_ports) =>
            {
                self.problem(format!(
                    "port {}: nodePort is not set and Weir does not allocate node ports: no NodePort frontend",
                    port_label(port)
                ))
            }
            _ => {}
        }
        None
    }

    fn install(
        &mut self,
        service: &Service,
        port: &ServicePort,
        candidate: Candidate<'_, A>,
        options: &LbOptions,
        refusal: Option<String>,
    ) {
        let key = (candidate.address, candidate.port, port.protocol);
        if let Some(reason) = refusal {
            self.problem(format!(
                "{} refused: {reason}",
                describe(key, candidate.kind)
            ));
            return;
        }
        let mine = (candidate.kind, port.name.clone());
        match self.held.entry(key) {
            Entry::Occupied(held) if *held.get() == mine => return, // listed twice
            Entry::Occupied(held) => {
                let (kind, port_name) = held.get().clone();
                self.problem(format!(
                    "{} is also this service's {kind:?} frontend (port {}): the first is kept",
                    describe(key, candidate.kind),
                    port_name.as_deref().unwrap_or("(unnamed)")
                ));
                return;
            }
            Entry::Vacant(free) => {
                free.insert(mine);
            }
        }
        let name = service.service_name();
        let algorithm = service.algorithm.unwrap_or(options.default_algorithm);
        let affinity_timeout = match service.session_affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        };
        let frontends = candidate
            .scopes
            .into_iter()
            .map(|(scope, backends)| Frontend {
                service: name.clone(),
                port_name: port.name.clone(),
                address: candidate.address,
                port: candidate.port,
                protocol: port.protocol,
                kind: candidate.kind,
                scope,
                backends: backends.to_vec(),
                algorithm,
                affinity_timeout,
            })
            .collect();
        self.steps.push(Step::Claim(Claim {
            key,
            kind: candidate.kind,
            frontends,
        }));
    }
}

impl ServiceCompiler<Ipv6Addr> {
    fn service_v6(
        &mut self,
        service: &Service,
        slices: &[&EndpointSlice<Ipv6Addr>],
        node: &NodeContext,
        options: &LbOptions,
        ipv6: &Ipv6Options,
    ) {
        if !matches!(service.cluster_ips, ClusterIps::Allocated(_)) {
            return;
        }
        let has_v6 = !service.cluster_ips_v6.is_empty();
        for port in &service.ports {
            let all = backends(port, slices);
            let local: Vec<Backend<Ipv6Addr>> = all
                .iter()
                .filter(|b| b.node.as_deref() == Some(node.name.as_str()))
                .cloned()
                .collect();
            let internal: &[Backend<Ipv6Addr>] = match service.internal_traffic_policy {
                TrafficPolicy::Cluster => &all,
                TrafficPolicy::Local => &local,
            };
            // externalTrafficPolicy applies to clients from outside only.
            let external_backends = match service.external_traffic_policy {
                TrafficPolicy::Cluster => all.as_slice(),
                TrafficPolicy::Local => local.as_slice(),
            };
            let external = vec![
                (Scope::External, external_backends),
                (Scope::Internal, all.as_slice()),
            ];
            let mut candidates = Vec::new();
            for &address in &service.cluster_ips_v6 {
                candidates.push(Candidate {
                    kind: FrontendKind::ClusterIp,
                    address,
                    port: port.port,
                    scopes: vec![(Scope::Internal, internal)],
                });
            }
            // Kube-proxy opens the node port on the node's IPv6 addresses
            // for a service of the IPv6 family.
            if has_v6 && service.service_type.has_node_ports() {
                if let Some(node_port) = self.node_port_v6(service, port, node, options, ipv6) {
                    for &address in &node.addresses_v6 {
                        candidates.push(Candidate {
                            kind: FrontendKind::NodePort,
                            address,
                            port: node_port,
                            scopes: external.clone(),
                        });
                    }
                }
            }
            candidates.extend(external_candidates(
                service,
                port,
                &service.external_ips_v6,
                &service.load_balancer_ips_v6,
                &external,
            ));
            for candidate in candidates {
                let refusal = ipv6.refusal(candidate.kind, candidate.address);
                self.install(service, port, candidate, options, refusal);
            }
        }
    }
}

impl ServiceCompiler<Ipv6Addr> {
    /// The node port of `port` for the node's IPv6 addresses, if it gets
    /// frontends there; a problem when it cannot.
    fn node_port_v6(
        &mut self,
        service: &Service,
        port: &ServicePort,
        node: &NodeContext,
        options: &LbOptions,
        ipv6: &Ipv6Options,
    ) -> Option<u16> {
        // A dual-stack service's missing or out-of-range nodePort is
        // reported once, by the IPv4 side.
        let ipv6_only =
            matches!(&service.cluster_ips, ClusterIps::Allocated(ips) if ips.is_empty());
        let node_port = self.node_port(service, port, options, ipv6_only)?;
        if ipv6.enabled && node.addresses_v6.is_empty() {
            self.problem(format!(
                "port {}: no IPv6 NodePort frontend: the node has no IPv6 address (--node-ipv6)",
                port_label(port)
            ));
            return None;
        }
        Some(node_port)
    }
}

impl ServiceCompiler {
    fn service(
        &mut self,
        service: &Service,
        slices: &[&EndpointSlice],
        node: &NodeContext,
        options: &LbOptions,
    ) {
        let cluster_ips = match &service.cluster_ips {
            // Headless: DNS names the pods; nothing to balance.
            ClusterIps::Headless => return,
            ClusterIps::Unallocated => {
                self.problem(
                    "spec.clusterIP is not set and Weir does not allocate cluster IPs: the service is not installed",
                );
                return;
            }
            ClusterIps::Allocated(ips) => ips,
        };
        for port in &service.ports {
            let all = backends(port, slices);
            let local: Vec<Backend> = all
                .iter()
                .filter(|b| b.node.as_deref() == Some(node.name.as_str()))
                .cloned()
                .collect();
            let pick = |policy: TrafficPolicy| match policy {
                TrafficPolicy::Cluster => all.as_slice(),
                TrafficPolicy::Local => local.as_slice(),
            };
            let internal = vec![(Scope::Internal, pick(service.internal_traffic_policy))];
            // In-cluster clients are not subject to externalTrafficPolicy.
            let external = vec![
                (Scope::External, pick(service.external_traffic_policy)),
                (Scope::Internal, all.as_slice()),
            ];

            let mut candidates = Vec::new();
            for &address in cluster_ips {
                candidates.push(Candidate {
                    kind: FrontendKind::ClusterIp,
                    address,
                    port: port.port,
                    scopes: internal.clone(),
                });
            }
            // An IPv6-only service's node ports are IPv6 ones (the IPv6
            // side's).
            if service.service_type.has_node_ports() && !cluster_ips.is_empty() {
                if let Some(node_port) = self.node_port(service, port, options, true) {
                    for &address in &node.addresses {
                        candidates.push(Candidate {
                            kind: FrontendKind::NodePort,
                            address,
                            port: node_port,
                            scopes: external.clone(),
                        });
                    }
                }
            }
            candidates.extend(external_candidates(
                service,
                port,
                &service.external_ips,
                &service.load_balancer_ips,
                &external,
            ));
            for candidate in candidates {
                let refusal = options.addresses.refusal(candidate.kind, candidate.address);
                self.install(service, port, candidate, options, refusal);
            }
        }
    }
}

/// The externalIP and (for a LoadBalancer) load-balancer IP frontends of
/// `port`, each with `scopes`.
fn external_candidates<'b, A: Copy>(
    service: &Service,
    port: &ServicePort,
    external_ips: &[A],
    load_balancer_ips: &[A],
    scopes: &[(Scope, &'b [Backend<A>])],
) -> Vec<Candidate<'b, A>> {
    let load_balancer_ips = if service.service_type == ServiceType::LoadBalancer {
        load_balancer_ips
    } else {
        &[]
    };
    let of = |kind: FrontendKind, addresses: &[A]| {
        addresses
            .iter()
            .map(|&address| Candidate {
                kind,
                address,
                port: port.port,
                scopes: scopes.to_vec(),
            })
            .collect::<Vec<_>>()
    };
    let mut candidates = of(FrontendKind::ExternalIp, external_ips);
    candidates.extend(of(FrontendKind::LoadBalancer, load_balancer_ips));
    candidates
}

fn port_label(port: &ServicePort) -> String {
    match &port.name {
        Some(name) => format!("{name} ({}/{})", port.port, port.protocol),
        None => format!("{}/{}", port.port, port.protocol),
    }
}

/// The backends of one service port: endpoints of the service's slices
/// whose slice port has the same name (unnamed matches unnamed) and
/// protocol. Ready endpoints are Active; terminating ones still serving are
/// Terminating; the rest are left out. An address listed twice keeps its
/// best state. Sorted by (address, port).
fn backends<A: LbAddress>(port: &ServicePort, slices: &[&EndpointSlice<A>]) -> Vec<Backend<A>> {
    let mut by_address: BTreeMap<(A, u16), Backend<A>> = BTreeMap::new();
    for slice in slices {
        let numbers = slice.ports.iter().filter(|sp| {
            sp.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or("")
                && sp.protocol == port.protocol
        });
        for number in numbers.filter_map(|sp| sp.port) {
            for endpoint in &slice.endpoints {
                let conditions = &endpoint.conditions;
                let state = if conditions.ready() {
                    BackendState::Active
                } else if conditions.serving() && conditions.terminating() {
                    BackendState::Terminating
                } else {
                    continue;
                };
                // Addresses are fungible; like kube-proxy, use the first.
                let Some(&address) = endpoint.addresses.first() else {
                    continue;
                };
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind == "Pod")
                    .map(|r| {
                        let namespace = r.namespace.as_ref().unwrap_or(&slice.namespace);
                        NamespacedName::new(namespace, &r.name)
                    });
                let backend = Backend {
                    address,
                    port: number,
                    state,
                    node: endpoint.node_name.clone(),
                    pod,
                };
                match by_address.entry((address, number)) {
                    Entry::Vacant(free) => {
                        free.insert(backend);
                    }
                    Entry::Occupied(mut held) => {
                        if backend.state < held.get().state {
                            held.insert(backend);
                        }
                    }
                }
            }
        }
    }
    by_address.into_values().collect()
}

#[cfg(test)]
mod tests;
