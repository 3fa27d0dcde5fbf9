//! The node's endpoint registry: one entry per pod attachment, with the
//! identity data later stages key on.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
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
    pub mac: String,
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
            mac: "02:00:00:00:00:01".into(),
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
}
