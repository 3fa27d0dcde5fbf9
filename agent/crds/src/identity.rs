//! `WeirIdentity`: one numeric security identity and its labels, as
//! CiliumIdentity. Cluster-scoped; the object's name is the number
//! (`"1234"`), so two agents allocating the same number race on one name and
//! the API server lets exactly one create win.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    pub security_labels: BTreeMap<String, String>,
}

impl WeirIdentity {
    /// The numeric identity: the object's name. None when the name is not
    /// a number (not an object an agent wrote).
    pub fn numeric_id(&self) -> Option<u32> {
        self.metadata.name.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests;
