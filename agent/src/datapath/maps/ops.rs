//! What the agent writes to the datapath's maps, counted by map, operation
//! and outcome: `weir_bpf_map_ops_total{map_name, operation, outcome}`
//! (Cilium's `cilium_bpf_map_ops_total`). Every update and delete of a map
//! the agent programs goes through [`super::updated`] or
//! [`super::removed`], which count here (the conntrack entries the agent
//! flushes are not counted: that map is the datapath's to write). The
//! family is process-wide, since the writers are plain functions of the
//! maps module; the agent registers it with its other metrics
//! ([`family`]).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts};

/// What a write did to a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// An entry written (created or replaced).
    Update,
    /// An entry removed (one that was not there counts as removed).
    Delete,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

static OPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "weir_bpf_map_ops_total",
            "Writes of the agent to the datapath's maps, by map, operation and outcome",
        ),
        &["map_name", "operation", "outcome"],
    )
    .expect("a valid metric family")
});

/// The family, to register into the agent's registry (once).
pub fn family() -> IntCounterVec {
    OPS.clone()
}

/// Counts one write to `map`.
pub fn count(map: &str, operation: Operation, ok: bool) {
    let outcome = if ok { "success" } else { "fail" };
    OPS.with_label_values(&[map, operation.label(), outcome])
        .inc();
}

/// How many `operation`s on `map` this process made, whatever their outcome.
pub fn total(map: &str, operation: Operation) -> u64 {
    ["success", "fail"]
        .iter()
        .map(|outcome| {
            OPS.with_label_values(&[map, operation.label(), outcome])
                .get()
        })
        .sum()
}
