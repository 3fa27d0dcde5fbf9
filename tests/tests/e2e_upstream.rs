//! A few specs of the upstream Kubernetes e2e suite (e2e.test v1.20.2,
//! built from the same source as the lab's control plane) against Weir on a
//! lab with real nodes (kubelet, containerd, runc; `TestLab::up_real_nodes`)
//! on every run, so a regression shows; `cargo xtask e2e` runs the whole
//! NetworkPolicy suite and the Services conformance specs (results in
//! docs/testing.md). Each spec creates its own namespaces, server pods and
//! Services, and client pods that connect through a ClusterIP, a NodePort
//! or a Service's DNS name: Weir's service load balancing and policy on
//! pods a real kubelet runs, with the lab's cluster DNS.

use weir_lab::e2e::Outcome;
use weir_lab::testing::TestLab;
use weir_lab::KubeBinaries;

/// The specs every `cargo xtask test` runs. NetworkPolicy: one where a
/// policy must deny, one where ports decide, one where policies are
/// stacked, one where a label without a value (`isolated: ""`) moves a
/// running pod under a policy (it found that 1.20's API server refused
/// such a label in a WeirIdentity), and one where an ipBlock's except
/// leaves out a pod's address (ipBlock matches cluster addresses).
/// Services conformance: a ClusterIP reached by name (cluster DNS, socket
/// LB on real pods), a NodePort on every node's address, and an
/// ExternalName naming another Service (DNS aliases, nslookup).
const FOCUS: &str = concat!(
    r"\[sig-network\] NetworkPolicy .*(should support a 'default-deny-ingress' policy|should enforce policy based on Ports|should enforce multiple, stacked policies with overlapping podSelectors|should deny ingress access to updated pod|should enforce except clause while egress access to server in CIDR block)",
    r"|\[sig-network\] Services (should serve a basic endpoint from pods|should be able to create a functioning NodePort service|should be able to change the type from ClusterIP to ExternalName)",
);
const SPECS: usize = 8;
const SKIP: &str = r"SCTP";

#[test]
fn upstream_network_policy_and_services_specs_pass_against_weir_on_real_nodes() {
    let lab = TestLab::up_real_nodes(2).expect("lab up with real nodes");
    let e2e_test = KubeBinaries::locate().unwrap().e2e_test;
    let reports = weir_lab::lab_dir(lab.name()).join("e2e");
    let report = lab
        .run_e2e(&e2e_test, FOCUS, SKIP, &reports, &|_| {})
        .expect("e2e.test ran and reported");
    for line in report.lines() {
        weir_tests::figure!("{line}");
    }
    let failed: Vec<String> = report
        .specs
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Failed(why) => Some(format!("{}: {why}", s.name)),
            _ => None,
        })
        .collect();
    assert!(failed.is_empty(), "failed specs:\n{}", failed.join("\n"));
    assert_eq!(
        report.passed(),
        SPECS,
        "the focus selects {SPECS} specs, and each ran"
    );
}
