//! Pods' host ports (issue 19 item 4): the CNI `portMappings` capability,
//! served as Cilium serves it, by the service datapath. Each mapping of a
//! local endpoint becomes a frontend on each of the node's addresses, in
//! both scopes (external: clients reaching the node from the network;
//! internal: this node's pods and host processes, through socket LB), with
//! the pod's container port as its one backend. They leave with the
//! endpoint (CNI DEL). [`frontends`] is pure.
//!
//! A host port a Service frontend (a NodePort) already holds stays the
//! Service's; of two pods asking for one host port, the one that held it
//! keeps it (a pod arriving later never takes a port from a running one),
//! else the first by namespace and name. The loser is reported as a
//! problem, never half served.

use std::collections::BTreeMap;

use weir_lb::{
    Algorithm, Backend, BackendState, Frontend, FrontendKey, FrontendKind, NodeContext, Scope,
    ServiceProblem,
};

use crate::endpoint::registry::Endpoint;

/// The host-port frontends of `endpoints` on `node`, leaving out any key
/// `taken` (by a Service) and reporting each refusal; `previous` is the
/// last result, whose holders keep their ports.
pub fn frontends<'a>(
    node: &NodeContext,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    previous: &BTreeMap<FrontendKey, Frontend>,
    taken: impl Fn(&FrontendKey) -> bool,
) -> (BTreeMap<FrontendKey, Frontend>, Vec<ServiceProblem>) {
    let held = |endpoint: &Endpoint| {
        previous.values().any(|f| {
            f.service == endpoint.pod && f.backends.iter().any(|b| b.address == endpoint.ipv4)
        })
    };
    let mut endpoints: Vec<&Endpoint> = endpoints.into_iter().collect();
    endpoints
        .sort_by(|a, b| (!held(a), &a.pod, &a.attachment).cmp(&(!held(b), &b.pod, &b.attachment)));
    let mut frontends = BTreeMap::new();
    let mut problems = Vec::new();
    for endpoint in endpoints {
        for mapping in &endpoint.port_mappings {
            for &address in &node.addresses {
                for scope in [Scope::External, Scope::Internal] {
                    let frontend = Frontend {
                        service: endpoint.pod.clone(),
                        port_name: Some(format!("hostport-{}", mapping.host_port)),
                        address,
                        port: mapping.host_port,
                        protocol: mapping.protocol,
                        kind: FrontendKind::HostPort,
                        scope,
                        backends: vec![Backend {
                            address: endpoint.ipv4,
                            port: mapping.container_port,
                            state: BackendState::Active,
                            node: Some(node.name.clone()),
                            pod: Some(endpoint.pod.clone()),
                        }],
                        algorithm: Algorithm::Random,
                        affinity_timeout: None,
                    };
                    let key = frontend.key();
                    let holder = if taken(&key) {
                        Some("a Service".to_string())
                    } else {
                        frontends
                            .get(&key)
                            .map(|f: &Frontend| format!("pod {}", f.service))
                    };
                    match holder {
                        Some(holder) => {
                            let problem = ServiceProblem {
                                service: endpoint.pod.clone(),
                                message: format!(
                                    "hostPort {}/{} on {address} is already {holder}'s",
                                    mapping.host_port, mapping.protocol
                                ),
                            };
                            if !problems.contains(&problem) {
                                problems.push(problem);
                            }
                        }
                        None => {
                            frontends.insert(key, frontend);
                        }
                    }
                }
            }
        }
    }
    (frontends, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ipam::AttachmentKey;
    use crate::endpoint::registry::PortMapping;
    use weir_types::{NamespacedName, Protocol};

    fn endpoint(name: &str, last: u8, mappings: &[(u16, u16, Protocol)]) -> Endpoint {
        Endpoint {
            id: u16::from(last),
            attachment: AttachmentKey {
                container_id: name.into(),
                ifname: "eth0".into(),
            },
            pod: NamespacedName::new("x", name),
            netns: format!("/run/netns/{name}"),
            host_ifname: format!("lxc{name}"),
            host_ifindex: u32::from(last),
            ipv4: std::net::Ipv4Addr::new(10, 244, 1, last),
            ipv6: None,
            mac: "02:00:00:00:00:01".into(),
            netns_cookie: 0,
            port_mappings: mappings
                .iter()
                .map(|&(host_port, container_port, protocol)| PortMapping {
                    host_port,
                    container_port,
                    protocol,
                })
                .collect(),
        }
    }

    fn node() -> NodeContext {
        NodeContext {
            name: "n1".into(),
            addresses: vec!["10.77.0.11".parse().unwrap()],
            addresses_v6: Vec::new(),
        }
    }

    #[test]
    fn a_mapping_is_a_frontend_in_both_scopes_with_the_pod_behind_it() {
        let a = endpoint("a", 2, &[(8080, 80, Protocol::Tcp)]);
        let (frontends, problems) = frontends(&node(), [&a], &BTreeMap::new(), |_| false);
        assert!(problems.is_empty());
        let scopes: Vec<Scope> = frontends.keys().map(|k| k.scope).collect();
        assert_eq!(scopes, [Scope::External, Scope::Internal]);
        for (key, frontend) in &frontends {
            assert_eq!(
                (key.address.to_string(), key.port, key.protocol),
                ("10.77.0.11".to_string(), 8080, Protocol::Tcp)
            );
            assert_eq!(frontend.kind, FrontendKind::HostPort);
            assert_eq!(frontend.service, NamespacedName::new("x", "a"));
            let backend = &frontend.backends[0];
            assert_eq!((backend.address, backend.port), (a.ipv4, 80));
            assert_eq!(frontend.backends.len(), 1);
        }
    }

    #[test]
    fn the_first_pod_keeps_a_contested_port_and_a_service_beats_both() {
        let a = endpoint(
            "a",
            2,
            &[(8080, 80, Protocol::Tcp), (8080, 80, Protocol::Udp)],
        );
        let b = endpoint("b", 3, &[(8080, 81, Protocol::Tcp)]);
        let (first, problems) = frontends(&node(), [&b, &a], &BTreeMap::new(), |_| false);
        let frontends = first.clone();
        assert!(frontends
            .values()
            .all(|f| f.service == NamespacedName::new("x", "a")));
        assert_eq!(frontends.len(), 4, "TCP and UDP, both scopes");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].service, NamespacedName::new("x", "b"));
        assert!(problems[0].message.contains("pod x/a"), "{problems:?}");

        let (frontends, problems) = frontends_taken(&a);
        assert!(frontends.keys().all(|k| k.protocol == Protocol::Udp));
        assert!(problems[0].message.contains("a Service"), "{problems:?}");

        // A pod that sorts first but comes later does not take the port
        // from the one holding it.
        let aa = endpoint("aa", 4, &[(8080, 80, Protocol::Tcp)]);
        let (frontends, problems) = super::frontends(&node(), [&aa, &a, &b], &first, |_| false);
        assert!(frontends
            .values()
            .all(|f| f.service == NamespacedName::new("x", "a")));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    fn frontends_taken(a: &Endpoint) -> (BTreeMap<FrontendKey, Frontend>, Vec<ServiceProblem>) {
        frontends(&node(), [a], &BTreeMap::new(), |key| {
            key.protocol == Protocol::Tcp
        })
    }

    #[test]
    fn endpoints_without_mappings_make_nothing() {
        let a = endpoint("a", 2, &[]);
        let (frontends, problems) = frontends(&node(), [&a], &BTreeMap::new(), |_| false);
        assert!(frontends.is_empty() && problems.is_empty());
    }
}
