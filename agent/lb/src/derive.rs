//! EndpointSlices derived from Services and pods, as the Kubernetes
//! endpoint-slice controller builds them (the lab has no controller):
//!
//! - Only services with a selector; a service without one gets its slices
//!   from the user.
//! - Pods of the service's namespace whose labels include every selector
//!   pair, and that have an IP. Terminating pods are kept.
//! - Ports: per pod, each service port resolves its `targetPort`: a number
//!   as is, a name to the pod's container port of that name and protocol. A
//!   port the pod lacks is left out of that pod's list (the pod still serves
//!   the other ports). Pods are grouped by their resolved port list: one
//!   slice per distinct mapping, at most 100 endpoints each.
//! - Conditions: `serving` = pod ready, `terminating` = being deleted,
//!   `ready` = serving and not terminating (or always true with
//!   `publishNotReadyAddresses`).
//! - No matching pods: one placeholder slice with no endpoints and no ports
//!   (the controller keeps it so the service has a slice).
//! - Names are `<service>-<8 hex digits>`, a hash of the service, its port
//!   mapping and the chunk number, so the same input gives the same slices
//!   on every node; labels carry `kubernetes.io/service-name`.
//! - Headless services get slices too: not balancing them is the agent's
//!   decision.
//! - One set of slices per IP family of the service: `addressType: IPv4`
//!   ones ([`derive_endpoint_slices`]) for every service but an IPv6-only
//!   one, `IPv6` ones ([`derive_endpoint_slices_v6`], from the pods' IPv6
//!   addresses) for a service with an IPv6 cluster IP.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use weir_types::Protocol;

use crate::endpointslice::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectRef, MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
};
use crate::family::{IpFamily, LbAddress};
use crate::hash::murmur3_x64_128;
use crate::service::{ClusterIps, Service, ServicePort, TargetPort};

/// The controller's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The `endpointslice.kubernetes.io/managed-by` value of derived slices.
pub const MANAGED_BY: &str = "endpointslice-controller.weir.io";

/// A container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NamedPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// What the controller needs to know of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node it runs on (`""` when not scheduled).
    pub node: String,
    pub ip: Option<Ipv4Addr>,
    /// The pod's IPv6 address (a dual-stack pod).
    pub ipv6: Option<Ipv6Addr>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Being deleted (a deletion timestamp).
    pub terminating: bool,
    pub ports: Vec<NamedPort>,
}

/// The slices of every service with a selector, sorted by (namespace,
/// service, slice name).
pub fn derive_endpoint_slices(services: &[Service], pods: &[PodInfo]) -> Vec<EndpointSlice> {
    // An IPv6-only service: an allocated cluster IP, none of them IPv4.
    let ipv4 = |s: &Service| !matches!(&s.cluster_ips, ClusterIps::Allocated(v4) if v4.is_empty());
    derive(services, pods, ipv4, |pod| pod.ip)
}

/// The `addressType: IPv6` slices of every service with a selector and an
/// IPv6 cluster IP, from the pods' IPv6 addresses; sorted the same way.
pub fn derive_endpoint_slices_v6(
    services: &[Service],
    pods: &[PodInfo],
) -> Vec<EndpointSlice<Ipv6Addr>> {
    derive(
        services,
        pods,
        |s| !s.cluster_ips_v6.is_empty(),
        |pod| pod.ipv6,
    )
}

fn derive<A: LbAddress>(
    services: &[Service],
    pods: &[PodInfo],
    of_family: impl Fn(&Service) -> bool,
    address: impl Fn(&PodInfo) -> Option<A>,
) -> Vec<EndpointSlice<A>> {
    let mut slices: Vec<EndpointSlice<A>> = services
        .iter()
        .filter(|s| s.selector.is_some() && of_family(s))
        .flat_map(|s| service_slices(s, pods, &address))
        .collect();
    slices.sort_by(|a, b| {
        (&a.namespace, &a.service_name, &a.name).cmp(&(&b.namespace, &b.service_name, &b.name))
    });
    slices
}

fn selects(service: &Service, pod: &PodInfo) -> bool {
    let Some(selector) = &service.selector else {
        return false;
    };
    pod.namespace == service.namespace
        && selector
            .iter()
            .all(|(key, value)| pod.labels.get(key) == Some(value))
}

fn service_slices<A: LbAddress>(
    service: &Service,
    pods: &[PodInfo],
    address: impl Fn(&PodInfo) -> Option<A>,
) -> Vec<EndpointSlice<A>> {
    // Port mapping -> (pod name, endpoint), so chunks are stable.
    let mut groups: BTreeMap<Vec<EndpointPort>, Vec<(&str, Endpoint<A>)>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(service, p)) {
        let Some(ip) = address(pod) else { continue };
        let ports = service
            .ports
            .iter()
            .filter_map(|sp| endpoint_port(sp, pod))
            .collect();
        groups
            .entry(ports)
            .or_default()
            .push((pod.name.as_str(), endpoint(service, pod, ip)));
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let mut slices = Vec::new();
    for (ports, mut endpoints) in groups {
        endpoints.sort();
        let endpoints: Vec<Endpoint<A>> = endpoints.into_iter().map(|(_, e)| e).collect();
        let chunks: Vec<&[Endpoint<A>]> = if endpoints.is_empty() {
            vec![&[]]
        } else {
            endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
        };
        for (chunk_index, chunk) in chunks.into_iter().enumerate() {
            slices.push(EndpointSlice {
                namespace: service.namespace.clone(),
                name: slice_name(service, A::FAMILY, &ports, chunk_index),
                service_name: service.name.clone(),
                labels: BTreeMap::from([
                    (SERVICE_NAME_LABEL.to_string(), service.name.clone()),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ]),
                endpoints: chunk.to_vec(),
                ports: ports.clone(),
            });
        }
    }
    slices
}

/// The service port as this pod serves it, or None when a named target
/// port is not among the pod's ports (for that protocol).
fn endpoint_port(service_port: &ServicePort, pod: &PodInfo) -> Option<EndpointPort> {
    let port = match &service_port.target_port {
        TargetPort::Number(n) => *n,
        TargetPort::Name(name) => {
            pod.ports
                .iter()
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str()) && p.protocol == service_port.protocol
                })?
                .port
        }
    };
    Some(EndpointPort {
        name: service_port.name.clone(),
        protocol: service_port.protocol,
        port: Some(port),
    })
}

fn endpoint<A: LbAddress>(service: &Service, pod: &PodInfo, ip: A) -> Endpoint<A> {
    let serving = pod.ready;
    let terminating = pod.terminating;
    let ready = service.publish_not_ready_addresses || (serving && !terminating);
    Endpoint {
        addresses: vec![ip],
        conditions: EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        },
        node_name: Some(pod.node.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectRef {
            kind: "Pod".to_string(),
            namespace: Some(pod.namespace.clone()),
            name: pod.name.clone(),
        }),
    }
}

/// `<service>-<hash>`: the hash covers the service, its port mapping, the
/// chunk and (IPv6 only, so IPv4 names stay as they were) the family, so
/// names are stable and distinct.
fn slice_name(service: &Service, family: IpFamily, ports: &[EndpointPort], chunk: usize) -> String {
    let mut text = service.service_name().to_string();
    for port in ports {
        text.push_str(&format!(
            "|{}/{}/{}",
            port.name.as_deref().unwrap_or(""),
            port.protocol,
            port.port.unwrap_or(0)
        ));
    }
    text.push_str(&format!("#{chunk}"));
    if family == IpFamily::Ipv6 {
        text.push_str("|IPv6");
    }
    let (h1, _) = murmur3_x64_128(text.as_bytes(), 0);
    format!("{}-{:08x}", service.name, h1 as u32)
}

#[cfg(test)]
mod tests;
