//! `cargo xtask bench pod-to-pod`: pod-to-pod TCP throughput (1 and 4
//! streams), request/response and new-connection latency (p50, p99) over
//! the bare routed veth path and over Weir, with the iptables and nftables
//! peers, all in one run with the same tools and pinning, printed as one
//! table of medians and ranges and one of ratios to the bare path (issue
//! 17, "the fast path").
//!
//! Rows, in the order they are measured:
//! 1. the bare paths ([`topology`]: same node, across an underlay), the
//!    peers ([`peers`]: iptables-nft with 10,000 stateless rules, an
//!    nftables set of 10,000) and Weir without policy on the same node and
//!    across nodes, alternating run by run while the lab ([`weir`]) runs;
//! 2. Weir on the same node with an ingress and an egress policy enforced
//!    on both ends;
//! 3. that with 1,000 more NetworkPolicies and 10,000 identities loaded.
//!
//! Each lab agent's CPU while a row was measured is printed beside it, and
//! that of the rest of the lab (etcd, API server, controllers, kubelets): a
//! busy control plane on a 2-core machine costs the workload directly.
//! A row that cannot be built is left out with a "not measured" line.

mod measure;
mod peers;
mod profile;
mod table;
mod topology;
mod weir;

#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::Result;

use measure::{Amounts, Path, Sample, Servers};
use table::{Baseline, Row, BARE_CROSS_NODE, BARE_SAME_NODE};

/// Stateless iptables rules and nftables set elements of the peers.
const PEER_RULES: u32 = 10_000;
/// NetworkPolicies and remote identities of the last Weir row.
const SCALE_POLICIES: u32 = 1_000;
const SCALE_IDENTITIES: u32 = 10_000;

pub struct Options {
    pub runs: usize,
    /// Shorter measurements (1 s of iperf3, fewer round trips and
    /// connections) for a quick look.
    pub quick: bool,
    /// The lab agents' `--host-routing` (None: the agent's default, eBPF
    /// host routing); named in the Weir rows.
    pub host_routing: Option<String>,
    /// The lab agents write the flow export file (the lab's default);
    /// false runs them as deploy/ does, without it. Named in the Weir rows.
    pub flow_export: bool,
    /// The lab agents' `--routing-mode` (None: native); named in the
    /// cross-node row.
    pub routing_mode: Option<String>,
    /// A dual-stack lab, with Weir's same-node and cross-node rows also
    /// measured over IPv6 (their ratios are to the IPv4 bare paths).
    pub ipv6: bool,
}

/// A row to measure: its name, what it is compared with, its path, and
/// whether Weir's programs are on it (its kernel run-time statistics are
/// then taken in a pass of their own, [`profile`]).
struct Target {
    name: String,
    baseline: Baseline,
    path: Path,
    weir: bool,
}

impl Target {
    fn new(name: &str, baseline: Baseline, path: Path) -> Target {
        Target {
            name: name.to_string(),
            baseline,
            path,
            weir: false,
        }
    }

    fn weir(name: &str, baseline: Baseline, path: Path) -> Target {
        Target {
            weir: true,
            ..Target::new(name, baseline, path)
        }
    }
}

/// What the rows gather as they are measured.
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    profiles: Vec<profile::Profile>,
    not_measured: Vec<(String, String)>,
}

impl Results {
    fn skip(&mut self, row: &str, why: String) {
        eprintln!("not measured: {row}: {why}");
        self.not_measured.push((row.to_string(), why));
    }
}

pub fn run(options: &Options) -> Result<()> {
    weir_tests::require_root();
    let amounts = if options.quick {
        Amounts {
            seconds: 1,
            round_trips: 2_000,
            connections: 500,
        }
    } else {
        Amounts {
            seconds: 3,
            round_trips: 10_000,
            connections: 2_000,
        }
    };
    let runs = options.runs.max(1);
    let mut results = Results::default();

    eprintln!("building the bare paths and the peers");
    let bare_same = topology::Bare::same_node()?;
    let bare_cross = topology::Bare::cross_node()?;
    let count = |n: u32| table::figure(f64::from(n));
    let iptables_row = format!(
        "iptables-nft, {} stateless rules, same node",
        count(PEER_RULES)
    );
    let nft_row = format!("nftables set of {}, same node", count(PEER_RULES));
    let iptables = peers::iptables(PEER_RULES)
        .map_err(|e| results.skip(&iptables_row, format!("{e:#}")))
        .ok();
    let nft = peers::nftables(PEER_RULES)
        .map_err(|e| results.skip(&nft_row, format!("{e:#}")))
        .ok();
    for (what, bare) in [
        ("bare, same node", Some(&bare_same)),
        ("bare, across the underlay", Some(&bare_cross)),
        ("iptables peer", iptables.as_ref()),
        ("nftables peer", nft.as_ref()),
    ] {
        if let Some(bare) = bare {
            eprintln!("    {what}: namespaces {}", bare.namespaces().join(", "));
        }
    }
    let mut first = vec![
        Target::new(BARE_SAME_NODE, Baseline::None, bare_same.path.clone()),
        Target::new(BARE_CROSS_NODE, Baseline::None, bare_cross.path.clone()),
    ];
    if let Some(peer) = &iptables {
        first.push(Target::new(
            &iptables_row,
            Baseline::SameNode,
            peer.path.clone(),
        ));
    }
    if let Some(peer) = &nft {
        first.push(Target::new(&nft_row, Baseline::SameNode, peer.path.clone()));
    }

    eprintln!(
        "bringing the lab up (2 nodes, {} agents)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut routing = match &options.host_routing {
        Some(routing) => {
            // SAFETY: set before the lab starts; the threads the bare
            // paths used have ended, none reads the environment meanwhile.
            unsafe { std::env::set_var(weir_lab::HOST_ROUTING_ENV, routing) };
            format!(", host routing {routing}")
        }
        None => String::new(),
    };
    if !options.flow_export {
        // SAFETY: as above.
        unsafe { std::env::set_var(weir_lab::FLOW_EXPORT_ENV, "off") };
        routing.push_str(", no flow export");
    }
    let weir_same = format!("Weir, same node, no policy{routing}");
    let crossing = match options.routing_mode.as_deref() {
        Some(mode) => {
            // SAFETY: as above.
            unsafe { std::env::set_var(weir_lab::ROUTING_MODE_ENV, mode) };
            format!("{mode} routing")
        }
        None => "native routing".to_string(),
    };
    let weir_cross = format!("Weir, across nodes ({crossing}), no policy{routing}");
    let weir_policy =
        format!("Weir, same node, ingress+egress policy enforced on both ends{routing}");
    let weir_scale = format!(
        "Weir, same node, that policy + {} policies and {} identities loaded{routing}",
        count(SCALE_POLICIES),
        count(SCALE_IDENTITIES)
    );
    let (weir_same, weir_cross, weir_policy) = (
        weir_same.as_str(),
        weir_cross.as_str(),
        weir_policy.as_str(),
    );
    let weir_same_v6 = format!("{weir_same}, IPv6");
    let weir_cross_v6 = format!("{weir_cross}, IPv6");
    let mut lab = match weir::WeirLab::up(options.ipv6) {
        Ok(lab) => Some(lab),
        Err(e) => {
            for row in [weir_same, weir_cross, weir_policy, weir_scale.as_str()] {
                results.skip(row, format!("the lab did not come up: {e:#}"));
            }
            if options.ipv6 {
                for row in [&weir_same_v6, &weir_cross_v6] {
                    results.skip(row, format!("the lab did not come up: {e:#}"));
                }
            }
            None
        }
    };
    let agents = lab.as_ref().map(|l| l.watched()).unwrap_or_default();
    if let Some(lab) = &lab {
        first.push(Target::weir(
            weir_same,
            Baseline::SameNode,
            lab.same_node()?,
        ));
        first.push(Target::weir(
            weir_cross,
            Baseline::CrossNode,
            lab.cross_node()?,
        ));
        if options.ipv6 {
            first.push(Target::weir(
                &weir_same_v6,
                Baseline::SameNode,
                lab.same_node_v6()?,
            ));
            first.push(Target::weir(
                &weir_cross_v6,
                Baseline::CrossNode,
                lab.cross_node_v6()?,
            ));
        }
    }
    measure_rows(&first, runs, amounts, &agents, &mut results)?;

    if let Some(lab) = &mut lab {
        let same = lab.same_node()?;
        let servers = Servers::start(&same)?;
        match lab.enforce(&same) {
            Ok(()) => {
                drop(servers);
                let policy = [Target::weir(weir_policy, Baseline::SameNode, same.clone())];
                measure_rows(&policy, runs, amounts, &agents, &mut results)?;
                eprintln!("loading {SCALE_POLICIES} policies and {SCALE_IDENTITIES} identities");
                match lab.load_scale(SCALE_POLICIES, SCALE_IDENTITIES) {
                    Ok(()) => {
                        let scale = [Target::weir(&weir_scale, Baseline::SameNode, same)];
                        measure_rows(&scale, runs, amounts, &agents, &mut results)?;
                    }
                    Err(e) => results.skip(&weir_scale, format!("loading failed: {e:#}")),
                }
            }
            Err(e) => {
                for row in [weir_policy, weir_scale.as_str()] {
                    results.skip(row, format!("{e:#}"));
                }
            }
        }
    }
    print!(
        "{}",
        table::render(&results.rows, &results.not_measured, runs)
    );
    print!("{}", profile::render(&results.profiles));
    // The lab, then the peers and bare paths, go down here (on drop).
    drop(lab);
    Ok(())
}

/// Measures `targets` `runs` times, alternating run by run, with each
/// agent's CPU over each target's runs, then profiles each Weir target once.
/// A target that fails is reported and left out.
fn measure_rows(
    targets: &[Target],
    runs: usize,
    amounts: Amounts,
    agents: &[(String, Vec<u32>)],
    results: &mut Results,
) -> Result<()> {
    let mut servers = Vec::new();
    let mut live: Vec<bool> = Vec::new();
    for target in targets {
        let started = Servers::start(&target.path).and_then(|s| {
            measure::check(&target.path)?;
            Ok(s)
        });
        match started {
            Ok(s) => {
                servers.push(Some(s));
                live.push(true);
            }
            Err(e) => {
                results.skip(&target.name, format!("{e:#}"));
                servers.push(None);
                live.push(false);
            }
        }
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    let mut cpu: Vec<Vec<Duration>> = vec![vec![Duration::ZERO; agents.len()]; targets.len()];
    let mut wall = vec![Duration::ZERO; targets.len()];
    let mut conn_cpu: Vec<Vec<Duration>> = vec![vec![Duration::ZERO; agents.len()]; targets.len()];
    let cpu_now = || weir::cpu_times(agents);
    for run in 1..=runs {
        for (i, target) in targets.iter().enumerate() {
            if !live[i] {
                continue;
            }
            eprintln!("run {run}/{runs}: {}", target.name);
            let before = weir::cpu_times(agents);
            let start = std::time::Instant::now();
            match measure::run_once(&target.path, amounts, &cpu_now) {
                Ok((sample, used)) => {
                    eprintln!("    {sample:?}");
                    samples[i].push(sample);
                    for (total, used) in conn_cpu[i].iter_mut().zip(used) {
                        *total += used;
                    }
                }
                Err(e) => {
                    results.skip(&target.name, format!("run {run} failed: {e:#}"));
                    live[i] = false;
                    continue;
                }
            }
            wall[i] += start.elapsed();
            for (total, (b, a)) in cpu[i]
                .iter_mut()
                .zip(before.iter().zip(weir::cpu_times(agents)))
            {
                *total += a - *b;
            }
        }
    }
    for (i, target) in targets.iter().enumerate() {
        if !live[i] {
            continue;
        }
        let wall = wall[i].as_secs_f64().max(1e-9);
        let connections = (samples[i].len() * amounts.connections).max(1) as f64;
        results.rows.push(Row {
            name: target.name.clone(),
            baseline: target.baseline,
            samples: samples[i].clone(),
            agent_cpu: agents
                .iter()
                .zip(&cpu[i])
                .map(|((node, _), used)| (node.clone(), used.as_secs_f64() / wall))
                .collect(),
            conn_cpu_us: agents
                .iter()
                .zip(&conn_cpu[i])
                .map(|((node, _), used)| (node.clone(), used.as_secs_f64() * 1e6 / connections))
                .collect(),
        });
    }
    for (i, target) in targets.iter().enumerate() {
        if !live[i] || !target.weir {
            continue;
        }
        eprintln!("profiling: {}", target.name);
        match profile::profile(&target.name, &target.path, amounts) {
            Ok(profile) => results.profiles.push(profile),
            Err(e) => eprintln!("no profile of {}: {e:#}", target.name),
        }
    }
    drop(servers);
    Ok(())
}
