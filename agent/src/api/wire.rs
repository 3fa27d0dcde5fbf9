//! The typed values of the policy engine as the local APIs' enums
//! (`types.proto`); the CLI turns them into words.

use weir_agent_api::v1;
use weir_policy::{Direction, Protocol, Verdict};

pub fn direction(direction: Direction) -> v1::TrafficDirection {
    match direction {
        Direction::Ingress => v1::TrafficDirection::Ingress,
        Direction::Egress => v1::TrafficDirection::Egress,
    }
}

pub fn verdict(verdict: Verdict) -> v1::PolicyVerdict {
    match verdict {
        Verdict::Allow => v1::PolicyVerdict::Allow,
        Verdict::Deny => v1::PolicyVerdict::Deny,
    }
}

/// The `L4Protocol` of a rule's protocol (`None` = any): its IP protocol
/// number, which is the enum's value.
pub fn l4_protocol(protocol: Option<Protocol>) -> i32 {
    i32::from(protocol.map_or(0, Protocol::number))
}

/// The protocol a trace asks about: TCP, UDP or SCTP, never any.
pub fn trace_protocol(value: i32) -> Option<Protocol> {
    u8::try_from(value).ok().and_then(Protocol::from_number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_their_ip_numbers_and_any_is_zero() {
        assert_eq!(l4_protocol(None), v1::L4Protocol::Any as i32);
        for (protocol, wire) in [
            (Protocol::Tcp, v1::L4Protocol::Tcp),
            (Protocol::Udp, v1::L4Protocol::Udp),
            (Protocol::Sctp, v1::L4Protocol::Sctp),
        ] {
            assert_eq!(l4_protocol(Some(protocol)), wire as i32);
            assert_eq!(trace_protocol(wire as i32), Some(protocol));
        }
        assert_eq!(trace_protocol(v1::L4Protocol::Any as i32), None);
        assert_eq!(trace_protocol(-1), None);
    }
}
