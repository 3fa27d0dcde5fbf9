//! weir-fuzz: fuzz targets for every parser Weir exposes to input it does
//! not control, and the runners that drive them.
//!
//! A target is a function of one input (`&[u8]`) that feeds it to a front
//! end and asserts what must hold for any input: no panic, a refusal is an
//! error that says why, what is accepted validates or round-trips
//! consistently, and (for the kernel parser) every verdict is a documented
//! one with the counters moved by exactly one packet. A violated property
//! panics, which both runners report as a finding:
//!
//! - libFuzzer (coverage-guided, nightly): the binaries in `fuzz_targets/`,
//!   built by cargo-fuzz, run by `cargo xtask fuzz [TARGET] [--time S]`;
//! - [`brief`] (stable, no instrumentation): the committed seed corpus
//!   (`fuzz/corpus/<target>/`) and then seeded mutations of it for a few
//!   seconds, run by the test suite (`tests/seed_corpus.rs`).
//!
//! | target | front end |
//! | --- | --- |
//! | `policy_yaml` | [`policy::yaml`]: NetworkPolicy and both Weir kinds from YAML, one document and streams |
//! | `policy_json` | [`policy::json`]: the same kinds from JSON, as the Kubernetes API source hands them over |
//! | `cni` | [`cni::fuzz`]: `CNI_*` environment, network configuration, prevResult |
//! | `flow_filter` | [`flow_filter::fuzz`]: Hubble FlowFilter compilation and evaluation |
//! | `manifest` | [`manifest::fuzz`]: the manifest parser (files and the API source) |
//! | `lb_objects` | [`lb::fuzz`]: Service and EndpointSlice, and compiling what validates |
//! | `datapath` | [`datapath::fuzz`]: generated frames through the loaded TC programs (root) |

pub mod brief;
pub mod cni;
pub mod datapath;
pub mod flow_filter;
pub mod lb;
pub mod manifest;
pub mod policy;
mod structured;

/// One fuzz target.
pub struct Target {
    /// Its name: the libFuzzer binary's and the corpus directory's.
    pub name: &'static str,
    /// Runs one input; panics when a property does not hold.
    pub run: fn(&[u8]),
    /// Loads kernel programs: needs root (and the built datapath).
    pub needs_root: bool,
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "policy_yaml",
        run: policy::yaml,
        needs_root: false,
    },
    Target {
        name: "policy_json",
        run: policy::json,
        needs_root: false,
    },
    Target {
        name: "cni",
        run: cni::fuzz,
        needs_root: false,
    },
    Target {
        name: "flow_filter",
        run: flow_filter::fuzz,
        needs_root: false,
    },
    Target {
        name: "manifest",
        run: manifest::fuzz,
        needs_root: false,
    },
    Target {
        name: "lb_objects",
        run: lb::fuzz,
        needs_root: false,
    },
    Target {
        name: "datapath",
        run: datapath::fuzz,
        needs_root: true,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Runs `data` through the target called `name` (the libFuzzer binaries'
/// entry point, so they and the test suite run the same functions).
///
/// # Panics
/// If there is no such target, or when the input violates a property.
pub fn run(name: &str, data: &[u8]) {
    match target(name) {
        Some(target) => (target.run)(data),
        None => panic!("no fuzz target {name:?}"),
    }
}

/// The committed seed corpus of `target`: `fuzz/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// The libFuzzer dictionary of `target`: `fuzz/dict/<target>.dict`.
pub fn dictionary_file(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dict")
        .join(format!("{target}.dict"))
}
