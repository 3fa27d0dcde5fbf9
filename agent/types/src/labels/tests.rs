use super::*;

fn web() -> LabelSet {
    LabelSet::new()
        .with("k8s:io.kubernetes.pod.namespace", "default")
        .with("k8s:app", "web")
}

#[test]
fn canonical_is_sorted_and_independent_of_insertion_order() {
    let other = LabelSet::new()
        .with("k8s:app", "web")
        .with("k8s:io.kubernetes.pod.namespace", "default");
    assert_eq!(web(), other);
    assert_eq!(
        web().canonical(),
        "k8s:app=web;k8s:io.kubernetes.pod.namespace=default;"
    );
}

#[test]
fn round_trips_through_the_canonical_string() {
    let odd = LabelSet::new()
        .with("a=b", "c;d")
        .with("pct%", "100%")
        .with("empty", "")
        .with("unicode", "ünï/çødé");
    for labels in [web(), odd, LabelSet::new()] {
        let s = labels.canonical();
        assert_eq!(LabelSet::from_canonical(&s).unwrap(), labels, "{s}");
    }
}

#[test]
fn escaping_keeps_distinct_sets_distinct() {
    // Without escaping both would read "a=b=c;".
    let one = LabelSet::new().with("a", "b=c");
    let two = LabelSet::new().with("a=b", "c");
    assert_ne!(one.canonical(), two.canonical());
    // Without escaping both would read "a=b;c=d;".
    let three = LabelSet::new().with("a", "b;c=d");
    let four = LabelSet::new().with("a", "b").with("c", "d");
    assert_ne!(three.canonical(), four.canonical());
}

#[test]
fn rejects_strings_it_did_not_write() {
    use LabelsError::*;
    let err = |s: &str| LabelSet::from_canonical(s).unwrap_err();
    assert!(matches!(err("a=b"), Unterminated(_)));
    assert!(matches!(err("ab;"), MissingEquals(_)));
    assert!(matches!(err("a=b=c;"), BadEscape(_)));
    assert!(matches!(err("a=%41;"), BadEscape(_)));
    assert!(matches!(err("a=%3;"), BadEscape(_)));
    assert!(matches!(err("a=b;a=c;"), DuplicateKey(_)));
}

#[test]
fn serialises_as_a_plain_json_map() {
    let json = serde_json::to_string(&web()).unwrap();
    assert_eq!(
        json,
        r#"{"k8s:app":"web","k8s:io.kubernetes.pod.namespace":"default"}"#
    );
    assert_eq!(serde_json::from_str::<LabelSet>(&json).unwrap(), web());
}

#[test]
fn selector_key_lookup_by_source() {
    let set = LabelSet::new()
        .with_source("k8s", "app", "web")
        .with_source("container", "app", "other");
    let mut any: Vec<&str> = set.values_for_selector_key("app").collect();
    any.sort();
    assert_eq!(any, vec!["other", "web"]);
    assert_eq!(set.values_for_selector_key("any:app").count(), 2);
    assert_eq!(
        set.values_for_selector_key("k8s:app").collect::<Vec<_>>(),
        vec!["web"]
    );
    assert_eq!(set.values_for_selector_key("reserved:app").count(), 0);
}

#[test]
fn display_is_sorted_and_stable() {
    let set = LabelSet::new()
        .with_source("reserved", "host", "")
        .with_source("k8s", "app", "a");
    assert_eq!(set.to_string(), "k8s:app=a,reserved:host");
}

#[test]
fn reserved_sets_come_from_the_table() {
    use weir_abi::identity::{HOST, KUBE_APISERVER, REMOTE_NODE};
    let host = LabelSet::reserved(HOST).unwrap();
    assert_eq!(host.to_string(), "reserved:host");
    assert_eq!(host.reserved_identity(), Some(HOST));
    let kube = LabelSet::reserved(KUBE_APISERVER).unwrap();
    assert_eq!(
        kube.to_string(),
        "reserved:kube-apiserver,reserved:remote-node"
    );
    assert_eq!(kube.reserved_identity(), Some(KUBE_APISERVER));
    let remote = LabelSet::new().with("reserved:remote-node", "");
    assert_eq!(remote.reserved_identity(), Some(REMOTE_NODE));
    assert_eq!(remote.with("k8s:app", "web").reserved_identity(), None);
    assert_eq!(LabelSet::new().reserved_identity(), None);
    assert!(LabelSet::reserved(300).is_none());
}
