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
        }
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

const _: () = assert!(size_of::<EndpointKey>() == 4);
const _: () = assert!(size_of::<EndpointInfo>() == 12);

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointInfo {}
