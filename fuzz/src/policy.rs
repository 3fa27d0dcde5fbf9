//! The policy document front ends: NetworkPolicy, WeirNetworkPolicy and
//! WeirClusterwideNetworkPolicy, read from YAML (manifest files, `weir
//! policy`) and from JSON (the Kubernetes API source turns every object into
//! JSON and then into the YAML value the front end reads).
//!
//! What must hold for any input:
//! - nothing panics, and a refusal is an error that says why (an invalid
//!   policy lists at least one field problem);
//! - a document read from a file and the same document as the API source
//!   hands it over (through JSON) are read alike: the same typed document,
//!   the same rules, or both refused;
//! - validation is deterministic, and a policy that validates compiles
//!   against a small cluster and lowers to map state without panicking,
//!   the same twice.

use serde_yaml_ng::Value;
use weir_policy::{
    compile, lower, pod_security_labels, ClusterView, Endpoint, Identity, LabelFilter,
    LocalIdentities, NamedPorts, Policy, PolicyDocument, PolicyError,
};

/// YAML text: a stream through [`weir_policy::parse_policies`], then one
/// document through [`PolicyDocument::from_value`].
pub fn yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut valid = Vec::new();
    for outcome in weir_policy::parse_policies(text) {
        match outcome {
            Ok(policy) => valid.push(policy),
            Err(error) => check_refusal(&error),
        }
    }
    compile_and_lower(&valid);
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(value) => document(value),
        Err(error) => assert!(!error.to_string().is_empty(), "a YAML error without text"),
    }
}

/// JSON text, read as the Kubernetes API source reads an object.
pub fn json(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let value = serde_yaml_ng::to_value(&json).expect("every JSON value is a YAML value");
    document(value);
}

/// One document: read, validate, compare with its JSON form, compile.
fn document(value: Value) {
    let read = PolicyDocument::from_value(value.clone());
    let policy = match &read {
        Ok(document) => {
            let policy = document.to_policy();
            let again = document.to_policy();
            assert_eq!(
                outcome_text(&policy),
                outcome_text(&again),
                "validation is not deterministic"
            );
            match policy {
                Ok(policy) => Some(policy),
                Err(error) => {
                    check_refusal(&error);
                    None
                }
            }
        }
        Err(error) => {
            check_refusal(error);
            None
        }
    };
    if let Some(via_json) = through_json(&value) {
        let read_via_json = PolicyDocument::from_value(via_json);
        match (&read, &read_via_json) {
            (Ok(file), Ok(api)) => {
                assert_eq!(file, api, "the file and API readings of a document differ");
                assert_eq!(
                    outcome_text(&file.to_policy()),
                    outcome_text(&api.to_policy()),
                    "the file and API readings validate differently"
                );
            }
            (Err(_), Err(_)) => {}
            (file, api) => panic!(
                "a document read from a file gives {} and through JSON {}",
                ok_or_err(file),
                ok_or_err(api)
            ),
        }
    }
    if let Some(policy) = policy {
        compile_and_lower(std::slice::from_ref(&policy));
    }
}

/// The document as the API source would hand it over: JSON, then a YAML
/// value. None for what JSON cannot carry and the API never sends: YAML
/// tags, keys that are not strings, non-finite numbers.
fn through_json(value: &Value) -> Option<Value> {
    if !json_representable(value) {
        return None;
    }
    let json = serde_json::to_value(value).ok()?;
    let text = serde_json::to_string(&json).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_yaml_ng::to_value(&json).ok()
}

pub(crate) fn json_representable(value: &Value) -> bool {
    match value {
        Value::Tagged(_) => false,
        Value::Number(n) => n.as_f64().is_none_or(f64::is_finite),
        Value::Sequence(items) => items.iter().all(json_representable),
        Value::Mapping(map) => map
            .iter()
            .all(|(k, v)| matches!(k, Value::String(_)) && json_representable(v)),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

fn check_refusal(error: &PolicyError) {
    assert!(
        !error.to_string().trim().is_empty(),
        "a refusal without a reason"
    );
    if let PolicyError::Invalid { errors, .. } = error {
        assert!(
            !errors.is_empty(),
            "an invalid policy without a field problem"
        );
        for message in errors.messages() {
            assert!(!message.trim().is_empty(), "a field problem without text");
        }
    }
}

fn outcome_text(outcome: &Result<Policy, PolicyError>) -> Result<&Policy, String> {
    outcome.as_ref().map_err(ToString::to_string)
}

fn ok_or_err<T, E: std::fmt::Display>(outcome: &Result<T, E>) -> String {
    match outcome {
        Ok(_) => "a document".to_string(),
        Err(error) => format!("the error {error}"),
    }
}

/// Compiles `policies` against a small cluster (two namespaces, three pods,
/// two of them local endpoints) and lowers the result; twice, which must
/// agree.
fn compile_and_lower(policies: &[Policy]) {
    if policies.is_empty() {
        return;
    }
    let view = small_cluster();
    let first = compile(&view, policies, &mut LocalIdentities::new());
    let second = compile(&view, policies, &mut LocalIdentities::new());
    assert_eq!(first, second, "compiling is not deterministic");
    assert_eq!(
        lower(&first),
        lower(&second),
        "lowering is not deterministic"
    );
}

/// A pod of [`small_cluster`]: identity, namespace, labels, local endpoint.
type Pod = (
    u32,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<u32>,
);

fn small_cluster() -> ClusterView {
    let mut view = ClusterView::new();
    let pods: [Pod; 3] = [
        (
            100_001,
            "shop",
            &[("app", "web"), ("tier", "front")],
            Some(1),
        ),
        (100_002, "shop", &[("app", "db")], Some(2)),
        (100_003, "billing", &[("app", "ledger")], None),
    ];
    for (id, namespace, labels, endpoint) in pods {
        let labels = pod_security_labels(
            namespace,
            [("kubernetes.io/metadata.name", namespace)],
            labels.iter().copied(),
            &LabelFilter::default(),
        );
        let mut named_ports = NamedPorts::new();
        named_ports.insert(
            "http".to_string(),
            [(weir_policy::Protocol::Tcp, 80)].into_iter().collect(),
        );
        view.add_identity(Identity {
            id,
            labels,
            named_ports: named_ports.clone(),
        });
        if let Some(endpoint) = endpoint {
            view.add_endpoint(Endpoint {
                id: endpoint,
                identity: id,
                named_ports,
            });
        }
    }
    view
}
