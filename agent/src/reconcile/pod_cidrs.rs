//! The pod CIDR reconciler: brings `weir_pod_cidrs` (anti-spoofing on the
//! node devices, and the tunnel) and `weir_pod_cidrs6` (a dual-stack
//! node's IPv6 pod CIDRs, for the tunnel) to every node's pod CIDRs and
//! their owner, from the node records, writing only the difference.
//! [`desired`] is pure.
//!
//! This node's own pod CIDRs are written by the agent before it attaches
//! the node-device programs ([`claim_local`]) and are always part of the
//! desired state, so the maps never lack them; other nodes' CIDRs follow
//! their node records as nodes come and go, and nothing is removed before
//! the node watch has listed once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use aya::Ebpf;
use ipnetwork::IpNetwork;
use tracing::warn;
use weir_identity::NodeRecord;

use crate::cluster::node_ipam::PodCidrs;
use crate::datapath::maps::{self, PodCidrOwner, TableError};

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// This node's CIDRs: IPv4, and IPv6 on a dual-stack node.
fn own_cidrs(own: PodCidrs) -> impl Iterator<Item = IpNetwork> {
    std::iter::once(IpNetwork::V4(own.v4)).chain(own.v6.map(IpNetwork::V6))
}

/// What the maps should hold: this node's pod CIDRs (local), then every
/// other node's pod CIDRs with its IPv4 address (the tunnel's outer
/// destination, for IPv6 pods too). A remote CIDR that overlaps one of
/// this node's is left out (this node's own ranges stay local whatever a
/// record claims), and of two nodes claiming the same prefix the first by
/// name keeps it (the records are checked on arrival, see
/// `cluster::kvstore::trust`; a conflict is an operator's error). A node
/// without an IPv4 address has no entry.
pub fn desired<'a>(
    own_name: &str,
    own: PodCidrs,
    node_ip: Ipv4Addr,
    nodes: impl IntoIterator<Item = &'a NodeRecord>,
) -> BTreeMap<IpNetwork, PodCidrOwner> {
    let local = PodCidrOwner {
        node_ip,
        local: true,
    };
    let mut desired: BTreeMap<IpNetwork, PodCidrOwner> =
        own_cidrs(own).map(|cidr| (cidr, local)).collect();
    for node in nodes {
        if node.name == own_name {
            continue;
        }
        let IpAddr::V4(ip) = node.ip else {
            continue;
        };
        for cidr in node.pod_cidrs() {
            if own_cidrs(own).any(|own| overlaps(cidr, own)) {
                continue;
            }
            desired.entry(cidr).or_insert(PodCidrOwner {
                node_ip: ip,
                local: false,
            });
        }
    }
    desired
}

/// What turns `current` into `desired`: upserts, and (once `synced`)
/// removals.
pub fn diff(
    desired: &BTreeMap<IpNetwork, PodCidrOwner>,
    current: &BTreeMap<IpNetwork, PodCidrOwner>,
    synced: bool,
) -> (Vec<(IpNetwork, PodCidrOwner)>, Vec<IpNetwork>) {
    let upserts = desired
        .iter()
        .filter(|(cidr, owner)| current.get(cidr) != Some(owner))
        .map(|(cidr, owner)| (*cidr, *owner))
        .collect();
    let removals = if synced {
        current
            .keys()
            .filter(|cidr| !desired.contains_key(cidr))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    (upserts, removals)
}

/// Writes this node's pod CIDRs as local and removes any other local entry
/// (an earlier run's pod CIDR): done before the node-device programs are
/// attached, with or without a shared store.
pub fn claim_local(ebpf: &mut Ebpf, own: PodCidrs, node_ip: Ipv4Addr) -> Result<(), TableError> {
    let owner = PodCidrOwner {
        node_ip,
        local: true,
    };
    for cidr in own_cidrs(own) {
        maps::set_pod_cidr(ebpf, cidr, owner)?;
    }
    for (cidr, old) in maps::pod_cidr_entries(ebpf)? {
        if old.local && !own_cidrs(own).any(|own| own == cidr) {
            warn!(%cidr, "removing an earlier pod CIDR of this node from the pod CIDR map");
            maps::remove_pod_cidr(ebpf, cidr)?;
        }
    }
    Ok(())
}

#[derive(Default)]
pub struct PodCidrSync {
    /// What the maps hold: read once, then kept as this reconciler writes.
    written: Option<BTreeMap<IpNetwork, PodCidrOwner>>,
}

impl PodCidrSync {
    /// Writes the difference between `desired` and the maps; removes only
    /// once `synced` (the node watch has listed everything).
    pub fn sync(
        &mut self,
        ebpf: &mut Ebpf,
        desired: &BTreeMap<IpNetwork, PodCidrOwner>,
        synced: bool,
    ) -> Result<(), TableError> {
        let mut current = match self.written.take() {
            Some(current) => current,
            None => maps::pod_cidr_entries(ebpf)?,
        };
        let (upserts, removals) = diff(desired, &current, synced);
        // Upserts first: a CIDR changing hands is never unknown. On a
        // failed write `written` stays empty and the next pass re-reads.
        for (cidr, owner) in upserts {
            maps::set_pod_cidr(ebpf, cidr, owner)?;
            current.insert(cidr, owner);
        }
        for cidr in removals {
            maps::remove_pod_cidr(ebpf, cidr)?;
            current.remove(&cidr);
        }
        self.written = Some(current);
        Ok(())
    }
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

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn own4(v4: &str) -> PodCidrs {
        PodCidrs {
            v4: v4.parse().unwrap(),
            v6: None,
        }
    }

    fn remote(ip: &str) -> PodCidrOwner {
        PodCidrOwner {
            node_ip: ip.parse().unwrap(),
            local: false,
        }
    }

    const OWN_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);

    #[test]
    fn own_cidr_is_local_and_other_nodes_are_theirs() {
        let nodes = [
            node("n1", "10.77.0.11", "10.244.1.0/24"),
            node("n2", "10.77.0.12", "10.244.2.0/24"),
            node("n3", "10.77.0.13", "10.244.3.0/24"),
            node("v6", "fd00::1", "fd00:244::/64"),
        ];
        let desired = desired("n1", own4("10.244.1.0/24"), OWN_IP, &nodes);
        assert_eq!(
            desired,
            BTreeMap::from([
                (
                    net("10.244.1.0/24"),
                    PodCidrOwner {
                        node_ip: OWN_IP,
                        local: true
                    }
                ),
                (net("10.244.2.0/24"), remote("10.77.0.12")),
                (net("10.244.3.0/24"), remote("10.77.0.13")),
            ])
        );
    }

    #[test]
    fn no_record_takes_this_nodes_range_and_the_first_claim_wins() {
        let nodes = [
            // Inside, around and equal to this node's CIDR: all left out.
            node("a", "10.77.0.20", "10.244.1.128/25"),
            node("b", "10.77.0.21", "10.244.0.0/16"),
            node("c", "10.77.0.22", "10.244.1.0/24"),
            // The same prefix twice: the first by name keeps it.
            node("d", "10.77.0.23", "10.244.9.0/24"),
            node("e", "10.77.0.24", "10.244.9.0/24"),
        ];
        let desired = desired("n1", own4("10.244.1.0/24"), OWN_IP, &nodes);
        assert!(desired[&net("10.244.1.0/24")].local);
        assert_eq!(desired[&net("10.244.9.0/24")], remote("10.77.0.23"));
        assert_eq!(desired.len(), 2, "{desired:?}");
    }

    #[test]
    fn diff_writes_changes_and_removes_only_after_sync() {
        let own = net("10.244.1.0/24");
        let gone = net("10.244.7.0/24");
        let current = BTreeMap::from([
            (
                own,
                PodCidrOwner {
                    node_ip: OWN_IP,
                    local: true,
                },
            ),
            (gone, remote("10.77.0.17")),
            (net("10.244.2.0/24"), remote("10.77.0.99")),
        ]);
        let nodes = [node("n2", "10.77.0.12", "10.244.2.0/24")];
        let desired = desired("n1", own4("10.244.1.0/24"), OWN_IP, &nodes);
        let (upserts, removals) = diff(&desired, &current, false);
        assert_eq!(
            upserts,
            [(net("10.244.2.0/24"), remote("10.77.0.12"))],
            "a node that moved is rewritten, the unchanged own entry is not"
        );
        assert!(removals.is_empty(), "nothing removed before the listing");
        assert_eq!(diff(&desired, &current, true).1, [gone]);
    }

    #[test]
    fn a_dual_stack_nodes_ipv6_cidrs_are_local_or_their_nodes() {
        let dual = |name: &str, ip: &str, v4: &str, v6: &str| NodeRecord {
            pod_cidr_v6: Some(v6.parse().unwrap()),
            ..node(name, ip, v4)
        };
        let nodes = [
            dual("n2", "10.77.0.12", "10.244.2.0/24", "fd00:10:244:2::/112"),
            // Claims this node's IPv6 range: left out.
            dual("n3", "10.77.0.13", "10.244.3.0/24", "fd00:10:244:1::/120"),
        ];
        let own = PodCidrs {
            v4: "10.244.1.0/24".parse().unwrap(),
            v6: Some("fd00:10:244:1::/112".parse().unwrap()),
        };
        let desired = desired("n1", own, OWN_IP, &nodes);
        assert!(desired[&net("fd00:10:244:1::/112")].local);
        assert_eq!(desired[&net("fd00:10:244:2::/112")], remote("10.77.0.12"));
        assert!(!desired.contains_key(&net("fd00:10:244:1::/120")));
        assert_eq!(desired.len(), 5, "{desired:?}");
    }
}
