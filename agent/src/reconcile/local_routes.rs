//! Keeps `weir_local_routes` equal to this node's endpoints: each pod's
//! address with its host-side veth, the MAC address of the pod's
//! interface (from its CNI ADD) and that of the veth (read from the
//! interface), so eBPF host routing reaches a local pod without a FIB
//! lookup. An endpoint whose MAC addresses are not known has no entry and
//! takes the FIB path.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::Ebpf;
use weir_abi::LocalRoute;

use crate::datapath::maps::{self, TableError};
use crate::endpoint::registry::Endpoint;

#[derive(Default)]
pub struct LocalRouteSync {
    /// What the map holds as of the last pass (None: read it first).
    written: Option<BTreeMap<Ipv4Addr, LocalRoute>>,
}

impl LocalRouteSync {
    /// Brings the map to `endpoints`: new and changed entries first, then
    /// the addresses no endpoint has any more.
    pub fn sync(&mut self, ebpf: &mut Ebpf, endpoints: &[Endpoint]) -> Result<(), TableError> {
        let current = match self.written.take() {
            Some(current) => current,
            None => maps::local_route_entries(ebpf)?,
        };
        let desired = desired(endpoints, &host_macs());
        for (address, route) in &desired {
            if current.get(address) != Some(route) {
                // On an error `written` stays None: the next pass reads
                // the map again.
                maps::set_local_route(ebpf, *address, *route)?;
            }
        }
        for address in current.keys().filter(|a| !desired.contains_key(a)) {
            maps::remove_local_route(ebpf, *address)?;
        }
        self.written = Some(desired);
        Ok(())
    }
}

/// The entries `endpoints` call for, with each host-side interface's MAC
/// address from `host_macs` (by ifindex; read every pass, so a reused
/// ifindex never keeps an old interface's address).
fn desired(
    endpoints: &[Endpoint],
    host_macs: &BTreeMap<u32, [u8; 6]>,
) -> BTreeMap<Ipv4Addr, LocalRoute> {
    endpoints
        .iter()
        .filter_map(|endpoint| {
            let route = LocalRoute {
                ifindex: endpoint.host_ifindex,
                pod_mac: endpoint.pod_mac()?,
                // None: the interface is gone.
                host_mac: *host_macs.get(&endpoint.host_ifindex)?,
            };
            Some((endpoint.ipv4, route))
        })
        .collect()
}

/// Every interface's MAC address in this network namespace, by ifindex.
fn host_macs() -> BTreeMap<u32, [u8; 6]> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return BTreeMap::new();
    };
    addresses
        .filter_map(|a| {
            let link = a.address?;
            let link = link.as_link_addr()?;
            Some((u32::try_from(link.ifindex()).ok()?, link.addr()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ipam::AttachmentKey;
    use weir_types::NamespacedName;

    fn endpoint(id: u16, ifindex: u32, mac: &str) -> Endpoint {
        Endpoint {
            id,
            attachment: AttachmentKey {
                container_id: format!("c{id}"),
                ifname: "eth0".into(),
            },
            pod: NamespacedName::new("x", format!("p{id}")),
            netns: String::new(),
            host_ifname: format!("lxc{id}"),
            host_ifindex: ifindex,
            ipv4: Ipv4Addr::new(10, 244, 1, id as u8),
            mac: mac.into(),
            netns_cookie: 0,
        }
    }

    #[test]
    fn each_endpoint_with_both_macs_gets_an_entry() {
        let endpoints = [
            endpoint(1, 41, "0a:58:0a:f4:01:01"),
            endpoint(2, 42, "not a mac"),
            endpoint(3, 43, "0a:58:0a:f4:01:03"),
        ];
        let host = |i: u8| [0xfe, 0, 0, 0, 0, i];
        // 42 has a host MAC but no pod MAC; 43's interface is gone.
        let macs = BTreeMap::from([(41, host(41)), (42, host(42))]);
        assert_eq!(
            desired(&endpoints, &macs),
            BTreeMap::from([(
                Ipv4Addr::new(10, 244, 1, 1),
                LocalRoute {
                    ifindex: 41,
                    pod_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01],
                    host_mac: host(41),
                }
            )])
        );
    }

    #[test]
    fn this_namespace_interfaces_have_their_mac_addresses() {
        // The loopback device's is all zero; it is there, by its index.
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(host_macs().get(&lo), Some(&[0; 6]));
    }
}
