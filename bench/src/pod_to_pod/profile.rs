//! Where a Weir row's time goes in the kernel: one extra pass per Weir
//! row with the kernel's run-time statistics switched on
//! (`BPF_ENABLE_STATS`, what `kernel.bpf_stats_enabled` turns on), reading
//! each Weir program's accumulated run time and run count before and after
//! each test. It prints, per program, how often it ran per round trip and
//! per new connection and what one run cost under real traffic, so a row's
//! distance from the bare path can be split into the programs' own time
//! and the rest (the redirect, the stack, scheduling).
//!
//! The statistics cost time themselves (two clock reads per run), which is
//! why this is a pass of its own and not part of the figures above it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::os::fd::OwnedFd;
use std::time::Instant;

use anyhow::{Context, Result};
use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats};

use super::measure::{self, Amounts, Path};
use super::table::figure;

/// Weir's programs by their full names (the kernel keeps 15 characters).
const PROGRAMS: [&str; 10] = [
    "weir_from_pod",
    "weir_to_pod",
    "weir_from_netdev",
    "weir_to_netdev",
    "weir_from_overlay",
    "weir_to_overlay",
    "weir_sock_connect4",
    "weir_sock_sendmsg4",
    "weir_sock_recvmsg4",
    "weir_sock_getpeername4",
];

/// Accumulated run time (ns) and run count of one program, summed over
/// every loaded copy (one per lab node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub ns: u64,
    pub runs: u64,
}

/// Each Weir program's usage so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<&'static str, Usage>);

impl Snapshot {
    fn take() -> Result<Snapshot> {
        let mut usage = BTreeMap::new();
        for info in loaded_programs() {
            let info = info.context("reading a loaded program's info")?;
            let Some(name) = info.name_as_str().and_then(full_name) else {
                continue;
            };
            let entry: &mut Usage = usage.entry(name).or_default();
            entry.ns += info.run_time().as_nanos() as u64;
            entry.runs += info.run_count();
        }
        Ok(Snapshot(usage))
    }

    /// What ran between `earlier` and this snapshot (programs loaded in
    /// between count from zero).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot(
            self.0
                .iter()
                .map(|(name, now)| {
                    let then = earlier.0.get(name).copied().unwrap_or_default();
                    let delta = Usage {
                        ns: now.ns.saturating_sub(then.ns),
                        runs: now.runs.saturating_sub(then.runs),
                    };
                    (*name, delta)
                })
                .filter(|(_, delta)| delta.runs > 0)
                .collect(),
        )
    }

    fn total(&self) -> Usage {
        self.0.values().fold(Usage::default(), |sum, u| Usage {
            ns: sum.ns + u.ns,
            runs: sum.runs + u.runs,
        })
    }
}

/// The full name of a Weir program from the kernel's (possibly
/// truncated) name; None for anything else loaded on the machine.
pub fn full_name(kernel_name: &str) -> Option<&'static str> {
    if !kernel_name.starts_with("weir_") {
        return None;
    }
    PROGRAMS.iter().copied().find(|full| {
        *full == kernel_name || full.starts_with(kernel_name) && kernel_name.len() == 15
    })
}

/// One test of the profiling pass: what ran over how many units.
#[derive(Clone, Debug)]
pub struct Phase {
    pub usage: Snapshot,
    /// Round trips, connections, or seconds (throughput).
    pub units: f64,
}

/// A row's profile: request/response, new connections, one TCP stream.
#[derive(Clone, Debug)]
pub struct Profile {
    pub row: String,
    pub round_trips: Phase,
    pub connections: Phase,
    pub stream: Phase,
}

/// Runs each test once more on `path` (whose servers run) with run-time
/// statistics on.
pub fn profile(row: &str, path: &Path, amounts: Amounts) -> Result<Profile> {
    // On while this descriptor lives (the kernel switches them off when
    // the last one closes).
    let _enabled: OwnedFd =
        enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)")?;
    let phase = |units: f64, test: &dyn Fn() -> Result<()>| -> Result<Phase> {
        let before = Snapshot::take()?;
        test()?;
        let usage = Snapshot::take()?.since(&before);
        Ok(Phase { usage, units })
    };
    let round_trips = phase(amounts.round_trips as f64, &|| {
        measure::request_response(path, amounts.round_trips).map(drop)
    })?;
    let connections = phase(amounts.connections as f64, &|| {
        measure::new_connections(path, amounts.connections).map(drop)
    })?;
    let start = Instant::now();
    let mut stream = phase(0.0, &|| {
        measure::throughput(path, 1, amounts.seconds).map(drop)
    })?;
    stream.units = start.elapsed().as_secs_f64();
    Ok(Profile {
        row: row.to_string(),
        round_trips,
        connections,
        stream,
    })
}

/// `runs per unit / ns per run / µs per unit` of one program in a phase.
fn cells(usage: Option<Usage>, units: f64) -> [String; 3] {
    match usage {
        Some(u) if u.runs > 0 && units > 0.0 => [
            format!("{:.2}", u.runs as f64 / units),
            figure(u.ns as f64 / u.runs as f64),
            format!("{:.2}", u.ns as f64 / units / 1000.0),
        ],
        _ => ["-".into(), "-".into(), "-".into()],
    }
}

/// The profiles as one table per row.
pub fn render(profiles: &[Profile]) -> String {
    let mut out = String::new();
    if profiles.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nkernel run-time statistics of Weir's programs (one more pass per Weir row with BPF_ENABLE_STATS on, summed over both nodes; the statistics add two clock reads per run, so these runs are a little slower than the figures above)"
    );
    for p in profiles {
        let _ = writeln!(out, "\n{}\n", p.row);
        let _ = writeln!(
            out,
            "| program | runs per round trip | ns per run | µs per round trip | runs per new conn | ns per run | µs per new conn | TCP 1 stream: runs per s | ns per run | share of a CPU |"
        );
        let _ = writeln!(out, "|{}", " --- |".repeat(10));
        let mut names: Vec<&'static str> = Vec::new();
        for phase in [&p.round_trips, &p.connections, &p.stream] {
            for name in phase.usage.0.keys() {
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        names.sort_by_key(|n| PROGRAMS.iter().position(|p| p == n));
        let line = |out: &mut String, name: &str, get: &dyn Fn(&Phase) -> Option<Usage>| {
            let rr = cells(get(&p.round_trips), p.round_trips.units);
            let crr = cells(get(&p.connections), p.connections.units);
            let stream = get(&p.stream).filter(|u| u.runs > 0 && p.stream.units > 0.0);
            let (rate, per_run, share) = match stream {
                Some(u) => (
                    figure(u.runs as f64 / p.stream.units),
                    figure(u.ns as f64 / u.runs as f64),
                    format!("{:.1}%", u.ns as f64 / 1e9 / p.stream.units * 100.0),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {rate} | {per_run} | {share} |",
                rr.join(" | "),
                crr.join(" | ")
            );
        };
        for name in &names {
            line(&mut out, name, &|phase| phase.usage.0.get(name).copied());
        }
        line(&mut out, "all Weir programs", &|phase| {
            Some(phase.usage.total()).filter(|u| u.runs > 0)
        });
    }
    out
}
