//! The pod's wiring: a veth pair from the host namespace into the pod's,
//! an IPv4 /32 on the pod end, routes to a gateway that is reached through
//! a static neighbour entry (so the host needs no bridge and answers no ARP),
//! and a /32 host route back; on a dual-stack node the same again for IPv6
//! with /128s. Setup is all or nothing.
//!
//! In two steps, so that no packet passes before policy: [`setup`] leaves
//! the host end down (no carrier on either end, no host route), the agent
//! then attaches its programs and closes the endpoint, and only then
//! [`activate`] brings the host end up and routes to the pod.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::mac::MacAddr;
use crate::netlink::{self, Link, NetlinkError};
use crate::netns;

/// Everything needed to wire one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkSpec {
    pub host_ifname: String,
    pub pod_ifname: String,
    /// The pod end's name until it is renamed to `pod_ifname`.
    pub peer_temp_ifname: String,
    pub pod_mac: MacAddr,
    pub mtu: u32,
    pub pod_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// `None` on an IPv4-only node: IPv6 in the pod is then left as it is.
    pub ipv6: Option<PodIpv6>,
}

/// The pod's IPv6 address (a /128 on the pod end) and next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIpv6 {
    pub address: Ipv6Addr,
    pub gateway: Ipv6Addr,
}

/// Where the kernel shows its IPv6 settings; missing if IPv6 is disabled
/// (`ipv6.disable=1`) or not built.
const PROC_SYS_IPV6: &str = "/proc/sys/net/ipv6";

/// The smallest MTU IPv6 works with (RFC 8200); below it the kernel turns
/// IPv6 off on the interface.
const IPV6_MIN_MTU: u32 = 1280;

/// What setup made that the result reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNetwork {
    pub host_index: u32,
    pub host_mac: MacAddr,
    /// The pod namespace's cookie (`SO_NETNS_COOKIE`), for CreateEndpoint.
    pub netns_cookie: u64,
}

/// Wires the pod, host end still down. `host` is a netlink handle in the host namespace;
/// `pod_netns` the pod's namespace. On failure everything made so far is
/// removed (deleting the host end deletes its peer and every route and
/// neighbour entry on both ends) and the error returned.
pub async fn setup(
    host: &Handle,
    pod_netns: &File,
    spec: &PodNetworkSpec,
) -> Result<PodNetwork, NetlinkError> {
    // Nothing exists yet if this fails: link creation is atomic.
    create_pair(host, pod_netns, spec).await?;
    match configure(host, pod_netns, spec).await {
        Ok(network) => Ok(network),
        Err(error) => match netlink::delete_link_if_exists(host, &spec.host_ifname).await {
            Ok(_) => Err(error),
            Err(cleanup) => Err(NetlinkError::CleanupFailed {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            }),
        },
    }
}

/// Creates the pair with the peer directly in the pod namespace, already
/// carrying its MAC and MTU.
async fn create_pair(
    host: &Handle,
    pod_netns: &File,
    spec: &PodNetworkSpec,
) -> Result<(), NetlinkError> {
    let peer = LinkUnspec::new_with_name(&spec.peer_temp_ifname)
        .mtu(spec.mtu)
        .address(spec.pod_mac.octets().to_vec())
        .setns_by_fd(pod_netns.as_raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(spec.host_ifname.clone())
        .mtu(spec.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(pair)
        .execute()
        .await
        .map_err(netlink::request_failed(format!(
            "cannot create veth {} (peer {} in the pod namespace)",
            spec.host_ifname, spec.peer_temp_ifname
        )))
}

async fn configure(
    host: &Handle,
    pod_netns: &File,
    spec: &PodNetworkSpec,
) -> Result<PodNetwork, NetlinkError> {
    let host_link = netlink::require_link(host, &spec.host_ifname).await?;
    configure_host_ipv6(&spec.host_ifname)?;
    let host_mac = host_link.mac.ok_or_else(|| {
        NetlinkError::Unexpected(format!("veth {} has no MAC address", spec.host_ifname))
    })?;
    let pod_spec = spec.clone();
    let netns_cookie = netns::run_in(pod_netns, move |pod| async move {
        configure_pod_end(&pod, &pod_spec, host_mac).await?;
        weir_agent_api::netns_cookie().map_err(|error| {
            NetlinkError::Unexpected(format!(
                "cannot read the pod namespace's cookie (SO_NETNS_COOKIE): {error}"
            ))
        })
    })
    .await?;
    Ok(PodNetwork {
        host_index: host_link.index,
        host_mac,
        netns_cookie,
    })
}

/// IPv6 on the host end, set while it is still down (a node without IPv6
/// has nothing to set):
/// - the node must not take IPv6 routes or redirects from a pod: without
///   this, a pod sending Router Advertisements would become the node's
///   IPv6 default router (the datapath also drops them, issue 16 item 1);
/// - no duplicate address detection: the link is point to point, its
///   link-local address cannot be duplicated, and while it is tentative
///   (1-2 s after link-up) the node cannot solicit the pod's neighbour
///   entry, so its first IPv6 packets to a dual-stack pod would wait.
fn configure_host_ipv6(host_ifname: &str) -> Result<(), NetlinkError> {
    let conf = Path::new("/proc/sys/net/ipv6/conf").join(host_ifname);
    if !conf.exists() {
        return Ok(());
    }
    for key in ["accept_ra", "accept_redirects", "accept_dad"] {
        std::fs::write(conf.join(key), b"0").map_err(|error| {
            NetlinkError::Unexpected(format!(
                "cannot set net.ipv6.conf.{host_ifname}.{key}=0: {error}"
            ))
        })?;
    }
    Ok(())
}

/// The pod's IPv6 link-local address must be the one the datapath accepts
/// as its source: `fe80::` and the modified EUI-64 of the MAC address the
/// plugin gave the interface (`weir_abi::endpoint::eui64_interface_id`), so
/// `addr_gen_mode=0` whatever the namespace's default (a stable-privacy or
/// random mode would give an address the datapath drops). Runs on the
/// thread that entered the pod namespace, before the link comes up (the
/// address is made on link-up). A node without IPv6 has nothing to set.
fn derive_link_local_from_mac(pod_ifname: &str) -> Result<(), NetlinkError> {
    let key = Path::new("/proc/sys/net/ipv6/conf")
        .join(pod_ifname)
        .join("addr_gen_mode");
    if !key.exists() {
        return Ok(());
    }
    std::fs::write(&key, b"0").map_err(|error| {
        NetlinkError::Unexpected(format!(
            "cannot set net.ipv6.conf.{pod_ifname}.addr_gen_mode=0 in the pod namespace: {error}"
        ))
    })
}

/// Brings the host end up and adds the host route to the pod: traffic can
/// flow from now on, so the agent's programs must be attached first. On
/// failure the pair is removed, as by [`setup`].
pub async fn activate(
    host: &Handle,
    spec: &PodNetworkSpec,
    network: &PodNetwork,
) -> Result<(), NetlinkError> {
    let up = async {
        netlink::set_link_up(host, network.host_index).await?;
        netlink::add_host_route(host, network.host_index, IpAddr::V4(spec.pod_ip)).await?;
        if let Some(ipv6) = spec.ipv6 {
            netlink::add_host_route(host, network.host_index, IpAddr::V6(ipv6.address)).await?;
        }
        Ok(())
    };
    match up.await {
        Ok(()) => Ok(()),
        Err(error) => match netlink::delete_link_if_exists(host, &spec.host_ifname).await {
            Ok(_) => Err(error),
            Err(cleanup) => Err(NetlinkError::CleanupFailed {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            }),
        },
    }
}

/// Runs inside the pod namespace.
async fn configure_pod_end(
    pod: &Handle,
    spec: &PodNetworkSpec,
    host_mac: MacAddr,
) -> Result<(), NetlinkError> {
    let peer = netlink::require_link(pod, &spec.peer_temp_ifname).await?;
    // Fails with EEXIST if the pod already has an interface by that name.
    netlink::rename_link(pod, peer.index, &spec.pod_ifname).await?;
    netlink::add_address(pod, peer.index, IpAddr::V4(spec.pod_ip), 32).await?;
    derive_link_local_from_mac(&spec.pod_ifname)?;
    if let Some(ipv6) = spec.ipv6 {
        // After addr_gen_mode: enabling IPv6 may make the link-local address.
        enable_ipv6(Path::new(PROC_SYS_IPV6), &spec.pod_ifname, spec.mtu)?;
        netlink::add_address(pod, peer.index, IpAddr::V6(ipv6.address), 128).await?;
    }
    netlink::set_link_up(pod, peer.index).await?;
    let loopback = netlink::require_link(pod, "lo").await?;
    netlink::set_link_up(pod, loopback.index).await?;
    route_to_gateway(pod, peer.index, IpAddr::V4(spec.gateway), host_mac).await?;
    if let Some(ipv6) = spec.ipv6 {
        route_to_gateway(pod, peer.index, IpAddr::V6(ipv6.gateway), host_mac).await?;
    }
    Ok(())
}

/// The default route of the gateway's family through the pod end `index`.
/// The gateway is on-link through the veth although no subnet covers it,
/// and resolves statically to the host end's MAC.
async fn route_to_gateway(
    pod: &Handle,
    index: u32,
    gateway: IpAddr,
    host_mac: MacAddr,
) -> Result<(), NetlinkError> {
    netlink::add_host_route(pod, index, gateway).await?;
    netlink::add_default_route(pod, index, gateway).await?;
    netlink::add_permanent_neighbour(pod, index, gateway, host_mac).await
}

/// Makes sure IPv6 works on the pod end and loopback, which the pod's
/// namespace may have disabled (`disable_ipv6=1` by default, as some
/// runtimes set it): the spec asks for IPv6, so the reference plugins'
/// behaviour is followed and it is turned on for these two. Runs on the
/// thread that entered the pod namespace, so `proc_sys_ipv6` shows its
/// settings.
fn enable_ipv6(proc_sys_ipv6: &Path, pod_ifname: &str, mtu: u32) -> Result<(), NetlinkError> {
    if !proc_sys_ipv6.exists() {
        return Err(NetlinkError::Unexpected(format!(
            "the pod needs IPv6 but the kernel has none ({} is missing; booted with ipv6.disable=1?)",
            proc_sys_ipv6.display()
        )));
    }
    if mtu < IPV6_MIN_MTU {
        return Err(NetlinkError::Unexpected(format!(
            "the pod needs IPv6 but its MTU {mtu} is below IPv6's minimum of {IPV6_MIN_MTU}"
        )));
    }
    for ifname in [pod_ifname, "lo"] {
        let key = proc_sys_ipv6.join("conf").join(ifname).join("disable_ipv6");
        std::fs::write(&key, b"0").map_err(|error| {
            NetlinkError::Unexpected(format!(
                "cannot set net.ipv6.conf.{ifname}.disable_ipv6=0 in the pod namespace: {error}"
            ))
        })?;
    }
    Ok(())
}

/// What [`delete_pod_end`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEndDeletion {
    Deleted,
    /// No namespace, or no interface by that name in it.
    Absent,
    /// An interface by that name that Weir did not make (its MAC is not the
    /// attachment's): e.g. the one that made ADD fail. Left alone.
    NotOurs,
}

/// Deletes the pod end `ifname` inside the namespace at `netns_path` if it
/// carries `pod_mac`, the attachment's derived MAC. A missing namespace or
/// interface is not an error.
pub async fn delete_pod_end(
    netns_path: &Path,
    ifname: &str,
    pod_mac: MacAddr,
) -> Result<PodEndDeletion, NetlinkError> {
    let pod_netns = match netns::open(netns_path) {
        Ok(file) => file,
        Err(error) if error.is_missing_netns() => return Ok(PodEndDeletion::Absent),
        Err(error) => return Err(error),
    };
    let ifname = ifname.to_string();
    let outcome = netns::run_in(&pod_netns, move |pod| async move {
        let Some(link) = netlink::link_by_name(&pod, &ifname).await? else {
            return Ok(PodEndDeletion::Absent);
        };
        if link.mac != Some(pod_mac) {
            return Ok(PodEndDeletion::NotOurs);
        }
        match netlink::delete_link(&pod, link.index).await {
            Ok(()) => Ok(PodEndDeletion::Deleted),
            Err(error) if error.errno() == Some(nix::errno::Errno::ENODEV as i32) => {
                Ok(PodEndDeletion::Absent)
            }
            Err(error) => Err(error),
        }
    })
    .await;
    match outcome {
        Err(error) if error.is_missing_netns() => Ok(PodEndDeletion::Absent),
        other => other,
    }
}

/// The pod end as it is now, for CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndState {
    pub link: Link,
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// Link-local addresses included.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
}

/// `None` if the pod namespace has no interface `ifname`.
pub async fn inspect_pod_end(
    pod_netns: &File,
    ifname: &str,
) -> Result<Option<PodEndState>, NetlinkError> {
    let ifname = ifname.to_string();
    netns::run_in(pod_netns, move |pod| async move {
        let Some(link) = netlink::link_by_name(&pod, &ifname).await? else {
            return Ok(None);
        };
        let mut state = PodEndState {
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            link,
        };
        for (address, prefix) in netlink::addresses(&pod, state.link.index).await? {
            match address {
                IpAddr::V4(address) => state.ipv4.push((address, prefix)),
                IpAddr::V6(address) => state.ipv6.push((address, prefix)),
            }
        }
        Ok(Some(state))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_without_kernel_support_is_a_clear_error() {
        let missing = std::env::temp_dir().join(format!("weir-cni-no-ipv6-{}", std::process::id()));
        let error = enable_ipv6(&missing, "eth0", 1500).unwrap_err().to_string();
        assert!(error.contains("the pod needs IPv6"), "{error}");
        assert!(error.contains("is missing"), "{error}");
    }

    #[test]
    fn ipv6_below_its_minimum_mtu_is_a_clear_error() {
        let root = std::env::temp_dir();
        let error = enable_ipv6(&root, "eth0", 1279).unwrap_err().to_string();
        assert!(error.contains("below IPv6's minimum of 1280"), "{error}");
    }
}
