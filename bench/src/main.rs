//! `weir-bench`: Weir's benchmarks (run through `cargo xtask bench ...`,
//! which builds them in release mode). Each subcommand is a module of the
//! weir-bench library.

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Weir against kube-proxy's iptables mode (see weir_bench::services).
    Services {
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        counts: Vec<usize>,
        #[arg(long, default_value_t = 200)]
        samples: u32,
        /// default, nft or legacy.
        #[arg(long, default_value = "default")]
        iptables: String,
    },
    /// The agent-kill fault at a higher rate and with several kills:
    /// connections kept, new connections failed, convergence per kill.
    Reliability {
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// New connections per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// How long the agent stays down each time, seconds.
        #[arg(long, default_value_t = 3)]
        down: u64,
        /// Traffic before the first kill and after each convergence, seconds.
        #[arg(long, default_value_t = 6)]
        settle: u64,
    },
    /// The policy engine at scale: policies x identities compiled from
    /// scratch, then one more policy, identity and pod incrementally.
    PolicyScale {
        #[arg(long, default_value_t = 1000)]
        policies: usize,
        #[arg(long, default_value_t = 10_000)]
        identities: usize,
    },
    /// Agent CPU while nothing changes, without and with one policy of
    /// many ipBlock peers.
    Idle {
        #[arg(long, default_value_t = 1000)]
        peers: u32,
    },
    /// Pod-to-pod throughput and latency: bare path, Weir, iptables and
    /// nftables peers (see weir_bench::pod_to_pod).
    PodToPod {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        quick: bool,
        /// The lab agents' `--host-routing` (`bpf` or `legacy`); the
        /// agent's default when not given.
        #[arg(long)]
        host_routing: Option<String>,
        /// The lab agents without the flow export file (as deploy/ runs
        /// them).
        #[arg(long)]
        no_flow_export: bool,
        /// The lab agents' `--routing-mode` (`native` or `tunnel`): the
        /// cross-node row through the VXLAN tunnel.
        #[arg(long)]
        routing_mode: Option<String>,
        /// A dual-stack lab; Weir's same-node and cross-node rows over
        /// IPv6 too.
        #[arg(long)]
        ipv6: bool,
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
        Bench::Datapath { repeat, runs } => weir_bench::datapath::run(repeat, runs.max(1)),
        Bench::Lab { nodes, pods, runs } => weir_bench::lab::run(nodes, pods, runs.max(1)),
        Bench::Propagation { runs } => weir_bench::propagation::run(runs.max(1)),
        Bench::Idle { peers } => weir_bench::idle::run(peers),
        Bench::PodToPod {
            runs,
            quick,
            host_routing,
            no_flow_export,
            routing_mode,
            ipv6,
        } => weir_bench::pod_to_pod::run(&weir_bench::pod_to_pod::Options {
            runs,
            quick,
            host_routing,
            flow_export: !no_flow_export,
            routing_mode,
            ipv6,
        }),
        Bench::PolicyScale {
            policies,
            identities,
        } => weir_bench::policy_scale::run(policies, identities),
        Bench::Reliability {
            connections,
            rate,
            kills,
            down,
            settle,
        } => weir_bench::reliability::run(&weir_lab::agent_kill::Options {
            connections: connections.max(1),
            rate: rate.max(1),
            kills: kills.max(1),
            down: std::time::Duration::from_secs(down),
            settle: std::time::Duration::from_secs(settle),
        }),
        Bench::Flows { events } => weir_bench::flows::run(events.max(1)),
        Bench::Services {
            counts,
            samples,
            iptables,
        } => weir_bench::services::run(&weir_bench::services::Options {
            counts,
            samples: samples.max(1),
            iptables: match iptables.as_str() {
                "nft" => weir_bench::kubeproxy::Backend::Nft,
                "legacy" => weir_bench::kubeproxy::Backend::Legacy,
                _ => weir_bench::kubeproxy::Backend::Default,
            },
        }),
    }
}
