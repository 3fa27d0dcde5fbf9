//! What the datapath reports, decoded into plain values.
//!
//! This is the input of the flow parser. It deliberately does not depend on
//! the kernel ABI crate: the ring-buffer reader converts its records into
//! these values, so the observer can be tested without a kernel.

use std::net::IpAddr;

/// Monitor message types (`bpf/lib/common.h`, `pkg/monitor/api/types.go`);
/// Hubble exposes them as `CiliumEventType.type`.
pub mod message_type {
    pub const DROP: i32 = 1;
    pub const DEBUG: i32 = 2;
    pub const CAPTURE: i32 = 3;
    pub const TRACE: i32 = 4;
    pub const POLICY_VERDICT: i32 = 5;
    pub const RECORDER: i32 = 6;
    pub const TRACE_SOCK: i32 = 7;
}

/// Datapath trace observation points (`bpf/lib/trace.h`), carried as the
/// trace event's subtype.
pub mod observation_point {
    pub const TO_LXC: u8 = 0;
    pub const TO_PROXY: u8 = 1;
    pub const TO_HOST: u8 = 2;
    pub const TO_STACK: u8 = 3;
    pub const TO_OVERLAY: u8 = 4;
    pub const FROM_LXC: u8 = 5;
    pub const FROM_PROXY: u8 = 6;
    pub const FROM_HOST: u8 = 7;
    pub const FROM_STACK: u8 = 8;
    pub const FROM_OVERLAY: u8 = 9;
    pub const FROM_NETWORK: u8 = 10;
    pub const TO_NETWORK: u8 = 11;
}

/// Datapath trace reasons (conntrack state of the traced packet).
pub mod trace_reason {
    pub const POLICY: u8 = 0;
    pub const CT_ESTABLISHED: u8 = 1;
    pub const CT_REPLY: u8 = 2;
    pub const CT_RELATED: u8 = 3;
    pub const CT_REOPENED: u8 = 4;
    pub const UNKNOWN: u8 = 5;
    pub const SRV6_ENCAP: u8 = 6;
    pub const SRV6_DECAP: u8 = 7;
    pub const ENCRYPT_OVERLAY: u8 = 8;
    /// Set on top of the reason when the packet was encrypted.
    pub const ENCRYPTED_MASK: u8 = 0x80;
}

/// Drop reason codes (positive form of the datapath's `DROP_*` returns);
/// the same numbers are Hubble's `flow.DropReason`.
pub mod drop_reason {
    pub const INVALID_SIP: u8 = 132;
    pub const POLICY: u8 = 133;
    pub const INVALID: u8 = 134;
    pub const CT_INVALID_HDR: u8 = 135;
    pub const FRAG_NEEDED: u8 = 136;
    pub const CT_UNKNOWN_PROTO: u8 = 137;
    pub const UNKNOWN_L3: u8 = 139;
    pub const MISSED_TAIL_CALL: u8 = 140;
    pub const WRITE_ERROR: u8 = 141;
    pub const UNKNOWN_L4: u8 = 142;
    pub const UNROUTABLE: u8 = 151;
    pub const CT_CREATE_FAILED: u8 = 155;
    pub const FRAG_NOSUPPORT: u8 = 157;
    pub const NO_SERVICE: u8 = 158;
    pub const UNKNOWN_CT: u8 = 163;
    pub const NO_FIB: u8 = 169;
    pub const INVALID_IDENTITY: u8 = 171;
    pub const POLICY_DENY: u8 = 181;
    pub const POLICY_AUTH_REQUIRED: u8 = 189;
    pub const TTL_EXCEEDED: u8 = 196;
    pub const RATE_LIMITED: u8 = 198;
    pub const HOST_NOT_READY: u8 = 202;
    pub const EP_NOT_READY: u8 = 203;
    pub const NO_EGRESS_IP: u8 = 204;
}

/// Policy match types of a policy-verdict event (`policy_match_type`).
pub mod match_type {
    pub const NONE: u8 = 0;
    pub const L3_ONLY: u8 = 1;
    pub const L3_L4: u8 = 2;
    pub const L4_ONLY: u8 = 3;
    pub const ALL: u8 = 4;
    pub const L3_PROTO: u8 = 5;
    pub const PROTO_ONLY: u8 = 6;
}

/// TCP header flag bits as in the header byte; NS lives in the byte before
/// it, so it is carried as bit 8.
pub mod tcp_flag {
    pub const FIN: u16 = 0x01;
    pub const SYN: u16 = 0x02;
    pub const RST: u16 = 0x04;
    pub const PSH: u16 = 0x08;
    pub const ACK: u16 = 0x10;
    pub const URG: u16 = 0x20;
    pub const ECE: u16 = 0x40;
    pub const CWR: u16 = 0x80;
    pub const NS: u16 = 0x100;
}

/// IP protocol numbers: the one table in `weir_abi`, which the kernel
/// programs that write these events use too.
pub use weir_abi::ip_proto;

/// Direction of a policy decision, from the endpoint's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDirection {
    Ingress,
    Egress,
}

/// The kind of datapath event with its kind-specific fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The packet was dropped; `reason` is a [`drop_reason`] code.
    Drop { reason: u8 },
    /// The packet was seen at an observation point and passed on.
    /// `reason` is a [`trace_reason`] value (possibly with the encrypted bit).
    Trace { observation_point: u8, reason: u8 },
    /// A policy decision for the first packet of a connection.
    /// `reason` is the drop reason when denied (0 when allowed).
    PolicyVerdict {
        allowed: bool,
        audited: bool,
        direction: PolicyDirection,
        match_type: u8,
        reason: u8,
    },
}

impl EventKind {
    /// Monitor message type (`CiliumEventType.type`).
    pub fn message_type(&self) -> i32 {
        match self {
            EventKind::Drop { .. } => message_type::DROP,
            EventKind::Trace { .. } => message_type::TRACE,
            EventKind::PolicyVerdict { .. } => message_type::POLICY_VERDICT,
        }
    }

    /// Monitor message subtype (`CiliumEventType.sub_type`): the drop reason
    /// or the observation point; policy verdicts have none.
    pub fn sub_type(&self) -> i32 {
        match self {
            EventKind::Drop { reason } => i32::from(*reason),
            EventKind::Trace {
                observation_point, ..
            } => i32::from(*observation_point),
            EventKind::PolicyVerdict { .. } => 0,
        }
    }
}

/// One datapath event about one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathEvent {
    pub kind: EventKind,
    /// Monotonic clock (CLOCK_MONOTONIC / bpf_ktime_get_ns) in nanoseconds.
    pub timestamp_ns: u64,
    pub ifindex: u32,
    /// Endpoint whose program emitted the event (0 for host/network programs).
    pub endpoint_id: u16,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// IP protocol number (see [`ip_proto`]).
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// [`tcp_flag`] bits; only meaningful for TCP.
    pub tcp_flags: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Conntrack reply direction when the datapath knows it.
    pub is_reply: Option<bool>,
    /// Original packet length in bytes.
    pub packet_len: u32,
}

/// Human text for a drop reason, as `cilium monitor` prints it
/// (`pkg/monitor/api/drop.go`).
pub fn drop_reason_text(reason: u8) -> &'static str {
    match reason {
        130 => "Invalid source mac",
        131 => "Invalid destination mac",
        132 => "Invalid source ip",
        133 => "Policy denied",
        134 => "Invalid packet",
        135 => "CT: Truncated or invalid header",
        136 => "Fragmentation needed",
        137 => "CT: Unknown L4 protocol",
        138 => "CT: Can't create entry from packet",
        139 => "Unsupported L3 protocol",
        140 => "Missed tail call",
        141 => "Error writing to packet",
        142 => "Unknown L4 protocol",
        143 => "Unknown ICMPv4 code",
        144 => "Unknown ICMPv4 type",
        145 => "Unknown ICMPv6 code",
        146 => "Unknown ICMPv6 type",
        147 => "Error retrieving tunnel key",
        148 => "Error retrieving tunnel options",
        149 => "Invalid Geneve option",
        150 => "Unknown L3 target address",
        151 => "Stale or unroutable IP",
        152 => "No matching local container found",
        153 => "Error while correcting L3 checksum",
        154 => "Error while correcting L4 checksum",
        155 => "CT: Map insertion failed",
        156 => "Invalid IPv6 extension header",
        157 => "IP fragmentation not supported",
        158 => "Service backend not found",
        160 => "No tunnel/encapsulation endpoint (datapath BUG!)",
        161 => "NAT 46/64 not enabled",
        162 => "Reached EDT rate-limiting drop horizon",
        163 => "Unknown connection tracking state",
        164 => "Local host is unreachable",
        165 => "No configuration available to perform policy decision",
        166 => "Unsupported L2 protocol",
        167 => "No mapping for NAT masquerade",
        168 => "Unsupported protocol for NAT masquerade",
        169 => "FIB lookup failed",
        170 => "Encapsulation traffic is prohibited",
        171 => "Invalid identity",
        172 => "Unknown sender",
        173 => "NAT not needed",
        174 => "Is a ClusterIP",
        175 => "First logical datagram fragment not found",
        176 => "Forbidden ICMPv6 message",
        177 => "Denied by LB src range check",
        178 => "Socket lookup failed",
        179 => "Socket assign failed",
        180 => "Proxy redirection not supported for protocol",
        181 => "Policy denied by denylist",
        182 => "VLAN traffic disallowed by VLAN filter",
        183 => "Incorrect VNI from VTEP",
        184 => "Failed to update or lookup TC buffer",
        185 => "No SID was found for the IP address",
        186 => "SRv6 state was removed during tail call",
        187 => "L3 translation from IPv4 to IPv6 failed (NAT46)",
        188 => "L3 translation from IPv6 to IPv4 failed (NAT64)",
        189 => "Authentication required",
        190 => "No conntrack map found",
        191 => "No nat map found",
        192 => "Invalid ClusterID",
        193 => "Unsupported packet protocol for DSR encapsulation",
        194 => "No egress gateway found",
        195 => "Traffic is unencrypted",
        196 => "TTL exceeded",
        197 => "No node ID found",
        198 => "Rate limited",
        199 => "IGMP handled",
        200 => "IGMP subscribed",
        201 => "Multicast handled",
        202 => "Host datapath not ready",
        203 => "Endpoint policy program not available",
        204 => "No Egress IP configured",
        _ => "Unknown drop reason",
    }
}

/// Name of a datapath observation point as `cilium monitor` prints it.
pub fn observation_point_text(point: u8) -> &'static str {
    use observation_point::*;
    match point {
        TO_LXC => "to-endpoint",
        TO_PROXY => "to-proxy",
        TO_HOST => "to-host",
        TO_STACK => "to-stack",
        TO_OVERLAY => "to-overlay",
        FROM_LXC => "from-endpoint",
        FROM_PROXY => "from-proxy",
        FROM_HOST => "from-host",
        FROM_STACK => "from-stack",
        FROM_OVERLAY => "from-overlay",
        FROM_NETWORK => "from-network",
        TO_NETWORK => "to-network",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flow::DropReason;

    #[test]
    fn drop_codes_match_hubble_enum() {
        for (code, name) in [
            (drop_reason::POLICY, DropReason::PolicyDenied),
            (drop_reason::POLICY_DENY, DropReason::PolicyDeny),
            (drop_reason::POLICY_AUTH_REQUIRED, DropReason::AuthRequired),
            (drop_reason::NO_SERVICE, DropReason::ServiceBackendNotFound),
            (drop_reason::EP_NOT_READY, DropReason::DropEpNotReady),
        ] {
            assert_eq!(i32::from(code), name as i32);
        }
    }

    #[test]
    fn drop_text() {
        assert_eq!(drop_reason_text(133), "Policy denied");
        assert_eq!(drop_reason_text(181), "Policy denied by denylist");
        assert_eq!(drop_reason_text(250), "Unknown drop reason");
    }

    #[test]
    fn message_types() {
        let k = EventKind::Trace {
            observation_point: observation_point::TO_STACK,
            reason: 0,
        };
        assert_eq!((k.message_type(), k.sub_type()), (4, 3));
        let d = EventKind::Drop { reason: 133 };
        assert_eq!((d.message_type(), d.sub_type()), (1, 133));
    }
}
