//! Numeric identities, reserved identities and the cluster view the compiler
//! reads (identities with their labels and named ports, local endpoints).

use std::collections::{BTreeMap, BTreeSet};

use ipnetwork::IpNetwork;

use crate::labels::{LabelSet, SOURCE_RESERVED};
use crate::rule::Protocol;

/// A security identity number. `0` in policy state means "any identity".
pub type NumericIdentity = u32;

/// Reserved identities (REFERENCE §3.1, Cilium `pkg/identity/numericidentity.go`).
pub mod reserved {
    use super::NumericIdentity;
    /// Wildcard in policy state; "unknown" elsewhere.
    pub const ANY: NumericIdentity = 0;
    pub const HOST: NumericIdentity = 1;
    pub const WORLD: NumericIdentity = 2;
    pub const UNMANAGED: NumericIdentity = 3;
    pub const HEALTH: NumericIdentity = 4;
    pub const INIT: NumericIdentity = 5;
    pub const REMOTE_NODE: NumericIdentity = 6;
    pub const KUBE_APISERVER: NumericIdentity = 7;
    pub const INGRESS: NumericIdentity = 8;
    pub const WORLD_IPV4: NumericIdentity = 9;
    pub const WORLD_IPV6: NumericIdentity = 10;
    /// First user-reserved identity.
    pub const USER_RESERVED_MIN: NumericIdentity = 128;
    /// First identity allocated for pods.
    pub const CLUSTER_MIN: NumericIdentity = 256;
    /// Scope bit of node-local identities (CIDR identities): `1 << 24 | n`.
    pub const LOCAL_SCOPE: NumericIdentity = 1 << 24;
}

/// Reserved identity numbers with their `reserved:` label names. Identity 7
/// also carries `reserved:remote-node`, as in Cilium.
pub const RESERVED_IDENTITIES: &[(NumericIdentity, &[&str])] = &[
    (reserved::HOST, &["host"]),
    (reserved::WORLD, &["world"]),
    (reserved::UNMANAGED, &["unmanaged"]),
    (reserved::HEALTH, &["health"]),
    (reserved::INIT, &["init"]),
    (reserved::REMOTE_NODE, &["remote-node"]),
    (reserved::KUBE_APISERVER, &["kube-apiserver", "remote-node"]),
    (reserved::INGRESS, &["ingress"]),
    (reserved::WORLD_IPV4, &["world-ipv4"]),
    (reserved::WORLD_IPV6, &["world-ipv6"]),
];

/// The label set of a reserved identity (`reserved:host` etc., empty values).
pub fn reserved_labels(id: NumericIdentity) -> Option<LabelSet> {
    RESERVED_IDENTITIES
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, names)| {
            names
                .iter()
                .fold(LabelSet::new(), |s, n| s.with(SOURCE_RESERVED, n, ""))
        })
}

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
    /// A view holding the reserved identities and nothing else.
    pub fn new() -> Self {
        let identities = RESERVED_IDENTITIES
            .iter()
            .map(|(id, _)| {
                let labels = reserved_labels(*id).unwrap_or_default();
                (
                    *id,
                    Identity {
                        id: *id,
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
