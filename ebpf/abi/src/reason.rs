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
    /// A packet on the tunnel device without tunnel metadata (Cilium's
    /// "Error retrieving tunnel key").
    DropNoTunnelKey = 147,
    /// A conntrack entry could not be created.
    DropCtCreateFailed = 155,
    /// An IPv6 extension header is truncated or the chain is too long.
    DropInvalidExthdr = 156,
    /// The destination is a service frontend with no backend to send a new
    /// connection to (Cilium's "Service backend not found").
    DropNoService = 158,
    /// A packet routed into the tunnel for an address that is in no other
    /// node's pod CIDR, or whose sender's identity cannot be put in a VNI
    /// (Cilium's "No tunnel/encapsulation endpoint").
    DropNoTunnelEndpoint = 160,
    /// A packet from the network whose IPv4 source is a pod address it
    /// cannot carry there: one of this node's own pods (they never reach
    /// the node from outside), or a pod of another node that did not come
    /// from that node (Cilium's "Unknown sender"; issue 16 item 2).
    DropUnknownSender = 172,
    /// A later IPv4 fragment (no L4 header) of a datagram whose first
    /// fragment this program has not seen, to or from an endpoint that
    /// enforces policy in that direction: its ports, and so its
    /// connection, are unknown (Cilium's "First logical datagram fragment
    /// not found"; issue 16 item 3).
    DropFragNotFound = 175,
    /// An ICMPv6 Router Advertisement or Redirect from a pod: only routers
    /// send them, and a pod that could would become its node's IPv6
    /// router (issue 16 item 1).
    DropForbiddenIcmp6 = 176,
    /// A deny rule matches the connection.
    DropPolicyDeny = 181,
    /// The sending endpoint has used up its budget of new conntrack and
    /// service NAT entries (`weir_ct_budget`; issue 16 item 6): one pod
    /// cannot fill the shared maps and evict other pods' entries (Cilium's
    /// "Rate limited").
    DropRateLimited = 198,
    /// The packet is to or from a pod interface whose endpoint is not
    /// regenerated yet, or not known at all (Cilium's "Endpoint policy
    /// program not available"): nothing passes before policy.
    DropEpNotReady = 203,
}

impl Reason {
    /// Every reason, in numeric order.
    pub const ALL: [Reason; 16] = [
        Reason::Forwarded,
        Reason::DropInvalidSourceIp,
        Reason::DropPolicyDenied,
        Reason::DropInvalid,
        Reason::DropCtInvalidHdr,
        Reason::DropNoTunnelKey,
        Reason::DropCtCreateFailed,
        Reason::DropInvalidExthdr,
        Reason::DropNoService,
        Reason::DropNoTunnelEndpoint,
        Reason::DropUnknownSender,
        Reason::DropFragNotFound,
        Reason::DropForbiddenIcmp6,
        Reason::DropPolicyDeny,
        Reason::DropRateLimited,
        Reason::DropEpNotReady,
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
            147 => Some(Reason::DropNoTunnelKey),
            158 => Some(Reason::DropNoService),
            160 => Some(Reason::DropNoTunnelEndpoint),
            172 => Some(Reason::DropUnknownSender),
            175 => Some(Reason::DropFragNotFound),
            176 => Some(Reason::DropForbiddenIcmp6),
            181 => Some(Reason::DropPolicyDeny),
            198 => Some(Reason::DropRateLimited),
            203 => Some(Reason::DropEpNotReady),
            _ => None,
        }
    }

    /// True for every reason that means the packet was dropped.
    pub const fn is_drop(self) -> bool {
        !matches!(self, Reason::Forwarded)
    }

    /// Human-readable text, matching Cilium's monitor wording (the drop
    /// reasons from [`DROP_TEXTS`]).
    pub const fn description(self) -> &'static str {
        match self {
            Reason::Forwarded => "Forwarded",
            drop => drop_reason_text(drop as u8),
        }
    }
}

/// Every drop reason code Cilium defines with the text `cilium monitor`
/// prints for it (`pkg/monitor/api/drop.go`), in numeric order: the datapath
/// emits the few in [`Reason`], and the observer and the monitor name any
/// code a flow carries from this one table. Hubble's names for the same
/// codes are its `flow.DropReason` enum, which the observer generates from
/// the vendored `flow.proto`.
pub const DROP_TEXTS: &[(u8, &str)] = &[
    (130, "Invalid source mac"),
    (131, "Invalid destination mac"),
    (132, "Invalid source ip"),
    (133, "Policy denied"),
    (134, "Invalid packet"),
    (135, "CT: Truncated or invalid header"),
    (136, "Fragmentation needed"),
    (137, "CT: Unknown L4 protocol"),
    (138, "CT: Can't create entry from packet"),
    (139, "Unsupported L3 protocol"),
    (140, "Missed tail call"),
    (141, "Error writing to packet"),
    (142, "Unknown L4 protocol"),
    (143, "Unknown ICMPv4 code"),
    (144, "Unknown ICMPv4 type"),
    (145, "Unknown ICMPv6 code"),
    (146, "Unknown ICMPv6 type"),
    (147, "Error retrieving tunnel key"),
    (148, "Error retrieving tunnel options"),
    (149, "Invalid Geneve option"),
    (150, "Unknown L3 target address"),
    (151, "Stale or unroutable IP"),
    (152, "No matching local container found"),
    (153, "Error while correcting L3 checksum"),
    (154, "Error while correcting L4 checksum"),
    (155, "CT: Map insertion failed"),
    (156, "Invalid IPv6 extension header"),
    (157, "IP fragmentation not supported"),
    (158, "Service backend not found"),
    (160, "No tunnel/encapsulation endpoint (datapath BUG!)"),
    (161, "NAT 46/64 not enabled"),
    (162, "Reached EDT rate-limiting drop horizon"),
    (163, "Unknown connection tracking state"),
    (164, "Local host is unreachable"),
    (165, "No configuration available to perform policy decision"),
    (166, "Unsupported L2 protocol"),
    (167, "No mapping for NAT masquerade"),
    (168, "Unsupported protocol for NAT masquerade"),
    (169, "FIB lookup failed"),
    (170, "Encapsulation traffic is prohibited"),
    (171, "Invalid identity"),
    (172, "Unknown sender"),
    (173, "NAT not needed"),
    (174, "Is a ClusterIP"),
    (175, "First logical datagram fragment not found"),
    (176, "Forbidden ICMPv6 message"),
    (177, "Denied by LB src range check"),
    (178, "Socket lookup failed"),
    (179, "Socket assign failed"),
    (180, "Proxy redirection not supported for protocol"),
    (181, "Policy denied by denylist"),
    (182, "VLAN traffic disallowed by VLAN filter"),
    (183, "Incorrect VNI from VTEP"),
    (184, "Failed to update or lookup TC buffer"),
    (185, "No SID was found for the IP address"),
    (186, "SRv6 state was removed during tail call"),
    (187, "L3 translation from IPv4 to IPv6 failed (NAT46)"),
    (188, "L3 translation from IPv6 to IPv4 failed (NAT64)"),
    (189, "Authentication required"),
    (190, "No conntrack map found"),
    (191, "No nat map found"),
    (192, "Invalid ClusterID"),
    (193, "Unsupported packet protocol for DSR encapsulation"),
    (194, "No egress gateway found"),
    (195, "Traffic is unencrypted"),
    (196, "TTL exceeded"),
    (197, "No node ID found"),
    (198, "Rate limited"),
    (199, "IGMP handled"),
    (200, "IGMP subscribed"),
    (201, "Multicast handled"),
    (202, "Host datapath not ready"),
    (203, "Endpoint policy program not available"),
    (204, "No Egress IP configured"),
];

/// The text of a drop reason code; `None` for codes Cilium does not define
/// (and for 0, which is not a drop).
pub const fn drop_text(code: u8) -> Option<&'static str> {
    let mut i = 0;
    while i < DROP_TEXTS.len() {
        if DROP_TEXTS[i].0 == code {
            return Some(DROP_TEXTS[i].1);
        }
        i += 1;
    }
    None
}

/// The text of a drop reason code as `cilium monitor` prints it, with its
/// wording for codes it does not know.
pub const fn drop_reason_text(code: u8) -> &'static str {
    match drop_text(code) {
        Some(text) => text,
        None => "Unknown drop reason",
    }
}
