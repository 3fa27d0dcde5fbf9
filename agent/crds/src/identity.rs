//! `WeirIdentity`: one numeric security identity and its labels, as
//! CiliumIdentity. Cluster-scoped; the object's name is the number
//! (`"1234"`), so two agents allocating the same number race on one name and
//! the API server lets exactly one create win.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use weir_policy::labels::{split_source, NAMESPACE_LABELS_PREFIX, SOURCE_K8S};
use weir_policy::LabelSet;

/// The labels that make up one identity.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema,
)]
#[kube(
    group = "weir.io",
    version = "v1",
    kind = "WeirIdentity",
    doc = "One numeric security identity (the object's name) and its labels.",
    shortname = "wid",
    category = "weir",
    printcolumn = r#"{"name": "Namespace", "type": "string", "description": "The namespace of the pods with this identity", "jsonPath": ".metadata.labels.io\\.kubernetes\\.pod\\.namespace"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WeirIdentitySpec {
    /// The full security label set, `source:key` to value
    /// (`k8s:app: web`, `k8s:io.kubernetes.pod.namespace: shop`).
    /// The object's own `metadata.labels` mirror the `k8s:` labels without
    /// their source, so `kubectl get wid -l app=web` finds it.
    // A label without a value (`isolated: ""`, as `kubectl label pod p
    // isolated=` makes) is an empty string, but kube-apiserver 1.20
    // validates an empty string in a map of strings as null and refuses it:
    // the schema lets values be null, and null reads back as empty.
    #[schemars(with = "BTreeMap<String, Option<String>>")]
    #[serde(deserialize_with = "null_as_empty")]
    pub security_labels: BTreeMap<String, String>,
}

/// A map of strings whose null values read as empty strings.
fn null_as_empty<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let map: BTreeMap<String, Option<String>> = Deserialize::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

impl WeirIdentity {
    /// The object for identity `id` with `labels`, in CiliumIdentity's
    /// shape: named after the number, the full set in
    /// `spec.securityLabels`, and the `k8s:` labels without their source in
    /// `metadata.labels` (for `kubectl get wid -l`), leaving out the
    /// namespace's own labels and whatever is not a valid Kubernetes label
    /// (a key may pass 63 characters once prefixed).
    pub fn for_labels(id: u32, labels: &LabelSet) -> Self {
        let mut identity = Self::new(
            &id.to_string(),
            WeirIdentitySpec {
                security_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        let mirrored: BTreeMap<String, String> = labels
            .iter()
            .filter_map(|(key, value)| match split_source(key) {
                (Some(SOURCE_K8S), key)
                    if !key.starts_with(NAMESPACE_LABELS_PREFIX)
                        && valid_label_key(key)
                        && valid_label_value(value) =>
                {
                    Some((key.to_string(), value.to_string()))
                }
                _ => None,
            })
            .collect();
        identity.metadata.labels = (!mirrored.is_empty()).then_some(mirrored);
        identity
    }

    /// The identity's label set.
    pub fn label_set(&self) -> LabelSet {
        self.spec.security_labels.iter().collect()
    }

    /// The numeric identity: the object's name. None when the name is not
    /// a number (not an object an agent wrote).
    pub fn numeric_id(&self) -> Option<u32> {
        self.metadata.name.as_deref()?.parse().ok()
    }
}

/// `[prefix/]name`: a DNS subdomain prefix of at most 253 characters, a
/// name of at most 63 (Kubernetes' label key rule, characters left to the
/// API server).
fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    prefix.len() <= 253 && valid_label_value(name) && !name.is_empty()
}

/// At most 63 of `[A-Za-z0-9-_.]`, starting and ending alphanumeric (or
/// empty).
fn valid_label_value(value: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge_ok(value.chars().next())
        && edge_ok(value.chars().last())
}

#[cfg(test)]
mod tests;
