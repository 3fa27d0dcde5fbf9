//! Routes to the other nodes' pod CIDRs through their node addresses:
//! native routing between nodes on one L2 segment (Cilium's
//! `--auto-direct-node-routes`), or, in tunnel mode, through the tunnel
//! device with the node address as an on-link gateway (its programs set the
//! outer header; see `datapath::tunnel`). The agent, not the installer, owns
//! them: they follow the node records of the shared store as nodes come and
//! go.
//!
//! IPv4 and IPv6 alike: natively a dual-stack node's IPv6 pod CIDR goes
//! through its IPv6 node address; through the tunnel it is a route on the
//! tunnel device (the outer header, IPv4, is the programs').
//!
//! Every route is tagged with a routing protocol number of Weir's own
//! ([`ROUTE_PROTOCOL`], `ip route show proto 87`), so the agent finds the
//! routes an earlier run left (adopted, then corrected) and never touches
//! anyone else's.
//!
//! Each node address a route goes through also gets a *managed* neighbour
//! entry (`ip neigh add <node> dev <dev> managed extern_learn proto 87`):
//! the kernel keeps it resolved and never garbage-collects it. The node
//! devices' anti-spoofing (`ebpf/datapath/src/antispoof.rs`) accepts
//! another node's pods only from the MAC address the kernel holds for that
//! next hop and fails closed without one; a node that has been silent
//! longer than the neighbour table keeps idle entries (on a table above
//! `gc_thresh1`) must not lose its first packets to that.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
    NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

/// `proto 87` ('W'): unassigned in iproute2's rt_protos.
pub const ROUTE_PROTOCOL: u8 = 87;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink connection: {0}")]
    Connection(std::io::Error),
    #[error("list routes: {0}")]
    List(rtnetlink::Error),
    #[error("route {cidr} via {gateway}: {source}")]
    Replace {
        cidr: IpNetwork,
        gateway: IpAddr,
        source: rtnetlink::Error,
    },
    #[error("route {cidr} via {gateway}: {reason}")]
    Invalid {
        cidr: IpNetwork,
        gateway: IpAddr,
        reason: String,
    },
    #[error("delete route {cidr}: {source}")]
    Delete {
        cidr: IpNetwork,
        source: rtnetlink::Error,
    },
    #[error("list neighbours: {0}")]
    ListNeighbours(rtnetlink::Error),
    #[error("the route to node {node}: {source}")]
    RouteTo {
        node: IpAddr,
        source: rtnetlink::Error,
    },
    #[error("no route to node {0}")]
    NoRouteTo(IpAddr),
    #[error("managed neighbour {node}: {source}")]
    Neighbour {
        node: IpAddr,
        source: rtnetlink::Error,
    },
}

/// Pod CIDR → the node address it is reached through: of the same family
/// natively, the node's IPv4 address (the outer destination) through the
/// tunnel.
pub type NodeRouteSet = BTreeMap<IpNetwork, IpAddr>;

/// Node address → the interface its managed neighbour entry is on.
pub type ManagedNeighbours = BTreeMap<IpAddr, u32>;

/// How the routes reach the other nodes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RouteVia {
    /// Native routing: the node address is the gateway, on the device the
    /// kernel reaches it by, with a managed neighbour entry.
    Native,
    /// Tunnel mode: the tunnel device `ifindex`, the node address an
    /// on-link gateway (the device resolves no neighbours), and this node's
    /// address as the source of what the node itself sends.
    Tunnel { ifindex: u32, source: Ipv4Addr },
}

/// The routes this agent keeps in its network namespace's main table, and
/// the managed neighbour entries of their next hops.
pub struct NodeRoutes {
    handle: Handle,
    via: RouteVia,
    installed: NodeRouteSet,
    neighbours: ManagedNeighbours,
}

impl NodeRoutes {
    /// Connects to the current network namespace's routing and adopts the
    /// routes tagged with [`ROUTE_PROTOCOL`] that go `via` (the others are
    /// replaced by the first sync). Needs a tokio runtime.
    pub async fn open(via: RouteVia) -> Result<NodeRoutes, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connection)?;
        tokio::spawn(connection);
        let installed = list_tagged(&handle)
            .await?
            .into_iter()
            .filter(|(_, (_, oif))| match via {
                RouteVia::Native => true,
                RouteVia::Tunnel { ifindex, .. } => *oif == Some(ifindex),
            })
            .map(|(cidr, (gateway, _))| (cidr, gateway))
            .collect();
        let neighbours = list_tagged_neighbours(&handle).await?;
        Ok(NodeRoutes {
            handle,
            via,
            installed,
            neighbours,
        })
    }

    /// What is installed (as last listed or written).
    pub fn installed(&self) -> &NodeRouteSet {
        &self.installed
    }

    /// The managed neighbour entries this agent keeps (as last listed or
    /// written).
    pub fn neighbours(&self) -> &ManagedNeighbours {
        &self.neighbours
    }

    /// Whether `desired` is what is installed, neighbours included (none in
    /// tunnel mode).
    pub fn is_current(&self, desired: &NodeRouteSet) -> bool {
        let nodes = self.neighbour_nodes(desired);
        &self.installed == desired
            && nodes.iter().all(|node| self.neighbours.contains_key(node))
            && self.neighbours.keys().all(|node| nodes.contains(node))
    }

    /// The node addresses that need managed neighbour entries: every
    /// gateway of `desired` in native routing, none through the tunnel
    /// (the device resolves no neighbours).
    fn neighbour_nodes(&self, desired: &NodeRouteSet) -> BTreeSet<IpAddr> {
        match self.via {
            RouteVia::Native => desired.values().copied().collect(),
            RouteVia::Tunnel { .. } => BTreeSet::new(),
        }
    }

    /// Makes the tagged routes equal `desired`. With `remove_absent` false
    /// (the node list is not complete yet) routes are only added or
    /// corrected, never removed. Stops at the first failure; the next call
    /// retries what is left.
    pub async fn sync(&mut self, desired: &NodeRouteSet, remove_absent: bool) -> Result<(), Error> {
        for (&cidr, &gateway) in desired {
            if self.installed.get(&cidr) == Some(&gateway) {
                continue;
            }
            let message =
                route(cidr, Some(gateway), self.via).map_err(|reason| Error::Invalid {
                    cidr,
                    gateway,
                    reason,
                })?;
            self.handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|source| Error::Replace {
                    cidr,
                    gateway,
                    source,
                })?;
            self.installed.insert(cidr, gateway);
        }
        if remove_absent {
            let stale: Vec<(IpNetwork, IpAddr)> = self
                .installed
                .iter()
                .filter(|(cidr, _)| !desired.contains_key(cidr))
                .map(|(cidr, gateway)| (*cidr, *gateway))
                .collect();
            for (cidr, gateway) in stale {
                let message = route(cidr, None, self.via).map_err(|reason| Error::Invalid {
                    cidr,
                    gateway,
                    reason,
                })?;
                match self.handle.route().del(message).execute().await {
                    Ok(()) => {}
                    // Already gone (removed by hand, or with its link).
                    Err(rtnetlink::Error::NetlinkError(e))
                        if e.raw_code() == -(nix::errno::Errno::ESRCH as i32) => {}
                    Err(source) => return Err(Error::Delete { cidr, source }),
                }
                self.installed.remove(&cidr);
            }
        }
        let nodes = self.neighbour_nodes(desired);
        self.sync_neighbours(&nodes, remove_absent).await
    }

    /// A managed neighbour entry for every address of `nodes`, on the
    /// interface the kernel reaches it by; with `remove_absent`, none for
    /// the others.
    async fn sync_neighbours(
        &mut self,
        nodes: &BTreeSet<IpAddr>,
        remove_absent: bool,
    ) -> Result<(), Error> {
        for &node in nodes {
            if self.neighbours.contains_key(&node) {
                continue;
            }
            let ifindex = self.interface_to(node).await?;
            let mut request = self
                .handle
                .neighbours()
                .add(ifindex, node)
                .state(NeighbourState::None)
                .flags(NeighbourFlags::ExtLearned)
                .replace();
            let attributes = &mut request.message_mut().attributes;
            attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
            attributes.push(NeighbourAttribute::Protocol(RouteProtocol::Other(
                ROUTE_PROTOCOL,
            )));
            request
                .execute()
                .await
                .map_err(|source| Error::Neighbour { node, source })?;
            self.neighbours.insert(node, ifindex);
        }
        if remove_absent {
            let stale: Vec<(IpAddr, u32)> = self
                .neighbours
                .iter()
                .filter(|(node, _)| !nodes.contains(node))
                .map(|(node, ifindex)| (*node, *ifindex))
                .collect();
            for (node, ifindex) in stale {
                match self
                    .handle
                    .neighbours()
                    .del(neighbour(node, ifindex))
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    // Already gone (with its link, or by hand).
                    Err(rtnetlink::Error::NetlinkError(e))
                        if e.raw_code() == -(nix::errno::Errno::ENOENT as i32) => {}
                    Err(source) => return Err(Error::Neighbour { node, source }),
                }
                self.neighbours.remove(&node);
            }
        }
        Ok(())
    }

    /// The interface the kernel routes `node` through (`ip route get`).
    async fn interface_to(&self, node: IpAddr) -> Result<u32, Error> {
        let host = if node.is_ipv4() { 32 } else { 128 };
        let query = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(node, host)
            .map_err(|_| Error::NoRouteTo(node))?
            .build();
        let mut answers = self.handle.route().get(query).execute();
        while let Some(message) = answers
            .try_next()
            .await
            .map_err(|source| Error::RouteTo { node, source })?
        {
            let oif = message.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(index) => Some(*index),
                _ => None,
            });
            if let Some(oif) = oif {
                return Ok(oif);
            }
        }
        Err(Error::NoRouteTo(node))
    }
}

/// The neighbour entry of `node` on `ifindex`, for a delete.
fn neighbour(node: IpAddr, ifindex: u32) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    let (family, address) = match node {
        IpAddr::V4(v4) => (AddressFamily::Inet, NeighbourAddress::Inet(v4)),
        IpAddr::V6(v6) => (AddressFamily::Inet6, NeighbourAddress::Inet6(v6)),
    };
    message.header.family = family;
    message.header.ifindex = ifindex;
    message
        .attributes
        .push(NeighbourAttribute::Destination(address));
    message
}

/// The neighbour entries of both families tagged with Weir's protocol.
async fn list_tagged_neighbours(handle: &Handle) -> Result<ManagedNeighbours, Error> {
    let mut found = ManagedNeighbours::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut entries = handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(message) = entries.try_next().await.map_err(Error::ListNeighbours)? {
            let ours = message.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::Protocol(RouteProtocol::Other(p)) if *p == ROUTE_PROTOCOL)
            });
            let node = message.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(node)) => {
                    Some(IpAddr::V4(*node))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(node)) => {
                    Some(IpAddr::V6(*node))
                }
                _ => None,
            });
            if let (true, Some(node)) = (ours, node) {
                found.insert(node, message.header.ifindex);
            }
        }
    }
    Ok(found)
}

/// The route to `cidr` (through `gateway` to add it; without one to delete
/// it). Fails when the two are of different families.
fn route(cidr: IpNetwork, gateway: Option<IpAddr>, via: RouteVia) -> Result<RouteMessage, String> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(cidr.network(), cidr.prefix())
        .map_err(|e| e.to_string())?
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    match (gateway, via) {
        (None, _) => {}
        (Some(gateway), RouteVia::Native) => {
            builder = builder.gateway(gateway).map_err(|e| e.to_string())?;
        }
        // IPv4 through the tunnel: the node address an on-link gateway.
        (Some(gateway), RouteVia::Tunnel { ifindex, source }) if cidr.is_ipv4() => {
            builder = builder
                .gateway(gateway)
                .map_err(|e| e.to_string())?
                .output_interface(ifindex)
                .onlink()
                .pref_source(IpAddr::V4(source))
                .map_err(|e| e.to_string())?;
        }
        // A dual-stack node's IPv6 pods through the tunnel: a device route
        // (`gateway`, the node's IPv4 address, is the outer destination
        // `weir_to_overlay` finds in `weir_pod_cidrs6`, not a next hop).
        (Some(_), RouteVia::Tunnel { ifindex, .. }) => {
            builder = builder.output_interface(ifindex);
        }
    }
    Ok(builder.build())
}

/// The main table's routes of both families tagged with Weir's protocol:
/// pod CIDR -> (gateway, output interface).
async fn list_tagged(handle: &Handle) -> Result<BTreeMap<IpNetwork, (IpAddr, Option<u32>)>, Error> {
    let mut found = BTreeMap::new();
    let dumps = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ];
    for dump in dumps {
        let mut routes = handle.route().get(dump).execute();
        while let Some(message) = routes.try_next().await.map_err(Error::List)? {
            if message.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            if let Some((cidr, next_hop)) = tagged_route(&message) {
                found.insert(cidr, next_hop);
            }
        }
    }
    Ok(found)
}

fn tagged_route(message: &RouteMessage) -> Option<(IpNetwork, (IpAddr, Option<u32>))> {
    let address = |address: &RouteAddress| match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(a) => destination = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let cidr = IpNetwork::new(destination?, message.header.destination_prefix_length).ok()?;
    // A device route (IPv6 through the tunnel) has no gateway: adopted as
    // the unspecified address, corrected by the first sync.
    let unspecified = match cidr {
        IpNetwork::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpNetwork::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    Some((cidr, (gateway.unwrap_or(unspecified), oif)))
}
