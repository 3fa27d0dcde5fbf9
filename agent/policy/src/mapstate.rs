//! Compiled per-endpoint policy state: for each direction whether it is
//! enforced and the entries keyed by peer identity, protocol and ports,
//! each remembering which policy rule produced it.
//!
//! Invariant: an entry with protocol `Any` has ports `Any` (the datapath can
//! only wildcard the port when the protocol is wildcarded too; the compiler
//! expands `ANY` + port into TCP, UDP and SCTP entries).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::identity::NumericIdentity;
use crate::rule::{protocol_text, Direction, PolicyId, Protocol, Verdict};
use crate::trace::{Decision, Reason};

/// The remote side of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// Identity 0 in the datapath: any peer.
    Any,
    Identity(NumericIdentity),
}

impl PeerKey {
    /// The identity number the datapath keys this entry with.
    pub fn identity(self) -> NumericIdentity {
        match self {
            PeerKey::Any => 0,
            PeerKey::Identity(id) => id,
        }
    }

    pub fn covers(self, id: NumericIdentity) -> bool {
        match self {
            PeerKey::Any => true,
            PeerKey::Identity(own) => own == id,
        }
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKey::Any => f.write_str("any"),
            PeerKey::Identity(id) => write!(f, "{id}"),
        }
    }
}

/// Destination ports of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    Any,
    /// `lo..=hi`
    Range(u16, u16),
}

impl Ports {
    pub fn covers(self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Any => f.write_str("any"),
            Ports::Range(lo, hi) if lo == hi => write!(f, "{lo}"),
            Ports::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

/// Which policy and which rule in it produced an entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Provenance {
    pub policy: PolicyId,
    /// Path of the rule in the policy, e.g. `spec.ingress[0]`.
    pub rule: String,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.policy, self.rule)
    }
}

/// The key part of an entry (what the datapath looks up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub peer: PeerKey,
    /// `None`: any protocol.
    pub protocol: Option<Protocol>,
    pub ports: Ports,
}

impl EntryKey {
    pub fn matches(&self, peer: NumericIdentity, protocol: Protocol, port: u16) -> bool {
        self.peer.covers(peer)
            && self.protocol.is_none_or(|p| p == protocol)
            && self.ports.covers(port)
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer={} proto={} ports={}",
            self.peer,
            protocol_text(self.protocol),
            self.ports
        )
    }
}

/// One policy entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub key: EntryKey,
    pub verdict: Verdict,
    pub provenance: Provenance,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} from {}", self.verdict, self.key, self.provenance)
    }
}

/// Policy of one endpoint in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionPolicy {
    /// Whether some policy selects the endpoint for this direction. When
    /// false everything is allowed and `entries` is empty.
    pub enforced: bool,
    pub entries: BTreeSet<Entry>,
}

impl DirectionPolicy {
    /// The verdict for traffic with `peer`, `protocol`, `port`:
    /// not enforced ⇒ allow; any matching deny ⇒ deny; any matching allow ⇒
    /// allow; otherwise default deny. `matched` names every matching rule of
    /// the deciding verdict.
    pub fn verdict(&self, peer: NumericIdentity, protocol: Protocol, port: u16) -> Decision {
        if !self.enforced {
            return Decision {
                verdict: Verdict::Allow,
                reason: Reason::NotEnforced,
                matched: vec![],
            };
        }
        let matching = |v: Verdict| -> Vec<Provenance> {
            let set: BTreeSet<&Provenance> = self
                .entries
                .iter()
                .filter(|e| e.verdict == v && e.key.matches(peer, protocol, port))
                .map(|e| &e.provenance)
                .collect();
            set.into_iter().cloned().collect()
        };
        let denies = matching(Verdict::Deny);
        if !denies.is_empty() {
            return Decision {
                verdict: Verdict::Deny,
                reason: Reason::Denied,
                matched: denies,
            };
        }
        let allows = matching(Verdict::Allow);
        if !allows.is_empty() {
            return Decision {
                verdict: Verdict::Allow,
                reason: Reason::Allowed,
                matched: allows,
            };
        }
        Decision {
            verdict: Verdict::Deny,
            reason: Reason::DefaultDeny,
            matched: vec![],
        }
    }

    /// The verdict as the datapath decides it for a cluster peer with an
    /// address identity (`address`, see `weir_abi::identity::address_identity`):
    /// the peer's own verdict, unless that is the default deny; then the
    /// address identity's, if it matches a rule.
    pub fn verdict_at(
        &self,
        peer: NumericIdentity,
        address: Option<NumericIdentity>,
        protocol: Protocol,
        port: u16,
    ) -> Decision {
        let by_identity = self.verdict(peer, protocol, port);
        match address {
            Some(address) if by_identity.reason == Reason::DefaultDeny => {
                let by_address = self.verdict(address, protocol, port);
                if by_address.reason == Reason::DefaultDeny {
                    by_identity
                } else {
                    by_address
                }
            }
            _ => by_identity,
        }
    }

    /// Entries without provenance: each key once, deny if any rule denies it.
    pub fn effective(&self) -> BTreeMap<EntryKey, Verdict> {
        let mut out: BTreeMap<EntryKey, Verdict> = BTreeMap::new();
        for e in &self.entries {
            let v = out.entry(e.key).or_insert(e.verdict);
            if e.verdict == Verdict::Deny {
                *v = Verdict::Deny;
            }
        }
        out
    }
}

/// The compiled policy of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// The endpoint's own identity.
    pub identity: NumericIdentity,
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn direction_mut(&mut self, direction: Direction) -> &mut DirectionPolicy {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }

    /// See [`DirectionPolicy::verdict`]. For ingress `peer` is the source
    /// identity, for egress the destination identity; `port` is the
    /// destination port.
    pub fn verdict(
        &self,
        direction: Direction,
        peer: NumericIdentity,
        protocol: Protocol,
        port: u16,
    ) -> Decision {
        self.direction(direction).verdict(peer, protocol, port)
    }
}

#[cfg(test)]
mod tests;
