//! Weir's benchmarks (run through `cargo xtask bench ...`).
//!
//! `datapath`: the per-packet time of every kernel program on crafted
//! packets, measured in the kernel with BPF_PROG_TEST_RUN (the kernel times
//! `repeat` back-to-back runs and reports the mean). Each measurement is
//! taken `runs` times; the median and range are printed.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use weir_agent::datapath::ProgramKind;
use weir_tests::datapath::{load, test_run, PinDir};
use weir_tests::lab::manifest;
use weir_tests::lab::testing::{namespace_yaml, pod_yaml, TestLab};
use weir_tests::packets;

#[derive(Parser)]
#[command(name = "weir-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Per-packet cost of each datapath program (BPF_PROG_TEST_RUN).
    Datapath {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Policy propagation: from `lab apply` of a policy to its enforcement
    /// flags being in the datapath of every node (and back on delete).
    Propagation {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Flows per second decoded, enriched and stored on one core.
    Flows {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Weir against kube-proxy's iptables mode (see weir_tests::bench::services).
    Services {
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        counts: Vec<usize>,
        #[arg(long, default_value_t = 200)]
        samples: u32,
        /// default, nft or legacy.
        #[arg(long, default_value = "default")]
        iptables: String,
    },
    /// Time of `lab up` and of applying N pods, with real agents and CNI.
    Lab {
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value_t = 20)]
        pods: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().bench {
        Bench::Datapath { repeat, runs } => datapath(repeat, runs.max(1)),
        Bench::Lab { nodes, pods, runs } => lab(nodes, pods, runs.max(1)),
        Bench::Propagation { runs } => propagation(runs.max(1)),
        Bench::Flows { events } => flows(events.max(1)),
        Bench::Services {
            counts,
            samples,
            iptables,
        } => weir_tests::bench::services::run(&weir_tests::bench::services::Options {
            counts,
            samples: samples.max(1),
            iptables: match iptables.as_str() {
                "nft" => weir_tests::kubeproxy::Backend::Nft,
                "legacy" => weir_tests::kubeproxy::Backend::Legacy,
                _ => weir_tests::kubeproxy::Backend::Default,
            },
        }),
    }
}

fn datapath(repeat: u32, runs: usize) -> Result<()> {
    weir_tests::require_root();
    let pins = PinDir::new();
    let mut datapath = load(&pins)?;
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
    for program in ProgramKind::ALL {
        print!("{:>22}", program.name());
    }
    println!();
    for (case, frame) in &cases {
        print!("{case:<28}");
        for program in ProgramKind::ALL {
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
        },
    )?;
    maps::set_ipcache(
        ebpf,
        "10.99.0.2/32".parse()?,
        IpcacheValue {
            identity: 40_000,
            node_ipv4: [0; 4],
        },
    )?;
    let key = PolicyKey {
        endpoint_id: 7,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity: 40_000,
        protocol: 6,
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
    event_costs(runs)?;
    lb_costs()
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
        protocol: 6,
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
                protocol: 6,
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
    let syn = packets::ipv4_tcp_syn();
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
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
    println!();
    println!("service NAT, weir_from_netdev, 10,000 one-packet runs: ns/packet median (p1-p99)");
    let mut other = syn.clone();
    other[l4 + 2..l4 + 4].copy_from_slice(&81u16.to_be_bytes());
    let miss = runs(&mut datapath, &|_| other.clone())?;
    println!("{:<44}{:>22}", "no service (lookups miss)", median(miss));
    let established = runs(&mut datapath, &|_| syn.clone())?;
    println!(
        "{:<44}{:>22}",
        "NodePort, established (NAT entry, DNAT)",
        median(established)
    );
    let new = runs(&mut datapath, &|i| {
        let mut frame = syn.clone();
        frame[l4..l4 + 2].copy_from_slice(&(1024 + (i % 60_000) as u16).to_be_bytes());
        frame[packets::ETH_HLEN + 12..packets::ETH_HLEN + 16]
            .copy_from_slice(&(0x0a63_0000 + i + 16).to_be_bytes());
        frame
    })?;
    println!(
        "{:<44}{:>22}",
        "NodePort, new connection (select, 2 inserts)",
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

fn lab(nodes: usize, pods: usize, runs: usize) -> Result<()> {
    weir_tests::require_root();
    let mut yaml = namespace_yaml("bench");
    for i in 0..pods {
        yaml.push_str(&pod_yaml(
            "bench",
            &format!("p{i}"),
            &format!("n{}", i % nodes + 1),
            &[80],
        ));
    }
    let objects = manifest::parse(&yaml)?;
    let mut up_ms = Vec::new();
    let mut apply_ms = Vec::new();
    for run in 1..=runs {
        let start = Instant::now();
        let mut lab = TestLab::up(nodes)?;
        up_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        lab.apply(&objects)?;
        apply_ms.push(start.elapsed().as_secs_f64() * 1e3);
        println!(
            "run {run}: lab up ({nodes} nodes) {:.0} ms, apply {pods} pods {:.0} ms",
            up_ms[run - 1],
            apply_ms[run - 1]
        );
    }
    let summary = |samples: &mut Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        format!(
            "{:.0} ms ({:.0}-{:.0})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    println!("lab up, {nodes} nodes: median {}", summary(&mut up_ms));
    println!(
        "lab apply, {pods} pods: median {} = {:.1} ms per pod",
        summary(&mut apply_ms.clone()),
        apply_ms[apply_ms.len() / 2] / pods as f64
    );
    Ok(())
}

/// Endpoints on `node` whose ingress is enforced, read from the node's
/// pinned `weir_endpoints` map (what the datapath itself reads).
fn ingress_enforced_on(lab: &TestLab, node: &str) -> Result<usize> {
    use aya::maps::{HashMap, Map, MapData};
    use weir_abi::{EndpointInfo, EndpointKey};
    let dir = &lab.state().node(node).context("node")?.bpffs_dir;
    let data = MapData::from_pin(dir.join(weir_abi::map_names::ENDPOINTS))?;
    let map: HashMap<MapData, EndpointKey, EndpointInfo> = HashMap::try_from(Map::HashMap(data))?;
    let mut enforced = 0;
    for entry in map.iter() {
        if entry?.1.ingress_enforced() {
            enforced += 1;
        }
    }
    Ok(enforced)
}

fn wait_for(lab: &TestLab, want: &[(&str, usize)]) -> Result<std::time::Duration> {
    let start = Instant::now();
    loop {
        let mut done = true;
        for (node, count) in want {
            done &= ingress_enforced_on(lab, node)? == *count;
        }
        if done {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no convergence in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn propagation(runs: usize) -> Result<()> {
    weir_tests::require_root();
    let mut lab = TestLab::up(2)?;
    lab.apply(&manifest::parse(
        &weir_tests::lab::testing::netpol_cluster_yaml(),
    )?)?;
    let policy = manifest::parse(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )?;
    // x/a and x/c run on n1, x/b on n2.
    let enforced = [("n1", 2), ("n2", 1)];
    let cleared = [("n1", 0), ("n2", 0)];
    wait_for(&lab, &cleared)?;
    let (mut apply_ms, mut delete_ms) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let start = Instant::now();
        lab.apply(&policy)?;
        wait_for(&lab, &enforced)?;
        apply_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        lab.delete(&policy)?;
        wait_for(&lab, &cleared)?;
        delete_ms.push(start.elapsed().as_secs_f64() * 1e3);
        println!(
            "run {run}: enforced on both nodes after {:.1} ms, lifted after {:.1} ms",
            apply_ms[run - 1],
            delete_ms[run - 1]
        );
    }
    let summary = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        format!(
            "{:.1} ms ({:.1}-{:.1})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    println!(
        "policy propagation (lab apply -> datapath of every node), median: {}",
        summary(apply_ms)
    );
    println!(
        "policy removal (lab delete -> datapath of every node), median: {}",
        summary(delete_ms)
    );
    Ok(())
}

/// Pods by address, as the agent's enricher finds them.
struct MapEnricher(
    std::collections::HashMap<std::net::IpAddr, weir_observer::parser::EndpointInfo>,
);

impl weir_observer::parser::Enricher for MapEnricher {
    fn endpoint_by_ip(&self, ip: std::net::IpAddr) -> Option<weir_observer::parser::EndpointInfo> {
        self.0.get(&ip).cloned()
    }
}

fn flows(count: usize) -> Result<()> {
    use std::sync::Arc;
    use weir_abi::events::*;
    use weir_abi::FlowEvent;
    use weir_observer::{FlowRing, Parser};

    // 256 pods, events between them: new-connection traces and drops.
    let mut pods = std::collections::HashMap::new();
    for i in 0..256u32 {
        let ip = std::net::IpAddr::from([10, 244, (i / 128) as u8 + 1, (i % 128) as u8 + 2]);
        pods.insert(
            ip,
            weir_observer::parser::EndpointInfo {
                id: i,
                identity: 1000 + i,
                namespace: format!("ns{}", i % 8),
                pod_name: format!("pod-{i}"),
                labels: vec![
                    format!("k8s:app=app{}", i % 16),
                    format!("k8s:io.kubernetes.pod.namespace=ns{}", i % 8),
                ],
                workloads: Vec::new(),
            },
        );
    }
    let addresses: Vec<std::net::IpAddr> = pods.keys().copied().collect();
    let events: Vec<FlowEvent> = (0..4096)
        .map(|i| {
            let (src, dst) = (addresses[i % 256], addresses[(i * 7 + 3) % 256]);
            let octets = |ip: std::net::IpAddr| match ip {
                std::net::IpAddr::V4(v4) => {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&v4.octets());
                    a
                }
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            FlowEvent {
                kind: if i % 4 == 0 { EVENT_DROP } else { EVENT_TRACE },
                subtype: if i % 4 == 0 { 133 } else { OBS_TO_ENDPOINT },
                endpoint_id: (i % 256) as u16,
                ifindex: 7,
                timestamp_ns: 1_000_000 + i as u64,
                len: 74,
                src_identity: 1000 + (i % 256) as u32,
                dst_identity: 1000 + ((i * 7 + 3) % 256) as u32,
                family: 4,
                protocol: 6,
                tcp_flags: 0x02,
                flags: FlowEvent::FLAG_INGRESS,
                saddr: octets(src),
                daddr: octets(dst),
                sport: (40000 + (i % 1000) as u16).to_be_bytes(),
                dport: 80u16.to_be_bytes(),
                ..FlowEvent::default()
            }
        })
        .collect();
    let parser = Parser::new(
        "n1",
        Arc::new(MapEnricher(pods)),
        weir_agent::flows::wall_clock(),
    );
    let ring = FlowRing::new(weir_observer::DEFAULT_CAPACITY);
    let mut rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..count {
            ring.push(parser.parse(&weir_agent::flows::decode(&events[i % events.len()])));
        }
        rates.push(count as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "flows decoded, enriched and stored on one core: median {:.0}/s ({:.0}-{:.0}), {count} events per run",
        rates[1], rates[0], rates[2]
    );
    Ok(())
}
