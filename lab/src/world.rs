//! The lab's outside world: a namespace on the underlay, outside the
//! cluster, holding documentation addresses ([`WORLD_ADDRESSES`]) with a
//! server on each, standing for the internet and for external clients.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Result;

use crate::state::{PodRecord, Sandbox};
use crate::topology::{
    world_netns, WORLD_ADDRESSES, WORLD_PREFIX, WORLD_UNDERLAY_IP, WORLD_UNDERLAY_IPV6,
};
use crate::underlay::ip;
use crate::{process, Lab};
use weir_tests::netns;

impl Lab {
    /// Routes every node's pod CIDR from the outside world to the node
    /// (the replies to pods' connections out, external clients' traffic
    /// to pods).
    pub(crate) fn route_world_to_pods(&self) -> Result<()> {
        let world = world_netns(&self.state.name);
        for node in &self.state.nodes {
            ip(&[
                "-n",
                &world,
                "route",
                "replace",
                &node.pod_cidr,
                "via",
                &node.underlay_ip.to_string(),
            ])?;
        }
        Ok(())
    }

    /// A namespace outside the cluster on the underlay, holding the world
    /// addresses with a server on port 80 (TCP and UDP) that answers
    /// `world/<address>`; [`Self::route_world_to_pods`] routes the pod
    /// CIDRs back to their nodes once they are known.
    pub(crate) fn build_world(&mut self, underlay: &str, progress: &dyn Fn(&str)) -> Result<()> {
        let world = world_netns(&self.state.name);
        progress(&format!("outside world {world}: {WORLD_PREFIX}"));
        netns::add(&world)?;
        ip(&[
            "-n", underlay, "link", "add", "world", "type", "veth", "peer", "name", "eth0",
            "netns", &world,
        ])?;
        ip(&[
            "-n", underlay, "link", "set", "world", "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            &world,
            "addr",
            "add",
            &format!("{WORLD_UNDERLAY_IP}/24"),
            "dev",
            "eth0",
        ])?;
        if self.state.dual_stack {
            // On the nodes' IPv6 underlay prefix, no duplicate address
            // detection (as the nodes' addresses): a client of IPv6 NodePorts.
            ip(&[
                "-n",
                &world,
                "addr",
                "add",
                &format!("{WORLD_UNDERLAY_IPV6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        for address in WORLD_ADDRESSES {
            ip(&[
                "-n",
                &world,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ])?;
        }
        ip(&["-n", &world, "link", "set", "eth0", "up"])?;
        for address in WORLD_ADDRESSES {
            let args = vec![
                "--identity".to_string(),
                format!("world/{address}"),
                "--bind".into(),
                address.to_string(),
                "--tcp".into(),
                "80".into(),
                "--udp".into(),
                "80".into(),
            ];
            let log = self.dir.join(format!("world-{address}.log"));
            process::spawn_detached(&world, &self.binaries.pod_server, &args, &log)?;
        }
        Ok(())
    }

    /// A probe target standing for the outside-world server at `address`.
    pub fn world_target(&self, address: Ipv4Addr) -> PodRecord {
        PodRecord {
            namespace: "world".into(),
            name: address.to_string(),
            labels: Default::default(),
            node: String::new(),
            netns: world_netns(&self.state.name),
            container_id: String::new(),
            ip: address,
            ipv6: None,
            ports: Vec::new(),
            server_pid: 0,
            cgroup: PathBuf::new(),
            sandbox: Sandbox::Lab,
            uid: String::new(),
        }
    }

    /// Routes `prefix` from the outside world to `node`, as an upstream
    /// router does for an external or load-balancer IP announced by a node;
    /// an IPv6 prefix through the node's IPv6 underlay address.
    pub fn route_from_world(&self, prefix: &str, node: &str) -> Result<()> {
        let node = self.node(node)?;
        let world = world_netns(&self.state.name);
        let via = if prefix.contains(':') {
            node.underlay_ipv6
                .ok_or_else(|| anyhow::anyhow!("{}: no IPv6 underlay address", node.name))?
                .to_string()
        } else {
            node.underlay_ip.to_string()
        };
        ip(&["-n", &world, "route", "replace", prefix, "via", &via])?;
        Ok(())
    }
}
