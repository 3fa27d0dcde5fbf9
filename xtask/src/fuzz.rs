//! `cargo xtask fuzz [TARGET] [--time SECONDS]`: each fuzz target of
//! `fuzz/` (weir-fuzz) under libFuzzer for the given time, then a line per
//! target with its executions, findings and corpus size.
//!
//! The binaries are built by cargo-fuzz (installed by setup) on nightly,
//! without a sanitizer (`-s none`: the targets are safe Rust over safe
//! Rust; AddressSanitizer would need `-Z build-std` of an instrumented std
//! and only slow every run), into `target/fuzz/build`, apart from the
//! stable builds. Each target runs from a working corpus under
//! `target/fuzz/corpus/<target>` (new inputs libFuzzer keeps) plus the
//! committed seeds in `fuzz/corpus/<target>` (read, never written), with
//! its dictionary `fuzz/dict/<target>.dict`. libFuzzer stops a target at
//! its first finding (a panic, a timeout of one input, running out of
//! memory) and writes the input to `target/fuzz/artifacts/<target>/`.
//! The kernel target (`datapath`) loads the programs: it needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd::{self, step};
use crate::{build, paths, setup};

#[derive(Args)]
pub struct FuzzArgs {
    /// One target (default: every target in fuzz/fuzz_targets).
    pub target: Option<String>,
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Seconds after which one input counts as a finding (a hang).
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Skip `cargo xtask setup` (for when it just ran).
    #[arg(long)]
    pub no_setup: bool,
}

/// What one target's run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub executions: u64,
    pub new_inputs: u64,
    pub peak_rss_mb: u64,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let all = targets()?;
    let targets: Vec<String> = match &args.target {
        Some(name) if all.contains(name) => vec![name.clone()],
        Some(name) => bail!(
            "no fuzz target {name:?}; the targets are {}",
            all.join(", ")
        ),
        None => all,
    };
    if !args.no_setup {
        setup::run()?;
    }
    // The kernel target embeds the datapath through weir-agent.
    build::build_datapath()?;
    step("fuzz targets (cargo-fuzz, nightly, no sanitizer)");
    let mut build = cargo_fuzz("build");
    if let [one] = &targets[..] {
        build.arg(one);
    }
    cmd::run(&mut build).context("building the fuzz targets failed")?;

    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        step(&format!("fuzz {target} for {} s", args.time));
        let result = fuzz_one(target, args)?;
        if result.findings > 0 {
            failed.push(target.clone());
        }
        lines.push(result);
    }
    println!();
    println!("==================== weir fuzz summary ====================");
    for r in &lines {
        println!(
            "{:>5}  {:<12} {:>6.0} s {:>11} executions {:>9}/s {:>2} findings  corpus {} seeds + {} new = {}",
            if r.findings == 0 { "ok" } else { "FOUND" },
            r.target,
            r.seconds,
            r.stats.executions,
            (r.stats.executions as f64 / r.seconds.max(0.001)).round(),
            r.findings,
            r.seeds,
            r.corpus - r.seeds.min(r.corpus),
            r.corpus,
        );
        for artifact in &r.artifacts {
            println!("       finding: {}", artifact.display());
        }
    }
    let executions: u64 = lines.iter().map(|r| r.stats.executions).sum();
    let findings: usize = lines.iter().map(|r| r.findings).sum();
    println!(
        "total: {} targets, {executions} executions, {findings} findings",
        lines.len()
    );
    if !failed.is_empty() {
        bail!(
            "findings in {}: reproduce with `target/fuzz/build/x86_64-unknown-linux-gnu/release/<target> <file>`, \
             fix, add the input to fuzz/corpus/<target>/ and a regression test",
            failed.join(", ")
        );
    }
    Ok(())
}

struct TargetRun {
    target: String,
    seconds: f64,
    stats: Stats,
    findings: usize,
    artifacts: Vec<PathBuf>,
    seeds: usize,
    /// Inputs in the working corpus after the run (seeds libFuzzer kept
    /// included: it merges the seeds into it first).
    corpus: usize,
}

fn fuzz_one(target: &str, args: &FuzzArgs) -> Result<TargetRun> {
    let fuzz_dir = paths::root().join("fuzz");
    let seeds_dir = fuzz_dir.join("corpus").join(target);
    let work = paths::root().join("target/fuzz/corpus").join(target);
    let artifacts_dir = paths::root().join("target/fuzz/artifacts").join(target);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&artifacts_dir)?;
    let before = files_in(&artifacts_dir);
    let binary = paths::root()
        .join("target/fuzz/build/x86_64-unknown-linux-gnu/release")
        .join(target);
    let mut libfuzzer = Command::new(&binary);
    libfuzzer
        .arg(&work)
        .arg(&seeds_dir)
        .arg(format!("-max_total_time={}", args.time))
        .arg(format!("-timeout={}", args.timeout))
        .arg("-rss_limit_mb=4096")
        .arg(format!("-max_len={}", 4096))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts_dir.display()));
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        libfuzzer.arg(format!("-dict={}", dict.display()));
    }
    eprintln!("    $ {}", cmd::display(&libfuzzer));
    let started = Instant::now();
    let output = libfuzzer
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    // libFuzzer's own progress, kept for whoever looks into a finding.
    let log_file = paths::root().join(format!("target/fuzz/{target}.log"));
    std::fs::write(&log_file, log.as_bytes())?;
    let stats = parse_stats(&log);
    let artifacts: Vec<PathBuf> = files_in(&artifacts_dir)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if !output.status.success() && artifacts.is_empty() {
        bail!(
            "{target}: libFuzzer failed ({}) without a finding; see {}",
            output.status,
            log_file.display()
        );
    }
    eprintln!(
        "    {target}: {} executions, {} new inputs, peak RSS {} MB (log: {})",
        stats.executions,
        stats.new_inputs,
        stats.peak_rss_mb,
        log_file.display()
    );
    Ok(TargetRun {
        target: target.to_string(),
        seconds,
        findings: artifacts.len(),
        artifacts,
        seeds: files_in(&seeds_dir).len(),
        corpus: files_in(&work).len(),
        stats,
    })
}

/// A cargo-fuzz command on nightly for the crate in `fuzz/`. cargo-fuzz
/// runs `cargo` itself: through rustup's proxy with the nightly toolchain,
/// not the stable cargo that runs xtask (whose variables are removed, as
/// [`cmd::cargo`] does).
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut command = Command::new(paths::cargo_fuzz());
    command.args(["fuzz", subcommand]);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    command
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .env("WEIR_REQUIRE_DATAPATH", "1")
        .arg("--fuzz-dir")
        .arg(paths::root().join("fuzz"))
        .args(["--sanitizer", "none", "--features", "libfuzzer"])
        // 16 codegen units: minutes less to build on two cores, at a small
        // cost in executions per second.
        .args(["--codegen-units", "16"])
        .arg("--target-dir")
        .arg(paths::root().join("target/fuzz/build"))
        .current_dir(paths::root());
    command
}

/// The fuzz targets: the binaries in fuzz/fuzz_targets, by name.
fn targets() -> Result<Vec<String>> {
    let dir = paths::root().join("fuzz/fuzz_targets");
    let mut names: Vec<String> = files_in(&dir)
        .iter()
        .filter_map(|f| f.file_stem()?.to_str().map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Reads libFuzzer's final statistics (`-print_final_stats=1`):
/// `stat::number_of_executed_units: N`, `stat::new_units_added: N`,
/// `stat::peak_rss_mb: N`.
pub fn parse_stats(log: &str) -> Stats {
    let mut stats = Stats::default();
    for line in log.lines() {
        let Some((key, value)) = line.trim().rsplit_once(':') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "stat::number_of_executed_units" => stats.executions = value,
            "stat::new_units_added" => stats.new_inputs = value,
            "stat::peak_rss_mb" => stats.peak_rss_mb = value,
            _ => {}
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#1024\tpulse  cov: 10 ft: 12 corp: 3/30b exec/s: 512 rss: 40Mb\n\
                   Done 123456 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 123456\n\
                   stat::average_exec_per_sec:     2023\n\
                   stat::new_units_added:          87\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              61\n";
        assert_eq!(
            parse_stats(log),
            Stats {
                executions: 123_456,
                new_inputs: 87,
                peak_rss_mb: 61
            }
        );
        assert_eq!(
            parse_stats("==1== ERROR: libFuzzer: deadly signal"),
            Stats::default()
        );
    }
}
