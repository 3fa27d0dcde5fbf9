//! `WeirNetworkPolicy` (namespaced) and `WeirClusterwideNetworkPolicy`
//! (cluster-scoped): CiliumNetworkPolicy's shape, one `spec` or a list of
//! `specs` (or both), each a [`WeirRule`] parsed by weir-policy.
//!
//! kube's `CustomResource` derive makes `spec` a required single field, so
//! these two roots are written out here (their `Resource` and
//! `CustomResourceExt` impls are the derive's, by hand); the other kinds
//! use the derive.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, ClusterResourceScope, NamespaceResourceScope};
use kube::{CustomResourceExt, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use weir_policy::weir::{WeirPolicy, WeirRule};
use weir_policy::{Policy, PolicyError};

use crate::schema::{self, Column, CrdNames};

/// What the agents made of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// `Valid`: `True` when every node that reported accepted the policy,
    /// `False` (with the first problem) when one refused it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PolicyCondition>,
    /// Per node name: accepted, or refused with every problem. Per node
    /// because agents of two versions (an upgrade) may disagree.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodePolicyStatus>,
}

/// A condition, as `metav1.Condition` (a subset).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One node's verdict on a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePolicyStatus {
    /// The policy passed validation and is part of the node's policy.
    pub ok: bool,
    /// The node's policy revision that first included it (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Every validation problem (when not `ok`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldErrorStatus>,
}

/// One problem: the path of the field (`spec.ingress[0].toPorts[0].ports[0].port`)
/// and why.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct FieldErrorStatus {
    pub path: String,
    pub message: String,
}

impl NodePolicyStatus {
    /// Accepted at `revision`.
    pub fn accepted(revision: u64) -> Self {
        Self {
            ok: true,
            revision: Some(revision),
            errors: Vec::new(),
        }
    }

    /// Refused: every problem with its path. Errors that are about the whole
    /// document (not YAML, unknown kind) get the empty path.
    pub fn refused(error: &PolicyError) -> Self {
        let errors = match error {
            PolicyError::Invalid { errors, .. } => errors
                .iter()
                .map(|e| FieldErrorStatus {
                    path: e.path.as_str().to_string(),
                    message: e.reason.clone(),
                })
                .collect(),
            other => vec![FieldErrorStatus {
                path: String::new(),
                message: other.to_string(),
            }],
        };
        Self {
            ok: false,
            revision: None,
            errors,
        }
    }
}

impl PolicyStatus {
    /// Records `node`'s verdict and recomputes the `Valid` condition.
    pub fn set_node(&mut self, node: &str, status: NodePolicyStatus) {
        self.nodes.insert(node.to_string(), status);
        let refused = self.nodes.iter().find(|(_, s)| !s.ok);
        let valid = PolicyCondition {
            condition_type: "Valid".into(),
            status: if refused.is_some() { "False" } else { "True" }.into(),
            message: refused.map(|(node, s)| match s.errors.first() {
                Some(e) if e.path.is_empty() => format!("{node}: {}", e.message),
                Some(e) => format!("{node}: {}: {}", e.path, e.message),
                None => format!("{node}: refused"),
            }),
        };
        self.conditions.retain(|c| c.condition_type != "Valid");
        self.conditions.push(valid);
    }
}

/// The wire form both policy roots serialize through (adds `apiVersion`
/// and `kind`, as the derive's roots do).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: &'a Option<WeirRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    specs: &'a Option<Vec<WeirRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<PolicyStatus>,
}

/// Implements the root of one policy kind; the two differ only in names
/// and scope.
macro_rules! policy_kind {
    ($(#[$doc:meta])* $kind:ident, $scope:ty, $namespaced:literal, $plural:literal, $singular:literal, $short:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $kind {
            /// Not in the schema: the API server defines `metadata` itself.
            #[serde(default)]
            #[schemars(skip)]
            pub metadata: ObjectMeta,
            /// One rule set.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub spec: Option<WeirRule>,
            /// Several rule sets (paths `specs[i]...`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub specs: Option<Vec<WeirRule>>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<PolicyStatus>,
        }

        impl Serialize for $kind {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                Wire {
                    api_version: crate::API_VERSION,
                    kind: stringify!($kind),
                    metadata: &self.metadata,
                    spec: &self.spec,
                    specs: &self.specs,
                    status: &self.status,
                }
                .serialize(serializer)
            }
        }

        impl $kind {
            /// Validates and translates for the policy engine, exactly as the
            /// manifest directory's documents are.
            pub fn to_policy(&self) -> Result<Policy, PolicyError> {
                self.as_document().to_policy(!$namespaced)
            }

            /// The document form weir-policy parses.
            pub fn as_document(&self) -> WeirPolicy {
                WeirPolicy {
                    api_version: Some(crate::API_VERSION.to_string()),
                    kind: Some(stringify!($kind).to_string()),
                    metadata: weir_policy::k8s::ObjectMeta {
                        name: self.metadata.name.clone(),
                        namespace: self.metadata.namespace.clone(),
                    },
                    spec: self.spec.clone(),
                    specs: self.specs.clone(),
                }
            }
        }

        impl Resource for $kind {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                stringify!($kind).into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                crate::GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                crate::VERSION.into()
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                crate::API_VERSION.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl CustomResourceExt for $kind {
            fn crd() -> CustomResourceDefinition {
                schema::crd::<Self>(
                    &CrdNames {
                        kind: stringify!($kind),
                        plural: $plural,
                        singular: $singular,
                        short_names: &[$short],
                        namespaced: $namespaced,
                    },
                    &policy_columns(),
                )
            }
            fn crd_name() -> &'static str {
                concat!($plural, ".weir.io")
            }
            fn api_resource() -> ApiResource {
                ApiResource::erase::<Self>(&())
            }
            fn shortnames() -> &'static [&'static str] {
                &[$short]
            }
        }
    };
}

policy_kind!(
    /// A namespaced Weir policy: its endpoint and peer selectors are scoped
    /// to its namespace (see weir-policy's `weir` module).
    WeirNetworkPolicy,
    NamespaceResourceScope,
    true,
    "weirnetworkpolicies",
    "weirnetworkpolicy",
    "wnp"
);

policy_kind!(
    /// A cluster-wide Weir policy: selectors span every namespace.
    WeirClusterwideNetworkPolicy,
    ClusterResourceScope,
    false,
    "weirclusterwidenetworkpolicies",
    "weirclusterwidenetworkpolicy",
    "wcnp"
);

/// Cilium's policy columns: validity and age.
fn policy_columns() -> Vec<Column> {
    vec![
        Column::new(
            "Valid",
            "string",
            r#".status.conditions[?(@.type=="Valid")].status"#,
        )
        .description("Accepted by every node that reported"),
        Column::new("Age", "date", ".metadata.creationTimestamp"),
    ]
}

#[cfg(test)]
mod tests;
