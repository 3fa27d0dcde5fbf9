//! Reading policy manifests: dispatch on `apiVersion`/`kind` and validate.

use serde::Deserialize;

use crate::error::PolicyError;
use crate::k8s::NetworkPolicy;
use crate::rule::Policy;
use crate::weir::WeirPolicy;

pub const K8S_API_VERSION: &str = "networking.k8s.io/v1";
pub const WEIR_API_VERSION: &str = "weir.io/v1";

/// A typed policy document.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyDocument {
    NetworkPolicy(NetworkPolicy),
    WeirNetworkPolicy(WeirPolicy),
    WeirClusterwideNetworkPolicy(WeirPolicy),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

fn yaml_err(what: &str) -> impl Fn(serde_yaml_ng::Error) -> PolicyError + '_ {
    move |source| PolicyError::Yaml {
        what: what.to_string(),
        source,
    }
}

impl PolicyDocument {
    /// Parses one YAML document into the typed form its kind names.
    pub fn from_yaml(yaml: &str) -> Result<Self, PolicyError> {
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(yaml).map_err(yaml_err("document"))?;
        Self::from_value(value)
    }

    /// Same from an already parsed YAML value.
    pub fn from_value(value: serde_yaml_ng::Value) -> Result<Self, PolicyError> {
        let tm: TypeMeta =
            serde_yaml_ng::from_value(value.clone()).map_err(yaml_err("document"))?;
        match (tm.api_version.as_str(), tm.kind.as_str()) {
            (K8S_API_VERSION, "NetworkPolicy") => Ok(Self::NetworkPolicy(
                serde_yaml_ng::from_value(value).map_err(yaml_err("NetworkPolicy"))?,
            )),
            (WEIR_API_VERSION, "WeirNetworkPolicy") => Ok(Self::WeirNetworkPolicy(
                serde_yaml_ng::from_value(value).map_err(yaml_err("WeirNetworkPolicy"))?,
            )),
            (WEIR_API_VERSION, "WeirClusterwideNetworkPolicy") => {
                Ok(Self::WeirClusterwideNetworkPolicy(
                    serde_yaml_ng::from_value(value)
                        .map_err(yaml_err("WeirClusterwideNetworkPolicy"))?,
                ))
            }
            _ => Err(PolicyError::UnsupportedKind {
                api_version: tm.api_version,
                kind: tm.kind,
            }),
        }
    }

    /// Validates and translates into rules; on any problem, no rules.
    pub fn to_policy(&self) -> Result<Policy, PolicyError> {
        match self {
            Self::NetworkPolicy(np) => np.to_policy(),
            Self::WeirNetworkPolicy(p) => p.to_policy(false),
            Self::WeirClusterwideNetworkPolicy(p) => p.to_policy(true),
        }
    }
}

/// Parses and validates one YAML document.
pub fn parse_policy(yaml: &str) -> Result<Policy, PolicyError> {
    PolicyDocument::from_yaml(yaml)?.to_policy()
}

/// Parses and validates every document of a multi-document YAML stream
/// (`---` separated); empty documents are skipped. One result per document.
pub fn parse_policies(yaml: &str) -> Vec<Result<Policy, PolicyError>> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = match serde_yaml_ng::Value::deserialize(doc) {
            Ok(serde_yaml_ng::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.push(Err(PolicyError::Yaml {
                    what: "document".into(),
                    source: e,
                }));
                // A syntax error ends the stream.
                break;
            }
        };
        out.push(PolicyDocument::from_value(value).and_then(|d| d.to_policy()));
    }
    out
}

#[cfg(test)]
mod tests;
