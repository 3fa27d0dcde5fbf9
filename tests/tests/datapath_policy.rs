//! Conntrack and identity-based policy in the pod programs, through
//! BPF_PROG_TEST_RUN with the maps programmed as the agent programs them.
//!
//! BPF_PROG_TEST_RUN runs the program on the loopback device, so the local
//! endpoint is registered under ifindex 1.

use ipnetwork::IpNetwork;
use weir_abi::policy::*;
use weir_abi::{ip_proto, map_names};
use weir_abi::{
    EndpointInfo, IpcacheValue, MetricsValue, PolicyEntry, PolicyKey, Reason, TrafficDirection,
};
use weir_agent::datapath::{maps, Datapath, ProgramKind};
use weir_tests::datapath::{load, test_run, PinDir};
use weir_tests::{packets, require_root};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const LOOPBACK_IFINDEX: u32 = 1;
const ENDPOINT_ID: u16 = 7;
/// The peer (packets::IP4_B / IP6_B) in the tests.
const PEER_IDENTITY: u32 = 40_000;
const OTHER_IDENTITY: u32 = 40_001;

/// The local pod's entry (endpoint 7 at packets::IP4_A/IP6_A) with `flags`.
fn local_endpoint(flags: u8) -> EndpointInfo {
    EndpointInfo {
        id: ENDPOINT_ID,
        flags,
        pad: 0,
        identity: 30_000,
        ipv4: packets::IP4_A,
        ipv6: packets::IP6_A,
        ipv6_link_local: [0; 8],
    }
}

/// A datapath with the local pod at packets::IP4_A (endpoint 7 on lo) and
/// the peer at IP4_B/IP6_B with identity 40000.
fn setup(flags: u8) -> (PinDir, Datapath) {
    require_root();
    let pins = PinDir::new();
    let mut datapath = load(&pins).unwrap();
    let ebpf = datapath.ebpf_mut();
    maps::set_endpoint(ebpf, LOOPBACK_IFINDEX, local_endpoint(flags)).unwrap();
    for peer in ["10.99.0.2/32", "fd00:99::2/128"] {
        maps::set_ipcache(
            ebpf,
            peer.parse().unwrap(),
            IpcacheValue {
                identity: PEER_IDENTITY,
                node_ipv4: [0; 4],
                address_identity: 0,
            },
        )
        .unwrap();
    }
    (pins, datapath)
}

fn rule(
    datapath: &mut Datapath,
    direction: TrafficDirection,
    identity: u32,
    protocol: u8,
    port: u16,
    prefix: u32,
    verdict: u8,
) {
    let key = PolicyKey {
        endpoint_id: ENDPOINT_ID,
        direction: direction as u8,
        pad0: 0,
        identity,
        protocol,
        pad1: 0,
        port: port.to_be_bytes(),
    };
    maps::set_policy(
        datapath.ebpf_mut(),
        prefix,
        key,
        PolicyEntry {
            verdict,
            match_type: 0,
            pad: [0; 2],
            rule: 1,
        },
    )
    .unwrap();
    // As the agent's pass does once its writes are in: connections
    // established under the old entries check their verdict again.
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
}

/// Runs `frame` through `program` and returns (verdict, the reason counted).
fn run(datapath: &mut Datapath, program: ProgramKind, frame: &[u8]) -> (i32, Reason) {
    let before = datapath.metrics().unwrap();
    let verdict = test_run(datapath, program, frame, 1).unwrap().verdict;
    let delta = datapath.metrics().unwrap().since(&before);
    let moved: Vec<_> = delta.iter().collect();
    assert_eq!(moved.len(), 1, "exactly one counter moves: {moved:?}");
    assert_eq!(
        moved[0].2,
        MetricsValue {
            packets: 1,
            bytes: frame.len() as u64
        }
    );
    (verdict, Reason::from_u8(moved[0].0).unwrap())
}

fn tcp_syn_to(port: u16) -> Vec<u8> {
    let mut frame = packets::ipv4_tcp_syn();
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
    frame[l4 + 2..l4 + 4].copy_from_slice(&port.to_be_bytes());
    frame
}

/// The reply direction of `frame` (addresses, MACs and ports swapped),
/// with the TCP flags set to `flags`.
fn reversed_ipv4(frame: &[u8], tcp_flags: Option<u8>) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    let ip = packets::ETH_HLEN;
    out[ip + 12..ip + 16].copy_from_slice(&frame[ip + 16..ip + 20]);
    out[ip + 16..ip + 20].copy_from_slice(&frame[ip + 12..ip + 16]);
    let l4 = ip + packets::IPV4_HLEN;
    out[l4..l4 + 2].copy_from_slice(&frame[l4 + 2..l4 + 4]);
    out[l4 + 2..l4 + 4].copy_from_slice(&frame[l4..l4 + 2]);
    if let Some(flags) = tcp_flags {
        out[l4 + 13] = flags;
    }
    out
}

#[test]
fn unenforced_endpoints_pass_everything_and_track_it() {
    let (_pins, mut datapath) = setup(0);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)),
        (TC_ACT_OK, Reason::Forwarded)
    );
    let entries = maps::conntrack(datapath.ebpf_mut()).unwrap();
    assert_eq!(entries.len(), 1, "the connection is tracked");
    assert_eq!(entries[0].0.dport, 80u16.to_be_bytes());
    // TCP and the other protocols are tracked in maps of their own.
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv4_udp()).1,
        Reason::Forwarded
    );
    let of = |datapath: &mut Datapath, name| {
        maps::conntrack::conntrack_of(datapath.ebpf_mut(), name)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key.protocol)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&mut datapath, map_names::CONNTRACK), vec![ip_proto::TCP]);
    assert_eq!(
        of(&mut datapath, map_names::CONNTRACK_ANY),
        vec![ip_proto::UDP]
    );
}

#[test]
fn enforced_without_rules_is_default_deny() {
    let (_pins, mut datapath) =
        setup(EndpointInfo::EGRESS_ENFORCED | EndpointInfo::INGRESS_ENFORCED);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)),
        (TC_ACT_SHOT, Reason::DropPolicyDenied)
    );
    let inbound = reversed_ipv4(&tcp_syn_to(80), Some(0x02));
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &inbound),
        (TC_ACT_SHOT, Reason::DropPolicyDenied)
    );
    assert!(
        maps::conntrack(datapath.ebpf_mut()).unwrap().is_empty(),
        "denied connections are not tracked"
    );
}

#[test]
fn exact_port_rules_allow_only_that_port_and_peer() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)).1,
        Reason::Forwarded
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(81)).1,
        Reason::DropPolicyDenied
    );
    // The same port to a peer of another identity is not allowed.
    maps::set_ipcache(
        datapath.ebpf_mut(),
        "10.99.0.2/32".parse().unwrap(),
        IpcacheValue {
            identity: OTHER_IDENTITY,
            node_ipv4: [0; 4],
            address_identity: 0,
        },
    )
    .unwrap();
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)).1,
        Reason::DropPolicyDenied
    );
}

#[test]
fn port_ranges_are_prefixes_of_the_port() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    // 80-95: a 16-port aligned block = the top 12 bits of the port.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_ANY_PORT + 12,
        POLICY_ALLOW,
    );
    for (port, reason) in [
        (79, Reason::DropPolicyDenied),
        (80, Reason::Forwarded),
        (95, Reason::Forwarded),
        (96, Reason::DropPolicyDenied),
    ] {
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(port)).1,
            reason,
            "port {port}"
        );
    }
}

#[test]
fn protocol_and_identity_wildcards() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    // Any protocol and port to the peer.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        0,
        0,
        POLICY_PREFIX_ANY_PROTOCOL,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv4_udp()).1,
        Reason::Forwarded
    );
    assert_eq!(
        run(
            &mut datapath,
            ProgramKind::FromPod,
            &packets::ipv4_icmp_echo()
        )
        .1,
        Reason::Forwarded
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv4_sctp()).1,
        Reason::Forwarded
    );
    // UDP to any peer (identity 0) on port 53 only, for another endpoint direction.
    let (_pins2, mut other) = setup(EndpointInfo::EGRESS_ENFORCED);
    rule(
        &mut other,
        TrafficDirection::Egress,
        IDENTITY_ANY,
        ip_proto::UDP,
        53,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut other, ProgramKind::FromPod, &packets::ipv4_udp()).1,
        Reason::Forwarded
    );
    assert_eq!(
        run(&mut other, ProgramKind::FromPod, &tcp_syn_to(53)).1,
        Reason::DropPolicyDenied
    );
}

#[test]
fn deny_wins_over_allow_across_identity_lookups() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        IDENTITY_ANY,
        0,
        0,
        POLICY_PREFIX_ANY_PROTOCOL,
        POLICY_DENY,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)),
        (TC_ACT_SHOT, Reason::DropPolicyDeny)
    );
}

/// A pod or node address inside a prefix a NetworkPolicy `ipBlock` names
/// carries that prefix's address identity in the ipcache: the datapath
/// looks it up when the peer's identity decides nothing, and a deny of the
/// peer's identity or of any peer still wins.
#[test]
fn address_identities_allow_what_the_peer_identity_does_not_decide() {
    let address = weir_abi::identity::address_identity(weir_abi::identity::LOCAL_MIN);
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        address,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        address,
        ip_proto::UDP,
        0,
        POLICY_PREFIX_ANY_PORT,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)),
        (TC_ACT_SHOT, Reason::DropPolicyDenied),
        "the peer's entry has no address identity yet"
    );
    for peer in ["10.99.0.2/32", "fd00:99::2/128"] {
        maps::set_ipcache(
            datapath.ebpf_mut(),
            peer.parse().unwrap(),
            IpcacheValue {
                identity: PEER_IDENTITY,
                node_ipv4: [0; 4],
                address_identity: address,
            },
        )
        .unwrap();
    }
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)),
        (TC_ACT_OK, Reason::Forwarded)
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(81)).1,
        Reason::DropPolicyDenied,
        "the ports of the ipBlock's rule still apply"
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv6_udp()).1,
        Reason::Forwarded,
        "IPv6 peers alike"
    );
    // A deny of the peer's own identity wins over the address's allow...
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_DENY,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)),
        (TC_ACT_SHOT, Reason::DropPolicyDeny)
    );
    // ...and so does a deny of any peer.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        IDENTITY_ANY,
        ip_proto::UDP,
        0,
        POLICY_PREFIX_ANY_PORT,
        POLICY_DENY,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv6_udp()).1,
        Reason::DropPolicyDeny
    );
}

#[test]
fn replies_of_allowed_connections_pass_enforced_ingress() {
    let (_pins, mut datapath) =
        setup(EndpointInfo::EGRESS_ENFORCED | EndpointInfo::INGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    let syn = tcp_syn_to(80);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &syn).1,
        Reason::Forwarded
    );
    let syn_ack = reversed_ipv4(&syn, Some(0x12));
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &syn_ack),
        (TC_ACT_OK, Reason::Forwarded),
        "reply passes"
    );
    // A new connection from the peer to the same pod is still denied.
    let inbound = reversed_ipv4(&tcp_syn_to(81), Some(0x02));
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &inbound).1,
        Reason::DropPolicyDenied
    );
    // ICMP echo: the reply of an allowed request passes.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::ICMP,
        0,
        POLICY_PREFIX_ANY_PORT,
        POLICY_ALLOW,
    );
    let request = packets::ipv4_icmp_echo();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &request).1,
        Reason::Forwarded
    );
    let mut reply = reversed_ipv4(&request, None);
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
    reply[l4..l4 + 4].copy_from_slice(&request[l4..l4 + 4]); // keep the ICMP header...
    reply[l4] = 0; // ...as an echo reply
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &reply).1,
        Reason::Forwarded
    );
}

#[test]
fn removing_an_allow_stops_the_established_connection() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    let syn = tcp_syn_to(80);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &syn).1,
        Reason::Forwarded
    );
    let key = PolicyKey {
        endpoint_id: ENDPOINT_ID,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity: PEER_IDENTITY,
        protocol: ip_proto::TCP,
        pad1: 0,
        port: 80u16.to_be_bytes(),
    };
    maps::remove_policy(datapath.ebpf_mut(), POLICY_PREFIX_FULL, key).unwrap();
    let mut ack = syn.clone();
    ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
    // The verdict is cached in the conntrack entry until the revision
    // moves (the agent moves it once a pass's writes are all in).
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &ack).1,
        Reason::Forwarded,
        "the established connection keeps the verdict of its revision"
    );
    let revision = maps::policy_revision(datapath.ebpf_mut()).unwrap();
    let next = maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    assert!(next > revision, "{next} > {revision}");
    for _ in 0..2 {
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &ack).1,
            Reason::DropPolicyDenied,
            "checked again at the new revision, and every packet after a denial"
        );
    }
    // Allowed again: the connection goes on once the revision moves.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &ack).1,
        Reason::Forwarded
    );
}

/// The revocation of a cached verdict through each thing it depends on:
/// the peer's identity (ipcache) and the endpoint's enforcement flags.
#[test]
fn a_cached_verdict_is_checked_again_when_the_peer_or_the_enforcement_changes() {
    let (_pins, mut datapath) = setup(0);
    let syn = tcp_syn_to(80);
    let mut ack = syn.clone();
    ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
    // Unenforced: the connection opens without policy.
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &syn).1,
        Reason::Forwarded
    );
    // Enforcement turns on with an allow for the peer's identity.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    let mut endpoint = maps::endpoint_entries(datapath.ebpf_mut()).unwrap()[&LOOPBACK_IFINDEX];
    endpoint.flags = EndpointInfo::EGRESS_ENFORCED;
    maps::set_endpoint(datapath.ebpf_mut(), LOOPBACK_IFINDEX, endpoint).unwrap();
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &ack).1,
        Reason::Forwarded
    );
    // The peer's address gets another identity: not allowed.
    maps::set_ipcache(
        datapath.ebpf_mut(),
        "10.99.0.2/32".parse().unwrap(),
        IpcacheValue {
            identity: PEER_IDENTITY + 1,
            node_ipv4: [0; 4],
            address_identity: 0,
        },
    )
    .unwrap();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &ack).1,
        Reason::Forwarded,
        "cached until the revision moves"
    );
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &ack).1,
        Reason::DropPolicyDenied
    );
}

#[test]
fn forged_source_addresses_are_dropped() {
    let (_pins, mut datapath) = setup(0);
    let forged = reversed_ipv4(&tcp_syn_to(80), None); // source IP4_B, not the pod's
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &forged),
        (TC_ACT_SHOT, Reason::DropInvalidSourceIp)
    );
}

#[test]
fn sctp_is_enforced_by_port() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        132,
        9999,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv4_sctp()).1,
        Reason::Forwarded
    );
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        132,
        9999,
        POLICY_PREFIX_FULL,
        POLICY_DENY,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv4_sctp()).1,
        Reason::DropPolicyDeny
    );
}

#[test]
fn ipv6_uses_the_ipcache_and_neighbour_discovery_always_passes() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv6_udp()).1,
        Reason::DropPolicyDenied
    );
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::UDP,
        53,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv6_udp()).1,
        Reason::Forwarded
    );
    let mut solicitation = packets::ipv6_icmp_echo();
    solicitation[packets::ETH_HLEN + packets::IPV6_HLEN] = 135;
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &solicitation).1,
        Reason::Forwarded
    );
}

#[test]
fn unknown_peers_are_world_and_cidr_prefixes_match() {
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    let _ = maps::remove_ipcache(datapath.ebpf_mut(), "10.99.0.2/32".parse().unwrap());
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        weir_abi::identity::WORLD,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)).1,
        Reason::Forwarded,
        "no ipcache entry: world"
    );
    // A CIDR identity for 10.99.0.0/16 takes over from world.
    let cidr: IpNetwork = "10.99.0.0/16".parse().unwrap();
    maps::set_ipcache(
        datapath.ebpf_mut(),
        cidr,
        IpcacheValue {
            identity: 16_777_217,
            node_ipv4: [0; 4],
            address_identity: 0,
        },
    )
    .unwrap();
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)).1,
        Reason::DropPolicyDenied
    );
}

#[test]
fn conntrack_gc_removes_only_expired_entries() {
    let (_pins, mut datapath) = setup(0);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)).1,
        Reason::Forwarded
    );
    // And one in the other protocols' map: the GC covers both.
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &packets::ipv4_udp()).1,
        Reason::Forwarded
    );
    let now = maps::monotonic_now_ns();
    assert_eq!(
        maps::conntrack_gc(datapath.ebpf_mut(), now).unwrap(),
        0,
        "fresh SYN and UDP entries live 60 s"
    );
    assert_eq!(
        maps::conntrack_gc(datapath.ebpf_mut(), now + 61_000_000_000).unwrap(),
        2
    );
    assert!(maps::conntrack(datapath.ebpf_mut()).unwrap().is_empty());
}

#[test]
fn router_advertisements_and_redirects_from_a_pod_are_dropped() {
    // Unenforced and enforced alike: no policy makes them legitimate.
    for flags in [
        0,
        EndpointInfo::INGRESS_ENFORCED | EndpointInfo::EGRESS_ENFORCED,
    ] {
        let (_pins, mut datapath) = setup(flags);
        let icmp6 = |icmp_type: u8| {
            packets::ipv6_with_payload(ip_proto::ICMPV6, &[icmp_type, 0, 0, 0, 0, 0, 0, 0])
        };
        for forbidden in [134, 137] {
            assert_eq!(
                run(&mut datapath, ProgramKind::FromPod, &icmp6(forbidden)).1,
                Reason::DropForbiddenIcmp6,
                "type {forbidden} from the pod, flags {flags}"
            );
        }
        // Neighbour solicitation/advertisement and router solicitation keep
        // the link working, whatever the policy.
        for allowed in [133, 135, 136] {
            assert_eq!(
                run(&mut datapath, ProgramKind::FromPod, &icmp6(allowed)).1,
                Reason::Forwarded,
                "type {allowed} from the pod, flags {flags}"
            );
        }
        // A router's advertisement towards the pod is not the pod's doing.
        assert_eq!(
            run(&mut datapath, ProgramKind::ToPod, &icmp6(134)).1,
            Reason::Forwarded
        );
    }
}

#[test]
fn a_released_address_takes_its_connections_with_it() {
    let (_pins, mut datapath) = setup(0);
    for port in [80, 81] {
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(port)).1,
            Reason::Forwarded
        );
    }
    assert_eq!(maps::conntrack(datapath.ebpf_mut()).unwrap().len(), 2);
    // An address no connection has: nothing goes.
    let other = std::net::Ipv4Addr::new(10, 99, 0, 77);
    let forgotten = maps::forget_address(datapath.ebpf_mut(), other.into()).unwrap();
    assert_eq!(forgotten, maps::Forgotten::default());
    assert_eq!(maps::conntrack(datapath.ebpf_mut()).unwrap().len(), 2);
    // The peer's address (the destination of both): both go.
    let peer = std::net::Ipv4Addr::from(packets::IP4_B);
    let forgotten = maps::forget_address(datapath.ebpf_mut(), peer.into()).unwrap();
    assert_eq!(forgotten.conntrack, 2);
    assert!(maps::conntrack(datapath.ebpf_mut()).unwrap().is_empty());
}

#[test]
fn the_ipcache_reads_back_what_the_agent_wrote_and_diffs_apply() {
    use std::collections::BTreeMap;
    use weir_agent::reconcile::ipcache::DesiredIpcache;
    let (_pins, mut datapath) = setup(0);
    let mut desired = DesiredIpcache::default();
    desired.set_endpoint(
        "10.244.2.5".parse().unwrap(),
        300,
        "10.77.0.12".parse().unwrap(),
    );
    desired.set_cidrs(&BTreeMap::from([(
        "203.0.113.0/24".parse().unwrap(),
        16_777_217,
    )]));
    let ebpf = datapath.ebpf_mut();
    let current = maps::ipcache_entries(ebpf).unwrap();
    assert_eq!(
        current.len(),
        2,
        "the two entries setup() wrote: {current:?}"
    );
    weir_agent::reconcile::ipcache::apply(ebpf, &desired.diff(&current, true)).unwrap();
    assert_eq!(maps::ipcache_entries(ebpf).unwrap(), desired.effective());
}

#[test]
fn an_established_connection_survives_a_policy_change_that_still_allows_it() {
    let (_pins, mut datapath) =
        setup(EndpointInfo::EGRESS_ENFORCED | EndpointInfo::INGRESS_ENFORCED);
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    let syn = tcp_syn_to(80);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &syn).1,
        Reason::Forwarded
    );
    // The policy changes: the exact-port allow is replaced by a port range
    // that still covers 80, and an unrelated deny appears.
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_ANY_PORT + 12,
        POLICY_ALLOW,
    );
    let key = PolicyKey {
        endpoint_id: ENDPOINT_ID,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity: PEER_IDENTITY,
        protocol: ip_proto::TCP,
        pad1: 0,
        port: 80u16.to_be_bytes(),
    };
    maps::remove_policy(datapath.ebpf_mut(), POLICY_PREFIX_FULL, key).unwrap();
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::UDP,
        0,
        POLICY_PREFIX_ANY_PORT,
        POLICY_DENY,
    );
    maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
    let mut ack = syn.clone();
    ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &ack).1,
        Reason::Forwarded,
        "still allowed: the connection goes on"
    );
    let reply = reversed_ipv4(&ack, Some(0x10));
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &reply).1,
        Reason::Forwarded,
        "its replies too"
    );
}

mod events {
    use super::*;
    use weir_abi::events::*;
    use weir_abi::FlowEvent;

    fn drain(datapath: &mut Datapath) -> Vec<FlowEvent> {
        maps::drain_events(datapath.ebpf_mut()).unwrap()
    }

    #[test]
    fn a_new_allowed_connection_reports_its_verdict_and_a_trace_then_goes_quiet() {
        let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
        rule(
            &mut datapath,
            TrafficDirection::Egress,
            PEER_IDENTITY,
            6,
            80,
            POLICY_PREFIX_FULL,
            POLICY_ALLOW,
        );
        // Entries written by rule() carry match type 0; set the real one.
        let key = PolicyKey {
            endpoint_id: ENDPOINT_ID,
            direction: TrafficDirection::Egress as u8,
            pad0: 0,
            identity: PEER_IDENTITY,
            protocol: ip_proto::TCP,
            pad1: 0,
            port: 80u16.to_be_bytes(),
        };
        maps::set_policy(
            datapath.ebpf_mut(),
            POLICY_PREFIX_FULL,
            key,
            PolicyEntry {
                verdict: POLICY_ALLOW,
                match_type: MATCH_L3_L4,
                pad: [0; 2],
                rule: 1,
            },
        )
        .unwrap();
        drain(&mut datapath);
        let syn = tcp_syn_to(80);
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &syn).1,
            Reason::Forwarded
        );
        let events = drain(&mut datapath);
        assert_eq!(events.len(), 2, "{events:?}");
        let verdict = &events[0];
        assert_eq!(
            (verdict.kind, verdict.verdict_reason, verdict.match_type),
            (EVENT_POLICY_VERDICT, 0, MATCH_L3_L4)
        );
        assert_eq!(
            (verdict.src_identity, verdict.dst_identity),
            (30_000, PEER_IDENTITY)
        );
        assert_eq!(verdict.endpoint_id, ENDPOINT_ID);
        assert_eq!(&verdict.saddr[..4], &packets::IP4_A);
        assert_eq!(verdict.dport, 80u16.to_be_bytes());
        let trace = &events[1];
        assert_eq!(
            (trace.kind, trace.subtype, trace.ct_state),
            (EVENT_TRACE, OBS_FROM_ENDPOINT, CT_NEW)
        );
        assert_eq!(trace.len as usize, syn.len());
        // An established packet without SYN/FIN/RST is not reported.
        let mut ack = syn.clone();
        ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &ack).1,
            Reason::Forwarded
        );
        assert!(drain(&mut datapath).is_empty(), "aggregated away");
        // Its FIN is.
        ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x11;
        run(&mut datapath, ProgramKind::FromPod, &ack);
        let events = drain(&mut datapath);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind, events[0].ct_state, events[0].tcp_flags),
            (EVENT_TRACE, CT_ESTABLISHED, 0x11)
        );
    }

    #[test]
    fn a_denied_connection_reports_its_verdict_and_the_drop_with_the_reason() {
        let (_pins, mut datapath) = setup(EndpointInfo::INGRESS_ENFORCED);
        drain(&mut datapath);
        let inbound = reversed_ipv4(&tcp_syn_to(80), Some(0x02));
        assert_eq!(
            run(&mut datapath, ProgramKind::ToPod, &inbound).1,
            Reason::DropPolicyDenied
        );
        let events = drain(&mut datapath);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (events[0].kind, events[0].verdict_reason),
            (EVENT_POLICY_VERDICT, Reason::DropPolicyDenied as u8)
        );
        assert_eq!(
            (events[1].kind, events[1].subtype),
            (EVENT_DROP, Reason::DropPolicyDenied as u8)
        );
        assert_eq!(
            events[1].flags & FlowEvent::FLAG_INGRESS,
            FlowEvent::FLAG_INGRESS
        );
        assert_eq!(
            (events[1].src_identity, events[1].dst_identity),
            (PEER_IDENTITY, 30_000)
        );
        assert_eq!(maps::events_lost(datapath.ebpf_mut()).unwrap(), 0);
    }

    #[test]
    fn audit_mode_reports_what_policy_would_drop_and_passes_it() {
        let enforced = EndpointInfo::INGRESS_ENFORCED | EndpointInfo::EGRESS_ENFORCED;
        let (_pins, mut datapath) = setup(enforced | EndpointInfo::AUDIT);
        // A deny rule for port 81; nothing allows port 80 (default deny).
        rule(
            &mut datapath,
            TrafficDirection::Egress,
            PEER_IDENTITY,
            ip_proto::TCP,
            81,
            POLICY_PREFIX_FULL,
            POLICY_DENY,
        );
        drain(&mut datapath);
        for (port, would_be) in [(80, Reason::DropPolicyDenied), (81, Reason::DropPolicyDeny)] {
            let syn = tcp_syn_to(port);
            assert_eq!(
                run(&mut datapath, ProgramKind::FromPod, &syn),
                (TC_ACT_OK, Reason::Forwarded),
                "port {port} passes in audit mode"
            );
            let events = drain(&mut datapath);
            assert_eq!(events.len(), 2, "a verdict and a trace: {events:?}");
            let verdict = &events[0];
            assert_eq!(
                (verdict.kind, verdict.verdict_reason),
                (EVENT_POLICY_VERDICT, would_be as u8),
                "port {port}: the verdict names the drop that was not made"
            );
            assert_eq!(verdict.flags & FlowEvent::FLAG_AUDIT, FlowEvent::FLAG_AUDIT);
            assert_eq!(events[1].kind, EVENT_TRACE);
            // The connection is tracked with its (audited) verdict: its
            // next packet is not reported again.
            let mut ack = syn.clone();
            ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
            assert_eq!(
                run(&mut datapath, ProgramKind::FromPod, &ack).1,
                Reason::Forwarded
            );
            assert!(drain(&mut datapath).is_empty());
        }
        // Ingress too.
        let inbound = reversed_ipv4(&tcp_syn_to(82), Some(0x02));
        assert_eq!(
            run(&mut datapath, ProgramKind::ToPod, &inbound),
            (TC_ACT_OK, Reason::Forwarded)
        );
        let events = drain(&mut datapath);
        assert_eq!(
            (events[0].kind, events[0].verdict_reason, events[0].flags),
            (
                EVENT_POLICY_VERDICT,
                Reason::DropPolicyDenied as u8,
                FlowEvent::FLAG_AUDIT | FlowEvent::FLAG_INGRESS
            )
        );
        // Audit mode is about policy only: a forged source still drops.
        let forged = reversed_ipv4(&tcp_syn_to(83), None); // source IP4_B
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &forged),
            (TC_ACT_SHOT, Reason::DropInvalidSourceIp)
        );
        // Out of audit mode (and the revision moved, as the agent's pass
        // does), a new connection to port 80 is dropped again...
        maps::set_endpoint(
            datapath.ebpf_mut(),
            LOOPBACK_IFINDEX,
            local_endpoint(enforced),
        )
        .unwrap();
        maps::advance_policy_revision(datapath.ebpf_mut()).unwrap();
        drain(&mut datapath);
        let mut other_source_port = tcp_syn_to(80);
        other_source_port[packets::ETH_HLEN + packets::IPV4_HLEN] ^= 0x01;
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &other_source_port),
            (TC_ACT_SHOT, Reason::DropPolicyDenied)
        );
        let events = drain(&mut datapath);
        assert_eq!(events[0].flags & FlowEvent::FLAG_AUDIT, 0);
        // ...and so is the audited connection's next packet: its verdict
        // is checked again at the new revision.
        let mut ack = tcp_syn_to(80);
        ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &ack),
            (TC_ACT_SHOT, Reason::DropPolicyDenied)
        );
    }

    #[test]
    fn malformed_packets_on_a_node_device_report_a_drop() {
        let (_pins, mut datapath) = setup(0);
        drain(&mut datapath);
        assert_eq!(
            run(
                &mut datapath,
                ProgramKind::FromNetdev,
                &packets::ipv4_tcp_truncated_l4()
            )
            .1,
            Reason::DropCtInvalidHdr
        );
        let events = drain(&mut datapath);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind, events[0].subtype),
            (EVENT_DROP, Reason::DropCtInvalidHdr as u8)
        );
        // Forwarded node traffic is aggregated away.
        run(&mut datapath, ProgramKind::FromNetdev, &packets::ipv4_udp());
        assert!(drain(&mut datapath).is_empty());
    }

    #[test]
    fn a_full_ring_counts_lost_events() {
        let (_pins, mut datapath) = setup(EndpointInfo::INGRESS_ENFORCED);
        let inbound = reversed_ipv4(&tcp_syn_to(80), Some(0x02));
        // 1 MiB of 80-byte records (plus 8-byte headers) is ~11,900 events;
        // 10,000 denied packets emit 20,000.
        test_run(&mut datapath, ProgramKind::ToPod, &inbound, 10_000).unwrap();
        let lost = maps::events_lost(datapath.ebpf_mut()).unwrap();
        let kept = drain(&mut datapath).len() as u64;
        assert!(lost > 0, "the ring overflowed: {kept} kept");
        assert_eq!(
            kept + lost,
            20_000,
            "every event is either delivered or counted as lost"
        );
    }
}

#[test]
fn prometheus_metrics_count_what_the_datapath_counted() {
    use weir_agent::datapath::SharedDatapath;
    use weir_agent::metrics::{self, AgentMetrics};
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    for _ in 0..3 {
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80));
    }
    run(&mut datapath, ProgramKind::FromNetdev, &packets::ipv4_udp());
    let shared = SharedDatapath::new(datapath);
    let metrics = AgentMetrics::new(shared.clone(), Default::default(), prometheus_registry());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = runtime.block_on(async {
        let listener = metrics::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(metrics::serve(listener, metrics, Default::default()));
        let scrape = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        assert!(scrape("/healthz").await.contains("ok"));
        let body = scrape("/metrics").await;
        server.abort();
        body
    });
    assert!(
        body.contains("weir_drop_count_total{direction=\"egress\",reason=\"Policy denied\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("weir_forward_count_total{direction=\"ingress\"} 1"),
        "{body}"
    );
    assert!(body.contains("weir_datapath_events_lost_total 0"), "{body}");
    // The two peer prefixes fill part of the ipcache.
    let ipcache = body
        .lines()
        .find(|l| l.starts_with("weir_bpf_map_pressure{map_name=\"weir_ipcache\"}"))
        .unwrap_or_else(|| panic!("no ipcache pressure in {body}"));
    let ratio: f64 = ipcache.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0, "{ipcache}");
}

fn prometheus_registry() -> prometheus::Registry {
    prometheus::Registry::new()
}

#[test]
fn new_entries_beyond_the_endpoints_budget_are_rate_limited() {
    require_root();
    let pins = PinDir::new();
    // One a second: nothing refills within the few microseconds the
    // test runs take.
    let options = weir_agent::datapath::LoadOptions {
        ct_new_rate: 1,
        ct_new_burst: 3,
        ..weir_agent::datapath::LoadOptions::default()
    };
    let mut datapath = Datapath::load_with(pins.path(), &options).unwrap();
    maps::set_endpoint(
        datapath.ebpf_mut(),
        LOOPBACK_IFINDEX,
        EndpointInfo {
            id: ENDPOINT_ID,
            flags: 0,
            pad: 0,
            identity: 30_000,
            ipv4: packets::IP4_A,
            ..EndpointInfo::default()
        },
    )
    .unwrap();
    // The burst: three new flows are tracked, the fourth is refused.
    for port in [80, 81, 82] {
        assert_eq!(
            run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(port)).1,
            Reason::Forwarded,
            "new flow to port {port}"
        );
    }
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(83)),
        (TC_ACT_SHOT, Reason::DropRateLimited)
    );
    assert_eq!(maps::conntrack(datapath.ebpf_mut()).unwrap().len(), 3);
    // What is tracked goes on: its packets and its replies take nothing.
    let syn = tcp_syn_to(80);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &syn).1,
        Reason::Forwarded
    );
    assert_eq!(
        run(
            &mut datapath,
            ProgramKind::ToPod,
            &reversed_ipv4(&syn, Some(0x12))
        )
        .1,
        Reason::Forwarded
    );
    // Another pod's new flows to this one are not charged to it.
    let inbound = reversed_ipv4(&tcp_syn_to(84), Some(0x02));
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &inbound).1,
        Reason::Forwarded
    );
    // The endpoint goes and a new one gets its id: it starts with a full
    // budget, not with what the old one used up.
    maps::remove_endpoint(datapath.ebpf_mut(), LOOPBACK_IFINDEX).unwrap();
    let entry = EndpointInfo {
        id: ENDPOINT_ID,
        flags: 0,
        pad: 0,
        identity: 30_001,
        ipv4: packets::IP4_A,
        ..EndpointInfo::default()
    };
    assert!(maps::set_new_endpoint(datapath.ebpf_mut(), LOOPBACK_IFINDEX, entry).unwrap());
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(83)).1,
        Reason::Forwarded
    );
}

#[test]
fn a_forged_source_never_reaches_service_nat() {
    use weir_abi::lb::{Lb4Backend, Lb4Key, Lb4Service, LB_SCOPE_INTERNAL};
    use weir_agent::datapath::maps::lb;
    let (_pins, mut datapath) = setup(0);
    // The peer's address, port 80, is a ClusterIP with one backend.
    let ebpf = datapath.ebpf_mut();
    let backend = Lb4Backend {
        address: [10, 99, 0, 3],
        port: 8080u16.to_be_bytes(),
        protocol: ip_proto::TCP,
        state: Lb4Backend::STATE_ACTIVE,
        flags: 0,
        pad: [0; 3],
    };
    lb::set_backend(ebpf, 1, backend).unwrap();
    let key = |slot: u16| Lb4Key {
        address: packets::IP4_B,
        port: 80u16.to_be_bytes(),
        backend_slot: slot,
        protocol: ip_proto::TCP,
        scope: LB_SCOPE_INTERNAL,
        pad: [0; 2],
    };
    let slot = Lb4Service {
        backend_id: 1,
        ..Lb4Service::default()
    };
    lb::set_service(ebpf, key(1), slot).unwrap();
    let service = Lb4Service {
        count: 1,
        rev_nat_id: 1,
        flags: Lb4Service::FLAG_CLUSTER_IP,
        ..Lb4Service::default()
    };
    lb::set_service(ebpf, key(0), service).unwrap();

    // From an address the pod does not own: dropped before service NAT,
    // which inserts nothing.
    let mut forged = tcp_syn_to(80);
    let ip = packets::ETH_HLEN;
    forged[ip + 12..ip + 16].copy_from_slice(&[10, 99, 0, 77]);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &forged),
        (TC_ACT_SHOT, Reason::DropInvalidSourceIp)
    );
    assert!(lb::nat_entries(datapath.ebpf_mut()).unwrap().is_empty());
    // From its own address: balanced, the forward and reply mappings made.
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &tcp_syn_to(80)).1,
        Reason::Forwarded
    );
    assert_eq!(lb::nat_entries(datapath.ebpf_mut()).unwrap().len(), 2);
}

/// Issue 18 item 3: the programs' debug messages (aya-log) explain a
/// verdict once switched on for the endpoint or the node, and say nothing
/// while off; switching needs no reload.
#[test]
fn debug_messages_explain_the_verdict_only_while_switched_on() {
    use weir_agent::datapath::debug::{set_debug, DebugFeed, DebugReader, DebugTarget};
    let (_pins, mut datapath) = setup(EndpointInfo::EGRESS_ENFORCED);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut reader = DebugReader::new(datapath.ebpf_mut(), DebugFeed::default()).unwrap();
    let mut texts = |datapath: &mut Datapath, frame: &[u8]| {
        let before = reader.recent().len();
        run(datapath, ProgramKind::FromPod, frame);
        reader.drain();
        let recent = reader.recent();
        recent[before..]
            .iter()
            .map(|m| (m.endpoint_id, m.text.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&mut datapath, &tcp_syn_to(81)), [], "off by default");
    set_debug(
        datapath.ebpf_mut(),
        DebugTarget::Endpoint(ENDPOINT_ID),
        true,
    )
    .unwrap();
    let said = texts(&mut datapath, &tcp_syn_to(81));
    let id = ENDPOINT_ID;
    assert_eq!(
        said,
        [
            (id, format!("ep {id} egress: ct new proto 6 10.99.0.1:40000 -> 10.99.0.2:81")),
            (id, format!("ep {id} egress: policy peer identity {PEER_IDENTITY} address identity 0 proto 6 port 81: dropped, reason 133 (match 0)")),
        ]
    );
    rule(
        &mut datapath,
        TrafficDirection::Egress,
        PEER_IDENTITY,
        ip_proto::TCP,
        80,
        POLICY_PREFIX_FULL,
        POLICY_ALLOW,
    );
    let said = texts(&mut datapath, &tcp_syn_to(80));
    assert_eq!(
        said[1].1,
        format!("ep {id} egress: policy peer identity {PEER_IDENTITY} address identity 0 proto 6 port 80: allowed (match 0)")
    );
    // Another endpoint switched on says nothing about this one; the node
    // switch covers every endpoint.
    set_debug(
        datapath.ebpf_mut(),
        DebugTarget::Endpoint(ENDPOINT_ID),
        false,
    )
    .unwrap();
    set_debug(
        datapath.ebpf_mut(),
        DebugTarget::Endpoint(ENDPOINT_ID + 1),
        true,
    )
    .unwrap();
    assert_eq!(texts(&mut datapath, &tcp_syn_to(81)), []);
    set_debug(datapath.ebpf_mut(), DebugTarget::Node, true).unwrap();
    assert_eq!(texts(&mut datapath, &tcp_syn_to(81)).len(), 2);
    set_debug(datapath.ebpf_mut(), DebugTarget::Node, false).unwrap();
    assert_eq!(texts(&mut datapath, &tcp_syn_to(81)), []);
}
