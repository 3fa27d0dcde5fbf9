//! Kubernetes Service (v1), read and validated from one YAML document as the
//! API server validates it, limited to what Weir balances:
//!
//! - `spec.type` ClusterIP (default), NodePort or LoadBalancer; ExternalName
//!   (a DNS alias, nothing to balance) is rejected as unsupported.
//! - IPv4, IPv6 or dual stack: `clusterIPs` holds at most one address per
//!   family, `ipFamilies` (if set) names the same families in the same
//!   order, `ipFamilyPolicy: SingleStack` allows one family. IPv6 external
//!   and load-balancer IPs are read (kept apart, in the `*_v6` fields) and
//!   refused per frontend by [`crate::compile()`], which balances IPv6
//!   ClusterIPs only. SCTP ports and `loadBalancerSourceRanges` (an access
//!   restriction Weir would otherwise silently drop) are rejected as
//!   unsupported.
//! - `clusterIP: None` is headless. An absent cluster IP is kept as
//!   [`ClusterIps::Unallocated`]: the API server would allocate one, Weir has
//!   no allocator, so [`crate::compile()`] reports it.
//! - `targetPort` absent, `0` or `""` means `port`; `nodePort` absent or `0`
//!   means "allocate", which Weir cannot do either (reported by compile).
//! - `externalTrafficPolicy` only for externally reachable services
//!   (NodePort, LoadBalancer, or with `externalIPs`), default Cluster;
//!   `internalTrafficPolicy` default Cluster; `sessionAffinityConfig` only
//!   with `sessionAffinity: ClientIP`, timeout 1-86400 s, default 10800.
//! - The annotation `service.weir.io/lb-algorithm: random|maglev` picks the
//!   backend selection; absent means the agent's default.
//! - A missing `metadata.namespace` is `default`; an empty `selector` is no
//!   selector (the API server stores `{}` as absent).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_yaml_ng::Value;
use weir_types::{IntOrString, NamespacedName, Protocol};

use crate::error::{FieldErrors, Path};
use crate::family::IpFamily;
use crate::validate;
use crate::yaml::{self, field};

pub const ALGORITHM_ANNOTATION: &str = "service.weir.io/lb-algorithm";
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// `namespace/name` of a Service.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// Whether the service has node ports (NodePort and LoadBalancer).
    pub fn has_node_ports(self) -> bool {
        matches!(self, ServiceType::NodePort | ServiceType::LoadBalancer)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ClusterIps {
    /// Not set: the API server would allocate one; Weir has no allocator.
    Unallocated,
    /// `None`: a headless service, not load-balanced.
    Headless,
    /// The IPv4 cluster IP, if any: empty for an IPv6-only service (its
    /// address is in [`Service::cluster_ips_v6`]).
    Allocated(Vec<Ipv4Addr>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per pod.
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    /// None: not set (the API server would allocate one).
    pub node_port: Option<u16>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIp {
        timeout_seconds: u32,
    },
}

/// Backend selection for new connections.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub enum Algorithm {
    #[default]
    Random,
    Maglev,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Random => "random",
            Algorithm::Maglev => "maglev",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub service_type: ServiceType,
    pub cluster_ips: ClusterIps,
    pub ports: Vec<ServicePort>,
    /// None: no selector; the user provides the EndpointSlices.
    pub selector: Option<BTreeMap<String, String>>,
    /// The IPv6 cluster IP (of `clusterIPs`, at most one), if any.
    pub cluster_ips_v6: Vec<Ipv6Addr>,
    /// `spec.externalIPs`, duplicates removed, in order: the IPv4 ones.
    pub external_ips: Vec<Ipv4Addr>,
    /// The IPv6 `spec.externalIPs` (not balanced yet: compile refuses them).
    pub external_ips_v6: Vec<Ipv6Addr>,
    /// `status.loadBalancer.ingress[].ip` (hostname-only entries are
    /// skipped): the IPv4 ones.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// The IPv6 ingress IPs (not balanced yet: compile refuses them).
    pub load_balancer_ips_v6: Vec<Ipv6Addr>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    pub session_affinity: SessionAffinity,
    pub publish_not_ready_addresses: bool,
    /// `spec.allocateLoadBalancerNodePorts` (LoadBalancer only; default true).
    pub allocate_load_balancer_node_ports: bool,
    /// From [`ALGORITHM_ANNOTATION`]; None means the agent's default.
    pub algorithm: Option<Algorithm>,
}

impl Service {
    pub fn service_name(&self) -> NamespacedName {
        NamespacedName::new(&self.namespace, &self.name)
    }

    pub fn is_headless(&self) -> bool {
        self.cluster_ips == ClusterIps::Headless
    }

    /// NodePort, LoadBalancer, or with external IPs (Kubernetes'
    /// `ExternallyAccessible`).
    pub fn is_externally_accessible(&self) -> bool {
        self.service_type.has_node_ports()
            || !self.external_ips.is_empty()
            || !self.external_ips_v6.is_empty()
    }

    /// Reads and validates one parsed YAML document (`apiVersion: v1`,
    /// `kind: Service`); on any problem, every problem with its path.
    pub fn from_document(document: &Value) -> Result<Service, FieldErrors> {
        let mut errors = FieldErrors::new();
        if !document.is_mapping() {
            errors.push(Path::default(), "must be a mapping (a Kubernetes object)");
            return Err(errors);
        }
        yaml::expect_kind(document, "v1", "Service", &mut errors);
        let meta = Path::root("metadata");
        let metadata = field(document, "metadata");
        let name = read_name(metadata, &meta, &mut errors);
        let namespace = read_namespace(metadata, &meta, &mut errors);
        let annotations = yaml::string_map(
            metadata.and_then(|m| field(m, "annotations")),
            &meta.field("annotations"),
            &mut errors,
        );
        let algorithm =
            annotations
                .get(ALGORITHM_ANNOTATION)
                .and_then(|value| match value.as_str() {
                    "random" => Some(Algorithm::Random),
                    "maglev" => Some(Algorithm::Maglev),
                    other => {
                        errors.push(
                            meta.field("annotations").key(ALGORITHM_ANNOTATION),
                            format!(
                            "unsupported value {other:?}: supported values: \"maglev\", \"random\""
                        ),
                        );
                        None
                    }
                });

        let spec_path = Path::root("spec");
        let empty = Value::Mapping(Default::default());
        let spec = match field(document, "spec") {
            Some(spec) if yaml::mapping(Some(spec), &spec_path, &mut errors).is_some() => spec,
            _ => &empty,
        };
        let mut spec_reader = SpecReader {
            spec,
            path: spec_path,
            errors: &mut errors,
        };
        let Some(service_type) = spec_reader.service_type() else {
            // ExternalName: the rest of its spec means something else.
            return Err(errors);
        };
        let (cluster_ips, cluster_ips_v6, families) = spec_reader.cluster_ips(service_type);
        let headless = cluster_ips == ClusterIps::Headless;
        let ports = spec_reader.ports(service_type, headless);
        let selector = spec_reader.selector();
        let (external_ips, external_ips_v6) = spec_reader.external_ips();
        let externally_accessible = service_type.has_node_ports()
            || !external_ips.is_empty()
            || !external_ips_v6.is_empty();
        let external_traffic_policy = spec_reader.external_traffic_policy(externally_accessible);
        let internal_traffic_policy = spec_reader
            .traffic_policy("internalTrafficPolicy")
            .unwrap_or_default();
        let session_affinity = spec_reader.session_affinity();
        let publish_not_ready_addresses = spec_reader.flag("publishNotReadyAddresses");
        let allocate_load_balancer_node_ports = spec_reader.allocate_node_ports(service_type);
        spec_reader.ip_families(&families);
        spec_reader.unsupported();
        let (load_balancer_ips, load_balancer_ips_v6) =
            read_load_balancer_status(document, &mut errors);

        errors.into_result(Service {
            namespace,
            name,
            annotations,
            service_type,
            cluster_ips,
            cluster_ips_v6,
            ports,
            selector,
            external_ips,
            external_ips_v6,
            load_balancer_ips,
            load_balancer_ips_v6,
            external_traffic_policy,
            internal_traffic_policy,
            session_affinity,
            publish_not_ready_addresses,
            allocate_load_balancer_node_ports,
            algorithm,
        })
    }
}

/// `metadata.name`, required, an RFC 1035 label (the API server's rule for
/// Service names).
fn read_name(metadata: Option<&Value>, meta: &Path, errors: &mut FieldErrors) -> String {
    let path = meta.field("name");
    match yaml::string(metadata.and_then(|m| field(m, "name")), &path, errors) {
        None | Some("") => {
            errors.push(path, "required");
            String::new()
        }
        Some(name) => {
            if !validate::is_dns1035_label(name) {
                errors.push(
                    path,
                    format!("invalid name {name:?}: a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63)"),
                );
            }
            name.to_string()
        }
    }
}

/// `metadata.namespace`, default `default`, an RFC 1123 label.
pub(crate) fn read_namespace(
    metadata: Option<&Value>,
    meta: &Path,
    errors: &mut FieldErrors,
) -> String {
    let path = meta.field("namespace");
    match yaml::string(metadata.and_then(|m| field(m, "namespace")), &path, errors) {
        None | Some("") => "default".to_string(),
        Some(namespace) => {
            if !validate::is_dns1123_label(namespace) {
                errors.push(
                    path,
                    format!("invalid namespace {namespace:?}: a DNS-1123 label (lower-case letters, digits and '-', at most 63)"),
                );
            }
            namespace.to_string()
        }
    }
}

fn read_load_balancer_status(
    document: &Value,
    errors: &mut FieldErrors,
) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let path = Path::root("status").field("loadBalancer").field("ingress");
    let ingress = field(document, "status")
        .and_then(|s| field(s, "loadBalancer"))
        .and_then(|lb| field(lb, "ingress"));
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (i, entry) in yaml::sequence(ingress, &path, errors).iter().enumerate() {
        let p = path.index(i);
        if yaml::mapping(Some(entry), &p, errors).is_none() {
            continue;
        }
        let ip_path = p.field("ip");
        if let Some(text) = yaml::string(field(entry, "ip"), &ip_path, errors) {
            match validate::ip(text, &ip_path, errors) {
                Some(IpAddr::V4(ip)) if !v4.contains(&ip) => v4.push(ip),
                Some(IpAddr::V6(ip)) if !v6.contains(&ip) => v6.push(ip),
                _ => {}
            }
        }
    }
    (v4, v6)
}

struct SpecReader<'a, 'e> {
    spec: &'a Value,
    path: Path,
    errors: &'e mut FieldErrors,
}

impl<'a> SpecReader<'a, '_> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        field(self.spec, name)
    }

    fn string(&mut self, name: &str) -> Option<&'a str> {
        yaml::string(self.get(name), &self.path.field(name), self.errors)
    }

    fn flag(&mut self, name: &str) -> bool {
        yaml::boolean(self.get(name), &self.path.field(name), self.errors).unwrap_or(false)
    }

    /// None for ExternalName (reported).
    fn service_type(&mut self) -> Option<ServiceType> {
        let path = self.path.field("type");
        Some(match self.string("type") {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => {
                self.errors.push(
                    path,
                    "ExternalName services are DNS aliases with nothing to load-balance: not supported by Weir",
                );
                return None;
            }
            Some(other) => {
                self.errors.push(
                    path,
                    format!("unsupported value {other:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
                );
                ServiceType::ClusterIp
            }
        })
    }

    /// `clusterIP` and `clusterIPs`: when both are set, `clusterIPs[0]` must
    /// equal `clusterIP`; `None` must be the only value; at most two values
    /// of different families. Returns the IPv4 and IPv6 ones and the
    /// families in the order given.
    fn cluster_ips(
        &mut self,
        service_type: ServiceType,
    ) -> (ClusterIps, Vec<Ipv6Addr>, Vec<IpFamily>) {
        let single_path = self.path.field("clusterIP");
        let list_path = self.path.field("clusterIPs");
        let single = self.string("clusterIP").filter(|s| !s.is_empty());
        let mut list: Vec<(&str, Path)> = Vec::new();
        for (i, item) in yaml::sequence(self.get("clusterIPs"), &list_path, self.errors)
            .iter()
            .enumerate()
        {
            if let Some(text) = yaml::string(Some(item), &list_path.index(i), self.errors) {
                list.push((text, list_path.index(i)));
            }
        }
        if let (Some(single), Some((first, path))) = (single, list.first()) {
            if single != *first {
                self.errors.push(
                    path.clone(),
                    format!("{first:?} must be equal to clusterIP {single:?}"),
                );
            }
        }
        if list.is_empty() {
            if let Some(single) = single {
                list.push((single, single_path));
            }
        }
        if list.is_empty() {
            return (ClusterIps::Unallocated, Vec::new(), Vec::new());
        }
        if list.iter().any(|(text, _)| *text == "None") {
            if list.len() > 1 {
                let path = list[0].1.clone();
                self.errors
                    .push(path, "\"None\" must be the first and only value");
            }
            if service_type.has_node_ports() {
                let what = match service_type {
                    ServiceType::NodePort => "NodePort",
                    _ => "LoadBalancer",
                };
                self.errors.push(
                    list[0].1.clone(),
                    format!("may not be \"None\" (headless) for {what} services"),
                );
            }
            return (ClusterIps::Headless, Vec::new(), Vec::new());
        }
        if list.len() > 2 {
            self.errors.push(
                list_path.clone(),
                "may hold at most two entries (one per IP family)",
            );
        }
        let (mut v4, mut v6, mut families) = (Vec::new(), Vec::new(), Vec::new());
        for (text, path) in &list {
            let Some(address) = validate::ip(text, path, self.errors) else {
                continue;
            };
            let family = match address {
                IpAddr::V4(_) => IpFamily::Ipv4,
                IpAddr::V6(_) => IpFamily::Ipv6,
            };
            if families.contains(&family) {
                self.errors.push(
                    path.clone(),
                    "must be of a different IP family than clusterIPs[0] (dual stack)",
                );
                continue;
            }
            families.push(family);
            match address {
                IpAddr::V4(address) => v4.push(address),
                IpAddr::V6(address) => v6.push(address),
            }
        }
        (ClusterIps::Allocated(v4), v6, families)
    }

    /// `ipFamilies` (each family once, at most two, in the order of
    /// `clusterIPs` when both are set) and `ipFamilyPolicy` (SingleStack
    /// allows one family).
    fn ip_families(&mut self, cluster_families: &[IpFamily]) {
        let families_path = self.path.field("ipFamilies");
        let items = yaml::sequence(self.get("ipFamilies"), &families_path, self.errors);
        let mut families = Vec::new();
        for (i, family) in items.iter().enumerate() {
            let p = families_path.index(i);
            let family = match yaml::string(Some(family), &p, self.errors) {
                Some("IPv4") => IpFamily::Ipv4,
                Some("IPv6") => IpFamily::Ipv6,
                None => continue,
                Some(other) => {
                    self.errors.push(
                        p,
                        format!(
                            "unsupported value {other:?}: supported values: \"IPv4\", \"IPv6\""
                        ),
                    );
                    continue;
                }
            };
            if families.contains(&family) {
                self.errors
                    .push(p, format!("duplicate value {:?}", family.as_str()));
                continue;
            }
            if let Some(cluster) = cluster_families.get(i) {
                if *cluster != family {
                    self.errors.push(
                        p,
                        format!(
                            "{family} does not match the family of clusterIPs[{i}] ({cluster})"
                        ),
                    );
                }
            }
            families.push(family);
        }
        if items.len() > 2 {
            self.errors.push(
                families_path,
                "may hold at most two entries (one per IP family)",
            );
        }
        let policy_path = self.path.field("ipFamilyPolicy");
        match self.string("ipFamilyPolicy") {
            None | Some("PreferDualStack") | Some("RequireDualStack") => {}
            Some("SingleStack") => {
                if families.len() > 1 || cluster_families.len() > 1 {
                    self.errors.push(
                        policy_path,
                        "must be RequireDualStack or PreferDualStack when two IP families (ipFamilies or clusterIPs) are given",
                    );
                }
            }
            Some(other) => self.errors.push(
                policy_path,
                format!("unsupported value {other:?}: supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""),
            ),
        }
    }

    fn ports(&mut self, service_type: ServiceType, headless: bool) -> Vec<ServicePort> {
        let path = self.path.field("ports");
        let items = yaml::sequence(self.get("ports"), &path, self.errors);
        if items.is_empty() && !headless {
            self.errors.push(
                path.clone(),
                "required: at least one port (only headless services may have none)",
            );
        }
        let mut ports = Vec::new();
        let mut names = BTreeMap::new();
        let mut numbers = BTreeMap::new();
        let mut node_ports = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let p = path.index(i);
            if yaml::mapping(Some(item), &p, self.errors).is_none() {
                continue;
            }
            let Some(port) = self.port(item, &p, items.len(), service_type) else {
                continue;
            };
            let name = port.name.clone().unwrap_or_default();
            if names.insert(name.clone(), i).is_some() && !name.is_empty() {
                self.errors
                    .push(p.field("name"), format!("duplicate value {name:?}"));
            }
            if numbers.insert((port.port, port.protocol), i).is_some() {
                self.errors.push(
                    p.clone(),
                    format!(
                        "duplicate value: port {} with protocol {}",
                        port.port, port.protocol
                    ),
                );
            }
            if let Some(node_port) = port.node_port {
                if node_ports.insert((node_port, port.protocol), i).is_some() {
                    self.errors.push(
                        p.field("nodePort"),
                        format!(
                            "duplicate value: nodePort {node_port} with protocol {}",
                            port.protocol
                        ),
                    );
                }
            }
            ports.push(port);
        }
        ports
    }

    fn port(
        &mut self,
        item: &Value,
        p: &Path,
        count: usize,
        service_type: ServiceType,
    ) -> Option<ServicePort> {
        let errors_before = self.errors.len();
        let name = yaml::string(field(item, "name"), &p.field("name"), self.errors)
            .filter(|n| !n.is_empty());
        match name {
            Some(name) if !validate::is_dns1123_label(name) => self.errors.push(
                p.field("name"),
                format!("invalid port name {name:?}: a DNS-1123 label (lower-case letters, digits and '-', at most 63)"),
            ),
            None if count > 1 => self.errors.push(
                p.field("name"),
                "required when the service has more than one port",
            ),
            _ => {}
        }
        let protocol_path = p.field("protocol");
        let protocol_text = yaml::string(field(item, "protocol"), &protocol_path, self.errors);
        let protocol = validate::protocol(protocol_text, &protocol_path, self.errors);
        let port_path = p.field("port");
        let port = match yaml::integer(field(item, "port"), &port_path, self.errors) {
            Some(n) => validate::port_number(n, &port_path, self.errors),
            None => {
                if field(item, "port").is_none() {
                    self.errors.push(port_path, "required");
                }
                None
            }
        };
        let target_path = p.field("targetPort");
        let target_port = match yaml::int_or_string(
            field(item, "targetPort"),
            &target_path,
            self.errors,
        ) {
            None | Some(IntOrString::Int(0)) => port.map(TargetPort::Number),
            Some(IntOrString::String(s)) if s.is_empty() => port.map(TargetPort::Number),
            Some(IntOrString::Int(n)) => {
                validate::port_number(n, &target_path, self.errors).map(TargetPort::Number)
            }
            Some(IntOrString::String(s)) => {
                if validate::is_iana_svc_name(&s) {
                    Some(TargetPort::Name(s))
                } else {
                    self.errors.push(
                            target_path,
                            format!("invalid port name {s:?}: an IANA service name (at most 15 lower-case letters, digits and '-', at least one letter)"),
                        );
                    None
                }
            }
        };
        let node_port_path = p.field("nodePort");
        let node_port = match yaml::integer(field(item, "nodePort"), &node_port_path, self.errors) {
            None | Some(0) => None,
            Some(n) => {
                if !service_type.has_node_ports() {
                    self.errors.push(
                        node_port_path.clone(),
                        "may not be used when `type` is 'ClusterIP'",
                    );
                }
                validate::port_number(n, &node_port_path, self.errors)
            }
        };
        if self.errors.len() > errors_before {
            return None;
        }
        Some(ServicePort {
            name: name.map(str::to_string),
            protocol,
            port: port?,
            target_port: target_port?,
            node_port,
        })
    }

    fn selector(&mut self) -> Option<BTreeMap<String, String>> {
        let path = self.path.field("selector");
        let selector = yaml::string_map(self.get("selector"), &path, self.errors);
        validate::labels(&selector, &path, self.errors);
        Some(selector).filter(|s| !s.is_empty())
    }

    fn external_ips(&mut self) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let path = self.path.field("externalIPs");
        let mut out = Vec::new();
        let mut out_v6 = Vec::new();
        for (i, item) in yaml::sequence(self.get("externalIPs"), &path, self.errors)
            .iter()
            .enumerate()
        {
            let p = path.index(i);
            let Some(text) = yaml::string(Some(item), &p, self.errors) else {
                continue;
            };
            if text.parse::<Ipv6Addr>().is_ok() {
                if let Some(ip) = validate::routable::<Ipv6Addr>(text, &p, self.errors) {
                    if !out_v6.contains(&ip) {
                        out_v6.push(ip);
                    }
                }
            } else if let Some(ip) = validate::routable::<Ipv4Addr>(text, &p, self.errors) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        (out, out_v6)
    }

    fn traffic_policy(&mut self, name: &str) -> Option<TrafficPolicy> {
        match self.string(name)? {
            "Cluster" => Some(TrafficPolicy::Cluster),
            "Local" => Some(TrafficPolicy::Local),
            other => {
                self.errors.push(
                    self.path.field(name),
                    format!(
                        "unsupported value {other:?}: supported values: \"Cluster\", \"Local\""
                    ),
                );
                None
            }
        }
    }

    fn external_traffic_policy(&mut self, externally_accessible: bool) -> TrafficPolicy {
        let policy = self.traffic_policy("externalTrafficPolicy");
        if policy.is_some() && !externally_accessible {
            self.errors.push(
                self.path.field("externalTrafficPolicy"),
                "may only be set for externally-accessible services (NodePort, LoadBalancer, or with externalIPs)",
            );
        }
        policy.unwrap_or_default()
    }

    fn session_affinity(&mut self) -> SessionAffinity {
        let config_path = self
            .path
            .field("sessionAffinityConfig")
            .field("clientIP")
            .field("timeoutSeconds");
        let config = self.get("sessionAffinityConfig");
        let timeout = config
            .and_then(|c| field(c, "clientIP"))
            .and_then(|c| field(c, "timeoutSeconds"));
        let timeout = yaml::integer(timeout, &config_path, self.errors);
        let client_ip = match self.string("sessionAffinity") {
            None | Some("None") => false,
            Some("ClientIP") => true,
            Some(other) => {
                self.errors.push(
                    self.path.field("sessionAffinity"),
                    format!(
                        "unsupported value {other:?}: supported values: \"ClientIP\", \"None\""
                    ),
                );
                false
            }
        };
        if !client_ip {
            if config.is_some() {
                self.errors.push(
                    self.path.field("sessionAffinityConfig"),
                    "must not be set when sessionAffinity is None",
                );
            }
            return SessionAffinity::None;
        }
        let timeout_seconds = match timeout {
            None => DEFAULT_AFFINITY_TIMEOUT,
            Some(t) if (1..=i64::from(MAX_AFFINITY_TIMEOUT)).contains(&t) => t as u32,
            Some(t) => {
                self.errors.push(
                    config_path,
                    format!("invalid value {t}: must be greater than 0 and at most {MAX_AFFINITY_TIMEOUT}"),
                );
                DEFAULT_AFFINITY_TIMEOUT
            }
        };
        SessionAffinity::ClientIp { timeout_seconds }
    }

    fn allocate_node_ports(&mut self, service_type: ServiceType) -> bool {
        let name = "allocateLoadBalancerNodePorts";
        let path = self.path.field(name);
        match yaml::boolean(self.get(name), &path, self.errors) {
            Some(_) if service_type != ServiceType::LoadBalancer => {
                self.errors
                    .push(path, "may only be used when `type` is 'LoadBalancer'");
                false
            }
            Some(value) => value,
            None => service_type == ServiceType::LoadBalancer,
        }
    }

    /// Fields Weir does not implement and must not silently ignore.
    fn unsupported(&mut self) {
        let ranges_path = self.path.field("loadBalancerSourceRanges");
        if !yaml::sequence(
            self.get("loadBalancerSourceRanges"),
            &ranges_path,
            self.errors,
        )
        .is_empty()
        {
            self.errors.push(
                ranges_path,
                "not supported by Weir yet (it would restrict who may reach the service)",
            );
        }
    }
}

#[cfg(test)]
mod tests;
