use super::*;

fn web() -> SecurityLabels {
    SecurityLabels::new()
        .with("k8s:io.kubernetes.pod.namespace", "default")
        .with("k8s:app", "web")
}

#[test]
fn canonical_is_sorted_and_independent_of_insertion_order() {
    let other = SecurityLabels::new()
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
    let odd = SecurityLabels::new()
        .with("a=b", "c;d")
        .with("pct%", "100%")
        .with("empty", "")
        .with("unicode", "ünï/çødé");
    for labels in [web(), odd, SecurityLabels::new()] {
        let s = labels.canonical();
        assert_eq!(SecurityLabels::from_canonical(&s).unwrap(), labels, "{s}");
    }
}

#[test]
fn escaping_keeps_distinct_sets_distinct() {
    // Without escaping both would read "a=b=c;".
    let one = SecurityLabels::new().with("a", "b=c");
    let two = SecurityLabels::new().with("a=b", "c");
    assert_ne!(one.canonical(), two.canonical());
    // Without escaping both would read "a=b;c=d;".
    let three = SecurityLabels::new().with("a", "b;c=d");
    let four = SecurityLabels::new().with("a", "b").with("c", "d");
    assert_ne!(three.canonical(), four.canonical());
}

#[test]
fn rejects_strings_it_did_not_write() {
    use LabelsError::*;
    let err = |s: &str| SecurityLabels::from_canonical(s).unwrap_err();
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
    assert_eq!(
        serde_json::from_str::<SecurityLabels>(&json).unwrap(),
        web()
    );
}
