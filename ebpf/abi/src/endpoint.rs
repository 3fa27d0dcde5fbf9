//! Local endpoints (`weir_endpoints`): what the pod programs know about the
//! pod behind the interface they run on.
//!
//! Keyed by the host-side interface index, not by address: a pod's identity
//! comes from the interface its packets arrive on, so a pod cannot claim
//! another pod's identity by forging a source address.

/// Key of `weir_endpoints`: the host-side veth's ifindex.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ifindex: u32,
}

/// Value of `weir_endpoints`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Endpoint id: the first field of every policy key of this endpoint.
    pub id: u16,
    /// [`EndpointInfo::INGRESS_ENFORCED`] | [`EndpointInfo::EGRESS_ENFORCED`]
    /// | [`EndpointInfo::NOT_READY`].
    pub flags: u8,
    pub pad: u8,
    /// The pod's security identity.
    pub identity: u32,
    /// The pod's IPv4 address (network order); from-pod packets with another
    /// IPv4 source are dropped.
    pub ipv4: [u8; 4],
    /// The pod's IPv6 address (dual stack), all zero when it has none.
    /// From-pod IPv6 packets must come from it, from the link-local
    /// address below, or (ICMPv6 only) from `::`.
    pub ipv6: [u8; 16],
    /// The interface identifier (low 64 bits) of the pod's link-local
    /// address `fe80::/64`: the modified EUI-64 of the MAC address the CNI
    /// plugin gave the pod's interface ([`eui64_interface_id`]), which the
    /// plugin also makes the kernel's way of deriving it
    /// (`addr_gen_mode=0`). All zero: no link-local source is accepted.
    pub ipv6_link_local: [u8; 8],
}

/// The modified EUI-64 interface identifier of a MAC address (RFC 4291
/// appendix A): the kernel's link-local address for the interface under
/// `addr_gen_mode=0` is `fe80::` followed by it.
pub const fn eui64_interface_id(mac: [u8; 6]) -> [u8; 8] {
    [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

impl EndpointInfo {
    /// Some policy selects this endpoint for ingress: default deny applies.
    pub const INGRESS_ENFORCED: u8 = 1;
    /// Some policy selects this endpoint for egress: default deny applies.
    pub const EGRESS_ENFORCED: u8 = 2;
    /// The endpoint's first regeneration (real identity, policy entries,
    /// enforcement flags) is not in the kernel yet: every IP packet to or
    /// from it is dropped. Written when its interface is attached, so a pod
    /// gets no traffic before its policy.
    pub const NOT_READY: u8 = 4;
    /// Policy audit mode: what policy would drop is reported (a policy
    /// verdict event with [`crate::FlowEvent::FLAG_AUDIT`]) and passes.
    /// Only policy's own verdicts: the source check, readiness and the
    /// rest still drop.
    pub const AUDIT: u8 = 8;

    /// The entry of an endpoint that is attached but not regenerated yet:
    /// its address (for the source check), the `reserved:init` identity,
    /// and both directions closed.
    pub const fn not_ready(id: u16, ipv4: [u8; 4]) -> EndpointInfo {
        EndpointInfo {
            id,
            flags: Self::NOT_READY | Self::INGRESS_ENFORCED | Self::EGRESS_ENFORCED,
            pad: 0,
            identity: crate::identity::INIT,
            ipv4,
            ipv6: [0; 16],
            ipv6_link_local: [0; 8],
        }
    }

    /// The same entry for a pod with IPv6 address `ipv6` (all zero: none).
    pub const fn with_ipv6(self, ipv6: [u8; 16]) -> EndpointInfo {
        EndpointInfo { ipv6, ..self }
    }

    /// The same entry accepting IPv6 link-local sources with interface
    /// identifier `interface_id`.
    pub const fn with_link_local(self, interface_id: [u8; 8]) -> EndpointInfo {
        EndpointInfo {
            ipv6_link_local: interface_id,
            ..self
        }
    }

    /// Whether a from-pod IPv6 packet may carry the source `saddr`: the
    /// pod's own IPv6 address, its link-local address, or the unspecified
    /// address when `icmpv6` (duplicate address detection and MLD before
    /// the pod has an address). The kernel programs and user space share
    /// this one definition.
    #[inline(always)]
    pub fn ipv6_source_allowed(&self, saddr: &[u8; 16], icmpv6: bool) -> bool {
        // Two 64-bit halves: the eBPF target has no 128-bit arithmetic.
        let (prefix, interface_id) = halves(saddr);
        if prefix == 0 && interface_id == 0 {
            return icmpv6;
        }
        let (own_prefix, own_id) = halves(&self.ipv6);
        if (own_prefix != 0 || own_id != 0) && prefix == own_prefix && interface_id == own_id {
            return true;
        }
        let expected = u64::from_ne_bytes(self.ipv6_link_local);
        prefix == u64::from_ne_bytes(LINK_LOCAL_PREFIX) && expected != 0 && interface_id == expected
    }

    pub const fn is_ready(&self) -> bool {
        self.flags & Self::NOT_READY == 0
    }

    pub const fn ingress_enforced(&self) -> bool {
        self.flags & Self::INGRESS_ENFORCED != 0
    }

    pub const fn egress_enforced(&self) -> bool {
        self.flags & Self::EGRESS_ENFORCED != 0
    }
}

/// Value of `weir_netns_owners` (keyed by the netns cookie, a `u64`): the
/// host-side ifindex of the pod whose namespace it is, whose
/// `weir_endpoints` entry has its id, identity and address; or, for the
/// node's own namespace, [`NetnsOwner::NODE`] and the node's address.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsOwner {
    pub ifindex: u32,
    /// The node's IPv4 address (network order) when `ifindex` is
    /// [`NetnsOwner::NODE`]; unused for a pod (its entry has it).
    pub ipv4: [u8; 4],
}

impl NetnsOwner {
    /// `ifindex` of the node's own namespace: its processes are `host`.
    pub const NODE: u32 = 0;

    pub const fn pod(ifindex: u32) -> NetnsOwner {
        NetnsOwner {
            ifindex,
            ipv4: [0; 4],
        }
    }

    pub const fn node(ipv4: [u8; 4]) -> NetnsOwner {
        NetnsOwner {
            ifindex: Self::NODE,
            ipv4,
        }
    }
}

const _: () = assert!(size_of::<NetnsOwner>() == 8);
const _: () = assert!(size_of::<EndpointKey>() == 4);
const _: () = assert!(size_of::<EndpointInfo>() == 36);

#[inline(always)]
fn halves(addr: &[u8; 16]) -> (u64, u64) {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = *addr;
    (
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

/// `fe80::/64`, the link-local prefix the kernel gives every interface.
pub const LINK_LOCAL_PREFIX: [u8; 8] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0];

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointInfo {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for NetnsOwner {}
