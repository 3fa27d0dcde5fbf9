//! Routes to the other nodes' pod CIDRs through their node addresses:
//! native routing between nodes on one L2 segment (Cilium's
//! `--auto-direct-node-routes`). The agent, not the installer, owns them:
//! they follow the node records of the shared store as nodes come and go.
//!
//! Every route is tagged with a routing protocol number of Weir's own
//! ([`ROUTE_PROTOCOL`], `ip route show proto 87`), so the agent finds the
//! routes an earlier run left (adopted, then corrected) and never touches
//! anyone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
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
        cidr: Ipv4Network,
        gateway: Ipv4Addr,
        source: rtnetlink::Error,
    },
    #[error("delete route {cidr}: {source}")]
    Delete {
        cidr: Ipv4Network,
        source: rtnetlink::Error,
    },
}

/// Pod CIDR → the node address it is reached through.
pub type NodeRouteSet = BTreeMap<Ipv4Network, Ipv4Addr>;

/// The routes this agent keeps in its network namespace's main table.
pub struct NodeRoutes {
    handle: Handle,
    installed: NodeRouteSet,
}

impl NodeRoutes {
    /// Connects to the current network namespace's routing and adopts the
    /// routes tagged with [`ROUTE_PROTOCOL`]. Needs a tokio runtime.
    pub async fn open() -> Result<NodeRoutes, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connection)?;
        tokio::spawn(connection);
        let installed = list_tagged(&handle).await?;
        Ok(NodeRoutes { handle, installed })
    }

    /// What is installed (as last listed or written).
    pub fn installed(&self) -> &NodeRouteSet {
        &self.installed
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
            self.handle
                .route()
                .add(route(cidr, Some(gateway)))
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
            let stale: Vec<Ipv4Network> = self
                .installed
                .keys()
                .filter(|cidr| !desired.contains_key(cidr))
                .copied()
                .collect();
            for cidr in stale {
                match self.handle.route().del(route(cidr, None)).execute().await {
                    Ok(()) => {}
                    // Already gone (removed by hand, or with its link).
                    Err(rtnetlink::Error::NetlinkError(e))
                        if e.raw_code() == -(nix::errno::Errno::ESRCH as i32) => {}
                    Err(source) => return Err(Error::Delete { cidr, source }),
                }
                self.installed.remove(&cidr);
            }
        }
        Ok(())
    }
}

fn route(cidr: Ipv4Network, gateway: Option<Ipv4Addr>) -> RouteMessage {
    let builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix())
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    match gateway {
        Some(gateway) => builder.gateway(gateway).build(),
        None => builder.build(),
    }
}

/// The main table's IPv4 routes tagged with Weir's protocol.
async fn list_tagged(handle: &Handle) -> Result<NodeRouteSet, Error> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut found = NodeRouteSet::new();
    while let Some(message) = routes.try_next().await.map_err(Error::List)? {
        if message.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
            || message.header.address_family != AddressFamily::Inet
        {
            continue;
        }
        if let Some((cidr, gateway)) = tagged_route(&message) {
            found.insert(cidr, gateway);
        }
    }
    Ok(found)
}

fn tagged_route(message: &RouteMessage) -> Option<(Ipv4Network, Ipv4Addr)> {
    let mut destination = None;
    let mut gateway = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(address)) => {
                destination = Some(*address)
            }
            RouteAttribute::Gateway(RouteAddress::Inet(address)) => gateway = Some(*address),
            _ => {}
        }
    }
    let cidr = Ipv4Network::new(destination?, message.header.destination_prefix_length).ok()?;
    Some((cidr, gateway?))
}
