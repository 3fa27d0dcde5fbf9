//! `cargo xtask bench ...`: benchmarks that print figures. The measuring code
//! lives in the `weir-tests` crate (it needs the agent and the kernel); this
//! builds what it needs and runs it in release mode.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::build;
use crate::cmd::{self, step};
use crate::setup;

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
    setup::run()?;
    build::build_datapath()?;
    match &args.which {
        Bench::Flows { events } => {
            step("flow decoding and enrichment");
            cmd::run(
                cmd::cargo(None)
                    .args([
                        "run",
                        "--release",
                        "--quiet",
                        "-p",
                        "weir-tests",
                        "--bin",
                        "weir-bench",
                    ])
                    .args(["--", "flows", "--events", &events.to_string()]),
            )
        }
        Bench::Propagation { runs } => {
            step("policy propagation in the lab");
            cmd::run(cmd::cargo(None).args(["build", "--release", "--workspace", "--bins"]))?;
            cmd::run(
                std::process::Command::new(crate::paths::root().join("target/release/weir-bench"))
                    .args(["propagation", "--runs", &runs.to_string()]),
            )
        }
        Bench::Services {
            counts,
            samples,
            iptables,
        } => {
            step("services: Weir vs kube-proxy iptables mode, in the lab");
            cmd::run(cmd::cargo(None).args(["build", "--release", "--workspace", "--bins"]))?;
            cmd::run(
                std::process::Command::new(crate::paths::root().join("target/release/weir-bench"))
                    .args(["services", "--counts", counts, "--iptables", iptables])
                    .args(["--samples", &samples.to_string()]),
            )
        }
        Bench::Lab { nodes, pods, runs } => {
            step("lab bring-up and pod creation");
            cmd::run(cmd::cargo(None).args(["build", "--release", "--workspace", "--bins"]))?;
            cmd::run(
                std::process::Command::new(crate::paths::root().join("target/release/weir-bench"))
                    .args([
                        "lab",
                        "--nodes",
                        &nodes.to_string(),
                        "--pods",
                        &pods.to_string(),
                    ])
                    .args(["--runs", &runs.to_string()]),
            )
        }
        Bench::Datapath { repeat, runs } => {
            step("datapath per-packet cost (BPF_PROG_TEST_RUN)");
            cmd::run(
                cmd::cargo(None)
                    .args([
                        "run",
                        "--release",
                        "--quiet",
                        "-p",
                        "weir-tests",
                        "--bin",
                        "weir-bench",
                    ])
                    .args([
                        "--",
                        "datapath",
                        "--repeat",
                        &repeat.to_string(),
                        "--runs",
                        &runs.to_string(),
                    ]),
            )
        }
    }
}
