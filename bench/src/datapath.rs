//! The per-packet time of every kernel program on crafted packets, measured
//! in the kernel with BPF_PROG_TEST_RUN (the kernel times `repeat`
//! back-to-back runs and reports the mean). Each measurement is taken `runs`
//! times; the median and range are printed. Then the costs of the policy
//! path, of event emission and of service NAT.

use anyhow::{Context, Result};
use weir_agent::datapath::ProgramKind;
use weir_tests::datapath::{load, load_with_open_endpoint, test_run, PinDir};
use weir_tests::packets;

pub fn run(repeat: u32, runs: usize) -> Result<()> {
    weir_tests::require_root();
    let pins = PinDir::new();
    // The pod programs drop everything on an interface without a ready
    // endpoint: measure the path of a pod with no policy.
    let mut datapath = load_with_open_endpoint(&pins)?;
    let cases = [
        ("IPv4/TCP SYN", packets::ipv4_tcp_syn()),
        ("IPv4/UDP", packets::ipv4_udp()),
        ("IPv4/ICMP echo", packets::ipv4_icmp_echo()),
        ("IPv6/TCP SYN", packets::ipv6_tcp_syn()),
        ("IPv6/UDP", packets::ipv6_udp()),
        ("IPv6 hop-by-hop/UDP", packets::ipv6_hop_by_hop_udp()),
        ("ARP (non-IP)", packets::arp_request()),
        (
            "IPv4/TCP truncated (drop)",
            packets::ipv4_tcp_truncated_l4(),
        ),
    ];
    println!(
        "BPF_PROG_TEST_RUN, {repeat} repetitions per measurement, {runs} measurements: \
         ns/packet median (min-max)"
    );
    print!("{:<28}", "packet");
    for program in ProgramKind::POD_AND_NETDEV {
        print!("{:>22}", program.name());
    }
    println!();
    for (case, frame) in &cases {
        print!("{case:<28}");
        for program in ProgramKind::POD_AND_NETDEV {
            let mut samples = Vec::with_capacity(runs);
            for _ in 0..runs {
                let run = test_run(&mut datapath, program, frame, repeat)
                    .with_context(|| format!("{case} through {}", program.name()))?;
                samples.push(run.nanos_per_packet);
            }
            samples.sort_unstable();
            let median = samples[samples.len() / 2];
            let cell = format!("{median} ({}-{})", samples[0], samples[samples.len() - 1]);
            print!("{cell:>22}");
        }
        println!();
    }
    policy_costs(&mut datapath, repeat, runs)
}

/// Per-packet cost of the pod path with policy enforced: an established
/// (tracked, allowed) flow, a new flow (ipcache lookup, two policy lookups,
/// conntrack insert) and a denied flow.
fn policy_costs(
    datapath: &mut weir_agent::datapath::Datapath,
    repeat: u32,
    runs: usize,
) -> Result<()> {
    use weir_abi::policy::*;
    use weir_abi::{EndpointInfo, IpcacheValue, PolicyEntry, PolicyKey, TrafficDirection};
    use weir_agent::datapath::maps;

    let ebpf = datapath.ebpf_mut();
    maps::set_endpoint(
        ebpf,
        1,
        EndpointInfo {
            id: 7,
            flags: EndpointInfo::EGRESS_ENFORCED,
            pad: 0,
            identity: 30_000,
            ipv4: packets::IP4_A,
            ipv6: packets::IP6_A,
            ipv6_link_local: [0; 8],
        },
    )?;
    maps::set_ipcache(
        ebpf,
        "10.99.0.2/32".parse()?,
        IpcacheValue {
            identity: 40_000,
            node_ipv4: [0; 4],
            address_identity: 0,
        },
    )?;
    let key = PolicyKey {
        endpoint_id: 7,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity: 40_000,
        protocol: weir_abi::ip_proto::TCP,
        pad1: 0,
        port: 80u16.to_be_bytes(),
    };
    maps::set_policy(
        ebpf,
        POLICY_PREFIX_FULL,
        key,
        PolicyEntry {
            verdict: POLICY_ALLOW,
            match_type: 0,
            pad: [0; 2],
            rule: 1,
        },
    )?;

    let syn = packets::ipv4_tcp_syn();
    let median = |mut samples: Vec<u128>| {
        samples.sort_unstable();
        format!(
            "{} ({}-{})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    println!();
    println!("weir_from_pod with egress policy enforced: ns/packet median (min-max)");
    // Established: the first repetition creates the entry, the rest find it.
    let established: Vec<u128> = (0..runs)
        .map(|_| test_run(datapath, ProgramKind::FromPod, &syn, repeat).map(|r| r.nanos_per_packet))
        .collect::<Result<_>>()?;
    println!(
        "{:<44}{:>22}",
        "established flow (allowed, tracked)",
        median(established)
    );
    // New: a distinct source port per run, so every run creates an entry.
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
    let new_flows: Vec<u128> = (0..10_000u32)
        .map(|i| {
            let mut frame = syn.clone();
            frame[l4..l4 + 2].copy_from_slice(&(1024 + (i % 60_000) as u16).to_be_bytes());
            frame[l4 + 4..l4 + 8].copy_from_slice(&i.to_be_bytes()); // vary the seq too
            test_run(datapath, ProgramKind::FromPod, &frame, 1).map(|r| r.nanos_per_packet)
        })
        .collect::<Result<_>>()?;
    println!(
        "{:<44}{:>22}",
        "new flow (10,000 flows, 1 packet each)",
        median(new_flows)
    );
    let mut denied = syn.clone();
    denied[l4 + 2..l4 + 4].copy_from_slice(&81u16.to_be_bytes());
    let denied_runs: Vec<u128> = (0..runs)
        .map(|_| {
            test_run(datapath, ProgramKind::FromPod, &denied, repeat).map(|r| r.nanos_per_packet)
        })
        .collect::<Result<_>>()?;
    println!(
        "{:<44}{:>22}",
        "denied (no rule allows port 81)",
        median(denied_runs)
    );
    // A later IPv4 fragment of an allowed datagram: its ports from the
    // first fragment's entry in weir_fragments, then the established path.
    let udp_key = PolicyKey {
        protocol: weir_abi::ip_proto::UDP,
        port: 53u16.to_be_bytes(),
        ..key
    };
    let allow = PolicyEntry {
        verdict: POLICY_ALLOW,
        match_type: 0,
        pad: [0; 2],
        rule: 1,
    };
    maps::set_policy(datapath.ebpf_mut(), POLICY_PREFIX_FULL, udp_key, allow)?;
    let payload = [0x5au8; 3000];
    let (first, later) =
        packets::ipv4_udp_fragments(packets::IP4_A, packets::IP4_B, 53, &payload, 1480, 7);
    test_run(datapath, ProgramKind::FromPod, &first, 1)?;
    let later_runs: Vec<u128> = (0..runs)
        .map(|_| {
            test_run(datapath, ProgramKind::FromPod, &later, repeat).map(|r| r.nanos_per_packet)
        })
        .collect::<Result<_>>()?;
    println!(
        "{:<44}{:>22}",
        "later fragment (ports from the first)",
        median(later_runs)
    );
    // An ICMP "fragmentation needed" from a router about the established
    // flow, into the pod: related (quote parsed, two conntrack lookups).
    let error = packets::ipv4_frag_needed([192, 0, 2, 254], packets::IP4_A, 1200, &syn);
    let error_runs: Vec<u128> = (0..runs)
        .map(|_| test_run(datapath, ProgramKind::ToPod, &error, repeat).map(|r| r.nanos_per_packet))
        .collect::<Result<_>>()?;
    println!(
        "{:<44}{:>22}",
        "ICMP frag needed, related (weir_to_pod)",
        median(error_runs)
    );
    ip_block_costs(datapath, repeat, runs)?;
    event_costs(runs)?;
    debug_costs(runs)?;
    lb_costs()?;
    antispoof_costs(repeat, runs)?;
    masquerade_costs()
}

/// BPF masquerading on `weir_to_netdev` (issue 19 item 3): a local pod's
/// TCP SYN to an outside address, with masquerading off and on: a new
/// connection (a distinct source port per packet, to one of 100 servers:
/// two mappings inserted, a free port found, the packet rewritten) and an established one (one
/// lookup and the rewrite), 10,000 single runs each.
fn masquerade_costs() -> Result<()> {
    use weir_agent::datapath::maps::{self, PodCidrOwner};
    use weir_agent::datapath::{Datapath, LoadOptions};

    let node = std::net::Ipv4Addr::new(192, 0, 2, 11);
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
    let ip = packets::ETH_HLEN;
    let mut syn = packets::ipv4_tcp_syn();
    syn[ip + 16..ip + 20].copy_from_slice(&[203, 0, 113, 10]);
    let median = |mut samples: Vec<u128>| {
        samples.sort_unstable();
        format!(
            "{} ({}-{})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    println!();
    println!(
        "masquerading, weir_to_netdev, a pod's TCP SYN to 203.0.113.10: ns/packet median (min-max)"
    );
    for masquerade in [false, true] {
        let pins = PinDir::new();
        let options = LoadOptions {
            masquerade,
            node_ipv4: Some(node),
            ..LoadOptions::default()
        };
        let mut datapath = Datapath::load_with(pins.path(), &options)?;
        maps::set_pod_cidr(
            datapath.ebpf_mut(),
            "10.99.0.0/24".parse()?,
            PodCidrOwner {
                node_ip: node,
                local: true,
            },
        )?;
        let label = if masquerade { "on" } else { "off" };
        // Every run must pass the packet: a drop would time its report.
        let passed = |run: weir_tests::datapath::Run| {
            if run.verdict == 0 {
                Ok(run.nanos_per_packet)
            } else {
                anyhow::bail!("weir_to_netdev returned {} for the SYN", run.verdict)
            }
        };
        let new_flows: Vec<u128> = (0..10_000u32)
            .map(|i| {
                // 100 servers: a server's connections share its 4,001
                // ports of the node (10,000 to one would exhaust them).
                let mut frame = syn.clone();
                frame[ip + 19] = 1 + (i % 100) as u8;
                frame[l4..l4 + 2].copy_from_slice(&(1024 + i as u16).to_be_bytes());
                test_run(&mut datapath, ProgramKind::ToNetdev, &frame, 1).and_then(passed)
            })
            .collect::<Result<_>>()?;
        println!(
            "{:<44}{:>22}",
            format!("new connection, masquerading {label}"),
            median(new_flows)
        );
        // One run per call, each on the original frame: a repeated test
        // run reuses its packet, which the first run already rewrote.
        test_run(&mut datapath, ProgramKind::ToNetdev, &syn, 1).and_then(passed)?;
        let established: Vec<u128> = (0..10_000)
            .map(|_| test_run(&mut datapath, ProgramKind::ToNetdev, &syn, 1).and_then(passed))
            .collect::<Result<_>>()?;
        println!(
            "{:<44}{:>22}",
            format!("established, masquerading {label}"),
            median(established)
        );
    }
    Ok(())
}

/// The established flow of [`policy_costs`] (egress to 10.99.0.2, a pod of
/// identity 40,000, TCP 80) side by side without and with a NetworkPolicy
/// `ipBlock` covering the peer's address: the peer's ipcache entry carries
/// the address identity of the ipBlock's prefix and the endpoint has an
/// allow for it. Allowed by identity, the flow costs the two policy
/// lookups either way; allowed only by the ipBlock (no identity entry),
/// the address identity's lookup is a third; denied with an ipBlock
/// covering the peer on another port, also three.
fn ip_block_costs(
    datapath: &mut weir_agent::datapath::Datapath,
    repeat: u32,
    runs: usize,
) -> Result<()> {
    use weir_abi::identity::{address_identity, LOCAL_MIN};
    use weir_abi::policy::*;
    use weir_abi::{IpcacheValue, PolicyEntry, PolicyKey, TrafficDirection};
    use weir_agent::datapath::maps;

    let address = address_identity(LOCAL_MIN);
    let key = |identity: u32, port: u16| PolicyKey {
        endpoint_id: 7,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity,
        protocol: weir_abi::ip_proto::TCP,
        pad1: 0,
        port: port.to_be_bytes(),
    };
    let allow = PolicyEntry {
        verdict: POLICY_ALLOW,
        match_type: 0,
        pad: [0; 2],
        rule: 2,
    };
    let peer = |address_identity: u32| IpcacheValue {
        identity: 40_000,
        node_ipv4: [0; 4],
        address_identity,
    };
    let syn = packets::ipv4_tcp_syn();
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
    let mut denied = syn.clone();
    denied[l4 + 2..l4 + 4].copy_from_slice(&81u16.to_be_bytes());
    let prefix = "10.99.0.2/32".parse()?;
    // The ipBlock's own entry is in the map throughout; each case sets the
    // peer's ipcache entry (with or without the address identity) and the
    // identity's allow. Every round measures every case in turn, so the
    // noise of a shared machine falls on all of them alike.
    maps::set_policy(
        datapath.ebpf_mut(),
        POLICY_PREFIX_FULL,
        key(address, 80),
        allow,
    )?;
    // (covered by the ipBlock, identity allowed, frame)
    let cases: [(bool, bool, &[u8]); 5] = [
        (false, true, &syn),
        (true, true, &syn),
        (true, false, &syn),
        (false, true, &denied),
        (true, true, &denied),
    ];
    let mut samples: Vec<Vec<u128>> = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for (i, (covered, identity_allowed, frame)) in cases.iter().enumerate() {
            let ebpf = datapath.ebpf_mut();
            maps::set_ipcache(ebpf, prefix, peer(if *covered { address } else { 0 }))?;
            if *identity_allowed {
                maps::set_policy(ebpf, POLICY_PREFIX_FULL, key(40_000, 80), allow)?;
            } else {
                maps::remove_policy(ebpf, POLICY_PREFIX_FULL, key(40_000, 80))?;
            }
            let run = test_run(datapath, ProgramKind::FromPod, frame, repeat)?;
            samples[i].push(run.nanos_per_packet);
        }
    }
    let cell = |mut samples: Vec<u128>| {
        samples.sort_unstable();
        format!(
            "{} ({}-{})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    let mut cells = samples.into_iter().map(cell);
    let mut next = || cells.next().unwrap_or_default();
    let (without, with, by_address, denied_without, denied_with) =
        (next(), next(), next(), next(), next());
    // Leave the maps as policy_costs had them.
    let ebpf = datapath.ebpf_mut();
    maps::set_ipcache(ebpf, prefix, peer(0))?;
    maps::set_policy(ebpf, POLICY_PREFIX_FULL, key(40_000, 80), allow)?;
    maps::remove_policy(ebpf, POLICY_PREFIX_FULL, key(address, 80))?;
    println!();
    println!(
        "weir_from_pod, egress enforced, NetworkPolicy ipBlock covering the peer pod's \
         address (cases alternated each round): ns/packet median (min-max)"
    );
    println!("{:<44}{:>22}{:>22}", "", "without ipBlock", "with ipBlock");
    println!(
        "{:<44}{:>22}{:>22}",
        "established, allowed by the peer's identity", without, with
    );
    println!(
        "{:<44}{:>22}{:>22}",
        "established, allowed by the ipBlock only", "-", by_address
    );
    println!(
        "{:<44}{:>22}{:>22}",
        "denied (port 81: no rule allows)", denied_without, denied_with
    );
    Ok(())
}

/// Per-packet cost of service NAT on the node device (weir_from_netdev): a
/// packet to no service, an established NodePort connection (its NAT entry
/// found and applied) and a new one (backend selection, two NAT inserts,
/// rewrite). One packet per BPF_PROG_TEST_RUN (the program rewrites the
/// packet, so repeating it in one run would measure something else),
/// 10,000 runs each.
fn lb_costs() -> Result<()> {
    use weir_abi::lb::*;
    use weir_agent::datapath::maps::lb;

    let pins = PinDir::new();
    let mut datapath = load(&pins)?;
    let ebpf = datapath.ebpf_mut();
    let key = |slot: u16| Lb4Key {
        address: packets::IP4_B,
        port: 80u16.to_be_bytes(),
        backend_slot: slot,
        protocol: weir_abi::ip_proto::TCP,
        scope: LB_SCOPE_EXTERNAL,
        pad: [0; 2],
    };
    for id in 1..=2u32 {
        lb::set_backend(
            ebpf,
            id,
            Lb4Backend {
                address: [10, 244, 1, id as u8 + 1],
                port: 8080u16.to_be_bytes(),
                protocol: weir_abi::ip_proto::TCP,
                state: Lb4Backend::STATE_ACTIVE,
                flags: Lb4Backend::FLAG_LOCAL,
                pad: [0; 3],
            },
        )?;
        lb::set_service(
            ebpf,
            key(id as u16),
            Lb4Service {
                backend_id: id,
                ..Default::default()
            },
        )?;
    }
    lb::set_service(
        ebpf,
        key(0),
        Lb4Service {
            backend_id: 0,
            count: 2,
            rev_nat_id: 1,
            flags: Lb4Service::FLAG_NODE_PORT,
            pad: 0,
            affinity_timeout_s: 0,
            maglev_table: 0,
        },
    )?;
    println!();
    println!("service NAT, weir_from_netdev, 10,000 one-packet runs: ns/packet median (p1-p99)");
    // New connections from ever other clients (their address's last word).
    let client = packets::ETH_HLEN + 12;
    nat_rows(
        &mut datapath,
        "",
        &packets::ipv4_tcp_syn(),
        packets::IPV4_HLEN,
        client,
    )?;
    lb6_costs()
}

/// [`lb_costs`] for an IPv6 NodePort (`[IP6_B]:80`, two local backends):
/// the same rows through `weir_lb6_nat`.
fn lb6_costs() -> Result<()> {
    use weir_abi::lb::*;
    use weir_agent::datapath::maps::lb;

    let pins = PinDir::new();
    let mut datapath = load(&pins)?;
    let ebpf = datapath.ebpf_mut();
    let key = |slot: u16| Lb6Key {
        address: packets::IP6_B,
        port: 80u16.to_be_bytes(),
        backend_slot: slot,
        protocol: weir_abi::ip_proto::TCP,
        scope: LB_SCOPE_EXTERNAL,
        pad: [0; 2],
    };
    for id in 1..=2u32 {
        let mut address = packets::IP6_B;
        address[15] = 0x10 + id as u8;
        lb::set_backend6(
            ebpf,
            id,
            Lb6Backend {
                address,
                port: 8080u16.to_be_bytes(),
                protocol: weir_abi::ip_proto::TCP,
                state: Lb4Backend::STATE_ACTIVE,
                flags: Lb4Backend::FLAG_LOCAL,
                pad: [0; 3],
            },
        )?;
        lb::set_service6(
            ebpf,
            key(id as u16),
            Lb4Service {
                backend_id: id,
                ..Default::default()
            },
        )?;
    }
    lb::set_service6(
        ebpf,
        key(0),
        Lb4Service {
            count: 2,
            rev_nat_id: 1,
            flags: Lb4Service::FLAG_NODE_PORT,
            ..Default::default()
        },
    )?;
    let client = packets::ETH_HLEN + 8 + 12;
    nat_rows(
        &mut datapath,
        "IPv6 ",
        &packets::ipv6_tcp_syn(),
        packets::IPV6_HLEN,
        client,
    )
}

/// The rows of [`lb_costs`] for a NodePort that `syn` (a TCP SYN to it,
/// IP header of `ip_len`) reaches: a miss (another port), an established
/// connection, and new ones, each from another client port and address
/// (the word at `client` counts up).
fn nat_rows(
    datapath: &mut weir_agent::datapath::Datapath,
    label: &str,
    syn: &[u8],
    ip_len: usize,
    client: usize,
) -> Result<()> {
    let l4 = packets::ETH_HLEN + ip_len;
    let median = |mut samples: Vec<u128>| {
        samples.sort_unstable();
        format!(
            "{} ({}-{})",
            samples[samples.len() / 2],
            samples[samples.len() / 100],
            samples[samples.len() * 99 / 100]
        )
    };
    let runs = |datapath: &mut weir_agent::datapath::Datapath,
                frame_of: &dyn Fn(u32) -> Vec<u8>|
     -> Result<Vec<u128>> {
        (0..10_000u32)
            .map(|i| {
                test_run(datapath, ProgramKind::FromNetdev, &frame_of(i), 1)
                    .map(|r| r.nanos_per_packet)
            })
            .collect()
    };
    let mut other = syn.to_vec();
    other[l4 + 2..l4 + 4].copy_from_slice(&81u16.to_be_bytes());
    let miss = runs(datapath, &|_| other.clone())?;
    println!(
        "{:<44}{:>22}",
        format!("{label}no service (lookups miss)"),
        median(miss)
    );
    let established = runs(datapath, &|_| syn.to_vec())?;
    println!(
        "{:<44}{:>22}",
        format!("{label}NodePort, established (NAT entry, DNAT)"),
        median(established)
    );
    let new = runs(datapath, &|i| {
        let mut frame = syn.to_vec();
        frame[l4..l4 + 2].copy_from_slice(&(1024 + (i % 60_000) as u16).to_be_bytes());
        frame[client..client + 4].copy_from_slice(&(0x0a63_0000 + i + 16).to_be_bytes());
        frame
    })?;
    println!(
        "{:<44}{:>22}",
        format!("{label}NodePort, new connection (select, 2 inserts)"),
        median(new)
    );
    Ok(())
}

/// Per-packet cost of event emission: an established flow with aggregation
/// (no event) against the same flow with aggregation off (an event per
/// packet). 10,000 repetitions per run so the 1 MiB ring never fills, drained
/// between runs.
fn event_costs(runs: usize) -> Result<()> {
    use weir_agent::datapath::{maps, Datapath, LoadOptions, MonitorAggregation};
    println!();
    println!("event emission, weir_from_pod, established flow, 10,000 repetitions: ns/packet median (min-max)");
    for (label, level) in [
        (
            "events aggregated away (medium)",
            MonitorAggregation::Medium,
        ),
        ("an event per packet (none)", MonitorAggregation::None),
    ] {
        let pins = PinDir::new();
        let mut datapath = Datapath::load_with(
            pins.path(),
            &LoadOptions {
                monitor_aggregation: level,
                ..LoadOptions::default()
            },
        )?;
        let syn = packets::ipv4_tcp_syn();
        let mut ack = syn.clone();
        ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
        maps::set_endpoint(
            datapath.ebpf_mut(),
            1,
            weir_abi::EndpointInfo {
                id: 7,
                flags: 0,
                pad: 0,
                identity: 30_000,
                ipv4: packets::IP4_A,
                ..weir_abi::EndpointInfo::default()
            },
        )?;
        test_run(&mut datapath, ProgramKind::FromPod, &syn, 1)?;
        let mut samples = Vec::new();
        for _ in 0..runs.max(3) {
            maps::drain_events(datapath.ebpf_mut())?;
            samples.push(
                test_run(&mut datapath, ProgramKind::FromPod, &ack, 10_000)?.nanos_per_packet,
            );
        }
        let lost = maps::events_lost(datapath.ebpf_mut())?;
        samples.sort_unstable();
        println!(
            "{label:<44}{:>22}   (events lost: {lost})",
            format!(
                "{} ({}-{})",
                samples[samples.len() / 2],
                samples[0],
                samples[samples.len() - 1]
            )
        );
    }
    Ok(())
}

/// Per-packet cost of the debug messages (`weir debug enable`): an
/// established flow of an enforced endpoint with the messages off, on for
/// another endpoint (the switch looked up for this one too), and on for
/// this one (a conntrack message per packet, formatted by aya-log into its
/// ring). 400 repetitions per run, the ring drained between runs, the
/// cases alternated each round.
fn debug_costs(runs: usize) -> Result<()> {
    use weir_agent::datapath::debug::{set_debug, DebugFeed, DebugReader, DebugTarget};
    use weir_agent::datapath::maps;
    // aya-log's ring (128 KiB) holds about 500 of these messages: fewer
    // repetitions than that, so every packet writes its message.
    const REPEAT: u32 = 400;
    println!();
    println!(
        "debug messages, weir_from_pod, egress enforced, established flow, {REPEAT} repetitions: ns/packet median (min-max)"
    );
    let pins = PinDir::new();
    let mut datapath = load(&pins)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let _entered = runtime.enter();
    let mut reader = DebugReader::new(datapath.ebpf_mut(), DebugFeed::default())?;
    let syn = packets::ipv4_tcp_syn();
    let mut ack = syn.clone();
    ack[packets::ETH_HLEN + packets::IPV4_HLEN + 13] = 0x10;
    maps::set_endpoint(
        datapath.ebpf_mut(),
        1,
        weir_abi::EndpointInfo {
            id: 7,
            flags: weir_abi::EndpointInfo::EGRESS_ENFORCED,
            pad: 0,
            identity: 30_000,
            ipv4: packets::IP4_A,
            ..weir_abi::EndpointInfo::default()
        },
    )?;
    allow_any_peer(&mut datapath, 7, 80)?;
    test_run(&mut datapath, ProgramKind::FromPod, &syn, 1)?;
    let cases: [(&str, Option<DebugTarget>); 3] = [
        ("off", None),
        ("on for another endpoint", Some(DebugTarget::Endpoint(8))),
        ("on for this endpoint", Some(DebugTarget::Endpoint(7))),
    ];
    let mut samples: Vec<Vec<u128>> = vec![Vec::new(); cases.len()];
    let mut messages = vec![0u64; cases.len()];
    for _ in 0..runs.max(3) {
        for (i, (_, target)) in cases.iter().enumerate() {
            for other in [DebugTarget::Endpoint(7), DebugTarget::Endpoint(8)] {
                set_debug(datapath.ebpf_mut(), other, false)?;
            }
            if let Some(target) = target {
                set_debug(datapath.ebpf_mut(), *target, true)?;
            }
            reader.drain();
            let before = reader.read();
            samples[i].push(
                test_run(&mut datapath, ProgramKind::FromPod, &ack, REPEAT)?.nanos_per_packet,
            );
            reader.drain();
            messages[i] += reader.read() - before;
        }
    }
    let rounds = runs.max(3) as u64;
    for (((label, _), mut samples), messages) in cases.iter().zip(samples).zip(messages) {
        samples.sort_unstable();
        println!(
            "{label:<44}{:>22}   ({} messages per run)",
            format!(
                "{} ({}-{})",
                samples[samples.len() / 2],
                samples[0],
                samples[samples.len() - 1]
            ),
            messages / rounds
        );
    }
    Ok(())
}

/// An allow for endpoint `endpoint_id`'s egress to any peer on TCP `port`.
fn allow_any_peer(
    datapath: &mut weir_agent::datapath::Datapath,
    endpoint_id: u16,
    port: u16,
) -> Result<()> {
    use weir_abi::policy::*;
    use weir_abi::{PolicyEntry, PolicyKey, TrafficDirection};
    let key = PolicyKey {
        endpoint_id,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity: IDENTITY_ANY,
        protocol: weir_abi::ip_proto::TCP,
        pad1: 0,
        port: port.to_be_bytes(),
    };
    let allow = PolicyEntry {
        verdict: POLICY_ALLOW,
        match_type: 0,
        pad: [0; 2],
        rule: 1,
    };
    weir_agent::datapath::maps::set_policy(datapath.ebpf_mut(), POLICY_PREFIX_FULL, key, allow)?;
    Ok(())
}

/// Per-packet cost of anti-spoofing on the node device (weir_from_netdev,
/// IPv4/UDP, no service): `weir_pod_cidrs` holds this node's /24 and 254
/// other nodes' /24s, each routed through a neighbour with a known MAC
/// address, as on a node of a 255-node cluster. A source in no pod CIDR
/// costs one LPM lookup; another node's pod adds the FIB and neighbour
/// lookup of the reverse path. Run on a veth of a namespace of its own
/// (the context names the interface), so those lookups are real.
fn antispoof_costs(repeat: u32, runs: usize) -> Result<()> {
    use weir_agent::datapath::maps::{self, PodCidrOwner};
    use weir_tests::datapath::test_run_on;
    use weir_tests::netns::VethPair;

    let pair = VethPair::new(&weir_tests::names::unique())?;
    let node = &pair.a;
    node.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    let mac = packets::MAC_A.map(|b| format!("{b:02x}")).join(":");
    node.ip(&[
        "neigh",
        "replace",
        VethPair::ADDR_B,
        "lladdr",
        &mac,
        "dev",
        &pair.dev_a,
        "nud",
        "permanent",
    ])?;
    let pins = PinDir::new();
    let mut datapath = load(&pins)?;
    let owner = |local| PodCidrOwner {
        node_ip: std::net::Ipv4Addr::new(10, 99, 0, 2),
        local,
    };
    maps::set_pod_cidr(datapath.ebpf_mut(), "10.244.1.0/24".parse()?, owner(true))?;
    for n in 2..=255u8 {
        let cidr = format!("10.244.{n}.0/24");
        node.ip(&["route", "add", &cidr, "via", VethPair::ADDR_B])?;
        maps::set_pod_cidr(datapath.ebpf_mut(), cidr.parse()?, owner(false))?;
    }
    let dev = pair.dev_a.clone();
    let ifindex = node.run(move || nix::net::if_::if_nametoindex(dev.as_str()))??;
    let mut spoofed = packets::ipv4_udp_from([10, 244, 200, 7]);
    spoofed[6..12].copy_from_slice(&packets::MAC_B);
    let cases = [
        (
            "source in no pod CIDR (one LPM miss)",
            packets::ipv4_udp_from([203, 0, 113, 10]),
        ),
        (
            "another node's pod, from it (accepted)",
            packets::ipv4_udp_from([10, 244, 200, 7]),
        ),
        ("another node's pod, other sender (drop)", spoofed),
        (
            "this node's pod (drop)",
            packets::ipv4_udp_from([10, 244, 1, 7]),
        ),
    ];
    let file = std::fs::File::open(weir_tests::netns::path(node.name()))?;
    println!();
    println!(
        "anti-spoofing, weir_from_netdev, IPv4/UDP, 255 pod CIDRs, {repeat} repetitions: \
         ns/packet median (min-max)"
    );
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            for (case, frame) in &cases {
                let mut samples = (0..runs)
                    .map(|_| {
                        test_run_on(
                            &mut datapath,
                            ProgramKind::FromNetdev,
                            frame,
                            repeat,
                            ifindex,
                        )
                        .map(|r| r.nanos_per_packet)
                    })
                    .collect::<Result<Vec<_>>>()?;
                samples.sort_unstable();
                let cell = format!(
                    "{} ({}-{})",
                    samples[samples.len() / 2],
                    samples[0],
                    samples[samples.len() - 1]
                );
                println!("{case:<44}{cell:>22}");
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
    })
}
