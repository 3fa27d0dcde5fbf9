//! Numeric identities, reserved identities and the cluster view the compiler
//! reads (identities with their labels and named ports, local endpoints).

use std::collections::{BTreeMap, BTreeSet};

use ipnetwork::IpNetwork;

use crate::labels::LabelSet;
use crate::rule::Protocol;

/// A security identity number. `0` in policy state means "any identity".
pub type NumericIdentity = u32;

/// The reserved identities and numeric ranges: the one table in
/// `weir_abi::identity`, under the name this crate's callers use.
pub use weir_abi::identity as reserved;

/// Named container ports of the pods behind an identity (or of one endpoint):
/// name → the (protocol, port) pairs that carry that name. An identity's map
/// is the union over its pods, so one name may resolve to several ports.
pub type NamedPorts = BTreeMap<String, BTreeSet<(Protocol, u16)>>;

/// One identity as the compiler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: NumericIdentity,
    pub labels: LabelSet,
    /// Union of the named ports of all pods with this identity (used to
    /// resolve named ports of egress rules).
    pub named_ports: NamedPorts,
}

/// A local endpoint (pod) that gets a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint id that keys the compiled state (the policy map id).
    pub id: EndpointId,
    pub identity: NumericIdentity,
    /// The pod's own named container ports (for named ports of ingress rules).
    pub named_ports: NamedPorts,
}

/// Key of a local endpoint.
pub type EndpointId = u32;

/// What the compiler knows about the cluster: every identity that policy
/// peers can select, and the local endpoints to compute policy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub identities: BTreeMap<NumericIdentity, Identity>,
    pub endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl Default for ClusterView {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterView {
    /// A view holding the reserved identities and nothing else. Identity 0
    /// is left out: in policy state it means "any peer", never a peer.
    pub fn new() -> Self {
        let identities = reserved::RESERVED
            .iter()
            .filter(|r| r.id != reserved::ANY)
            .map(|r| {
                let labels = LabelSet::reserved(r.id).unwrap_or_default();
                (
                    r.id,
                    Identity {
                        id: r.id,
                        labels,
                        named_ports: NamedPorts::new(),
                    },
                )
            })
            .collect();
        Self {
            identities,
            endpoints: BTreeMap::new(),
        }
    }

    /// Adds or replaces an identity.
    pub fn add_identity(&mut self, identity: Identity) {
        self.identities.insert(identity.id, identity);
    }

    /// Adds or replaces a local endpoint.
    pub fn add_endpoint(&mut self, endpoint: Endpoint) {
        self.endpoints.insert(endpoint.id, endpoint);
    }

    pub fn labels_of(&self, id: NumericIdentity) -> Option<&LabelSet> {
        self.identities.get(&id).map(|i| &i.labels)
    }
}

/// Hands out CIDR identities (node-local scope in Cilium). The compiler asks
/// for every prefix a policy names, including `except` prefixes, and emits
/// policy entries for the returned numbers; the caller programs its LPM
/// ipcache with the same prefix → identity pairs (see
/// [`crate::compile::Compiled::cidrs`]). Must be stable: the same prefix must
/// give the same identity while it is in use. The one in use is
/// [`crate::local_identities::LocalIdentities`].
pub trait CidrIdentities {
    /// The identity of `cidr`; `None` when no identity is free (the prefix
    /// then gets no identity and no entries: its addresses stay with the
    /// enclosing prefix or the world).
    fn identity_for(&mut self, cidr: IpNetwork) -> Option<NumericIdentity>;
}

#[cfg(test)]
mod tests;
