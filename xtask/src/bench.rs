//! `cargo xtask bench ...`: benchmarks that print figures. The measuring code
//! lives in the `weir-bench` crate (it needs the agent and the kernel); this
//! builds the kernel programs and the workspace's binaries in release mode
//! (what a user deploys; the lab benchmarks run the agents beside
//! weir-bench) and runs `weir-bench`. The figures go to stdout, progress to
//! stderr.

use std::process::Command;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cmd::{self, step};
use crate::{build, paths};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Bench,
}

#[derive(Subcommand)]
pub enum Bench {
    /// Per-packet time of every datapath program on crafted packets,
    /// measured in the kernel with BPF_PROG_TEST_RUN.
    Datapath {
        /// Repetitions per packet and program.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// How many times to repeat each measurement (median and range are printed).
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Flows per second decoded, enriched and stored on one core.
    Flows {
        #[arg(long, default_value_t = 1_000_000)]
        events: u32,
    },
    /// Policy propagation: `lab apply` to enforcement on every node.
    Propagation {
        #[arg(long, default_value_t = 10)]
        runs: u32,
    },
    /// Weir against kube-proxy's iptables mode in the same lab: time to
    /// program all services, to add one, and connect latency to the first
    /// and the last service, at each service count.
    Services {
        /// Service counts, comma-separated.
        #[arg(long, default_value = "100,1000,10000")]
        counts: String,
        /// Connections per latency measurement (1,000: the p99 is then the
        /// 10th worst, not the 2nd).
        #[arg(long, default_value_t = 1000)]
        samples: u32,
        /// iptables binaries of the peer: default (Debian's alternative,
        /// nf_tables), nft or legacy.
        #[arg(long, default_value = "default")]
        iptables: String,
    },
    /// The agent-kill fault in the lab at a higher rate and longer: the
    /// agent of a node SIGKILLed several times under load; connections
    /// kept, new connections failed in each gap, convergence per kill.
    Reliability {
        /// Long-lived TCP connections.
        #[arg(long, default_value_t = 100)]
        connections: u32,
        /// New connections per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 3)]
        kills: u32,
        /// Seconds the agent stays down each time.
        #[arg(long, default_value_t = 3)]
        down: u32,
        /// Seconds of traffic before the first kill and after each
        /// convergence.
        #[arg(long, default_value_t = 6)]
        settle: u32,
    },
    /// Agent CPU while nothing changes: the lab's agents over a quiet 5 s,
    /// with the example pods only, then with one NetworkPolicy of many
    /// ipBlock peers in force.
    Idle {
        /// ipBlock peers of the policy.
        #[arg(long, default_value_t = 1000)]
        peers: u32,
    },
    /// The policy engine at scale (in process, no lab): policies x
    /// identities compiled from scratch (time, peak RSS), then one more
    /// policy, identity and local pod applied incrementally (time each).
    PolicyScale {
        #[arg(long, default_value_t = 1000)]
        policies: u32,
        #[arg(long, default_value_t = 10_000)]
        identities: u32,
    },
    /// Pod to pod: TCP throughput (1 and 4 streams), request/response and
    /// new-connection latency (p50, p99) over the bare routed veth path,
    /// Weir (same node and across nodes; without policy, with an enforced
    /// policy, and with 1,000 policies and 10,000 identities loaded) and the
    /// iptables-nft and nftables peers, in one run, with each lab agent's
    /// CPU; a table of medians (ranges) and one of ratios to the bare path.
    PodToPod {
        /// Runs of every row (median and range are printed).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Shorter measurements (1 s of iperf3, fewer round trips and
        /// connections).
        #[arg(long)]
        quick: bool,
        /// The lab agents' `--host-routing`: `bpf` (the agent's default)
        /// or `legacy`, to compare the two.
        #[arg(long)]
        host_routing: Option<String>,
        /// Run the lab agents without the flow export file the lab
        /// otherwise gives them (the DaemonSet in deploy/ has none).
        #[arg(long)]
        no_flow_export: bool,
        /// The lab agents' `--routing-mode`: `native` (the default) or
        /// `tunnel` (VXLAN between the nodes), to compare the two.
        #[arg(long)]
        routing_mode: Option<String>,
        /// A dual-stack lab, and Weir's same-node and cross-node rows
        /// measured over IPv6 too, beside the IPv4 ones.
        #[arg(long)]
        ipv6: bool,
    },
    /// Time of `lab up` and of applying 20 pods (real agents, real CNI).
    Lab {
        #[arg(long, default_value_t = 2)]
        nodes: u32,
        #[arg(long, default_value_t = 20)]
        pods: u32,
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (what, bench_args) = match &args.which {
        Bench::Flows { events } => (
            "flow decoding and enrichment",
            vec!["flows".to_string(), "--events".into(), events.to_string()],
        ),
        Bench::Propagation { runs } => (
            "policy propagation in the lab",
            vec!["propagation".to_string(), "--runs".into(), runs.to_string()],
        ),
        Bench::PolicyScale {
            policies,
            identities,
        } => (
            "policy engine at scale (in process)",
            vec![
                "policy-scale".to_string(),
                "--policies".into(),
                policies.to_string(),
                "--identities".into(),
                identities.to_string(),
            ],
        ),
        Bench::Idle { peers } => (
            "agent CPU while nothing changes, in the lab",
            vec!["idle".to_string(), "--peers".into(), peers.to_string()],
        ),
        Bench::Services {
            counts,
            samples,
            iptables,
        } => (
            "services: Weir vs kube-proxy iptables mode, in the lab",
            vec![
                "services".to_string(),
                "--counts".into(),
                counts.clone(),
                "--iptables".into(),
                iptables.clone(),
                "--samples".into(),
                samples.to_string(),
            ],
        ),
        Bench::Reliability {
            connections,
            rate,
            kills,
            down,
            settle,
        } => (
            "reliability: agent killed under load, in the lab",
            vec![
                "reliability".to_string(),
                "--connections".into(),
                connections.to_string(),
                "--rate".into(),
                rate.to_string(),
                "--kills".into(),
                kills.to_string(),
                "--down".into(),
                down.to_string(),
                "--settle".into(),
                settle.to_string(),
            ],
        ),
        Bench::PodToPod {
            runs,
            quick,
            host_routing,
            no_flow_export,
            routing_mode,
            ipv6,
        } => {
            let mut args = vec!["pod-to-pod".to_string(), "--runs".into(), runs.to_string()];
            if *ipv6 {
                args.push("--ipv6".into());
            }
            if let Some(mode) = routing_mode {
                args.extend(["--routing-mode".into(), mode.clone()]);
            }
            if *no_flow_export {
                args.push("--no-flow-export".into());
            }
            if *quick {
                args.push("--quick".into());
            }
            if let Some(routing) = host_routing {
                args.extend(["--host-routing".into(), routing.clone()]);
            }
            ("pod to pod: bare path, Weir and peers, in the lab", args)
        }
        Bench::Lab { nodes, pods, runs } => (
            "lab bring-up and pod creation",
            vec![
                "lab".to_string(),
                "--nodes".into(),
                nodes.to_string(),
                "--pods".into(),
                pods.to_string(),
                "--runs".into(),
                runs.to_string(),
            ],
        ),
        Bench::Datapath { repeat, runs } => (
            "datapath per-packet cost (BPF_PROG_TEST_RUN)",
            vec![
                "datapath".to_string(),
                "--repeat".into(),
                repeat.to_string(),
                "--runs".into(),
                runs.to_string(),
            ],
        ),
    };
    build::binaries(true)?;
    step(what);
    cmd::run_result(Command::new(paths::host_bin_dir(true).join("weir-bench")).args(bench_args))
}
