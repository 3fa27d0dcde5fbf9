use super::*;

#[test]
fn pod_security_labels_adds_namespace_and_namespace_labels() {
    let set = pod_security_labels(
        "shop",
        [("team", "a"), ("kubernetes.io/metadata.name", "shop")],
        [("app", "web")],
        &LabelFilter::default(),
    );
    let got: Vec<(&str, &str)> = set.iter().collect();
    assert_eq!(
        got,
        vec![
            ("k8s:app", "web"),
            (
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
                "shop"
            ),
            ("k8s:io.cilium.k8s.namespace.labels.team", "a"),
            ("k8s:io.kubernetes.pod.namespace", "shop"),
        ]
    );
    assert_eq!(set.namespace(), Some("shop"));
}

#[test]
fn default_filter_drops_labels_without_security_meaning() {
    let f = LabelFilter::default();
    for dropped in [
        "k8s:pod-template-hash",
        "k8s:controller-revision-hash",
        "k8s:statefulset.kubernetes.io/pod-name",
        "k8s:job-name",
        "k8s:batch.kubernetes.io/job-name",
        "k8s:controller-uid",
        "k8s:batch.kubernetes.io/controller-uid",
        "k8s:apps.kubernetes.io/pod-index",
        "k8s:pod-template-generation",
        "k8s:io.kubernetes.pod.name",
        "k8s:beta.kubernetes.io/arch",
        "k8s:annotation.foo",
    ] {
        assert!(!f.keeps(dropped), "{dropped} should be dropped");
    }
    for kept in [
        "k8s:app",
        "k8s:app.kubernetes.io/name",
        "k8s:io.kubernetes.pod.namespace",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
        "k8s:io.cilium.k8s.policy.serviceaccount",
        "reserved:host",
        "k8s:job-name-prefix-is-not-job-name",
    ] {
        assert!(f.keeps(kept), "{kept} should be kept");
    }
}

#[test]
fn filter_applies_to_pod_security_labels() {
    let set = pod_security_labels(
        "x",
        [],
        [("app", "a"), ("pod-template-hash", "abc123")],
        &LabelFilter::default(),
    );
    assert_eq!(set.get("k8s:app"), Some("a"));
    assert_eq!(set.get("k8s:pod-template-hash"), None);
}

#[test]
fn user_include_pattern_switches_to_include_only() {
    let f = LabelFilter::with_user_patterns(&["k8s:app"]).unwrap();
    assert!(f.keeps("k8s:app"));
    assert!(f.keeps("k8s:io.kubernetes.pod.namespace"));
    assert!(!f.keeps("k8s:version"));
    // A source-restricted pattern does not match other sources.
    assert!(!f.keeps("container:app"));
}

#[test]
fn user_exclude_pattern_keeps_other_labels() {
    let f = LabelFilter::with_user_patterns(&["!version"]).unwrap();
    assert!(!f.keeps("k8s:version"));
    assert!(f.keeps("k8s:tier"));
}

#[test]
fn bad_pattern_is_an_error() {
    assert!(LabelFilter::with_user_patterns(&["k8s:(unclosed"]).is_err());
}
