//! The pod CIDRs of the cluster's nodes (`weir_pod_cidrs`), for the
//! anti-spoofing check on node devices: a packet from the network whose
//! IPv4 source lies in this node's own pod CIDR is dropped (this node's
//! pods never reach it from outside), and one whose source lies in another
//! node's pod CIDR passes only if it came from that node (see the
//! datapath's `antispoof` module for how "came from" is decided).
//!
//! An LPM trie keyed by IPv4 prefix, so that one lookup of the source
//! answers both questions; an address in no node's pod CIDR is not
//! checked. Written by the agent from the node records (its own pod CIDR
//! first, before the programs are attached).

/// Data of the LPM key (aya's `Key` adds the prefix length in front: the
/// address prefix in bits, 24 for a /24).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodCidrKey {
    /// The prefix's network address (network order).
    pub addr: [u8; 4],
}

/// Key data of `weir_pod_cidrs6`: a dual-stack node's IPv6 pod CIDR (the
/// tunnel's map for IPv6 pods: the value, [`PodCidrInfo`], is the same,
/// the outer tunnel is IPv4).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodCidr6Key {
    /// The prefix's network address (network order).
    pub addr: [u8; 16],
}

/// Value of `weir_pod_cidrs` and `weir_pod_cidrs6`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PodCidrInfo {
    /// Underlay address of the node owning the prefix (network order): the
    /// outer source its pods' packets would carry in a tunnel, and what
    /// `weir` shows.
    pub node_ipv4: [u8; 4],
    /// [`PodCidrInfo::LOCAL`] for this node's own pod CIDR.
    pub flags: u8,
    pub pad: [u8; 3],
}

impl PodCidrInfo {
    /// The prefix is this node's pod CIDR.
    pub const LOCAL: u8 = 1;

    pub const fn is_local(&self) -> bool {
        self.flags & Self::LOCAL != 0
    }
}

const _: () = assert!(size_of::<PodCidrKey>() == 4);
const _: () = assert!(size_of::<PodCidr6Key>() == 16);
const _: () = assert!(size_of::<PodCidrInfo>() == 8);

// SAFETY: repr(C), byte arrays only, no padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for PodCidrKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PodCidr6Key {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PodCidrInfo {}
