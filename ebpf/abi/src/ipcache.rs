//! The ipcache (`weir_ipcache`): every address or prefix the node knows,
//! mapped to a security identity. An LPM trie, so a pod's /32 wins over the
//! CIDR a policy names, and an `except` prefix over its enclosing block;
//! addresses with no entry are `world`.
//!
//! A cluster address (a pod's or a node's) also carries its *address
//! identity* ([`IpcacheValue::address_identity`]): the identity of the most
//! specific NetworkPolicy `ipBlock` prefix that contains it
//! (`crate::identity::address_identity`), or 0. The datapath falls back to
//! it only when the peer's own identity decides nothing, so a NetworkPolicy
//! `ipBlock` matches pods and nodes by their address as the Kubernetes API
//! defines it, and identity-based verdicts cost what they did.

/// Address family codes of [`IpcacheKey::family`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// Bits of [`IpcacheKey`] before the address: family and padding are
/// always matched in full.
pub const IPCACHE_PREFIX_BITS_BEFORE_ADDR: u32 = 32;

/// Data of the LPM key (aya's `Key` adds the prefix length in front). The
/// prefix length counts family and padding (32 bits) plus the address
/// prefix: an IPv4 /24 is 56.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    pub family: u8,
    pub pad: [u8; 3],
    /// IPv4 in the first 4 bytes, rest zero; or IPv6.
    pub addr: [u8; 16],
}

impl IpcacheKey {
    pub const fn ipv4(addr: [u8; 4]) -> IpcacheKey {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        IpcacheKey {
            family: FAMILY_IPV4,
            pad: [0; 3],
            addr: a,
        }
    }

    pub const fn ipv6(addr: [u8; 16]) -> IpcacheKey {
        IpcacheKey {
            family: FAMILY_IPV6,
            pad: [0; 3],
            addr,
        }
    }

    /// The LPM prefix length for an address prefix of `bits`.
    pub const fn prefix_len(bits: u8) -> u32 {
        IPCACHE_PREFIX_BITS_BEFORE_ADDR + bits as u32
    }
}

/// Value of `weir_ipcache`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    pub identity: u32,
    /// Underlay address of the node hosting it (IPv4, network order), 0 if
    /// local or not a pod; for tunnelling later.
    pub node_ipv4: [u8; 4],
    /// For a pod or node address: the address identity of the most
    /// specific NetworkPolicy `ipBlock` prefix containing it, looked up in
    /// the policy map when the peer's identity has no verdict; 0 when no
    /// such prefix contains it, and on CIDR entries (outside addresses are
    /// matched by their CIDR identity in `identity`).
    pub address_identity: u32,
}

const _: () = assert!(size_of::<IpcacheKey>() == 20);
const _: () = assert!(size_of::<IpcacheValue>() == 12);

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for IpcacheKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for IpcacheValue {}
