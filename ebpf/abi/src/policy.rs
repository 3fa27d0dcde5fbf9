//! The policy map (`weir_policy`): one LPM trie for every endpoint, keyed by
//! (endpoint, direction, peer identity, protocol, port prefix).
//!
//! The datapath looks up a new connection's key twice, once with the peer's
//! identity and once with [`IDENTITY_ANY`]; each lookup returns the most
//! specific entry of its identity. A deny from either wins; otherwise an
//! allow from either allows; otherwise the packet is dropped (the endpoint
//! is enforced in that direction, see `EndpointInfo`). The agent stores in
//! each entry the verdict after deny precedence within that identity, so the
//! most specific match is always right.
//!
//! Field order is what makes wildcards work in an LPM trie: endpoint,
//! direction and identity are always matched in full (64 bits), then the
//! protocol (a prefix of 64 matches any protocol), then the port in network
//! order (a prefix of 80 + k matches a port range aligned to 2^(16-k)).

/// Identity 0 in a policy key: any peer.
pub const IDENTITY_ANY: u32 = crate::identity::ANY;
/// Protocol 0 in a policy key (with prefix [`POLICY_PREFIX_ANY_PROTOCOL`]): any protocol.
pub const PROTOCOL_ANY: u8 = 0;

/// Prefix length that matches every protocol and port.
pub const POLICY_PREFIX_ANY_PROTOCOL: u32 = 64;
/// Prefix length that matches one protocol and every port.
pub const POLICY_PREFIX_ANY_PORT: u32 = 80;
/// Prefix length of an exact key.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Data of the LPM key (aya's `Key` adds the prefix length in front).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub endpoint_id: u16,
    /// A `TrafficDirection` code, as seen by the endpoint.
    pub direction: u8,
    pub pad0: u8,
    /// The peer's identity, or [`IDENTITY_ANY`].
    pub identity: u32,
    /// IP protocol number, or [`PROTOCOL_ANY`].
    pub protocol: u8,
    pub pad1: u8,
    /// Destination port, network byte order (ICMP: 0).
    pub port: [u8; 2],
}

/// Verdict stored in a policy entry.
pub const POLICY_ALLOW: u8 = 1;
pub const POLICY_DENY: u8 = 2;

/// Value of `weir_policy`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    /// [`POLICY_ALLOW`] or [`POLICY_DENY`].
    pub verdict: u8,
    /// What the entry matches on (`crate::events::MATCH_*`), reported in
    /// policy verdict events.
    pub match_type: u8,
    pub pad: [u8; 2],
    /// Agent-side reference to the rule that produced the entry (for
    /// tracing and flow logs); opaque to the datapath.
    pub rule: u32,
}

const _: () = assert!(size_of::<PolicyKey>() == 12);
const _: () = assert!(size_of::<PolicyEntry>() == 8);

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyEntry {}
