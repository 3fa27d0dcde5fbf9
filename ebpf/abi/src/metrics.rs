//! Key and value of the per-CPU metrics map (`weir_metrics`).

use crate::Reason;

/// Direction of traffic relative to the endpoint (pod) or node the program
/// guards. Values match Cilium's metrics `dir` field.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficDirection {
    /// Into the pod (to-pod) or into the node (from-netdev).
    Ingress = 1,
    /// Out of the pod (from-pod) or out of the node (to-netdev).
    Egress = 2,
}

impl TrafficDirection {
    /// Both directions, in numeric order.
    pub const ALL: [TrafficDirection; 2] = [TrafficDirection::Ingress, TrafficDirection::Egress];

    /// Decodes a direction read from a map.
    pub const fn from_u8(code: u8) -> Option<TrafficDirection> {
        match code {
            1 => Some(TrafficDirection::Ingress),
            2 => Some(TrafficDirection::Egress),
            _ => None,
        }
    }

    /// Lower-case name as used in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficDirection::Ingress => "ingress",
            TrafficDirection::Egress => "egress",
        }
    }
}

/// Key of `weir_metrics`: one counter pair per (reason, direction).
///
/// Fields are plain `u8` rather than the enums so that any byte pattern read
/// back from the kernel is a valid value; decode with [`MetricsKey::reason`]
/// and [`MetricsKey::direction`].
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricsKey {
    /// A [`Reason`] code.
    pub reason: u8,
    /// A [`TrafficDirection`] code.
    pub direction: u8,
    /// Explicit padding, always zero, so the 8-byte key hashes the same in the
    /// kernel and in user space.
    pub pad: [u8; 6],
}

impl MetricsKey {
    pub const fn new(reason: Reason, direction: TrafficDirection) -> MetricsKey {
        MetricsKey {
            reason: reason as u8,
            direction: direction as u8,
            pad: [0; 6],
        }
    }

    pub const fn reason(&self) -> Option<Reason> {
        Reason::from_u8(self.reason)
    }

    pub const fn direction(&self) -> Option<TrafficDirection> {
        TrafficDirection::from_u8(self.direction)
    }
}

/// Value of `weir_metrics` (one per CPU; user space sums them).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

impl MetricsValue {
    /// Component-wise sum, saturating (a counter never wraps back to small).
    pub const fn saturating_add(self, other: MetricsValue) -> MetricsValue {
        MetricsValue {
            packets: self.packets.saturating_add(other.packets),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

const _: () = assert!(size_of::<MetricsKey>() == 8);
const _: () = assert!(align_of::<MetricsKey>() == 1);
const _: () = assert!(size_of::<MetricsValue>() == 16);
const _: () = assert!(align_of::<MetricsValue>() == 8);

// SAFETY: both types are `#[repr(C)]`, contain only integers, and have no
// implicit padding (pinned by the assertions above), so every bit pattern is
// a valid value and no uninitialised bytes are copied.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MetricsKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MetricsValue {}
