//! Why the datapath did what it did with a packet.
//!
//! Numbers follow Cilium's (`0` forwarded, drops from 130 up) so that
//! dashboards and Hubble clients that know those codes read Weir's the same
//! way. Only codes the datapath actually emits are listed.

/// A forward or drop reason, as stored in [`crate::MetricsKey::reason`].
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The packet was passed on.
    Forwarded = 0,
    /// A from-pod IPv4 packet whose source is not the pod's address.
    DropInvalidSourceIp = 132,
    /// No policy rule allows the connection (default deny).
    DropPolicyDenied = 133,
    /// The L3 header is truncated or inconsistent (bad version, IHL, length).
    DropInvalid = 134,
    /// The L4 header (TCP, UDP, ICMP, SCTP) is truncated or invalid.
    DropCtInvalidHdr = 135,
    /// A conntrack entry could not be created.
    DropCtCreateFailed = 155,
    /// An IPv6 extension header is truncated or the chain is too long.
    DropInvalidExthdr = 156,
    /// The destination is a service frontend with no backend to send a new
    /// connection to (Cilium's "Service backend not found").
    DropNoService = 158,
    /// A deny rule matches the connection.
    DropPolicyDeny = 181,
}

impl Reason {
    /// Every reason, in numeric order.
    pub const ALL: [Reason; 9] = [
        Reason::Forwarded,
        Reason::DropInvalidSourceIp,
        Reason::DropPolicyDenied,
        Reason::DropInvalid,
        Reason::DropCtInvalidHdr,
        Reason::DropCtCreateFailed,
        Reason::DropInvalidExthdr,
        Reason::DropNoService,
        Reason::DropPolicyDeny,
    ];

    /// Decodes a reason read from a map; `None` for codes this build does not know.
    pub const fn from_u8(code: u8) -> Option<Reason> {
        match code {
            0 => Some(Reason::Forwarded),
            132 => Some(Reason::DropInvalidSourceIp),
            133 => Some(Reason::DropPolicyDenied),
            134 => Some(Reason::DropInvalid),
            135 => Some(Reason::DropCtInvalidHdr),
            155 => Some(Reason::DropCtCreateFailed),
            156 => Some(Reason::DropInvalidExthdr),
            158 => Some(Reason::DropNoService),
            181 => Some(Reason::DropPolicyDeny),
            _ => None,
        }
    }

    /// True for every reason that means the packet was dropped.
    pub const fn is_drop(self) -> bool {
        !matches!(self, Reason::Forwarded)
    }

    /// Human-readable text, matching Cilium's monitor wording.
    pub const fn description(self) -> &'static str {
        match self {
            Reason::Forwarded => "Forwarded",
            Reason::DropInvalidSourceIp => "Invalid source ip",
            Reason::DropPolicyDenied => "Policy denied",
            Reason::DropInvalid => "Invalid packet",
            Reason::DropCtInvalidHdr => "CT: Truncated or invalid header",
            Reason::DropCtCreateFailed => "CT: Map insertion failed",
            Reason::DropInvalidExthdr => "Invalid IPv6 extension header",
            Reason::DropNoService => "Service backend not found",
            Reason::DropPolicyDeny => "Policy denied by denylist",
        }
    }
}
