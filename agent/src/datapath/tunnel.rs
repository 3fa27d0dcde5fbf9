//! The node's VXLAN device in tunnel mode (`--routing-mode tunnel`):
//! `weir_vxlan`, collect-metadata (`ip link add weir_vxlan type vxlan
//! external dstport 8472 nolearning`), so one device reaches every node and
//! the programs set each packet's outer destination and VNI (see
//! `weir_abi::overlay`). It resolves no neighbours (`arp off`): the routes
//! to other nodes' pod CIDRs name the node as an on-link gateway, and the
//! receiving program marks the frame as addressed to its host. Its MTU is
//! the underlay's minus the VXLAN overhead, and so is a pod's.
//!
//! An existing device of that name is adopted when it is a collect-metadata
//! VXLAN device on the same port (an agent restart keeps the programs
//! attached to it and traffic flowing), replaced otherwise.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVxlan};
use weir_abi::overlay::{DEVICE, VXLAN_OVERHEAD};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink connection: {0}")]
    Connection(std::io::Error),
    #[error("reading link {name}: {source}")]
    Get {
        name: String,
        source: rtnetlink::Error,
    },
    #[error("no underlay device {0}")]
    NoUnderlay(String),
    #[error("underlay MTU {0} leaves no room for VXLAN")]
    UnderlayMtu(u32),
    #[error("creating {DEVICE}: {0}")]
    Create(rtnetlink::Error),
    #[error("replacing {DEVICE}: {0}")]
    Delete(rtnetlink::Error),
    #[error("setting {DEVICE} up with MTU {mtu}: {source}")]
    Set { mtu: u32, source: rtnetlink::Error },
    #[error("setting IPv6 on {DEVICE}: {0}")]
    Ipv6(std::io::Error),
}

/// The tunnel device as this agent left it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TunnelDevice {
    pub ifindex: u32,
    /// Its MTU: the underlay's minus [`VXLAN_OVERHEAD`].
    pub mtu: u32,
}

/// The tunnel device's MTU over an underlay of `underlay_mtu`.
pub fn mtu_over(underlay_mtu: u32) -> Result<u32, Error> {
    match underlay_mtu.checked_sub(VXLAN_OVERHEAD) {
        Some(mtu) if mtu >= 576 => Ok(mtu),
        _ => Err(Error::UnderlayMtu(underlay_mtu)),
    }
}

/// Creates or adopts [`DEVICE`] on UDP `port`, with the MTU that fits in
/// `underlay`'s, up; carrying IPv6 pods' packets too when `ipv6` (a
/// dual-stack node). Needs a tokio runtime.
pub async fn ensure(underlay: &str, port: u16, ipv6: bool) -> Result<TunnelDevice, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connection)?;
    tokio::spawn(connection);
    let underlay_link = link(&handle, underlay)
        .await?
        .ok_or_else(|| Error::NoUnderlay(underlay.to_string()))?;
    let underlay_mtu = attribute_mtu(&underlay_link).unwrap_or(1500);
    let mtu = mtu_over(underlay_mtu)?;
    let existing = link(&handle, DEVICE).await?;
    let ifindex = match existing {
        Some(found) if is_ours(&found, port) => found.header.index,
        other => {
            if let Some(found) = other {
                handle
                    .link()
                    .del(found.header.index)
                    .execute()
                    .await
                    .map_err(Error::Delete)?;
            }
            let request = LinkMessageBuilder::<LinkVxlan>::new(DEVICE)
                .port(port)
                .learning(false)
                .collect_metadata(true)
                .arp(false)
                .mtu(mtu)
                .build();
            handle
                .link()
                .add(request)
                .execute()
                .await
                .map_err(Error::Create)?;
            link(&handle, DEVICE)
                .await?
                .ok_or(Error::Create(rtnetlink::Error::RequestFailed))?
                .header
                .index
        }
    };
    set_ipv6(ipv6).map_err(Error::Ipv6)?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(ifindex)
                .mtu(mtu)
                .arp(false)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|source| Error::Set { mtu, source })?;
    Ok(TunnelDevice { ifindex, mtu })
}

/// The link named `name`, if there is one.
/// IPv6 on the device. Off on an IPv4-only node: it would send router
/// solicitations and MLD reports into the tunnel. On a dual-stack node on,
/// for the IPv6 pods' packets, but with no address of its own (no
/// link-local address, so nothing of its own to send: no solicitations, no
/// reports; its neighbours need no resolution, the device has ARP off).
fn set_ipv6(on: bool) -> std::io::Result<()> {
    let conf = format!("/proc/sys/net/ipv6/conf/{DEVICE}");
    let write = |key: &str, value: &[u8]| std::fs::write(format!("{conf}/{key}"), value);
    let written = if on {
        // addr_gen_mode 1 (none) before IPv6 comes on, or it makes a
        // link-local address at once.
        write("addr_gen_mode", b"1")
            .and_then(|()| write("accept_ra", b"0"))
            .and_then(|()| write("disable_ipv6", b"0"))
    } else {
        write("disable_ipv6", b"1")
    };
    match written {
        // A kernel without IPv6: nothing to turn off (and a dual-stack node
        // fails earlier, enabling IPv6 forwarding).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !on => Ok(()),
        other => other,
    }
}

async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::Get {
            name: name.to_string(),
            source,
        }),
    }
}

fn attribute_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// Whether `link` is a collect-metadata VXLAN device on `port`.
fn is_ours(link: &LinkMessage, port: u16) -> bool {
    let infos = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    });
    let Some(infos) = infos else {
        return false;
    };
    let vxlan = infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    });
    vxlan
        && data.is_some_and(|data| {
            data.contains(&InfoVxlan::CollectMetadata(true))
                && data.contains(&InfoVxlan::Port(port))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunnel_mtu_leaves_room_for_the_headers() {
        assert_eq!(mtu_over(1500).unwrap(), 1450);
        assert_eq!(mtu_over(9000).unwrap(), 8950);
        assert!(mtu_over(600).is_err());
        assert!(mtu_over(40).is_err());
    }
}
