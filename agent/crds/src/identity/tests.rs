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
