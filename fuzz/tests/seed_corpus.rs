//! Every fuzz target, briefly: its committed seed corpus
//! (`fuzz/corpus/<target>/`), then seeded mutations of it for a few
//! seconds (`weir_fuzz::brief`). A finding fails the test with the input
//! saved under `target/fuzz/findings/<target>/` and the seed that replays
//! it. `WEIR_FUZZ_SECONDS` sets the time per target (default 3),
//! `WEIR_FUZZ_SEED` the random seed (default: fixed per target).
//!
//! The `datapath` target loads the kernel programs: it needs root and the
//! built datapath, and fails without them, as every kernel suite does.

use std::path::Path;
use std::time::Duration;

use weir_fuzz::{brief, TARGETS};

fn budget() -> Duration {
    let seconds = std::env::var("WEIR_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

fn seed(target: &str) -> u64 {
    std::env::var("WEIR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| target.bytes().fold(17, |h, b| h * 31 + u64::from(b)))
}

fn brief(name: &str) {
    let target = weir_fuzz::target(name).expect("a target of that name");
    if target.needs_root {
        weir_tests::require_root();
    }
    let seed = seed(name);
    let report = brief::run(target, budget(), seed);
    assert!(
        report.seeds > 0,
        "{name}: no seed corpus in {}",
        weir_fuzz::corpus_dir(name).display()
    );
    if let Some(finding) = &report.finding {
        panic!(
            "{name}: finding after {} executions (seed {seed}, mutated from {}): {}\n  input saved: {}\n  input: {:?}",
            report.executions,
            finding.from_seed,
            finding.message,
            finding
                .saved
                .as_ref()
                .map_or("(could not write it)".to_string(), |p| p.display().to_string()),
            String::from_utf8_lossy(&finding.input),
        );
    }
    weir_tests::figure!(
        "fuzz {name}: {} executions in {:.1} s from {} seeds, 0 findings",
        report.executions,
        report.elapsed.as_secs_f64(),
        report.seeds
    );
}

#[test]
fn policy_yaml() {
    brief("policy_yaml");
}

#[test]
fn policy_json() {
    brief("policy_json");
}

#[test]
fn cni() {
    brief("cni");
}

#[test]
fn flow_filter() {
    brief("flow_filter");
}

#[test]
fn manifest() {
    brief("manifest");
}

#[test]
fn lb_objects() {
    brief("lb_objects");
}

#[test]
fn datapath() {
    brief("datapath");
}

/// Each target has a test above, a libFuzzer binary, a seed corpus and a
/// dictionary; each binary is a target's.
#[test]
fn every_target_has_its_test_binary_corpus_and_dictionary() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let this_file = std::fs::read_to_string(here.join("tests/seed_corpus.rs")).unwrap();
    for target in TARGETS {
        let name = target.name;
        assert!(
            this_file.contains(&format!("brief(\"{name}\")")),
            "{name} has no test here"
        );
        let binary = here.join(format!("fuzz_targets/{name}.rs"));
        let source = std::fs::read_to_string(&binary)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        assert!(
            source.contains(&format!("weir_fuzz::run(\"{name}\", data)")),
            "{} does not run {name}",
            binary.display()
        );
        assert!(
            !brief::read_corpus(&weir_fuzz::corpus_dir(name)).is_empty(),
            "{name} has no seed corpus"
        );
        assert!(
            !brief::read_dictionary(&weir_fuzz::dictionary_file(name)).is_empty(),
            "{name} has no dictionary"
        );
    }
    let binaries = std::fs::read_dir(here.join("fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(
        binaries,
        TARGETS.len(),
        "a binary in fuzz_targets/ that is no target"
    );
}
