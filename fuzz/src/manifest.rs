//! The manifest parser (`weir_agent::cluster::manifest`): multi-document
//! YAML as the lab's `apply` and the agent's manifest directory read it,
//! and single objects as the Kubernetes API source hands them over.
//!
//! What must hold for any input:
//! - nothing panics; a refused file is an error that says why;
//! - the two sources accept and reject the same (the module's promise):
//!   every document of an accepted file, passed through JSON as the API
//!   source passes it, is read into the same object; every accepted
//!   object's key names its kind.

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use weir_agent::cluster::manifest::{self, Object};

pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match manifest::parse(text) {
        Ok(objects) => {
            for object in &objects {
                check_key(object);
            }
            check_api_reading(text, &objects);
        }
        Err(error) => {
            assert!(
                !format!("{error:#}").trim().is_empty(),
                "a refusal without a reason"
            );
        }
    }
}

fn check_key(object: &Object) {
    let key = object.key();
    let kind = key.split('/').next().unwrap_or_default();
    let expected = match object {
        Object::Namespace(_) => "Namespace",
        Object::Pod(_) => "Pod",
        Object::Policy(policy) => policy.kind.as_str(),
        Object::Service(_) => "Service",
        Object::EndpointSlice(_) => "EndpointSlice",
    };
    assert_eq!(kind, expected, "key {key:?}");
}

/// Each non-empty document of the accepted file, as the API source reads
/// it (JSON, then a YAML value), gives the object the file gave.
fn check_api_reading(text: &str, objects: &[Object]) {
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("the file was read once already"))
        .filter(|value| !value.is_null())
        .collect();
    assert_eq!(documents.len(), objects.len(), "one object per document");
    for (document, object) in documents.iter().zip(objects) {
        let Some(via_json) = through_json(document) else {
            continue;
        };
        match manifest::from_document(via_json) {
            Ok(api) => assert_eq!(
                comparable(&api),
                comparable(object),
                "the file and API readings of {} differ",
                object.key()
            ),
            Err(error) => panic!(
                "{} was read from a file but the API source refuses it: {error:#}",
                object.key()
            ),
        }
    }
}

/// The object without the document it was read from: the API reading's
/// document has been through JSON, which may spell numbers differently.
/// A policy document is compared by what the policy front end reads from
/// it, or only by its being refused: JSON sorts an object's keys, so of
/// several problems serde may report another one first.
fn comparable(object: &Object) -> String {
    match object {
        Object::Service(service) => format!("{:?}", service.object),
        Object::EndpointSlice(slice) => format!("{:?}", slice.object),
        Object::Policy(policy) => format!(
            "{} {} {:?} {} {:?}",
            policy.api_version,
            policy.kind,
            policy.namespace,
            policy.name,
            // Keys in the order JSON gives them (sorted), on both sides:
            // fields Weir keeps raw (and refuses) hold the document's
            // maps as they came, and key order means nothing.
            weir_policy::PolicyDocument::from_value(
                through_json(&policy.document).unwrap_or_else(|| policy.document.clone())
            )
            .map_err(|_| "refused")
        ),
        other => format!("{other:?}"),
    }
}

/// What the API source makes of a document (see `policy::through_json`).
fn through_json(value: &Value) -> Option<Value> {
    if !crate::policy::json_representable(value) {
        return None;
    }
    let json = serde_json::to_value(value).ok()?;
    serde_yaml_ng::to_value(&json).ok()
}

#[cfg(test)]
mod tests {
    /// Found by `cargo xtask fuzz manifest`: a NetworkPolicy with two
    /// problems (a null `operator`, an egress rule that is a string) is
    /// refused by both sources, but the API reading (through JSON, keys
    /// sorted) reported the other problem first, which the comparison of
    /// error texts took for a difference. Also in the seed corpus.
    #[test]
    fn file_and_api_readings_agree_on_refusal_not_on_the_first_problem() {
        let input =
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: full\n  \
                     namespace: shop\nspec:\n  podSelector:\n    matchExpressions:\n    \
                     - {key: tier, operator: ,In values: [front]}\n  egress:\n  - to:08\n";
        super::fuzz(input.as_bytes());
    }

    /// Found by the seeded runner in `cargo xtask test`: a policy whose
    /// refused raw field (`toFQDNs`) holds a map with keys out of order
    /// read differently through JSON (keys sorted) only in that order.
    #[test]
    fn file_and_api_readings_agree_whatever_the_order_of_raw_map_keys() {
        let input = "apiVersion: weir.io/v1\nkind: WeirClusterwideNetworkPolicy\nmetadata: \
                     {name: unsupported}\nspec:\n  endpointSelector: {}\n  egress:\n  - \
                     toFQDNs:\n    - {matchName: examp, e.com: null}\n";
        super::fuzz(input.as_bytes());
    }
}
