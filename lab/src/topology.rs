//! The lab's plan: the names of its namespaces, the addresses of its
//! underlay, nodes and outside world, and where its state, cgroups and
//! sockets live. Everything else derives names and addresses from here, and
//! `down` finds a crashed lab's leftovers by these names alone.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::state::NodeRecord;

/// Where labs keep their state.
pub const LAB_ROOT: &str = "/run/weir-lab";
/// Every node's pod CIDR is 10.244.<node index>.0/24.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// A dual-stack lab's IPv6 pods: fd00:10:244:<node index>::/112 without a
/// control plane, a /112 block weir-operator assigns on one.
pub const CLUSTER_CIDR_V6: &str = "fd00:10:244::/56";
/// A dual-stack lab's IPv6 ClusterIPs (the agents' `--service-cidr-v6`).
pub const SERVICE_CIDR_V6: &str = "fd00:96::/112";
/// The mask of a node's IPv6 pod CIDR.
pub const POD_CIDR_V6_MASK: u8 = 112;
const UNDERLAY_PREFIX: [u8; 3] = [10, 77, 0];
/// The lab's etcd listens here, on the underlay bridge (reachable from every
/// node namespace and from nothing else).
pub(crate) const ETCD_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub(crate) const ETCD_CLIENT_PORT: u16 = 2379;
/// Each agent serves /metrics on its node's underlay address at this port.
pub const METRICS_PORT: u16 = 9962;
/// The lab's "outside world": a namespace on the underlay at this address,
/// serving on WORLD_ADDRESSES (documentation prefixes, never routed beyond
/// the lab), reached from the nodes through a route for WORLD_PREFIX.
pub(crate) const WORLD_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
pub const WORLD_PREFIX: &str = "203.0.113.0/24";
/// The outside world's address on the underlay over IPv6 (dual stack):
/// an external client of the nodes' IPv6 NodePorts.
pub const WORLD_UNDERLAY_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x200);
/// Services' externalIPs and load-balancer addresses in the lab come from
/// here; the agents accept externalIPs from this range only.
pub const SERVICE_EXTERNAL_PREFIX: &str = "198.51.100.0/24";
/// The same for IPv6 (dual stack), in the documentation prefix.
pub const SERVICE_EXTERNAL_PREFIX_V6: &str = "2001:db8:51::/64";
pub const WORLD_ADDRESSES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 20),
];
/// A node's link to the underlay, inside the node's namespace.
pub(crate) const NODE_DEVICE: &str = "eth0";

/// A node's Observer API socket (beside its agent API socket).
pub fn hubble_socket(node: &NodeRecord) -> PathBuf {
    node.api_socket.with_file_name("hubble.sock")
}

/// The Hubble metrics a lab agent serves (`--hubble-metrics`): every L3/L4
/// family; drops by source and destination pod (reserved identities for
/// the world and hosts), ports by destination pod, policy verdicts by
/// source namespace and destination pod.
pub const HUBBLE_METRICS: &str = "flow \
     drop:sourceContext=pod|reserved-identity;destinationContext=pod|reserved-identity tcp \
     port-distribution:destinationContext=pod icmp \
     policy:sourceContext=namespace|reserved-identity;destinationContext=pod";

/// The file a lab agent exports its flows to (`--hubble-export-file-path`).
pub fn flow_export_file(node: &NodeRecord) -> PathBuf {
    node.api_socket.with_file_name("flows.json")
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(LAB_ROOT).join(name)
}

/// The lab's cgroup: `<cgroup v2 root>/weir-lab/<lab>`, a directory per
/// node below it (socket LB attachment), a directory per pod below that.
pub fn lab_cgroup(name: &str) -> Result<PathBuf> {
    Ok(weir_tests::cgroup::cgroup2_root()?
        .join("weir-lab")
        .join(name))
}

/// The namespace holding the underlay bridge (and etcd).
pub(crate) fn underlay_netns(lab: &str) -> String {
    format!("{lab}-ul")
}

/// The namespace of the outside world.
pub(crate) fn world_netns(lab: &str) -> String {
    format!("{lab}-world")
}

/// The namespace of a node.
pub(crate) fn node_netns(lab: &str, node: &str) -> String {
    format!("{lab}-{node}")
}

/// The namespace of a pod.
pub(crate) fn pod_netns(lab: &str, namespace: &str, name: &str) -> String {
    format!("{}{namespace}-{name}", pod_netns_prefix(lab))
}

/// What every pod namespace of `lab` starts with (`down` removes them first).
pub(crate) fn pod_netns_prefix(lab: &str) -> String {
    format!("{lab}-p-")
}

/// Node `index` (from 1) on the underlay.
pub(crate) fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        UNDERLAY_PREFIX[0],
        UNDERLAY_PREFIX[1],
        UNDERLAY_PREFIX[2],
        10 + index as u8,
    )
}

pub(crate) fn pod_cidr(index: usize) -> String {
    format!("10.244.{index}.0/24")
}

/// Node `index` (from 1) on the underlay over IPv6 (dual stack), in
/// `fd00:77::/64`.
pub(crate) fn node_ipv6(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 10 + index as u16)
}

/// Node `index`'s IPv6 pod CIDR without a control plane (dual stack).
pub(crate) fn pod_cidr_v6(index: usize) -> String {
    format!("fd00:10:244:{index:x}::/{POD_CIDR_V6_MASK}")
}
