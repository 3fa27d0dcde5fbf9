//! The benchmark's pure parts: iperf3's JSON, medians and ranges, ratios,
//! the table, the peers' rule sets.

use super::measure::{received_gbits, Sample};
use super::peers::{iptables_rules, nft_ruleset};
use super::table::{self, cell, figure, median_range, ratio, Baseline, Row};

#[test]
fn reads_the_received_rate_from_iperf3_json() {
    let json = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bits_per_second":1.9e10},"sum_received":{"bits_per_second":18234000000.0}}}"#;
    let gbits = received_gbits(json).unwrap();
    assert!((gbits - 18.234).abs() < 1e-9, "{gbits}");
    let failed =
        r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
    let error = received_gbits(failed).unwrap_err().to_string();
    assert!(error.contains("Connection refused"), "{error}");
    assert!(received_gbits("not json").is_err());
    assert!(received_gbits(r#"{"end":{}}"#).is_err());
}

#[test]
fn median_is_the_upper_middle_and_the_range_the_extremes() {
    assert_eq!(median_range(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
    assert_eq!(median_range(&[4.0, 1.0, 3.0, 2.0]), Some((3.0, 1.0, 4.0)));
    assert_eq!(median_range(&[f64::NAN, 5.0]), Some((5.0, 5.0, 5.0)));
    assert_eq!(median_range(&[]), None);
}

#[test]
fn figures_keep_about_three_digits() {
    assert_eq!(figure(9.256), "9.26");
    assert_eq!(figure(24.31), "24.3");
    assert_eq!(figure(259.4), "259");
    assert_eq!(figure(3368.2), "3,368");
    assert_eq!(figure(12_045.0), "12,045");
    assert_eq!(cell(&[20.7]), "20.7");
    assert_eq!(cell(&[21.0, 20.7, 25.0]), "21.0 (20.7-25.0)");
    assert_eq!(cell(&[]), "-");
}

#[test]
fn ratios_are_of_medians() {
    assert_eq!(ratio(&[10.0, 12.0, 11.0], &[20.0, 22.0, 21.0]), "0.52x");
    assert_eq!(ratio(&[1.0], &[]), "-");
    assert_eq!(ratio(&[1.0], &[0.0]), "-");
}

fn row(name: &str, baseline: Baseline, rr_p50: f64) -> Row {
    Row {
        name: name.into(),
        baseline,
        samples: vec![Sample {
            gbits_1: 10.0,
            gbits_4: 15.0,
            rr_p50_us: rr_p50,
            rr_p99_us: 40.0,
            crr_p50_us: 60.0,
            crr_p99_us: 200.0,
        }],
        agent_cpu: vec![],
        conn_cpu_us: vec![],
    }
}

#[test]
fn the_table_compares_each_row_with_its_bare_path() {
    let mut weir = row("weir", Baseline::SameNode, 25.0);
    weir.agent_cpu = vec![("n1".into(), 0.031), ("n2".into(), 0.95)];
    weir.conn_cpu_us = vec![("n1".into(), 12.4), ("n2".into(), 0.0)];
    let rows = vec![
        row(table::BARE_SAME_NODE, Baseline::None, 20.0),
        row(table::BARE_CROSS_NODE, Baseline::None, 30.0),
        weir,
        row("weir across", Baseline::CrossNode, 33.0),
    ];
    let text = table::render(&rows, &[("big".into(), "no time".into())], 1);
    assert!(
        text.contains(
            "| weir | 10.0 | 15.0 | 25.0 | 40.0 | 60.0 | 200 | n1 3%, n2 95% | n1 12, n2 0 |"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "| weir | 1.00x | 1.00x | 1.25x | 1.00x | 1.00x | 1.00x | {} |",
            table::BARE_SAME_NODE
        )),
        "{text}"
    );
    assert!(
        text.contains("| weir across | 1.00x | 1.00x | 1.10x |"),
        "{text}"
    );
    assert!(text.contains("not measured: big: no time"), "{text}");
    // The bare rows have no ratio row of their own.
    let ratios = text.split("ratio of medians").nth(1).unwrap();
    assert!(
        !ratios.contains(&format!("| {} | ", table::BARE_SAME_NODE)),
        "{text}"
    );
}

#[test]
fn the_peers_rules_match_no_measured_address() {
    let rules = iptables_rules(3);
    assert_eq!(
        rules
            .lines()
            .filter(|l| l.starts_with("-A FORWARD"))
            .count(),
        3
    );
    assert!(rules.contains("-A FORWARD -s 198.18.0.3/32 -j DROP"));
    assert!(rules.ends_with("COMMIT\n"));
    let nft = nft_ruleset(2);
    assert!(
        nft.contains("elements = { 198.18.0.1, 198.18.0.2 }"),
        "{nft}"
    );
    assert!(nft.contains("ip saddr @blocked drop"));
}

#[test]
fn weir_programs_are_known_by_their_truncated_kernel_names() {
    use super::profile::full_name;
    assert_eq!(full_name("weir_from_pod"), Some("weir_from_pod"));
    assert_eq!(full_name("weir_from_netde"), Some("weir_from_netdev"));
    assert_eq!(full_name("weir_sock_getpe"), Some("weir_sock_getpeername4"));
    assert_eq!(full_name("weir_sock_conne"), Some("weir_sock_connect4"));
    // A prefix shorter than the kernel's 15 characters is another program.
    assert_eq!(full_name("weir_from"), None);
    assert_eq!(full_name("cilium_from_pod"), None);
}

#[test]
fn a_profile_counts_what_ran_between_two_snapshots() {
    use super::profile::{render, Phase, Profile, Snapshot, Usage};
    let at = |pairs: &[(&'static str, u64, u64)]| {
        Snapshot(
            pairs
                .iter()
                .map(|(name, ns, runs)| {
                    (
                        *name,
                        Usage {
                            ns: *ns,
                            runs: *runs,
                        },
                    )
                })
                .collect(),
        )
    };
    let before = at(&[("weir_from_pod", 1_000, 10), ("weir_to_pod", 500, 5)]);
    let after = at(&[
        ("weir_from_pod", 41_000, 210),
        ("weir_to_pod", 500, 5),
        ("weir_to_netdev", 3_000, 20),
    ]);
    let delta = after.since(&before);
    // Idle programs drop out; programs loaded in between count from zero.
    assert_eq!(
        delta,
        at(&[
            ("weir_from_pod", 40_000, 200),
            ("weir_to_netdev", 3_000, 20)
        ])
    );
    let phase = |usage: &Snapshot, units| Phase {
        usage: usage.clone(),
        units,
    };
    let out = render(&[Profile {
        row: "Weir, same node".into(),
        round_trips: phase(&delta, 100.0),
        connections: phase(&Snapshot::default(), 10.0),
        stream: phase(&at(&[("weir_from_pod", 500_000_000, 1_000_000)]), 2.0),
    }]);
    // 200 runs over 100 round trips at 200 ns each: 0.40 µs per round trip.
    assert!(
        out.contains("| weir_from_pod | 2.00 | 200 | 0.40 | - | - | - | 500,000 | 500 | 25.0% |"),
        "{out}"
    );
    assert!(
        out.contains("| weir_to_netdev | 0.20 | 150 | 0.03 |"),
        "{out}"
    );
    assert!(
        out.contains("| all Weir programs | 2.20 | 195 | 0.43 |"),
        "{out}"
    );
    assert_eq!(render(&[]), "");
}
