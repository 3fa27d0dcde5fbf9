use super::*;

#[test]
fn an_identity_round_trips_and_names_its_number() {
    let yaml = "apiVersion: weir.io/v1\nkind: WeirIdentity\nmetadata:\n  name: '1234'\n  labels: {app: web, io.kubernetes.pod.namespace: shop}\nspec:\n  securityLabels:\n    k8s:app: web\n    k8s:io.kubernetes.pod.namespace: shop\n";
    let identity: WeirIdentity = serde_yaml_ng::from_str(yaml).unwrap();
    crate::test_util::assert_stored_as_is::<WeirIdentity>(yaml);
    assert_eq!(identity.numeric_id(), Some(1234));
    assert_eq!(identity.spec.security_labels["k8s:app"], "web");
    assert_eq!(
        serde_yaml_ng::to_value(&identity).unwrap(),
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml).unwrap()
    );
}

#[test]
fn an_identity_for_labels_mirrors_only_valid_k8s_labels() {
    let long = "x".repeat(64);
    let labels: LabelSet = [
        ("k8s:app", "web"),
        ("k8s:io.kubernetes.pod.namespace", "shop"),
        ("k8s:io.cilium.k8s.namespace.labels.team", "a"),
        ("k8s:note", long.as_str()),
        ("reserved:host", ""),
    ]
    .into_iter()
    .collect();
    let identity = WeirIdentity::for_labels(300, &labels);
    assert_eq!(identity.numeric_id(), Some(300));
    assert_eq!(identity.label_set(), labels);
    let mirrored: Vec<&str> = identity
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(mirrored, ["app", "io.kubernetes.pod.namespace"]);
}

#[test]
fn a_label_without_a_value_is_sent_as_an_empty_string() {
    let labels: LabelSet = [("k8s:isolated", ""), ("k8s:app", "web")]
        .into_iter()
        .collect();
    let json = serde_json::to_value(WeirIdentity::for_labels(300, &labels)).unwrap();
    assert_eq!(json["spec"]["securityLabels"]["k8s:isolated"], "");
}

#[test]
fn a_null_label_value_reads_as_an_empty_string() {
    let yaml = "apiVersion: weir.io/v1\nkind: WeirIdentity\nmetadata: {name: '301'}\nspec:\n  securityLabels: {'k8s:isolated': null, 'k8s:app': web}\n";
    let identity: WeirIdentity = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(identity.spec.security_labels["k8s:isolated"], "");
    let schema = serde_json::to_value(<WeirIdentity as kube::CustomResourceExt>::crd()).unwrap();
    let labels = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["securityLabels"]["additionalProperties"];
    assert_eq!(labels["nullable"], true, "{labels}");
}
