//! What the datapath reports, decoded into plain values.
//!
//! This is the input of the flow parser. It takes only the kernel ABI's
//! vocabulary (event kinds, observation points, match types, protocol
//! numbers, drop reasons), not its record layouts: the
//! ring-buffer reader converts its records into these values, so the
//! observer can be tested without a kernel.

use std::net::IpAddr;

/// Monitor message types (`bpf/lib/common.h`, `pkg/monitor/api/types.go`);
/// Hubble exposes them as `CiliumEventType.type`. The kinds the datapath
/// reports are the kernel ABI's `EVENT_*`.
pub mod message_type {
    use weir_abi::events::{EVENT_DROP, EVENT_POLICY_VERDICT, EVENT_TRACE};

    pub const DROP: i32 = EVENT_DROP as i32;
    pub const DEBUG: i32 = 2;
    pub const CAPTURE: i32 = 3;
    pub const TRACE: i32 = EVENT_TRACE as i32;
    pub const POLICY_VERDICT: i32 = EVENT_POLICY_VERDICT as i32;
    pub const RECORDER: i32 = 6;
    pub const TRACE_SOCK: i32 = 7;
}

/// Datapath trace observation points (`bpf/lib/trace.h`), carried as the
/// trace event's subtype: the kernel ABI's `OBS_*` under Cilium's names.
pub mod observation_point {
    pub use weir_abi::events::{
        OBS_FROM_ENDPOINT as FROM_LXC, OBS_FROM_HOST as FROM_HOST,
        OBS_FROM_NETWORK as FROM_NETWORK, OBS_FROM_OVERLAY as FROM_OVERLAY,
        OBS_FROM_PROXY as FROM_PROXY, OBS_FROM_STACK as FROM_STACK, OBS_TO_ENDPOINT as TO_LXC,
        OBS_TO_HOST as TO_HOST, OBS_TO_NETWORK as TO_NETWORK, OBS_TO_OVERLAY as TO_OVERLAY,
        OBS_TO_PROXY as TO_PROXY, OBS_TO_STACK as TO_STACK,
    };
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

/// Policy match types of a policy-verdict event (`policy_match_type`): the
/// kernel ABI's `MATCH_*`.
pub mod match_type {
    pub use weir_abi::events::{
        MATCH_ALL as ALL, MATCH_L3_L4 as L3_L4, MATCH_L3_ONLY as L3_ONLY,
        MATCH_L3_PROTO as L3_PROTO, MATCH_L4_ONLY as L4_ONLY, MATCH_NONE as NONE,
        MATCH_PROTO_ONLY as PROTO_ONLY,
    };
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
    /// The packet was dropped; `reason` is a drop reason code
    /// (`weir_abi::reason`, Hubble's `flow.DropReason`).
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

/// Drop reason codes and their text: the one table in `weir_abi::reason`.
/// The codes are Hubble's `flow.DropReason` numbers.
pub use weir_abi::reason::drop_reason_text;

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
    use weir_abi::Reason;

    #[test]
    fn drop_codes_match_hubble_enum() {
        for (code, name) in [
            (Reason::DropPolicyDenied as u8, DropReason::PolicyDenied),
            (Reason::DropPolicyDeny as u8, DropReason::PolicyDeny),
            (189, DropReason::AuthRequired),
            (
                Reason::DropNoService as u8,
                DropReason::ServiceBackendNotFound,
            ),
            (203, DropReason::DropEpNotReady),
        ] {
            assert_eq!(i32::from(code), name as i32);
        }
        // Every reason the datapath emits has a Hubble name...
        for reason in Reason::ALL.into_iter().filter(|r| r.is_drop()) {
            assert!(DropReason::try_from(i32::from(reason as u8)).is_ok());
        }
        // ...and every Hubble drop reason has the monitor's text.
        for code in 1..=u8::MAX {
            if DropReason::try_from(i32::from(code)).is_ok() {
                assert!(weir_abi::reason::drop_text(code).is_some(), "{code}");
            }
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
