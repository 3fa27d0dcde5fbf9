//! Helpers of the unit tests.

use kube::CustomResourceExt;

/// Asserts that the API server would store the object in `yaml` as it is
/// (checked against `K`'s generated schema: nothing pruned or refused).
pub fn assert_stored_as_is<K: CustomResourceExt>(yaml: &str) {
    let crd = serde_json::to_value(K::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let object: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let problems = crate::schema::object_problems(schema, &object);
    assert!(problems.is_empty(), "{yaml}\n  {}", problems.join("\n  "));
}
