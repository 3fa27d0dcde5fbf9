//! Lowering: a compiled state to what the policy map holds (Cilium's
//! mapstate), in plain types; the agent only encodes these into the
//! kernel's layout.
//!
//! The datapath finds, for a new connection, the most specific entry of the
//! peer's identity and the most specific entry of the any-peer, and lets a
//! deny from either win. Its keys are prefixes: the protocol is matched in
//! full or not at all, the destination port by a prefix of its bits. So:
//!
//! * protocol `Any` becomes [`L4Prefix::Any`]; a protocol with any port one
//!   [`L4Prefix::Protocol`] entry with [`PortPrefix::ANY`]; a port range the
//!   aligned power-of-two blocks that cover it exactly ([`port_blocks`]);
//! * within one (endpoint, direction, peer) an allow covered by a less
//!   specific deny is stored as deny, so the most specific entry of a peer is
//!   always the right verdict for it (two prefixes that match the same
//!   packet are nested, so the deny covers whatever allow is more specific).
//!   Across the peer's and the any-peer's entries the datapath lets deny win.
//!
//! Only enforced directions have entries. The property test in
//! `lower/tests.rs` checks the result against [`DirectionPolicy::verdict`]
//! for random policies and packets.

use std::collections::BTreeMap;
use std::fmt;

use crate::compile::Compiled;
use crate::identity::EndpointId;
use crate::mapstate::{DirectionPolicy, EndpointPolicy, EntryKey, PeerKey, Ports};
use crate::rule::{Direction, Verdict};

/// What the policy map holds for every local endpoint.
pub type MapState = BTreeMap<MapKey, MapEntry>;

/// An aligned block of `2^(16 - bits)` destination ports: the ports whose
/// first `bits` bits are those of `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortPrefix {
    port: u16,
    bits: u8,
}

impl PortPrefix {
    /// Every port.
    pub const ANY: PortPrefix = PortPrefix { port: 0, bits: 0 };

    /// The block of `bits` prefix bits starting at `port`; `None` unless
    /// `bits <= 16` and `port` is the block's first port.
    pub fn new(port: u16, bits: u8) -> Option<PortPrefix> {
        let prefix = PortPrefix { port, bits };
        (bits <= 16 && port & !prefix.mask() == 0).then_some(prefix)
    }

    /// One port.
    pub fn exact(port: u16) -> PortPrefix {
        PortPrefix { port, bits: 16 }
    }

    /// The first port of the block.
    pub fn port(self) -> u16 {
        self.port
    }

    /// Prefix bits of the port: 0 (any port) to 16 (one port).
    pub fn bits(self) -> u8 {
        self.bits
    }

    /// The last port of the block.
    pub fn last(self) -> u16 {
        self.port | !self.mask()
    }

    /// Whether every port of `other` is in this block.
    pub fn contains(self, other: PortPrefix) -> bool {
        self.bits <= other.bits && other.port & self.mask() == self.port
    }

    fn mask(self) -> u16 {
        u16::MAX.checked_shl(u32::from(16 - self.bits)).unwrap_or(0)
    }
}

impl fmt::Display for PortPrefix {
    /// `any`, `80` or `80-95`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bits {
            0 => f.write_str("any"),
            16 => write!(f, "{}", self.port),
            _ => write!(f, "{}-{}", self.port, self.last()),
        }
    }
}

/// The aligned power-of-two blocks that cover `lo..=hi` exactly, in order.
pub fn port_blocks(lo: u16, hi: u16) -> Vec<PortPrefix> {
    let mut blocks = Vec::new();
    let (mut start, end) = (u32::from(lo), u32::from(hi));
    while start <= end {
        let mut size = 1u32;
        while start % (size * 2) == 0 && start + size * 2 - 1 <= end && size < 65_536 {
            size *= 2;
        }
        // `size` divides 2^16, so `bits` is 0..=16; `start` is below 2^16.
        blocks.push(PortPrefix {
            port: start as u16,
            bits: 16 - size.trailing_zeros() as u8,
        });
        start += size;
    }
    blocks
}

/// What an entry matches past the peer: everything, or one protocol (an IP
/// protocol number) and a block of its destination ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Prefix {
    Any,
    Protocol { number: u8, ports: PortPrefix },
}

impl L4Prefix {
    /// Whether every packet `other` matches, this matches too.
    pub fn contains(self, other: L4Prefix) -> bool {
        match (self, other) {
            (L4Prefix::Any, _) => true,
            (L4Prefix::Protocol { .. }, L4Prefix::Any) => false,
            (
                L4Prefix::Protocol { number, ports },
                L4Prefix::Protocol {
                    number: other_number,
                    ports: other_ports,
                },
            ) => number == other_number && ports.contains(other_ports),
        }
    }

    /// The prefixes of one compiled entry's protocol and ports.
    fn of(key: &EntryKey) -> Vec<L4Prefix> {
        match (key.protocol, key.ports) {
            (None, _) => vec![L4Prefix::Any],
            (Some(protocol), Ports::Any) => vec![L4Prefix::Protocol {
                number: protocol.number(),
                ports: PortPrefix::ANY,
            }],
            (Some(protocol), Ports::Range(lo, hi)) => port_blocks(lo, hi)
                .into_iter()
                .map(|ports| L4Prefix::Protocol {
                    number: protocol.number(),
                    ports,
                })
                .collect(),
        }
    }
}

/// The key of one policy map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MapKey {
    pub endpoint: EndpointId,
    pub direction: Direction,
    pub peer: PeerKey,
    pub l4: L4Prefix,
}

impl MapKey {
    /// What the entry matches on, reported with policy verdicts (Hubble's
    /// `policy_match_type`).
    pub fn match_kind(&self) -> MatchKind {
        match (self.peer, self.l4) {
            (PeerKey::Identity(_), L4Prefix::Any) => MatchKind::L3Only,
            (PeerKey::Identity(_), L4Prefix::Protocol { .. }) => MatchKind::L3L4,
            (PeerKey::Any, L4Prefix::Protocol { .. }) => MatchKind::L4Only,
            (PeerKey::Any, L4Prefix::Any) => MatchKind::All,
        }
    }
}

/// Hubble's policy match types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchKind {
    /// A peer identity, any protocol and port.
    L3Only,
    /// A peer identity and a protocol (and ports).
    L3L4,
    /// Any peer, a protocol (and ports).
    L4Only,
    /// Any peer, protocol and port.
    All,
}

/// The value of one policy map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapEntry {
    /// After deny precedence within the entry's peer (see the module docs).
    pub verdict: Verdict,
    pub match_kind: MatchKind,
}

/// Lowers a compiled state to policy map entries.
pub fn lower(compiled: &Compiled) -> MapState {
    let mut out = MapState::new();
    for (endpoint, policy) in &compiled.endpoints {
        lower_endpoint(*endpoint, policy, &mut out);
    }
    out
}

/// Lowers one endpoint's policy into `out` (what an incremental update
/// rewrites for each endpoint that changed).
pub fn lower_endpoint(endpoint: EndpointId, policy: &EndpointPolicy, out: &mut MapState) {
    for direction in Direction::BOTH {
        lower_direction(endpoint, direction, policy.direction(direction), out);
    }
}

fn lower_direction(
    endpoint: EndpointId,
    direction: Direction,
    policy: &DirectionPolicy,
    out: &mut MapState,
) {
    if !policy.enforced {
        return;
    }
    // Verdicts per peer; a prefix that two entries share is deny if either is.
    let mut peers: BTreeMap<PeerKey, BTreeMap<L4Prefix, Verdict>> = BTreeMap::new();
    for (key, verdict) in policy.effective() {
        let prefixes = peers.entry(key.peer).or_default();
        for l4 in L4Prefix::of(&key) {
            let slot = prefixes.entry(l4).or_insert(verdict);
            if verdict == Verdict::Deny {
                *slot = Verdict::Deny;
            }
        }
    }
    for (peer, prefixes) in peers {
        let denies: Vec<L4Prefix> = prefixes
            .iter()
            .filter(|(_, verdict)| **verdict == Verdict::Deny)
            .map(|(l4, _)| *l4)
            .collect();
        for (l4, verdict) in prefixes {
            let verdict = if denies.iter().any(|deny| deny.contains(l4)) {
                Verdict::Deny
            } else {
                verdict
            };
            let key = MapKey {
                endpoint,
                direction,
                peer,
                l4,
            };
            let match_kind = key.match_kind();
            out.insert(
                key,
                MapEntry {
                    verdict,
                    match_kind,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
