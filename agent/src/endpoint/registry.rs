//! The node's endpoint registry: one entry per pod attachment, with the
//! identity data later stages key on.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use weir_abi::EndpointInfo;
use weir_types::NamespacedName;

use crate::endpoint::ipam::AttachmentKey;

/// Endpoint ids are 16-bit, as in Cilium (they index per-endpoint maps);
/// 0 is never used.
pub type EndpointId = u16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub attachment: AttachmentKey,
    /// The pod (persisted as `{namespace, name}`).
    pub pod: NamespacedName,
    /// Path of the pod's network namespace.
    pub netns: String,
    /// Host-side veth, where the pod programs are attached.
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub ipv4: Ipv4Addr,
    /// The pod's IPv6 address on a dual-stack node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub mac: String,
    /// `SO_NETNS_COOKIE` of the pod's namespace (0: unknown, e.g. recorded
    /// by an agent before this field): `weir_netns_owners` maps it to the
    /// host interface, so the cgroup hooks name the pod.
    #[serde(default)]
    pub netns_cookie: u64,
    /// The pod's host ports (CNI `portMappings`): each a frontend on the
    /// node's address for the pod's container port, removed with the
    /// endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

/// A host port of a pod (the CNI `portMappings` capability, as the portmap
/// plugin takes it): `host_port` on the node's address leads to
/// `container_port` of the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: weir_types::Protocol,
}

impl Endpoint {
    /// The pod's addresses: IPv4, then IPv6 if it has one.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(IpAddr::V4(self.ipv4)).chain(self.ipv6.map(IpAddr::V6))
    }

    /// The endpoint's entry in `weir_endpoints` before its identity and
    /// policy are known: its addresses, and closed
    /// ([`EndpointInfo::not_ready`]).
    pub fn closed_entry(&self) -> EndpointInfo {
        EndpointInfo::not_ready(self.id, self.ipv4.octets())
            .with_ipv6(self.ipv6.map_or([0; 16], |a| a.octets()))
            .with_link_local(self.ipv6_link_local())
    }

    /// The interface identifier of the pod's IPv6 link-local address: the
    /// modified EUI-64 of the MAC address the CNI plugin gave its interface
    /// (the plugin also sets `addr_gen_mode=0` there, so the kernel derives
    /// the same). All zero, so no link-local source is accepted, when the
    /// MAC address does not parse.
    pub fn ipv6_link_local(&self) -> [u8; 8] {
        let mut mac = [0u8; 6];
        let mut parts = self.mac.split(':');
        for byte in &mut mac {
            match parts.next().map(|part| u8::from_str_radix(part, 16)) {
                Some(Ok(value)) => *byte = value,
                _ => return [0; 8],
            }
        }
        if parts.next().is_some() {
            return [0; 8];
        }
        weir_abi::endpoint::eui64_interface_id(mac)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("no free endpoint id (all {0} in use)")]
    IdsExhausted(usize),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl Registry {
    /// The lowest unused id.
    pub fn next_id(&self) -> Result<EndpointId, EndpointError> {
        (1..=EndpointId::MAX)
            .find(|id| !self.endpoints.contains_key(id))
            .ok_or(EndpointError::IdsExhausted(self.endpoints.len()))
    }

    /// Adds or replaces the endpoint of `endpoint.attachment`; a re-created
    /// attachment keeps its id.
    pub fn upsert(&mut self, mut endpoint: Endpoint) -> Result<&Endpoint, EndpointError> {
        let id = match self.by_attachment(&endpoint.attachment) {
            Some(existing) => existing.id,
            None => self.next_id()?,
        };
        endpoint.id = id;
        self.endpoints.insert(id, endpoint);
        Ok(&self.endpoints[&id])
    }

    pub fn remove(&mut self, attachment: &AttachmentKey) -> Option<Endpoint> {
        let id = self.by_attachment(attachment)?.id;
        self.endpoints.remove(&id)
    }

    pub fn by_attachment(&self, attachment: &AttachmentKey) -> Option<&Endpoint> {
        self.endpoints
            .values()
            .find(|e| &e.attachment == attachment)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(container: &str, last_octet: u8) -> Endpoint {
        Endpoint {
            id: 0,
            attachment: AttachmentKey {
                container_id: container.into(),
                ifname: "eth0".into(),
            },
            pod: NamespacedName::new("x", container),
            netns: format!("/run/netns/{container}"),
            host_ifname: format!("lxc{container}"),
            host_ifindex: 7,
            ipv4: Ipv4Addr::new(10, 244, 1, last_octet),
            ipv6: None,
            mac: "02:00:00:00:00:01".into(),
            netns_cookie: 0,
            port_mappings: Vec::new(),
        }
    }

    #[test]
    fn ids_start_at_one_and_are_reused_after_removal() {
        let mut registry = Registry::default();
        assert_eq!(registry.upsert(endpoint("a", 2)).unwrap().id, 1);
        assert_eq!(registry.upsert(endpoint("b", 3)).unwrap().id, 2);
        let removed = registry.remove(&endpoint("a", 2).attachment).unwrap();
        assert_eq!(removed.id, 1);
        assert_eq!(registry.upsert(endpoint("c", 4)).unwrap().id, 1);
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn upsert_of_the_same_attachment_keeps_the_id() {
        let mut registry = Registry::default();
        registry.upsert(endpoint("a", 2)).unwrap();
        let again = registry.upsert(endpoint("a", 9)).unwrap();
        assert_eq!(again.id, 1);
        assert_eq!(again.ipv4, Ipv4Addr::new(10, 244, 1, 9));
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn the_link_local_interface_id_is_the_eui64_of_the_mac() {
        let mut pod = endpoint("a", 2);
        pod.mac = "0a:58:0a:f4:00:05".into();
        // What the kernel derives under addr_gen_mode=0: fe80::858:aff:fef4:5.
        assert_eq!(
            pod.ipv6_link_local(),
            [8, 0x58, 0x0a, 0xff, 0xfe, 0xf4, 0, 5]
        );
        pod.mac = "not a mac".into();
        assert_eq!(pod.ipv6_link_local(), [0; 8]);
        pod.mac = "0a:58:0a:f4:00:05:06".into();
        assert_eq!(pod.ipv6_link_local(), [0; 8]);
    }
}
