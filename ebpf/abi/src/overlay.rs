//! Tunnel mode (`--routing-mode tunnel`, Cilium's default routing mode):
//! pod traffic between nodes is carried in VXLAN by one collect-metadata
//! device per node ([`DEVICE`]), and the VXLAN network identifier (VNI)
//! carries the sender's security identity, so the receiving node classifies
//! a packet by the identity in its header rather than by its source
//! address.
//!
//! The tunnel map is `weir_pod_cidrs` ([`crate::PodCidrInfo`]): every remote
//! node's pod CIDR with the node's underlay address, the outer destination
//! of what is sent to it and the only outer source accepted for its pods.
//!
//! On the receiving node the identity travels from `weir_from_overlay` to
//! the destination pod's `weir_to_pod` in the packet's mark
//! ([`MARK_MAGIC_IDENTITY`] in the top byte, the identity below): the mark
//! survives forwarding and `bpf_redirect` within the node's namespace, and
//! is cleared when the packet crosses into the pod's namespace, so a pod
//! cannot hand the node a mark of its own.

/// The node's tunnel device.
pub const DEVICE: &str = "weir_vxlan";

/// Cilium's VXLAN port (the IANA port, 4789, is often taken by other
/// overlays on the same hosts).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// Bytes VXLAN adds to a packet over IPv4: outer IPv4 (20), UDP (8), VXLAN
/// (8) and the inner Ethernet header (14). A pod's MTU is the underlay's
/// minus this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Identities a VNI can carry (24 bits). Cluster identities and the
/// reserved ones fit; node-local identities (CIDR) never name a sender.
pub const VNI_MAX: u32 = 0x00FF_FFFF;

/// Top byte of a mark that carries a sender's identity.
pub const MARK_MAGIC_IDENTITY: u32 = 0x0E00_0000;
/// The bits [`MARK_MAGIC_IDENTITY`] is compared under.
pub const MARK_MAGIC_MASK: u32 = 0xFF00_0000;

/// The mark carrying `identity` (at most [`VNI_MAX`]).
pub const fn identity_mark(identity: u32) -> u32 {
    MARK_MAGIC_IDENTITY | (identity & VNI_MAX)
}

/// The identity a mark carries, if it carries one.
pub const fn mark_identity(mark: u32) -> Option<u32> {
    if mark & MARK_MAGIC_MASK == MARK_MAGIC_IDENTITY {
        Some(mark & VNI_MAX)
    } else {
        None
    }
}
