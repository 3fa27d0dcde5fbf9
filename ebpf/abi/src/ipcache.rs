//! The ipcache (`weir_ipcache`): every address or prefix the node knows,
//! mapped to a security identity. An LPM trie, so a pod's /32 wins over the
//! CIDR a policy names, and an `except` prefix over its enclosing block;
//! addresses with no entry are `world`.

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
}

const _: () = assert!(size_of::<IpcacheKey>() == 20);
const _: () = assert!(size_of::<IpcacheValue>() == 8);

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for IpcacheKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for IpcacheValue {}
