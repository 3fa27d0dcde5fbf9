use super::*;

fn spec(yaml: &str) -> LabelSelectorSpec {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn parse(yaml: &str) -> Result<Selector, Vec<String>> {
    let mut errors = FieldErrors::new();
    let sel = Selector::from_spec(&spec(yaml), &Path::root("sel"), &mut errors);
    sel.ok_or_else(|| errors.messages())
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::from_k8s(pairs.iter().copied())
}

#[test]
fn empty_selector_selects_everything() {
    let sel = parse("{}").unwrap();
    assert!(sel.matches(&LabelSet::new()));
    assert!(sel.matches(&labels(&[("a", "b")])));
}

#[test]
fn match_labels_and_expressions_are_anded() {
    let sel = parse(
        "matchLabels: {app: web}\nmatchExpressions: [{key: tier, operator: In, values: [fe, be]}]",
    )
    .unwrap();
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "db")])));
    assert!(!sel.matches(&labels(&[("app", "web")])));
    assert!(!sel.matches(&labels(&[("app", "api"), ("tier", "fe")])));
}

#[test]
fn operators_follow_kubernetes() {
    let not_in = parse("matchExpressions: [{key: env, operator: NotIn, values: [prod]}]").unwrap();
    assert!(
        not_in.matches(&labels(&[])),
        "NotIn matches when the key is absent"
    );
    assert!(not_in.matches(&labels(&[("env", "dev")])));
    assert!(!not_in.matches(&labels(&[("env", "prod")])));

    let exists = parse("matchExpressions: [{key: env, operator: Exists}]").unwrap();
    assert!(exists.matches(&labels(&[("env", "")])));
    assert!(!exists.matches(&labels(&[])));

    let dne = parse("matchExpressions: [{key: env, operator: DoesNotExist}]").unwrap();
    assert!(dne.matches(&labels(&[])));
    assert!(!dne.matches(&labels(&[("env", "x")])));
}

#[test]
fn unknown_operator_is_an_error() {
    let errs =
        parse("matchExpressions: [{key: env, operator: Includes, values: [a]}]").unwrap_err();
    assert_eq!(
        errs,
        vec![r#"sel.matchExpressions[0].operator: unknown operator "Includes""#]
    );
}

#[test]
fn in_and_not_in_need_values() {
    let errs =
        parse("matchExpressions: [{key: a, operator: In}, {key: b, operator: NotIn, values: []}]")
            .unwrap_err();
    assert_eq!(
        errs,
        vec![
            "sel.matchExpressions[0].values: must be non-empty when operator is In",
            "sel.matchExpressions[1].values: must be non-empty when operator is NotIn",
        ]
    );
}

#[test]
fn exists_takes_no_values() {
    let errs = parse(
        "matchExpressions: [{key: a, operator: Exists, values: [x]}, {key: b, operator: DoesNotExist, values: [y]}]",
    )
    .unwrap_err();
    assert_eq!(
        errs,
        vec![
            "sel.matchExpressions[0].values: must be empty when operator is Exists",
            "sel.matchExpressions[1].values: must be empty when operator is DoesNotExist",
        ]
    );
}

#[test]
fn invalid_keys_and_values_are_reported() {
    let errs = parse("matchLabels: {'-bad': 'x', good: 'not valid!'}").unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("sel.matchLabels[-bad]: invalid label key"));
    assert!(errs[1].starts_with("sel.matchLabels[good]: invalid label value"));
    assert!(parse("matchLabels: {'example.com/app': web}").is_ok());
    assert!(parse("matchLabels: {'reserved:host': ''}").is_ok());
    assert!(parse("matchLabels: {'Bad_Prefix/app': web}").is_err());
}

#[test]
fn names_namespace_and_reserved() {
    let sel = parse("matchLabels: {'k8s:io.kubernetes.pod.namespace': x}").unwrap();
    assert!(sel.names_namespace());
    assert!(parse("matchLabels: {'io.kubernetes.pod.namespace': x}")
        .unwrap()
        .names_namespace());
    assert!(!parse("matchLabels: {app: x}").unwrap().names_namespace());
    assert!(parse("matchLabels: {'reserved:host': ''}")
        .unwrap()
        .names_reserved());
}

#[test]
fn reserved_selector_matches_reserved_labels_only() {
    let sel = parse("matchLabels: {'reserved:host': ''}").unwrap();
    assert!(sel.matches(&LabelSet::new().with_source("reserved", "host", "")));
    assert!(!sel.matches(&LabelSet::new().with_source("k8s", "host", "")));
}
