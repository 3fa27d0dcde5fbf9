//! The benchmark's output: one Markdown table of medians and ranges over
//! the runs, one of ratios to the bare path each row is compared with, and
//! a "not measured" line for every row that could not be built.

use std::fmt::Write;

use super::measure::Sample;

/// What a row's figures are compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// This row is a bare path.
    None,
    /// The bare path between two namespaces on one node.
    SameNode,
    /// The bare path across the underlay.
    CrossNode,
}

/// One row: what it is, each run's sample, and the lab's CPU while it was
/// measured (CPU seconds per wall second: each node's agent, then the rest
/// of the lab), if a lab ran.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub baseline: Baseline,
    pub samples: Vec<Sample>,
    pub agent_cpu: Vec<(String, f64)>,
    /// The same processes' CPU during the new-connection test, divided by
    /// the connections: µs of CPU per new connection (the agents' clock
    /// ticks are 10 ms, so about ±2 µs at 3 x 2,000 connections).
    pub conn_cpu_us: Vec<(String, f64)>,
}

/// Median, minimum and maximum (the median of an even count is the upper
/// middle, as the other benchmarks take it).
pub fn median_range(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some((
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    ))
}

/// A figure with about three significant digits.
pub fn figure(value: f64) -> String {
    if value >= 1000.0 {
        let whole = value.round() as u64;
        let (thousands, rest) = (whole / 1000, whole % 1000);
        format!("{thousands},{rest:03}")
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `median (min-max)`, or the median alone for one run.
pub fn cell(values: &[f64]) -> String {
    match median_range(values) {
        None => "-".into(),
        Some((median, _, _)) if values.len() == 1 => figure(median),
        Some((median, min, max)) => {
            format!("{} ({}-{})", figure(median), figure(min), figure(max))
        }
    }
}

/// The ratio of two medians as `1.23x`.
pub fn ratio(row: &[f64], base: &[f64]) -> String {
    match (median_range(row), median_range(base)) {
        (Some((r, _, _)), Some((b, _, _))) if b > 0.0 => format!("{:.2}x", r / b),
        _ => "-".into(),
    }
}

/// One figure of a sample.
type Figure = fn(&Sample) -> f64;

/// The six figures of a sample, in the columns' order.
const COLUMNS: [(&str, Figure); 6] = [
    ("TCP 1 stream, Gbit/s", |s| s.gbits_1),
    ("TCP 4 streams, Gbit/s", |s| s.gbits_4),
    ("req/resp p50, µs", |s| s.rr_p50_us),
    ("req/resp p99, µs", |s| s.rr_p99_us),
    ("new conn p50, µs", |s| s.crr_p50_us),
    ("new conn p99, µs", |s| s.crr_p99_us),
];

fn column(row: &Row, figure: Figure) -> Vec<f64> {
    row.samples.iter().map(figure).collect()
}

fn agent_cell(row: &Row) -> String {
    if row.agent_cpu.is_empty() {
        return "-".into();
    }
    row.agent_cpu
        .iter()
        .map(|(node, cpu)| format!("{node} {:.0}%", cpu * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn conn_cpu_cell(row: &Row) -> String {
    if row.conn_cpu_us.is_empty() {
        return "-".into();
    }
    row.conn_cpu_us
        .iter()
        .map(|(node, us)| format!("{node} {us:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole output: figures, ratios, and what was not measured.
pub fn render(rows: &[Row], not_measured: &[(String, String)], runs: usize) -> String {
    let mut out = String::new();
    let header = |out: &mut String, last: &[&str]| {
        let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
        let _ = writeln!(out, "| | {} | {} |", names.join(" | "), last.join(" | "));
        let _ = writeln!(out, "|{}", " --- |".repeat(COLUMNS.len() + 1 + last.len()));
    };
    let _ = writeln!(
        out,
        "pod-to-pod: median (min-max) of {runs} run{}; lab CPU is each lab agent's CPU time per wall second while the row was measured, then the rest of the lab's (etcd, API server, controllers, kubelets); lab CPU per new connection is theirs during the new-connection test, µs per connection",
        if runs == 1 { "" } else { "s" }
    );
    let _ = writeln!(out);
    header(&mut out, &["lab CPU", "lab CPU per new conn, µs"]);
    for row in rows {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(_, f)| cell(&column(row, *f)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.name,
            cells.join(" | "),
            agent_cell(row),
            conn_cpu_cell(row)
        );
    }
    let _ = writeln!(
        out,
        "\nratio of medians to the bare path (throughput: higher is better; latency: lower is better)\n"
    );
    header(&mut out, &["compared with"]);
    for row in rows {
        let base = rows.iter().find(|b| match row.baseline {
            Baseline::None => false,
            Baseline::SameNode => b.name == BARE_SAME_NODE,
            Baseline::CrossNode => b.name == BARE_CROSS_NODE,
        });
        let Some(base) = base else { continue };
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(_, f)| ratio(&column(row, *f), &column(base, *f)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.name,
            cells.join(" | "),
            base.name
        );
    }
    for (row, why) in not_measured {
        let _ = writeln!(out, "\nnot measured: {row}: {why}");
    }
    out
}

/// The bare rows' names, which the others are compared with.
pub const BARE_SAME_NODE: &str = "bare routed veth, same node (no Weir)";
pub const BARE_CROSS_NODE: &str = "bare routed veth, across the underlay (no Weir)";
