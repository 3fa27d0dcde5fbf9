//! `cargo xtask test`: the whole suite, from a fresh clone, as CI runs it.
//!
//! Order: setup, kernel programs, format and lint checks (host and kernel
//! crates), `cargo deny`, then every test binary. The suites that need the
//! kernel load real programs and create network namespaces, so this needs
//! root; it fails loudly rather than skipping when it is not.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::build;
use crate::cmd::{self, step};
use crate::packages::Packages;
use crate::{deny, paths, setup, sweep};

#[derive(Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this filter (passed to cargo test).
    pub filter: Option<String>,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    if !nix_is_root() {
        bail!("the test suite loads BPF programs and creates network namespaces: run it as root");
    }
    setup::run()?;
    build::build_datapath()?;
    sweep::stale_test_objects();

    let mut checks = Vec::new();
    checks.push(timed("cargo fmt --check (host)", || {
        cmd::run(cmd::cargo(None).args(["fmt", "--all", "--check"]))
    }));
    checks.push(timed("cargo fmt --check (kernel)", || {
        cmd::run(
            cmd::cargo(Some("nightly"))
                .args(["fmt", "--check", "--manifest-path"])
                .arg(paths::datapath_manifest()),
        )
    }));
    checks.push(timed("cargo clippy -D warnings (host)", || {
        cmd::run(cmd::cargo(None).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    }));
    checks.push(timed("cargo clippy -D warnings (kernel)", || {
        cmd::run(build::datapath_cargo("clippy").args(["--release", "--", "-D", "warnings"]))
    }));
    checks.push(timed("cargo deny: licenses, bans, sources", deny::check));
    checks.push(match deny::advisory_db() {
        Some(_) => timed("cargo deny: advisories", deny::check_advisories),
        None => Check::skipped(
            "cargo deny: advisories",
            "no advisory database (`target/tools/bin/cargo-deny fetch` clones it; needs network)",
        ),
    });

    // The lab suites run the workspace's binaries (agent, CNI plugin, pod
    // server), which `cargo test` alone does not build.
    checks.push(timed("cargo build --workspace --bins", || {
        cmd::run(cmd::cargo(None).args(["build", "--workspace", "--bins"]))?;
        crate::image::lab_node_images(&paths::host_bin_dir(false))
    }));

    step("test suites");
    let suites = run_test_suites(args.filter.as_deref())?;
    sweep::stale_test_objects();

    print_summary(&checks, &suites, started.elapsed());
    let failed_checks = checks.iter().filter(|c| c.error.is_some()).count();
    let failed_tests: u64 = suites.iter().map(|s| s.failed).sum();
    let broken_suites = suites.iter().filter(|s| !s.finished).count();
    if failed_checks > 0 || failed_tests > 0 || broken_suites > 0 {
        bail!("{failed_checks} check(s) failed, {failed_tests} test(s) failed, {broken_suites} suite(s) did not finish");
    }
    Ok(())
}

struct Check {
    name: &'static str,
    took: Duration,
    error: Option<String>,
    /// Why the check did not run; shown in the summary, never silent.
    skipped: Option<&'static str>,
}

impl Check {
    fn skipped(name: &'static str, why: &'static str) -> Check {
        step(&format!("{name}: skipped, {why}"));
        Check {
            name,
            took: Duration::ZERO,
            error: None,
            skipped: Some(why),
        }
    }
}

fn timed(name: &'static str, f: impl FnOnce() -> Result<()>) -> Check {
    step(name);
    let start = Instant::now();
    let error = f().err().map(|e| format!("{e:#}"));
    Check {
        name,
        took: start.elapsed(),
        error,
        skipped: None,
    }
}

/// One test binary's result as cargo test reports it.
struct Suite {
    name: String,
    /// Its package's directory (`lab`, `agent/api`), when cargo said.
    package: Option<String>,
    passed: u64,
    failed: u64,
    ignored: u64,
    finished: bool,
    took: Duration,
}

/// The lab suites that run a second time with the agents in tunnel mode
/// (`--routing-mode tunnel`, issue 19 item 1): the connectivity matrix,
/// NetworkPolicy and services.
const TUNNEL_MODE_SUITES: [&str; 4] = [
    "lab_connectivity",
    "netpol_lab",
    "services_lab",
    "dual_stack_lab",
];

/// Runs `cargo test --workspace`, then [`TUNNEL_MODE_SUITES`] again in
/// tunnel mode, and collects one [`Suite`] per test binary and mode.
fn run_test_suites(filter: Option<&str>) -> Result<Vec<Suite>> {
    // Each suite appends the figures it measured; they are listed under the
    // summary.
    let figures = paths::test_figures();
    match std::fs::remove_file(&figures) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context("could not remove the last run's figures");
        }
        _ => {}
    }
    let mut cargo = cmd::cargo(None);
    cargo.args(["test", "--workspace", "--no-fail-fast"]);
    cargo.env("WEIR_TEST_FIGURES", &figures);
    let mut suites = run_cargo_test(cargo, filter, "")?;
    // `--workspace` as above: the same features, so the same test
    // binaries (`-p weir-tests` alone would build its own, with other
    // hashes the summary cannot name).
    let mut cargo = cmd::cargo(None);
    cargo.args(["test", "--workspace", "--no-fail-fast"]);
    for suite in TUNNEL_MODE_SUITES {
        cargo.args(["--test", suite]);
    }
    cargo.env("WEIR_TEST_FIGURES", &figures);
    cargo.env("WEIR_LAB_ROUTING_MODE", "tunnel");
    suites.extend(run_cargo_test(cargo, filter, " [tunnel mode]")?);
    Ok(suites)
}

/// Runs `cargo` (a `cargo test`) with `filter`, follows its output, echoing
/// it and collecting one [`Suite`] per test binary from the `Running` and
/// `test result:` lines; `suffix` is added to the suites' names.
fn run_cargo_test(
    mut cargo: std::process::Command,
    filter: Option<&str>,
    suffix: &str,
) -> Result<Vec<Suite>> {
    let packages = Packages::of_workspace();
    if let Some(filter) = filter {
        cargo.arg(filter);
    }
    eprintln!("    $ {}", cmd::display(&cargo));
    // cargo prints `Running <binary>` on stderr and the harness prints its
    // results on stdout. Both go into one pipe so that they arrive in the
    // order they were written: reading two pipes would let a `Running` line
    // overtake the previous binary's `test result:` line and pin that result
    // on the wrong suite.
    let (output, writer) = std::io::pipe().context("could not create a pipe")?;
    cargo
        .stdout(writer.try_clone().context("could not clone the pipe")?)
        .stderr(writer);
    let mut child = cargo.spawn().context("could not start cargo test")?;
    // The command keeps its copies of the write end; drop them so that the
    // read below ends when cargo and its test binaries exit.
    drop(cargo);

    let mut suites: Vec<Suite> = Vec::new();
    let mut suite_started = Instant::now();
    // Lines are read as bytes: a test that prints invalid UTF-8 must not stop
    // the reading, or cargo would block on a full pipe.
    for line in BufReader::new(output).split(b'\n') {
        let line =
            String::from_utf8_lossy(&line.context("reading cargo test output")?).into_owned();
        println!("{line}");
        let trimmed = line.trim();
        let running = trimmed
            .strip_prefix("Running ")
            .map(|running| (suite_label(running), packages.of_running(running)));
        let doc_tests = trimmed
            .strip_prefix("Doc-tests ")
            .map(|krate| (format!("{krate} (doc)"), packages.of_doc_tests(krate)));
        if let Some((name, package)) = running.or(doc_tests) {
            suites.push(Suite {
                name: format!("{name}{suffix}"),
                package: package.map(str::to_string),
                passed: 0,
                failed: 0,
                ignored: 0,
                finished: false,
                took: Duration::ZERO,
            });
            suite_started = Instant::now();
        } else if let Some(result) = trimmed.strip_prefix("test result: ") {
            if let Some(suite) = suites.last_mut() {
                suite.passed = count_of(result, "passed");
                suite.failed = count_of(result, "failed");
                suite.ignored = count_of(result, "ignored");
                suite.finished = true;
                suite.took = suite_started.elapsed();
            }
        }
    }
    let status = child.wait()?;
    if !status.success() && suites.iter().all(|s| s.finished && s.failed == 0) {
        // Compilation failed, or a binary crashed before printing a result.
        suites.push(Suite {
            name: format!("cargo test ({status})"),
            package: None,
            passed: 0,
            failed: 0,
            ignored: 0,
            finished: false,
            took: Duration::ZERO,
        });
    }
    Ok(suites)
}

/// Reads `N passed` (or failed/ignored) from a `test result:` line.
fn count_of(result: &str, word: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("ok.")
                .trim_start_matches("FAILED.")
                .trim();
            let (n, w) = part.split_once(' ')?;
            (w == word).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn print_summary(checks: &[Check], suites: &[Suite], total: Duration) {
    // Suites are named with their package: `lab: weir_lab (unit)`.
    let names: Vec<String> = suites
        .iter()
        .map(|suite| match &suite.package {
            Some(package) => format!("{package}: {}", suite.name),
            None => suite.name.clone(),
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(44);
    println!();
    println!("==================== weir test summary ====================");
    for check in checks {
        let verdict = match (&check.error, check.skipped) {
            (Some(_), _) => "FAIL",
            (None, Some(_)) => "skip",
            (None, None) => "ok",
        };
        println!(
            "{verdict:>4}  {:<width$} {:>7.1}s",
            check.name,
            check.took.as_secs_f64()
        );
        if let Some(e) = &check.error {
            println!("      {e}");
        }
        if let Some(why) = check.skipped {
            println!("      {why}");
        }
    }
    for (suite, name) in suites.iter().zip(&names) {
        let verdict = match (suite.finished, suite.failed) {
            (false, _) => "DIED",
            (true, 0) => "ok",
            _ => "FAIL",
        };
        println!(
            "{verdict:>4}  {name:<width$} {:>4} passed {:>3} failed {:>3} ignored {:>6.1}s",
            suite.passed,
            suite.failed,
            suite.ignored,
            suite.took.as_secs_f64()
        );
    }
    let passed: u64 = suites.iter().map(|s| s.passed).sum();
    let failed: u64 = suites.iter().map(|s| s.failed).sum();
    if let Ok(figures) = std::fs::read_to_string(paths::test_figures()) {
        println!("---- figures the suites measured ----");
        for line in figures.lines() {
            println!("  {line}");
        }
    }
    println!(
        "total: {passed} passed, {failed} failed, in {:.1}s",
        total.as_secs_f64()
    );
}

/// Names a suite from cargo's `Running` line:
/// `unittests src/lib.rs (target/debug/deps/weir_abi-123)` -> `weir_abi (unit)`,
/// `unittests src/bin/weir-lab.rs (target/debug/deps/weir_lab-456)` -> `weir-lab (bin)`,
/// `tests/datapath.rs (target/debug/deps/datapath-abc)` -> `datapath (tests/datapath.rs)`.
/// A binary's unit tests are told from its library's, which have the same
/// stem (`weir_lab`).
fn suite_label(running: &str) -> String {
    let (source, binary) = match running.split_once(" (") {
        Some((source, binary)) => (source, binary.trim_end_matches(')')),
        None => return running.to_string(),
    };
    let file = binary.rsplit('/').next().unwrap_or(binary);
    let stem = file.rsplit_once('-').map_or(file, |(stem, _hash)| stem);
    match source.strip_prefix("unittests ") {
        Some("src/lib.rs") => format!("{stem} (unit)"),
        Some(bin) => {
            let name = bin
                .strip_prefix("src/bin/")
                .and_then(|file| file.strip_suffix(".rs"))
                .map(|file| file.trim_end_matches("/main"))
                .unwrap_or(stem);
            format!("{name} (bin)")
        }
        None => format!("{stem} ({source})"),
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::{count_of, suite_label};

    #[test]
    fn labels_suites_by_binary() {
        assert_eq!(
            suite_label("unittests src/lib.rs (target/debug/deps/weir_abi-0f3a)"),
            "weir_abi (unit)"
        );
        assert_eq!(
            suite_label("tests/datapath.rs (target/debug/deps/datapath-9c2e)"),
            "datapath (tests/datapath.rs)"
        );
        assert_eq!(
            suite_label("unittests src/bin/weir-lab.rs (target/debug/deps/weir_lab-78a1)"),
            "weir-lab (bin)"
        );
        assert_eq!(
            suite_label("unittests src/main.rs (target/debug/deps/weir_bench-5800)"),
            "weir_bench (bin)"
        );
    }

    #[test]
    fn reads_counts_from_a_test_result_line() {
        let line =
            "ok. 12 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count_of(line, "passed"), 12);
        assert_eq!(count_of(line, "failed"), 1);
        assert_eq!(count_of(line, "ignored"), 3);
        let line = "FAILED. 2 passed; 4 failed; 0 ignored";
        assert_eq!(count_of(line, "passed"), 2);
        assert_eq!(count_of(line, "failed"), 4);
    }
}
