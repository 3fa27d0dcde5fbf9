//! The lab's network: a bridge in a namespace of its own (the underlay,
//! also home of etcd), each node's namespace linked to it by a veth pair,
//! and routes so that pod traffic between nodes is natively routed over the
//! underlay and the outside world is reachable from every node.

use anyhow::Result;

use crate::topology::{
    node_ip, node_ipv6, node_netns, pod_cidr, underlay_netns, ETCD_IP, NODE_DEVICE, WORLD_PREFIX,
    WORLD_UNDERLAY_IP,
};
use weir_tests::netns;

/// Runs `ip ARGS`.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    netns::run(std::process::Command::new("ip").args(args))
}

/// Creates the underlay namespace of `lab` with its bridge `br0`, which
/// holds etcd's address. Returns the namespace's name.
pub(crate) fn add(lab: &str) -> Result<String> {
    let underlay = underlay_netns(lab);
    netns::add(&underlay)?;
    ip(&["-n", &underlay, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &underlay, "link", "set", "br0", "up"])?;
    ip(&[
        "-n",
        &underlay,
        "addr",
        "add",
        &format!("{ETCD_IP}/24"),
        "dev",
        "br0",
    ])?;
    Ok(underlay)
}

/// How the nodes are linked to the underlay.
pub(crate) struct NodeLinks {
    /// How many nodes the lab has.
    pub nodes: usize,
    /// Route the other nodes' pod CIDRs (on the control plane the agents
    /// route them: `--auto-direct-node-routes`; in tunnel mode their
    /// tunnels do).
    pub static_pod_routes: bool,
    /// Both ends' MTU, if not the default.
    pub mtu: Option<u32>,
    /// Give the node its IPv6 underlay address too.
    pub dual_stack: bool,
}

/// Creates the namespace of node `index` (from 1), links it to the bridge
/// (`node` in the underlay, [`NODE_DEVICE`] in the node) as `links` says
/// and routes the world prefix over it. Returns the node's namespace.
pub(crate) fn add_node(lab: &str, node: &str, index: usize, links: &NodeLinks) -> Result<String> {
    let NodeLinks {
        nodes,
        static_pod_routes,
        mtu,
        dual_stack,
    } = *links;
    let underlay = underlay_netns(lab);
    let ns = node_netns(lab, node);
    netns::add(&ns)?;
    ip(&[
        "-n",
        &underlay,
        "link",
        "add",
        node,
        "type",
        "veth",
        "peer",
        "name",
        NODE_DEVICE,
        "netns",
        &ns,
    ])?;
    if let Some(mtu) = mtu {
        let mtu = mtu.to_string();
        ip(&["-n", &underlay, "link", "set", node, "mtu", &mtu])?;
        ip(&["-n", &ns, "link", "set", NODE_DEVICE, "mtu", &mtu])?;
    }
    ip(&["-n", &underlay, "link", "set", node, "master", "br0", "up"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", node_ip(index)),
        "dev",
        NODE_DEVICE,
    ])?;
    if dual_stack {
        // No duplicate address detection: the lab picks unique addresses,
        // and a tentative one could not be used for a second or two.
        let address = format!("{}/64", node_ipv6(index));
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &address,
            "dev",
            NODE_DEVICE,
            "nodad",
        ])?;
    }
    ip(&["-n", &ns, "link", "set", NODE_DEVICE, "up"])?;
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        WORLD_PREFIX,
        "via",
        &WORLD_UNDERLAY_IP.to_string(),
        "dev",
        NODE_DEVICE,
    ])?;
    let others = (1..=nodes).filter(|o| *o != index && static_pod_routes);
    for other in others {
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            &pod_cidr(other),
            "via",
            &node_ip(other).to_string(),
            "dev",
            NODE_DEVICE,
        ])?;
    }
    Ok(ns)
}

/// Routes every other node's IPv6 pod CIDR (`(index, cidr)` of each node)
/// through its IPv6 underlay address, in node `index`'s namespace `ns`
/// (where the lab routes the IPv4 ones too: no control plane, native
/// routing).
pub(crate) fn route_pod_cidrs_v6(ns: &str, index: usize, cidrs: &[(usize, String)]) -> Result<()> {
    for (other, cidr) in cidrs.iter().filter(|(other, _)| *other != index) {
        let via = node_ipv6(*other).to_string();
        ip(&[
            "-n",
            ns,
            "-6",
            "route",
            "replace",
            cidr,
            "via",
            &via,
            "dev",
            NODE_DEVICE,
        ])?;
    }
    Ok(())
}
