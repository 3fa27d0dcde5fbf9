//! The kernel programs, loaded into the real kernel and run on crafted
//! packets with BPF_PROG_TEST_RUN: the verifier accepts every program, and
//! each packet gets the expected verdict and exactly the expected counter
//! change.

use weir_abi::{Reason, TrafficDirection};
use weir_agent::datapath::{Datapath, ProgramKind};
use weir_tests::datapath::{load, load_with_open_endpoint, test_run, PinDir, TEST_RUN_IFINDEX};
use weir_tests::{packets, require_root};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// Runs `frame` once through `program` and asserts the verdict and that the
/// only counter that moved is (reason, the program's direction), by exactly
/// one packet of the frame's length.
fn assert_verdict(
    datapath: &mut Datapath,
    program: ProgramKind,
    case: &str,
    frame: &[u8],
    reason: Reason,
) {
    let before = datapath.metrics().expect("read metrics");
    let run = test_run(datapath, program, frame, 1)
        .unwrap_or_else(|e| panic!("{case} through {}: {e:#}", program.name()));
    let delta = datapath.metrics().expect("read metrics").since(&before);

    let expected_verdict = if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    };
    assert_eq!(
        run.verdict,
        expected_verdict,
        "{case} through {}: verdict",
        program.name()
    );
    let moved: Vec<_> = delta.iter().collect();
    let direction = program.direction();
    assert_eq!(
        moved,
        vec![(
            reason as u8,
            direction as u8,
            weir_abi::MetricsValue {
                packets: 1,
                bytes: frame.len() as u64
            }
        )],
        "{case} through {}: counter change (reason, direction, value)",
        program.name()
    );
}

#[test]
fn every_program_passes_the_verifier_and_pins_its_maps() {
    require_root();
    let pins = PinDir::new();
    let mut datapath = load(&pins).expect("the verifier accepts every program");
    for kind in ProgramKind::ALL {
        let info = datapath
            .program_mut(kind)
            .expect("program present")
            .info()
            .expect("program is loaded in the kernel");
        assert_eq!(
            info.name_as_str(),
            Some(&kind.name()[..15.min(kind.name().len())])
        );
    }
    assert!(
        pins.path().join(weir_abi::map_names::METRICS).exists(),
        "weir_metrics is pinned under {}",
        pins.path().display()
    );
}

#[test]
fn well_formed_packets_pass_and_count_as_forwarded() {
    require_root();
    let pins = PinDir::new();
    let mut datapath = load_with_open_endpoint(&pins).unwrap();
    let cases = [
        ("IPv4/TCP", packets::ipv4_tcp_syn()),
        ("IPv4/UDP", packets::ipv4_udp()),
        ("IPv4/ICMP", packets::ipv4_icmp_echo()),
        ("IPv4/SCTP", packets::ipv4_sctp()),
        ("IPv4 later fragment", packets::ipv4_later_fragment()),
        ("IPv4/UDP padded to 60 bytes", packets::ipv4_udp_padded()),
        ("IPv6/TCP", packets::ipv6_tcp_syn()),
        ("IPv6/UDP", packets::ipv6_udp()),
        ("IPv6/ICMPv6", packets::ipv6_icmp_echo()),
        ("IPv6 hop-by-hop + UDP", packets::ipv6_hop_by_hop_udp()),
        ("ARP (non-IP)", packets::arp_request()),
    ];
    for program in ProgramKind::POD_AND_NETDEV {
        for (case, frame) in &cases {
            assert_verdict(&mut datapath, program, case, frame, Reason::Forwarded);
        }
    }
}

#[test]
fn pod_programs_drop_everything_until_the_endpoint_is_ready() {
    use weir_abi::EndpointInfo;
    use weir_agent::datapath::maps;

    require_root();
    let pins = PinDir::new();
    let mut datapath = load(&pins).unwrap();
    let ip = [
        ("IPv4/TCP", packets::ipv4_tcp_syn()),
        ("IPv6/UDP", packets::ipv6_udp()),
    ];
    let pod_programs = [ProgramKind::FromPod, ProgramKind::ToPod];
    // No entry at all: an interface set up but not registered yet.
    for program in pod_programs {
        for (case, frame) in &ip {
            let case = format!("{case}, no endpoint");
            assert_verdict(&mut datapath, program, &case, frame, Reason::DropEpNotReady);
        }
        assert_verdict(
            &mut datapath,
            program,
            "ARP, no endpoint",
            &packets::arp_request(),
            Reason::Forwarded,
        );
    }
    // The entry the agent writes at attach time.
    let not_ready = EndpointInfo {
        ipv6: packets::IP6_A,
        ..EndpointInfo::not_ready(1, packets::IP4_A)
    };
    maps::set_endpoint(datapath.ebpf_mut(), TEST_RUN_IFINDEX, not_ready).unwrap();
    for program in pod_programs {
        for (case, frame) in &ip {
            let case = format!("{case}, endpoint not ready");
            assert_verdict(&mut datapath, program, &case, frame, Reason::DropEpNotReady);
        }
    }
    // The source check is on from the first entry.
    assert_verdict(
        &mut datapath,
        ProgramKind::FromPod,
        "IPv4 from another address, endpoint not ready",
        &packets::ipv4_udp_from([10, 99, 0, 77]),
        Reason::DropInvalidSourceIp,
    );
    // Regenerated (here: no policy selects it): traffic passes.
    let ready = EndpointInfo {
        flags: 0,
        identity: 30_000,
        ..not_ready
    };
    maps::set_endpoint(datapath.ebpf_mut(), TEST_RUN_IFINDEX, ready).unwrap();
    for program in pod_programs {
        for (case, frame) in &ip {
            let case = format!("{case}, endpoint ready");
            assert_verdict(&mut datapath, program, &case, frame, Reason::Forwarded);
        }
    }
}

#[test]
fn malformed_packets_are_dropped_under_their_own_reason() {
    require_root();
    let pins = PinDir::new();
    let mut datapath = load_with_open_endpoint(&pins).unwrap();
    let cases = [
        (
            "IPv4 total length beyond frame",
            packets::ipv4_total_length_beyond_frame(),
            Reason::DropInvalid,
        ),
        (
            "IPv4 IHL below 5",
            packets::ipv4_bad_ihl(),
            Reason::DropInvalid,
        ),
        (
            "IPv4/TCP header cut at 8 bytes",
            packets::ipv4_tcp_truncated_l4(),
            Reason::DropCtInvalidHdr,
        ),
        (
            "IPv4/TCP data offset below 5",
            packets::ipv4_tcp_bad_data_offset(),
            Reason::DropCtInvalidHdr,
        ),
        (
            "IPv4/UDP header cut at 4 bytes",
            packets::ipv4_udp_truncated_l4(),
            Reason::DropCtInvalidHdr,
        ),
        (
            "IPv4/ICMP header cut at 4 bytes",
            packets::ipv4_icmp_truncated_l4(),
            Reason::DropCtInvalidHdr,
        ),
        (
            "IPv6/TCP header cut at 8 bytes",
            packets::ipv6_tcp_truncated_l4(),
            Reason::DropCtInvalidHdr,
        ),
        (
            "IPv6 extension header beyond packet",
            packets::ipv6_exthdr_beyond_packet(),
            Reason::DropInvalidExthdr,
        ),
        (
            "IPv6 with 5 extension headers",
            packets::ipv6_too_many_exthdrs(),
            Reason::DropInvalidExthdr,
        ),
    ];
    for program in ProgramKind::ALL {
        for (case, frame, reason) in &cases {
            assert_verdict(&mut datapath, program, case, frame, *reason);
        }
    }
}

#[test]
fn counters_add_up_over_repeated_runs() {
    require_root();
    let pins = PinDir::new();
    let mut datapath = load_with_open_endpoint(&pins).unwrap();
    let frame = packets::ipv4_udp();
    let before = datapath.metrics().unwrap();
    let run = test_run(&mut datapath, ProgramKind::FromPod, &frame, 1000).unwrap();
    assert_eq!(run.verdict, TC_ACT_OK);
    let delta = datapath.metrics().unwrap().since(&before);
    let counted = delta.get(Reason::Forwarded, TrafficDirection::Egress);
    assert_eq!(counted.packets, 1000);
    assert_eq!(counted.bytes, 1000 * frame.len() as u64);
}

#[test]
fn pinned_maps_survive_a_reload() {
    require_root();
    let pins = PinDir::new();
    let frame = packets::ipv6_tcp_syn();
    {
        let mut first = load_with_open_endpoint(&pins).unwrap();
        test_run(&mut first, ProgramKind::ToPod, &frame, 3).unwrap();
    } // the first agent "exits"; its maps stay pinned
    let second = load(&pins).unwrap();
    let counted = second
        .metrics()
        .unwrap()
        .get(Reason::Forwarded, TrafficDirection::Ingress);
    assert_eq!(counted.packets, 3, "counters kept in the pinned map");
    assert_eq!(counted.bytes, 3 * frame.len() as u64);
}

#[test]
fn loading_refuses_a_pin_directory_outside_bpffs() {
    require_root();
    let dir = std::env::temp_dir().join(weir_tests::names::unique());
    let err = match Datapath::load(&dir) {
        Ok(_) => panic!("loading with pins outside bpffs must fail"),
        Err(e) => e.to_string(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains("not on a bpf filesystem"), "{err}");
}
