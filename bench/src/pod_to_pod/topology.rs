//! The bare routed paths Weir is compared with: two "pod" namespaces
//! behind one "node" namespace that routes between them, and the same
//! across an underlay bridge between two node namespaces, the shape of the
//! lab's (a bridge in a namespace of its own, a veth from each node to it,
//! each node routing the other's pod range natively over it). No eBPF, no
//! rules: the kernel's routed veth path alone. Removed when dropped.
//!
//! ```text
//! same node:   client 10.199.1.2 --- 10.199.1.1 node 10.199.2.1 --- 10.199.2.2 server
//! cross node:  client 10.199.1.2 --- 10.199.1.1 node1 10.199.100.1 ---+
//!                                                          underlay br0 |
//!              server 10.199.2.2 --- 10.199.2.1 node2 10.199.100.2 ---+
//! ```
//!
//! Nothing routes out of these namespaces: the pods' default routes lead
//! to their node, and the nodes know only these ranges.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::Result;

use super::measure::Path;
use weir_tests::names;
use weir_tests::netns::{self, NetNs};

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 199, 2, 2);

/// A bare topology: its namespaces and the path to measure.
pub struct Bare {
    // Dropped (deleted) with the topology; links and rules go with them.
    namespaces: Vec<NetNs>,
    /// The namespace that forwards the pods' traffic (on the cross-node
    /// path, the client's node): where a peer's rules go.
    pub node: String,
    pub path: Path,
}

impl Bare {
    /// Client and server pods on one node.
    pub fn same_node() -> Result<Bare> {
        let prefix = names::unique();
        let client = NetNs::new(&format!("{prefix}c"))?;
        let node = NetNs::new(&format!("{prefix}n"))?;
        let server = NetNs::new(&format!("{prefix}s"))?;
        forwarding(&node)?;
        pod_link(
            &client,
            &node,
            &format!("{prefix}c"),
            &format!("{prefix}nc"),
            1,
        )?;
        pod_link(
            &server,
            &node,
            &format!("{prefix}s"),
            &format!("{prefix}ns"),
            2,
        )?;
        Ok(Bare {
            node: node.name().to_string(),
            path: Path {
                client: client.name().to_string(),
                server: server.name().to_string(),
                server_ip: SERVER_IP.into(),
            },
            namespaces: vec![client, server, node],
        })
    }

    /// Client on one node, server on another, the nodes on an underlay
    /// bridge, each routing the other's pod range via the other's underlay
    /// address.
    pub fn cross_node() -> Result<Bare> {
        let prefix = names::unique();
        let client = NetNs::new(&format!("{prefix}c"))?;
        let node1 = NetNs::new(&format!("{prefix}n1"))?;
        let underlay = NetNs::new(&format!("{prefix}u"))?;
        let node2 = NetNs::new(&format!("{prefix}n2"))?;
        let server = NetNs::new(&format!("{prefix}s"))?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        for (index, node) in [(1, &node1), (2, &node2)] {
            forwarding(node)?;
            let port = format!("{prefix}u{index}");
            let dev = format!("{prefix}e{index}");
            veth((&underlay, &port), (node, &dev))?;
            underlay.ip(&["link", "set", &port, "master", "br0", "up"])?;
            node.ip(&[
                "addr",
                "add",
                &format!("10.199.100.{index}/24"),
                "dev",
                &dev,
            ])?;
            node.ip(&["link", "set", &dev, "up"])?;
            let other = 3 - index;
            node.ip(&[
                "route",
                "add",
                &format!("10.199.{other}.0/24"),
                "via",
                &format!("10.199.100.{other}"),
            ])?;
        }
        pod_link(
            &client,
            &node1,
            &format!("{prefix}c"),
            &format!("{prefix}nc"),
            1,
        )?;
        pod_link(
            &server,
            &node2,
            &format!("{prefix}s"),
            &format!("{prefix}ns"),
            2,
        )?;
        Ok(Bare {
            node: node1.name().to_string(),
            path: Path {
                client: client.name().to_string(),
                server: server.name().to_string(),
                server_ip: SERVER_IP.into(),
            },
            namespaces: vec![client, server, node1, node2, underlay],
        })
    }

    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }
}

/// A node forwards and sends no redirects.
fn forwarding(node: &NetNs) -> Result<()> {
    node.sysctl("net.ipv4.ip_forward", "1")?;
    for scope in ["all", "default"] {
        node.sysctl(&format!("net.ipv4.conf.{scope}.send_redirects"), "0")?;
    }
    Ok(())
}

/// A pod's link to its node: 10.199.`subnet`.2 in the pod (default route
/// via .1), 10.199.`subnet`.1 on the node.
fn pod_link(pod: &NetNs, node: &NetNs, pod_dev: &str, node_dev: &str, subnet: u8) -> Result<()> {
    veth((pod, pod_dev), (node, node_dev))?;
    for (ns, dev, host) in [(pod, pod_dev, 2), (node, node_dev, 1)] {
        ns.ip(&[
            "addr",
            "add",
            &format!("10.199.{subnet}.{host}/24"),
            "dev",
            dev,
        ])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        &format!("10.199.{subnet}.1"),
    ])?;
    Ok(())
}

/// A veth pair with one end in each namespace.
fn veth(a: (&NetNs, &str), b: (&NetNs, &str)) -> Result<()> {
    netns::run(Command::new("ip").args([
        "link",
        "add",
        a.1,
        "netns",
        a.0.name(),
        "type",
        "veth",
        "peer",
        "name",
        b.1,
        "netns",
        b.0.name(),
    ]))
    .map(drop)
}
