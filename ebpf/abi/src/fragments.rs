//! IPv4 fragment tracking (`weir_fragments`): only the first fragment of a
//! datagram carries its L4 header, so the programs remember that header's
//! ports under the datagram's identity (source, destination, IP id,
//! protocol; RFC 791 makes the id unique per such triple while fragments
//! are in flight) and give them to the later fragments. Policy, conntrack
//! and service NAT then see every fragment as the connection it belongs to
//! (Cilium's `cilium_ipv4_frag_datagrams`).
//!
//! Filled by every program on each first fragment (offset 0, more
//! fragments set) it parses, read on each later fragment; an LRU, so
//! datagrams whose last fragment never came are evicted.

/// Key of `weir_fragments`: one fragmented IPv4 datagram.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Frag4Key {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// The IP header's identification field, network byte order.
    pub id: [u8; 2],
    pub protocol: u8,
    pub pad: u8,
}

/// Value of `weir_fragments`: the first fragment's ports, network byte
/// order, as the parser reads them (ICMP echo: the identifier in `sport`
/// for requests, in `dport` for replies).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Frag4Ports {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

/// Default capacity: datagrams in flight at once on a node (Cilium's
/// default for its fragments map).
pub const FRAGMENTS_MAX_ENTRIES: u32 = 8192;

const _: () = assert!(size_of::<Frag4Key>() == 12);
const _: () = assert!(size_of::<Frag4Ports>() == 4);

// SAFETY: repr(C), integers only, explicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for Frag4Key {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Frag4Ports {}
