//! What the agent accepts from the shared store. Anyone who can write to it
//! (etcd, or the Weir objects of the API in CRD mode) could otherwise map
//! an address to identity `host` and pass every ingress policy, or claim
//! another node's pods (issue 16 item 8). Records are checked when they
//! arrive (identities, nodes; endpoints against what is known of their
//! node) and endpoints again when the ipcache is built from them, once
//! their node's record is known.

use std::net::IpAddr;

use weir_abi::identity::is_cluster;
use weir_identity::{EndpointRecord, NodeRecord};
use weir_types::LabelSet;

/// Why a record is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "identity {0} is not in the cluster range (reserved and local identities are never shared)"
    )]
    NotClusterIdentity(u32),
    #[error("identity {0} has no labels")]
    NoLabels(u32),
    #[error("{0} is not a usable node address")]
    BadNodeAddress(IpAddr),
    #[error("pod CIDR {0} is not a node's range (too wide, or contains the node's own address)")]
    BadPodCidr(ipnetwork::IpNetwork),
    #[error("{address} is outside the pod CIDR {cidr} of its node {node}")]
    OutsideNodeCidr {
        address: IpAddr,
        node: String,
        cidr: ipnetwork::IpNetwork,
    },
    #[error("the record says node {node} is at {claimed}, its node record says {actual}")]
    WrongNodeAddress {
        node: String,
        claimed: IpAddr,
        actual: IpAddr,
    },
}

/// A usable address for a node: not unspecified, loopback, multicast or
/// the limited broadcast.
fn usable_address(address: IpAddr) -> bool {
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || matches!(address, IpAddr::V4(v4) if v4.is_broadcast()))
}

pub fn check_identity(id: u32, labels: &LabelSet) -> Result<(), Refusal> {
    if !is_cluster(id) {
        return Err(Refusal::NotClusterIdentity(id));
    }
    if labels.is_empty() {
        return Err(Refusal::NoLabels(id));
    }
    Ok(())
}

/// Narrowest accepted pod CIDR prefix: a node's range, never the world.
const WIDEST_POD_CIDR_V4: u8 = 8;
const WIDEST_POD_CIDR_V6: u8 = 48;

pub fn check_node(node: &NodeRecord) -> Result<(), Refusal> {
    if !usable_address(node.ip) {
        return Err(Refusal::BadNodeAddress(node.ip));
    }
    if let Some(ipv6) = node.ipv6.map(IpAddr::V6).filter(|a| !usable_address(*a)) {
        return Err(Refusal::BadNodeAddress(ipv6));
    }
    for cidr in node.pod_cidrs() {
        let widest = match cidr {
            ipnetwork::IpNetwork::V4(_) => WIDEST_POD_CIDR_V4,
            ipnetwork::IpNetwork::V6(_) => WIDEST_POD_CIDR_V6,
        };
        if cidr.prefix() < widest || node.addresses().any(|a| cidr.contains(a)) {
            return Err(Refusal::BadPodCidr(cidr));
        }
    }
    // The second range is the IPv6 one of a dual-stack node.
    if let Some(cidr) = node
        .pod_cidr_v6
        .filter(|c| !c.is_ipv6() || !node.pod_cidr.is_ipv4())
    {
        return Err(Refusal::BadPodCidr(cidr));
    }
    Ok(())
}

/// An endpoint record against its node's record (`None`: not known yet).
pub fn check_endpoint(
    address: IpAddr,
    record: &EndpointRecord,
    node: Option<&NodeRecord>,
) -> Result<(), Refusal> {
    if !is_cluster(record.identity) {
        return Err(Refusal::NotClusterIdentity(record.identity));
    }
    if let Some(node) = node {
        if !node.pod_cidrs().any(|cidr| cidr.contains(address)) {
            // The node's range of the address's family, if it has one.
            let cidr = node
                .pod_cidrs()
                .find(|cidr| cidr.is_ipv4() == address.is_ipv4())
                .unwrap_or(node.pod_cidr);
            return Err(Refusal::OutsideNodeCidr {
                address,
                node: node.name.clone(),
                cidr,
            });
        }
        if record.node_ip != node.ip {
            return Err(Refusal::WrongNodeAddress {
                node: node.name.clone(),
                claimed: record.node_ip,
                actual: node.ip,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, cidr: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            ip: ip.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            pod_cidr_v6: None,
            ipv6: None,
        }
    }

    fn endpoint(identity: u32, node: &str, node_ip: &str) -> EndpointRecord {
        EndpointRecord {
            identity,
            node: node.into(),
            node_ip: node_ip.parse().unwrap(),
            namespace: "x".into(),
            pod: "a".into(),
        }
    }

    #[test]
    fn reserved_identities_and_empty_label_sets_are_refused() {
        let labels = LabelSet::new().with("k8s:app", "web");
        assert_eq!(
            check_identity(1, &labels),
            Err(Refusal::NotClusterIdentity(1))
        );
        assert!(check_identity(256, &labels).is_ok());
        assert_eq!(
            check_identity(256, &LabelSet::new()),
            Err(Refusal::NoLabels(256))
        );
    }

    #[test]
    fn node_records_need_a_real_address_and_a_node_sized_range() {
        assert!(check_node(&node("n1", "10.77.0.11", "10.244.1.0/24")).is_ok());
        for (ip, cidr) in [
            ("0.0.0.0", "10.244.1.0/24"),
            ("127.0.0.1", "10.244.1.0/24"),
            ("224.0.0.1", "10.244.1.0/24"),
            ("10.77.0.11", "0.0.0.0/0"),
            ("10.244.1.9", "10.244.1.0/24"),
        ] {
            assert!(check_node(&node("n1", ip, cidr)).is_err(), "{ip} {cidr}");
        }
    }

    #[test]
    fn an_endpoint_must_be_a_cluster_identity_inside_its_nodes_range_at_its_address() {
        let n1 = node("n1", "10.77.0.11", "10.244.1.0/24");
        let address: IpAddr = "10.244.1.5".parse().unwrap();
        assert!(check_endpoint(address, &endpoint(300, "n1", "10.77.0.11"), Some(&n1)).is_ok());
        // Identity `host` for a pod address: every ingress policy passed.
        assert_eq!(
            check_endpoint(address, &endpoint(1, "n1", "10.77.0.11"), Some(&n1)),
            Err(Refusal::NotClusterIdentity(1))
        );
        // Another node's pod.
        let elsewhere: IpAddr = "10.244.2.5".parse().unwrap();
        assert!(matches!(
            check_endpoint(elsewhere, &endpoint(300, "n1", "10.77.0.11"), Some(&n1)),
            Err(Refusal::OutsideNodeCidr { .. })
        ));
        // A tunnel endpoint that is not the node's.
        assert!(matches!(
            check_endpoint(address, &endpoint(300, "n1", "10.77.0.99"), Some(&n1)),
            Err(Refusal::WrongNodeAddress { .. })
        ));
        // Node not known yet: only the identity is checked now.
        assert!(check_endpoint(address, &endpoint(300, "n1", "10.77.0.11"), None).is_ok());
    }

    #[test]
    fn a_dual_stack_nodes_ipv6_range_holds_its_pods_ipv6_addresses() {
        let dual = |v6: &str| NodeRecord {
            pod_cidr_v6: Some(v6.parse().unwrap()),
            ..node("n1", "10.77.0.11", "10.244.1.0/24")
        };
        let n1 = dual("fd00:10:244:1::/112");
        assert!(check_node(&n1).is_ok());
        let record = endpoint(300, "n1", "10.77.0.11");
        let own: IpAddr = "fd00:10:244:1::5".parse().unwrap();
        assert!(check_endpoint(own, &record, Some(&n1)).is_ok());
        let other: IpAddr = "fd00:10:244:2::5".parse().unwrap();
        assert_eq!(
            check_endpoint(other, &record, Some(&n1)),
            Err(Refusal::OutsideNodeCidr {
                address: other,
                node: "n1".into(),
                cidr: "fd00:10:244:1::/112".parse().unwrap(),
            })
        );
        // Too wide, or not IPv6.
        for cidr in ["fd00::/32", "10.245.0.0/24"] {
            assert!(check_node(&dual(cidr)).is_err(), "{cidr}");
        }
        // The node's IPv6 address: usable, and not one of its pods'.
        for (address, ok) in [
            ("fd00:77::11", true),
            ("::1", false),
            ("fd00:10:244:1::9", false),
        ] {
            let node = NodeRecord {
                ipv6: Some(address.parse().unwrap()),
                ..n1.clone()
            };
            assert_eq!(check_node(&node).is_ok(), ok, "{address}");
        }
    }
}
