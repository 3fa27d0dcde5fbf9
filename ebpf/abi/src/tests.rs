use core::mem::{align_of, offset_of, size_of};

use crate::{MetricsKey, MetricsValue, Reason, TrafficDirection};

#[test]
fn metrics_key_layout_is_pinned() {
    assert_eq!(size_of::<MetricsKey>(), 8);
    assert_eq!(align_of::<MetricsKey>(), 1);
    assert_eq!(offset_of!(MetricsKey, reason), 0);
    assert_eq!(offset_of!(MetricsKey, direction), 1);
    assert_eq!(offset_of!(MetricsKey, pad), 2);
}

#[test]
fn metrics_value_layout_is_pinned() {
    assert_eq!(size_of::<MetricsValue>(), 16);
    assert_eq!(align_of::<MetricsValue>(), 8);
    assert_eq!(offset_of!(MetricsValue, packets), 0);
    assert_eq!(offset_of!(MetricsValue, bytes), 8);
}

#[test]
fn metrics_key_bytes_are_reason_direction_then_zero_padding() {
    let key = MetricsKey::new(Reason::DropInvalid, TrafficDirection::Egress);
    // SAFETY: MetricsKey is repr(C), 8 bytes, no implicit padding.
    let bytes: [u8; 8] = unsafe { core::mem::transmute(key) };
    assert_eq!(bytes, [134, 2, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn reason_codes_match_cilium_numbers() {
    assert_eq!(Reason::Forwarded as u8, 0);
    assert_eq!(Reason::DropInvalid as u8, 134);
    assert_eq!(Reason::DropCtInvalidHdr as u8, 135);
    assert_eq!(Reason::DropInvalidExthdr as u8, 156);
}

#[test]
fn reason_round_trips_and_unknown_codes_decode_to_none() {
    for reason in Reason::ALL {
        assert_eq!(Reason::from_u8(reason as u8), Some(reason));
    }
    assert_eq!(Reason::from_u8(1), None);
    assert_eq!(Reason::from_u8(255), None);
    assert!(!Reason::Forwarded.is_drop());
    assert!(Reason::DropInvalid.is_drop());
}

#[test]
fn drop_texts_are_ordered_and_name_every_reason() {
    use crate::reason::{drop_reason_text, drop_text, DROP_TEXTS};
    assert!(DROP_TEXTS.windows(2).all(|w| w[0].0 < w[1].0));
    for reason in Reason::ALL.into_iter().filter(|r| r.is_drop()) {
        assert_eq!(drop_text(reason as u8), Some(reason.description()));
    }
    assert_eq!(
        Reason::ALL.map(Reason::description),
        [
            "Forwarded",
            "Invalid source ip",
            "Policy denied",
            "Invalid packet",
            "CT: Truncated or invalid header",
            "Error retrieving tunnel key",
            "CT: Map insertion failed",
            "Invalid IPv6 extension header",
            "Service backend not found",
            "No tunnel/encapsulation endpoint (datapath BUG!)",
            "Unknown sender",
            "First logical datagram fragment not found",
            "Forbidden ICMPv6 message",
            "Policy denied by denylist",
            "Rate limited",
            "Endpoint policy program not available",
        ]
    );
    assert_eq!(drop_text(0), None);
    assert_eq!(drop_reason_text(250), "Unknown drop reason");
}

#[test]
fn direction_round_trips() {
    for direction in TrafficDirection::ALL {
        assert_eq!(TrafficDirection::from_u8(direction as u8), Some(direction));
    }
    assert_eq!(TrafficDirection::from_u8(0), None);
    assert_eq!(TrafficDirection::from_u8(3), None);
}

#[test]
fn metrics_value_sum_saturates() {
    let a = MetricsValue {
        packets: u64::MAX - 1,
        bytes: 10,
    };
    let b = MetricsValue {
        packets: 5,
        bytes: 20,
    };
    assert_eq!(
        a.saturating_add(b),
        MetricsValue {
            packets: u64::MAX,
            bytes: 30
        }
    );
}

#[test]
fn endpoint_layout_is_pinned() {
    use crate::{EndpointInfo, EndpointKey};
    assert_eq!(size_of::<EndpointKey>(), 4);
    assert_eq!(size_of::<EndpointInfo>(), 36);
    assert_eq!(offset_of!(EndpointInfo, id), 0);
    assert_eq!(offset_of!(EndpointInfo, flags), 2);
    assert_eq!(offset_of!(EndpointInfo, identity), 4);
    assert_eq!(offset_of!(EndpointInfo, ipv4), 8);
    assert_eq!(offset_of!(EndpointInfo, ipv6), 12);
    assert_eq!(offset_of!(EndpointInfo, ipv6_link_local), 28);
}

#[test]
fn ipcache_layout_and_prefix_lengths() {
    use crate::ipcache::{IpcacheKey, IpcacheValue, FAMILY_IPV4};
    assert_eq!(size_of::<IpcacheKey>(), 20);
    assert_eq!(offset_of!(IpcacheKey, addr), 4);
    assert_eq!(size_of::<IpcacheValue>(), 12);
    assert_eq!(offset_of!(IpcacheValue, address_identity), 8);
    let key = IpcacheKey::ipv4([10, 244, 1, 5]);
    assert_eq!(key.family, FAMILY_IPV4);
    assert_eq!(&key.addr[..4], &[10, 244, 1, 5]);
    assert_eq!(IpcacheKey::prefix_len(32), 64);
    assert_eq!(IpcacheKey::prefix_len(24), 56);
}

#[test]
fn pod_cidr_layout_is_pinned() {
    use crate::{PodCidrInfo, PodCidrKey};
    assert_eq!(size_of::<PodCidrKey>(), 4);
    assert_eq!(size_of::<PodCidrInfo>(), 8);
    assert_eq!(offset_of!(PodCidrInfo, flags), 4);
    let local = PodCidrInfo {
        node_ipv4: [10, 77, 0, 11],
        flags: PodCidrInfo::LOCAL,
        pad: [0; 3],
    };
    assert!(local.is_local());
    assert!(!PodCidrInfo::default().is_local());
}

#[test]
fn policy_key_field_order_supports_wildcards() {
    use crate::policy::*;
    assert_eq!(size_of::<PolicyKey>(), 12);
    assert_eq!(size_of::<PolicyEntry>(), 8);
    // Everything before the protocol is matched in full by the shortest prefix.
    assert_eq!(
        offset_of!(PolicyKey, protocol) * 8,
        POLICY_PREFIX_ANY_PROTOCOL as usize
    );
    assert_eq!(
        offset_of!(PolicyKey, port) * 8,
        POLICY_PREFIX_ANY_PORT as usize
    );
    assert_eq!(size_of::<PolicyKey>() * 8, POLICY_PREFIX_FULL as usize);
}

#[test]
fn conntrack_layout_is_pinned() {
    use crate::{CtEntry, CtKey};
    assert_eq!(size_of::<CtKey>(), 40);
    assert_eq!(offset_of!(CtKey, sport), 32);
    assert_eq!(offset_of!(CtKey, protocol), 36);
    assert_eq!(offset_of!(CtKey, scope), 38);
    assert_eq!(size_of::<CtEntry>(), 40);
    assert_eq!(offset_of!(CtEntry, policy_revision), 24);
    assert_eq!(align_of::<CtEntry>(), 8);
}

#[test]
fn policy_drop_reasons_match_cilium_numbers() {
    assert_eq!(Reason::DropInvalidSourceIp as u8, 132);
    assert_eq!(Reason::DropPolicyDenied as u8, 133);
    assert_eq!(Reason::DropCtCreateFailed as u8, 155);
    assert_eq!(Reason::DropPolicyDeny as u8, 181);
    assert_eq!(Reason::DropUnknownSender as u8, 172);
    assert_eq!(Reason::DropFragNotFound as u8, 175);
    assert_eq!(Reason::DropNoTunnelKey as u8, 147);
    assert_eq!(Reason::DropNoTunnelEndpoint as u8, 160);
}

#[test]
fn a_mark_carries_an_identity_only_under_its_magic() {
    use crate::overlay::{identity_mark, mark_identity, VNI_MAX};
    assert_eq!(mark_identity(identity_mark(256)), Some(256));
    assert_eq!(mark_identity(identity_mark(VNI_MAX)), Some(VNI_MAX));
    assert_eq!(mark_identity(0), None);
    assert_eq!(mark_identity(0x4000), None);
    assert_eq!(mark_identity(0x0F00_0100), None);
}

#[test]
fn fragments_layout_is_pinned() {
    use crate::{Frag4Key, Frag4Ports};
    assert_eq!(size_of::<Frag4Key>(), 12);
    assert_eq!(offset_of!(Frag4Key, daddr), 4);
    assert_eq!(offset_of!(Frag4Key, id), 8);
    assert_eq!(offset_of!(Frag4Key, protocol), 10);
    assert_eq!(size_of::<Frag4Ports>(), 4);
    assert_eq!(offset_of!(Frag4Ports, dport), 2);
}

#[test]
fn flow_event_layout_is_pinned() {
    use crate::FlowEvent;
    assert_eq!(size_of::<FlowEvent>(), 80);
    assert_eq!(offset_of!(FlowEvent, ifindex), 4);
    assert_eq!(offset_of!(FlowEvent, timestamp_ns), 8);
    assert_eq!(offset_of!(FlowEvent, src_identity), 20);
    assert_eq!(offset_of!(FlowEvent, family), 28);
    assert_eq!(offset_of!(FlowEvent, flags), 32);
    assert_eq!(offset_of!(FlowEvent, saddr), 40);
    assert_eq!(offset_of!(FlowEvent, sport), 72);
}

mod identity {
    use crate::identity::*;

    #[test]
    fn ranges_do_not_overlap() {
        assert!(is_reserved(INGRESS) && !is_cluster(INGRESS));
        assert!(is_reserved(255) && !is_reserved(256));
        assert!(is_cluster(256) && is_cluster(65535) && !is_cluster(65536));
        assert!(!is_local(65535) && !is_local(LOCAL_SCOPE));
        assert!(is_local(LOCAL_MIN) && is_local(LOCAL_MAX));
        assert!(!is_local(LOCAL_MAX + 1));
        assert_eq!(LOCAL_MIN, 16_777_217);
        assert_eq!(LOCAL_MAX, 33_554_431);
        assert_eq!(LOCAL_CIDR_MAX, 16_777_216 + 8_388_607);
        let address = address_identity(LOCAL_MIN);
        assert!(is_local(address) && is_address(address) && !is_address(LOCAL_MIN));
        assert!(address > LOCAL_CIDR_MAX && address <= LOCAL_MAX);
        assert_eq!(cidr_of_address(address), LOCAL_MIN);
        assert_eq!(address_identity(LOCAL_CIDR_MAX), LOCAL_MAX);
    }

    #[test]
    fn reserved_numbers_are_ciliums() {
        assert_eq!(ANY, 0);
        assert_eq!(HOST, 1);
        assert_eq!(WORLD, 2);
        assert_eq!(UNMANAGED, 3);
        assert_eq!(HEALTH, 4);
        assert_eq!(INIT, 5);
        assert_eq!(REMOTE_NODE, 6);
        assert_eq!(KUBE_APISERVER, 7);
        assert_eq!(INGRESS, 8);
        assert_eq!(WORLD_IPV4, 9);
        assert_eq!(WORLD_IPV6, 10);
        assert_eq!(CLUSTER_MIN, 256);
        assert_eq!(LOCAL_SCOPE, 16_777_216);
    }

    #[test]
    fn names_map_both_ways() {
        for r in RESERVED {
            assert_eq!(reserved_by_id(r.id), Some(&r));
            assert_eq!(reserved_by_label(r.label), Some(&r));
            assert_eq!(r.label.split_once(':'), Some((LABEL_SOURCE, r.name())));
        }
        assert_eq!(
            reserved_by_label("reserved:remote-node").map(|r| r.id),
            Some(6)
        );
        assert_eq!(
            reserved_by_id(9).map(|r| r.label),
            Some("reserved:world-ipv4")
        );
        assert_eq!(reserved_by_id(11), None);
        let kube: Vec<_> = reserved_by_id(KUBE_APISERVER).unwrap().labels().collect();
        assert_eq!(kube, ["reserved:kube-apiserver", "reserved:remote-node"]);
    }

    #[test]
    fn the_table_is_ordered_by_number_without_gaps() {
        for (i, r) in RESERVED.iter().enumerate() {
            assert_eq!(r.id as usize, i);
        }
    }
}

mod ip_proto {
    use crate::ip_proto::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!((ICMP, TCP, UDP, ICMPV6, SCTP), (1, 6, 17, 58, 132));
        assert_eq!(name(TCP), Some("TCP"));
        assert_eq!(name(ICMPV6), Some("ICMPv6"));
        assert_eq!(name(47), None);
        assert_eq!(Named(UDP).to_string(), "UDP");
        assert_eq!(Named(47).to_string(), "47");
    }
}

#[test]
fn ipv6_sources_of_a_pod() {
    use crate::endpoint::eui64_interface_id;
    use crate::EndpointInfo;
    let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x05];
    let id = eui64_interface_id(mac);
    // The kernel's link-local for that MAC: fe80::858:aff:fef4:5.
    assert_eq!(id, [0x08, 0x58, 0x0a, 0xff, 0xfe, 0xf4, 0x00, 0x05]);
    let pod = EndpointInfo::not_ready(1, [10, 244, 0, 5]).with_link_local(id);
    let addr = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    assert!(pod.ipv6_source_allowed(&addr("fe80::858:aff:fef4:5"), false));
    assert!(!pod.ipv6_source_allowed(&addr("fe80::858:aff:fef4:6"), false));
    assert!(!pod.ipv6_source_allowed(&addr("fe80:1::858:aff:fef4:5"), false));
    assert!(pod.ipv6_source_allowed(&addr("::"), true));
    assert!(!pod.ipv6_source_allowed(&addr("::"), false));
    assert!(!pod.ipv6_source_allowed(&addr("fd00::5"), false));
    // No link-local known: none accepted.
    let unknown = EndpointInfo::not_ready(1, [10, 244, 0, 5]);
    assert!(!unknown.ipv6_source_allowed(&addr("fe80::"), false));
    // An assigned address.
    let dual = EndpointInfo {
        ipv6: addr("fd00::5"),
        ..pod
    };
    assert!(dual.ipv6_source_allowed(&addr("fd00::5"), false));
    assert!(!dual.ipv6_source_allowed(&addr("fd00::6"), false));
}

#[test]
fn the_budget_of_new_entries_as_interval_and_tolerance() {
    use crate::conntrack::{ct_budget_globals, CtBudget};
    assert_eq!(size_of::<CtBudget>(), 8);
    assert_eq!(ct_budget_globals(0, 100), (0, 0), "rate 0: no budget");
    assert_eq!(ct_budget_globals(2_000, 20_000), (500_000, 10_000_000_000));
    assert_eq!(ct_budget_globals(1, 3), (1_000_000_000, 3_000_000_000));
    // Faster than one a nanosecond still refills.
    assert_eq!(ct_budget_globals(u32::MAX, 1), (1, 1));
}
