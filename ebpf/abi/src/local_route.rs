//! This node's pods by IPv4 address (`weir_local_routes`), for eBPF host
//! routing: a packet to a local pod is handed to the pod's host-side veth
//! with the Ethernet header this map gives, without a FIB lookup (Cilium's
//! `cilium_lxc` plays the same part). Written by the agent from its
//! endpoint registry; an address without an entry takes the FIB path.

/// Key: the pod's IPv4 address (network order).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalRouteKey {
    pub addr: [u8; 4],
}

/// Where a packet to the pod goes and how its Ethernet header reads.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalRoute {
    /// The pod's host-side veth: the packet goes to its egress, where
    /// `weir_to_pod` runs.
    pub ifindex: u32,
    /// Destination MAC: the pod's own interface.
    pub pod_mac: [u8; 6],
    /// Source MAC: the host-side veth (the pod's gateway).
    pub host_mac: [u8; 6],
}

const _: () = assert!(size_of::<LocalRouteKey>() == 4);
const _: () = assert!(size_of::<LocalRoute>() == 16);

// SAFETY: repr(C), byte arrays only, no padding (size pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for LocalRouteKey {}
// SAFETY: repr(C), a u32 then 12 bytes, no padding (size pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for LocalRoute {}
