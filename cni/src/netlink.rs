//! Small netlink operations on links, addresses, routes and neighbours, and
//! their error type. The pod wiring built from them lives in `veth`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::{CniError, ErrorCode};
use crate::mac::MacAddr;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open network namespace {}: {source}", path.display())]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("{} is not a namespace", .0.display())]
    NotANamespace(PathBuf),
    #[error("cannot enter network namespace: {0}")]
    EnterNetns(nix::Error),
    #[error("cannot open a netlink socket: {0}")]
    Socket(io::Error),
    #[error("cannot run the network namespace worker: {0}")]
    Worker(io::Error),
    #[error("the network namespace worker panicked")]
    WorkerPanicked,
    #[error("{operation}: {source}")]
    Request {
        operation: String,
        source: rtnetlink::Error,
    },
    #[error("{0}")]
    Unexpected(String),
    #[error("{error}; undoing it also failed: {cleanup}")]
    CleanupFailed {
        error: Box<NetlinkError>,
        cleanup: Box<NetlinkError>,
    },
}

impl NetlinkError {
    /// The kernel's errno for a failed request (positive, e.g. `libc::EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request {
                source: rtnetlink::Error::NetlinkError(message),
                ..
            } => Some(message.raw_code().abs()),
            Self::OpenNetns { source, .. } | Self::Socket(source) | Self::Worker(source) => {
                source.raw_os_error()
            }
            Self::EnterNetns(errno) => Some(*errno as i32),
            Self::CleanupFailed { error, .. } => error.errno(),
            _ => None,
        }
    }

    /// The namespace is gone: its file is missing, or is no longer a
    /// namespace (an unmounted bind mount leaves an empty file behind).
    pub fn is_missing_netns(&self) -> bool {
        match self {
            Self::OpenNetns { source, .. } => source.kind() == io::ErrorKind::NotFound,
            Self::NotANamespace(_) => true,
            Self::EnterNetns(errno) => *errno == nix::errno::Errno::EINVAL,
            _ => false,
        }
    }

    /// A CNI error (code 100) whose message says what was being done.
    pub fn into_cni(self, doing: &str) -> CniError {
        CniError::new(ErrorCode::Netlink, doing).with_details(self.to_string())
    }
}

/// Wraps an rtnetlink error with what was being attempted.
pub(crate) fn request_failed(
    operation: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let operation = operation.into();
    move |source| NetlinkError::Request { operation, source }
}

/// The parts of a link the plugin cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub up: bool,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: message.header.flags.contains(LinkFlags::Up),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                _ => {}
            }
        }
        link
    }
}

/// The link named `name`, or `None` if there is none.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>, NetlinkError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(message)) => Ok(Some(Link::from_message(&message))),
        Ok(None) => Ok(None),
        Err(error) => {
            let error = request_failed(format!("cannot look up link {name}"))(error);
            if error.errno() == Some(libc_enodev()) {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// The link named `name`, or an error saying it is missing.
pub async fn require_link(handle: &Handle, name: &str) -> Result<Link, NetlinkError> {
    link_by_name(handle, name)
        .await?
        .ok_or_else(|| NetlinkError::Unexpected(format!("link {name} does not exist")))
}

pub async fn delete_link(handle: &Handle, index: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(request_failed(format!("cannot delete link {index}")))
}

/// Deletes the link named `name`; `false` if there was none.
pub async fn delete_link_if_exists(handle: &Handle, name: &str) -> Result<bool, NetlinkError> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(false);
    };
    match delete_link(handle, link.index).await {
        Ok(()) => Ok(true),
        // Gone in between (e.g. its veth peer was deleted).
        Err(error) if error.errno() == Some(libc_enodev()) => Ok(false),
        Err(error) => Err(error),
    }
}

pub async fn rename_link(handle: &Handle, index: u32, name: &str) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).name(name).build())
        .execute()
        .await
        .map_err(request_failed(format!(
            "cannot rename link {index} to {name}"
        )))
}

pub async fn set_link_up(handle: &Handle, index: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(request_failed(format!("cannot set link {index} up")))
}

/// `ip address add <address>/<prefix> dev <index>`, for IPv6 with `nodad`:
/// the agent hands out each address once, and duplicate address detection
/// would keep it tentative (unusable as a source) for a second or more.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    prefix: u8,
) -> Result<(), NetlinkError> {
    let mut request = handle.address().add(index, address, prefix);
    if address.is_ipv6() {
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request.execute().await.map_err(request_failed(format!(
        "cannot add address {address}/{prefix} to link {index}"
    )))
}

/// The addresses (with prefix length) on link `index`, of both families.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(request_failed(format!(
            "cannot list addresses of link {index}"
        )))?;
    Ok(messages
        .iter()
        .flat_map(|message| {
            message
                .attributes
                .iter()
                .filter_map(move |attribute| match attribute {
                    AddressAttribute::Address(address) => {
                        Some((*address, message.header.prefix_len))
                    }
                    _ => None,
                })
        })
        .collect())
}

/// The prefix length of a single address of `address`'s family.
fn host_prefix(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip route add <destination>/32 dev <index> scope link` (`/128` for IPv6).
pub async fn add_host_route(
    handle: &Handle,
    index: u32,
    destination: IpAddr,
) -> Result<(), NetlinkError> {
    let prefix = host_prefix(destination);
    let route = match destination {
        IpAddr::V4(destination) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination, prefix)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(destination) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination, prefix)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build(),
    };
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(request_failed(format!(
            "cannot add route {destination}/{prefix} dev {index}"
        )))
}

/// `ip route add default via <gateway> dev <index>`, in the gateway's family.
pub async fn add_default_route(
    handle: &Handle,
    index: u32,
    gateway: IpAddr,
) -> Result<(), NetlinkError> {
    let route = match gateway {
        IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build(),
        IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build(),
    };
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(request_failed(format!(
            "cannot add default route via {gateway}"
        )))
}

/// `ip neigh replace <address> lladdr <mac> dev <index> nud permanent`.
pub async fn add_permanent_neighbour(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    mac: MacAddr,
) -> Result<(), NetlinkError> {
    handle
        .neighbours()
        .add(index, address)
        .link_layer_address(&mac.octets())
        .state(NeighbourState::Permanent)
        // Replace, not create-exclusive: a process already running in the
        // sandbox can send through the default route before this entry is
        // made, and the kernel then holds an incomplete one for the gateway.
        .replace()
        .execute()
        .await
        .map_err(request_failed(format!(
            "cannot add neighbour {address} lladdr {mac}"
        )))
}

/// ENODEV: "no such device", what the kernel answers for a missing link.
fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}
