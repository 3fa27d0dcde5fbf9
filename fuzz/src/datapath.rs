//! The kernel parser: generated Ethernet frames through the real TC
//! programs, loaded into the kernel once per process (needs root and the
//! built datapath), with `BPF_PROG_TEST_RUN`.
//!
//! The input drives [`frame`]: mostly well-formed-looking IPv4/IPv6 frames
//! (VLAN tags, IPv4 options and fragments, IPv6 extension header chains,
//! TCP/UDP/ICMP/ICMPv6/SCTP headers, other protocols) with any field
//! possibly wrong, cut short or padded; one in eight is raw bytes. A first
//! byte picks the pod's endpoint state (ready and open, enforced without
//! any rule, not ready, absent), so the pod programs' paths are all taken.
//!
//! What must hold for every frame and each of the four programs:
//! - the verdict is one of the documented TC actions: `TC_ACT_OK` (0) for
//!   a forwarded packet, `TC_ACT_SHOT` (2) for a drop, `TC_ACT_REDIRECT` (7)
//!   for the answer to a connection to a service without backends;
//! - the metrics map moved by exactly one packet of the frame's length,
//!   under the program's direction and a documented reason that agrees with
//!   the verdict;
//! - a frame the kernel refuses to run (shorter than Ethernet, or an IP
//!   header below the minimum: `EINVAL`) moves nothing.

use std::sync::{Mutex, OnceLock};

use arbitrary::Unstructured;
use weir_abi::{EndpointInfo, Reason};
use weir_agent::datapath::{maps, Datapath, ProgramKind};
use weir_tests::datapath::{load, test_run, PinDir, TEST_RUN_IFINDEX};
use weir_tests::packets::{IP4_A, IP4_B, IP6_A, IP6_B, MAC_A, MAC_B};

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

/// The datapath of this process: loaded on first use, its pins removed at
/// once (the maps and programs live as long as the process holds them, and
/// nothing is left in bpffs when libFuzzer exits without unwinding).
fn datapath() -> &'static Mutex<Datapath> {
    static DATAPATH: OnceLock<Mutex<Datapath>> = OnceLock::new();
    DATAPATH.get_or_init(|| {
        let pins = PinDir::new();
        let datapath = load(&pins).unwrap_or_else(|e| {
            panic!(
                "the datapath target loads the kernel programs (root, `cargo xtask build`): {e:#}"
            )
        });
        drop(pins);
        Mutex::new(datapath)
    })
}

/// What one input did, for the runners' counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub runs: u32,
    pub refused: u32,
}

pub fn fuzz(data: &[u8]) {
    run(data);
}

/// Runs the frame `data` describes through every program; panics when a
/// property does not hold.
pub fn run(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let state = u.int_in_range(0..=7u8).unwrap_or(0);
    let frame = frame(&mut u);
    let mut datapath = datapath()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    set_endpoint_state(&mut datapath, state);
    let mut outcome = Outcome::default();
    for program in ProgramKind::ALL {
        if check(&mut datapath, program, &frame) {
            outcome.runs += 1;
        } else {
            outcome.refused += 1;
        }
    }
    outcome
}

/// 0-4: ready and open (most inputs); 5: enforced both ways with no rule
/// (default deny); 6: not ready; 7: no endpoint at all.
fn set_endpoint_state(datapath: &mut Datapath, state: u8) {
    let open = EndpointInfo {
        id: 1,
        flags: 0,
        pad: 0,
        identity: weir_abi::identity::INIT,
        ipv4: IP4_A,
        ipv6: IP6_A,
        ipv6_link_local: [0; 8],
    };
    let info = match state {
        0..=4 => Some(open),
        5 => Some(EndpointInfo {
            flags: EndpointInfo::INGRESS_ENFORCED | EndpointInfo::EGRESS_ENFORCED,
            identity: 30_000,
            ..open
        }),
        6 => Some(EndpointInfo {
            ipv6: IP6_A,
            ..EndpointInfo::not_ready(1, IP4_A)
        }),
        _ => None,
    };
    let written = match info {
        Some(info) => maps::set_endpoint(datapath.ebpf_mut(), TEST_RUN_IFINDEX, info),
        None => maps::remove_endpoint(datapath.ebpf_mut(), TEST_RUN_IFINDEX),
    };
    written.expect("writing the test endpoint");
}

/// One run of `frame` through `program`; false when the kernel refused to
/// run it.
fn check(datapath: &mut Datapath, program: ProgramKind, frame: &[u8]) -> bool {
    let name = program.name();
    let before = datapath.metrics().expect("reading weir_metrics");
    let run = test_run(datapath, program, frame, 1);
    let delta = datapath
        .metrics()
        .expect("reading weir_metrics")
        .since(&before);
    let moved: Vec<(u8, u8, weir_abi::MetricsValue)> = delta.iter().collect();
    let run = match run {
        Ok(run) => run,
        Err(error) => {
            let einval = error
                .chain()
                .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
                .any(|io| io.raw_os_error() == Some(libc::EINVAL));
            assert!(
                einval || format!("{error:#}").contains("Invalid argument"),
                "{name}: BPF_PROG_TEST_RUN failed other than by refusing the frame: {error:#}"
            );
            assert!(
                moved.is_empty(),
                "{name}: a frame the kernel refused moved counters: {moved:?}"
            );
            return false;
        }
    };
    assert!(
        [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].contains(&run.verdict),
        "{name}: verdict {} is not a documented TC action",
        run.verdict
    );
    let [(reason, direction, value)] = moved[..] else {
        panic!(
            "{name}: verdict {} moved {} counters, not one: {moved:?}",
            run.verdict,
            moved.len()
        );
    };
    assert_eq!(
        (value.packets, value.bytes),
        (1, frame.len() as u64),
        "{name}: the counter moved by other than one packet of {} bytes",
        frame.len()
    );
    assert_eq!(
        direction,
        program.direction() as u8,
        "{name}: counted in the wrong direction"
    );
    let reason = Reason::from_u8(reason)
        .unwrap_or_else(|| panic!("{name}: reason {reason} is not a documented one"));
    let agrees = match run.verdict {
        TC_ACT_OK => !reason.is_drop(),
        TC_ACT_SHOT => reason.is_drop(),
        _ => reason == Reason::DropNoService,
    };
    assert!(
        agrees,
        "{name}: verdict {} with reason {reason:?}",
        run.verdict
    );
    true
}

/// The frame the input describes.
pub fn frame(u: &mut Unstructured<'_>) -> Vec<u8> {
    if u.ratio(1, 8).unwrap_or(false) {
        let len = u.int_in_range(0..=200usize).unwrap_or(0);
        return u.bytes(len.min(u.len())).unwrap_or_default().to_vec();
    }
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    // A VLAN tag (one frame in eight, two in 64): the kernel strips tags
    // before TC on real devices, so a tagged frame here is not IP to the
    // programs, which must still count and pass it.
    let tags = match u.int_in_range(0..=63u8).unwrap_or(0) {
        0 => 2,
        1..=7 => 1,
        _ => 0,
    };
    for _ in 0..tags {
        let tpid: u16 = *u.choose(&[0x8100, 0x88a8]).unwrap_or(&0x8100);
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&u.arbitrary::<u16>().unwrap_or(0).to_be_bytes());
    }
    match u.int_in_range(0..=9u8).unwrap_or(0) {
        0..=4 => ipv4(u, &mut frame),
        5..=7 => ipv6(u, &mut frame),
        8 => {
            frame.extend_from_slice(&0x0806u16.to_be_bytes());
            let len = u.int_in_range(0..=28usize).unwrap_or(28);
            frame.extend_from_slice(u.bytes(len.min(u.len())).unwrap_or_default());
        }
        _ => {
            frame.extend_from_slice(&u.arbitrary::<u16>().unwrap_or(0).to_be_bytes());
            let len = u.int_in_range(0..=64usize).unwrap_or(0);
            frame.extend_from_slice(u.bytes(len.min(u.len())).unwrap_or_default());
        }
    }
    // Cut short (mostly after the Ethernet header, which the kernel needs
    // to run the frame at all), or padded to the Ethernet minimum.
    match u.int_in_range(0..=31u8).unwrap_or(0) {
        0 => {
            let at = u.int_in_range(0..=frame.len()).unwrap_or(frame.len());
            frame.truncate(at);
        }
        1..=4 => {
            let at = u
                .int_in_range(14.min(frame.len())..=frame.len())
                .unwrap_or(frame.len());
            frame.truncate(at);
        }
        5..=7 if frame.len() < 60 => frame.resize(60, 0),
        _ => {}
    }
    frame
}

fn ipv4(u: &mut Unstructured<'_>, frame: &mut Vec<u8>) {
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let start = frame.len();
    let options = if u.ratio(1, 6).unwrap_or(false) {
        u.int_in_range(0..=40usize).unwrap_or(0) / 4 * 4
    } else {
        0
    };
    let mut ihl = (5 + options / 4) as u8;
    if u.ratio(1, 16).unwrap_or(false) {
        ihl = u.int_in_range(0..=15).unwrap_or(5);
    }
    let version = if u.ratio(1, 32).unwrap_or(false) {
        u.int_in_range(0..=15u8).unwrap_or(4)
    } else {
        4
    };
    let protocol = l4_protocol(u);
    // Flags and fragment offset: none, DF, a first fragment (MF), a later one.
    let fragment: u16 = match u.int_in_range(0..=5u8).unwrap_or(0) {
        0..=2 => 0,
        3 => 0x4000,
        4 => 0x2000,
        _ => {
            u.int_in_range(1..=0x1fffu16).unwrap_or(185)
                | if u.arbitrary().unwrap_or(false) {
                    0x2000
                } else {
                    0
                }
        }
    };
    let source = address4(u, IP4_A);
    let destination = address4(u, IP4_B);
    frame.extend_from_slice(&[(version << 4) | (ihl & 0x0f), 0, 0, 0]);
    frame.extend_from_slice(&[0, 1]);
    frame.extend_from_slice(&fragment.to_be_bytes());
    frame.extend_from_slice(&[64, protocol, 0, 0]);
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&destination);
    for _ in 0..options {
        frame.push(u.arbitrary().unwrap_or(1));
    }
    let l4_start = frame.len();
    if fragment & 0x1fff == 0 {
        l4(u, protocol, false, frame);
    } else {
        let len = u.int_in_range(0..=24usize).unwrap_or(8);
        frame.extend(std::iter::repeat_n(0xab, len));
    }
    let mut total = (frame.len() - start) as u16;
    if u.ratio(1, 12).unwrap_or(false) {
        total = u.arbitrary().unwrap_or(total);
    }
    frame[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
    let header_end = (start + usize::from(ihl) * 4).min(l4_start).max(start + 20);
    let checksum = checksum(&frame[start..header_end]);
    frame[start + 10..start + 12].copy_from_slice(&checksum.to_be_bytes());
}

fn ipv6(u: &mut Unstructured<'_>, frame: &mut Vec<u8>) {
    frame.extend_from_slice(&0x86DDu16.to_be_bytes());
    let start = frame.len();
    let version = if u.ratio(1, 32).unwrap_or(false) {
        u.int_in_range(0..=15u8).unwrap_or(6)
    } else {
        6
    };
    frame.extend_from_slice(&[version << 4, 0, 0, 0, 0, 0, 0, 64]);
    frame.extend_from_slice(&address6(u, IP6_A));
    frame.extend_from_slice(&address6(u, IP6_B));
    // Extension headers: hop-by-hop, routing, fragment, destination options.
    let count = if u.ratio(1, 3).unwrap_or(false) {
        u.int_in_range(1..=6u8).unwrap_or(1)
    } else {
        0
    };
    let mut next_at = start + 6;
    let mut later_fragment = false;
    for _ in 0..count {
        let kind: u8 = *u.choose(&[0u8, 43, 44, 60, 51]).unwrap_or(&0);
        frame[next_at] = kind;
        next_at = frame.len();
        if kind == 44 {
            let offset: u16 = if u.ratio(1, 2).unwrap_or(false) {
                0
            } else {
                u.int_in_range(1..=0x1fff).unwrap_or(1)
            };
            later_fragment |= offset != 0;
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(
                &(offset << 3 | u16::from(u.arbitrary::<bool>().unwrap_or(false))).to_be_bytes(),
            );
            frame.extend_from_slice(&[0, 0, 0, 1]);
        } else {
            let words = if u.ratio(1, 10).unwrap_or(false) {
                u.arbitrary::<u8>().unwrap_or(0)
            } else {
                u.int_in_range(0..=2u8).unwrap_or(0)
            };
            // AH counts 4-byte words minus 2, the others 8-byte words minus 1.
            let len = if kind == 51 {
                (usize::from(words) + 2) * 4
            } else {
                (usize::from(words) + 1) * 8
            };
            frame.extend_from_slice(&[0, words]);
            frame.extend(std::iter::repeat_n(0, len.saturating_sub(2).min(64)));
        }
    }
    let protocol = l4_protocol(u);
    let protocol = match protocol {
        1 => 58, // ICMPv6 rather than ICMP, mostly
        other => other,
    };
    frame[next_at] = protocol;
    if later_fragment {
        frame.extend(std::iter::repeat_n(0xab, 8));
    } else {
        l4(u, protocol, true, frame);
    }
    let mut payload = (frame.len() - start - 40) as u16;
    if u.ratio(1, 12).unwrap_or(false) {
        payload = u.arbitrary().unwrap_or(payload);
    }
    frame[start + 4..start + 6].copy_from_slice(&payload.to_be_bytes());
}

fn l4_protocol(u: &mut Unstructured<'_>) -> u8 {
    match u.int_in_range(0..=11u8).unwrap_or(0) {
        0..=3 => 6,
        4..=6 => 17,
        7..=8 => 1,
        9 => 132,
        10 => 58,
        _ => u.arbitrary().unwrap_or(47),
    }
}

fn l4(u: &mut Unstructured<'_>, protocol: u8, v6: bool, frame: &mut Vec<u8>) {
    let port = |u: &mut Unstructured<'_>, usual: u16| -> [u8; 2] {
        if u.ratio(3, 4).unwrap_or(true) {
            usual
        } else {
            u.arbitrary().unwrap_or(usual)
        }
        .to_be_bytes()
    };
    match protocol {
        6 => {
            frame.extend_from_slice(&port(u, 40000));
            frame.extend_from_slice(&port(u, 80));
            frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
            let data_offset = if u.ratio(1, 10).unwrap_or(false) {
                u.int_in_range(0..=15u8).unwrap_or(5)
            } else {
                5
            };
            let flags: u8 = if u.ratio(1, 2).unwrap_or(true) {
                0x02
            } else {
                u.arbitrary().unwrap_or(0x10)
            };
            frame.extend_from_slice(&[data_offset << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
            if data_offset > 5 {
                frame.extend(std::iter::repeat_n(1, (usize::from(data_offset) - 5) * 4));
            }
        }
        17 => {
            let payload = b"weir fuzz";
            frame.extend_from_slice(&port(u, 40000));
            frame.extend_from_slice(&port(u, 53));
            let len = (8 + payload.len()) as u16;
            let len = if u.ratio(1, 10).unwrap_or(false) {
                u.arbitrary().unwrap_or(len)
            } else {
                len
            };
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(payload);
        }
        1 | 58 => {
            let echo = if v6 || protocol == 58 { 128 } else { 8 };
            let kind = if u.ratio(2, 3).unwrap_or(true) {
                echo
            } else {
                u.arbitrary().unwrap_or(echo)
            };
            frame.extend_from_slice(&[kind, u.arbitrary().unwrap_or(0), 0, 0, 0, 7, 0, 1]);
            frame.extend_from_slice(b"weir fuzz");
        }
        132 => {
            frame.extend_from_slice(&port(u, 40000));
            frame.extend_from_slice(&port(u, 9999));
            frame.extend_from_slice(&[0; 8]);
            frame.extend_from_slice(&[1, 0, 0, 20]);
            frame.extend_from_slice(&[0; 16]);
        }
        _ => {
            let len = u.int_in_range(0..=32usize).unwrap_or(0);
            frame.extend_from_slice(u.bytes(len.min(u.len())).unwrap_or_default());
        }
    }
}

fn address4(u: &mut Unstructured<'_>, usual: [u8; 4]) -> [u8; 4] {
    match u.int_in_range(0..=7u8).unwrap_or(0) {
        0..=5 => usual,
        6 => [10, 99, 0, u.arbitrary().unwrap_or(3)],
        _ => u.arbitrary().unwrap_or(usual),
    }
}

fn address6(u: &mut Unstructured<'_>, usual: [u8; 16]) -> [u8; 16] {
    if u.ratio(7, 8).unwrap_or(true) {
        usual
    } else {
        u.arbitrary().unwrap_or(usual)
    }
}

/// The Internet checksum of an IPv4 header (its checksum field zero).
fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, w)| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
