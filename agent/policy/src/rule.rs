//! The normalized rule form that both Kubernetes NetworkPolicy and the Weir
//! CRDs validate into. Namespace scoping is already applied: selectors here
//! are complete and match identity labels directly.

use std::fmt;

use ipnetwork::IpNetwork;

use crate::selector::Selector;

/// Which resource a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// networking.k8s.io/v1 NetworkPolicy
    NetworkPolicy,
    /// weir.io/v1 WeirNetworkPolicy (namespaced)
    WeirNetworkPolicy,
    /// weir.io/v1 WeirClusterwideNetworkPolicy
    WeirClusterwideNetworkPolicy,
    /// Entries the compiler adds itself (e.g. allow-localhost).
    Implicit,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::WeirNetworkPolicy => "WeirNetworkPolicy",
            PolicyKind::WeirClusterwideNetworkPolicy => "WeirClusterwideNetworkPolicy",
            PolicyKind::Implicit => "Implicit",
        })
    }
}

/// Which policy: kind, namespace (none for cluster-wide) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyId {
    /// `NetworkPolicy x/allow-web`, `WeirClusterwideNetworkPolicy deny-dns`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Traffic direction, seen from the endpoint the policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Allow or deny. Deny beats allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// The Kubernetes protocol of a port. A rule's port and a policy entry hold
/// an `Option<Protocol>`: `None` is any protocol (and then any port too).
pub use weir_types::Protocol;

/// `ANY` or the protocol's Kubernetes spelling.
pub fn protocol_text(protocol: Option<Protocol>) -> &'static str {
    protocol.map_or("ANY", Protocol::name)
}

/// A port in a rule, before named ports are resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    /// All ports of the protocol.
    Any,
    /// `lo..=hi` (a single port is `Range(p, p)`).
    Range(u16, u16),
    /// A named container port, resolved per destination.
    Named(String),
}

/// One `ports` entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    /// `None`: any protocol.
    pub protocol: Option<Protocol>,
    pub port: PortRef,
}

/// Weir/Cilium entities (`fromEntities`/`toEntities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    All,
    World,
    WorldIpv4,
    WorldIpv6,
    Cluster,
    Host,
    RemoteNode,
    KubeApiserver,
    Ingress,
    Init,
    Health,
    Unmanaged,
    None,
}

impl Entity {
    pub const ALL: [(&'static str, Entity); 13] = [
        ("all", Entity::All),
        ("world", Entity::World),
        ("world-ipv4", Entity::WorldIpv4),
        ("world-ipv6", Entity::WorldIpv6),
        ("cluster", Entity::Cluster),
        ("host", Entity::Host),
        ("remote-node", Entity::RemoteNode),
        ("kube-apiserver", Entity::KubeApiserver),
        ("ingress", Entity::Ingress),
        ("init", Entity::Init),
        ("health", Entity::Health),
        ("unmanaged", Entity::Unmanaged),
        ("none", Entity::None),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, e)| *e)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Which addresses a CIDR peer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CidrScope {
    /// Every address in it, a pod's, a node's or one outside the cluster:
    /// NetworkPolicy `ipBlock`, as the Kubernetes API defines it. Pods and
    /// nodes are matched through their address identity
    /// (`weir_abi::identity::address_identity`).
    Addresses,
    /// Only addresses outside the cluster: WeirNetworkPolicy
    /// `toCIDR`/`fromCIDR`/`toCIDRSet`/`fromCIDRSet`, as in Cilium.
    OutsideCluster,
}

/// A peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Every identity, including world and CIDR identities.
    Any,
    /// Identities whose labels the selector matches.
    Endpoints(Selector),
    /// Addresses in `cidr` but not in any `except` prefix, of `scope`.
    Cidr {
        cidr: IpNetwork,
        except: Vec<IpNetwork>,
        scope: CidrScope,
    },
    Entity(Entity),
}

/// One rule: traffic with any of `peers` AND any of `ports` gets `verdict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Where the rule is in its policy, e.g. `spec.ingress[0]`.
    pub path: String,
    pub direction: Direction,
    pub verdict: Verdict,
    /// ORed; an empty list matches no peer.
    pub peers: Vec<Peer>,
    /// ORed; an empty list means all ports and protocols.
    pub ports: Vec<PortMatch>,
}

/// Rules sharing one subject selector (a NetworkPolicy, or one entry of a
/// Weir policy's `spec`/`specs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Selects the endpoints the rules apply to (namespace already added).
    pub subject: Selector,
    /// Whether a selected endpoint becomes default-deny on ingress.
    pub enforces_ingress: bool,
    /// Whether a selected endpoint becomes default-deny on egress.
    pub enforces_egress: bool,
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn enforces(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.enforces_ingress,
            Direction::Egress => self.enforces_egress,
        }
    }
}

/// A validated policy, ready to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyId,
    pub rule_sets: Vec<RuleSet>,
}
