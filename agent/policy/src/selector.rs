//! Kubernetes label selectors: the YAML form ([`LabelSelectorSpec`]) and the
//! validated form ([`Selector`]) that matches a [`LabelSet`].
//!
//! Semantics are Kubernetes' (`apimachinery/pkg/labels`): all requirements are
//! ANDed; an empty selector selects everything; `In` needs the label present
//! with one of the values; `NotIn` matches when the label is absent or has
//! none of the values; `Exists`/`DoesNotExist` test presence only.
//! Selector keys may carry a source (see [`crate::labels`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{FieldErrors, Path};
use crate::labels::{split_source, LabelSet, POD_NAMESPACE_LABEL, SOURCE_ANY, SOURCE_RESERVED};

/// A label selector as written in YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorSpec {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<RequirementSpec>>,
}

/// One `matchExpressions` entry as written in YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequirementSpec {
    /// A label key, optionally with its source (`k8s:app`).
    #[serde(default)]
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    #[serde(default)]
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// Selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        })
    }
}

/// One validated requirement. `key` may carry a source prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: BTreeSet<String>,
}

impl Requirement {
    pub fn new(key: impl Into<String>, operator: Operator, values: &[&str]) -> Self {
        Self {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// `key = value`, i.e. `In [value]`.
    pub fn equals(key: impl Into<String>, value: &str) -> Self {
        Self::new(key, Operator::In, &[value])
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        let mut values = labels.values_for_selector_key(&self.key);
        match self.operator {
            Operator::In => values.any(|v| self.values.contains(v)),
            Operator::NotIn => !values.any(|v| self.values.contains(v)),
            Operator::Exists => values.next().is_some(),
            Operator::DoesNotExist => values.next().is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            Operator::In if self.values.len() == 1 => {
                write!(
                    f,
                    "{}={}",
                    self.key,
                    self.values.iter().next().unwrap_or(&String::new())
                )
            }
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            op => {
                let vals: Vec<&str> = self.values.iter().map(String::as_str).collect();
                write!(f, "{} {} ({})", self.key, op, vals.join(","))
            }
        }
    }
}

/// A validated selector: the AND of its requirements; empty selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    requirements: BTreeSet<Requirement>,
}

impl Selector {
    /// The selector that selects everything.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn with(mut self, requirement: Requirement) -> Self {
        self.requirements.insert(requirement);
        self
    }

    pub fn requirements(&self) -> impl Iterator<Item = &Requirement> {
        self.requirements.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether some requirement is about the namespace name key
    /// (`io.kubernetes.pod.namespace` with source `k8s`, `any` or none).
    pub fn names_namespace(&self) -> bool {
        self.requirements.iter().any(|r| {
            let (source, key) = split_source(&r.key);
            key == POD_NAMESPACE_LABEL && matches!(source, None | Some("k8s") | Some(SOURCE_ANY))
        })
    }

    /// Whether some requirement is about a `reserved:` label.
    pub fn names_reserved(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| split_source(&r.key).0 == Some(SOURCE_RESERVED))
    }

    /// The same selector with every key rewritten by `f` (used to put a
    /// source or the namespace-labels prefix in front of the user's keys).
    pub fn map_keys(&self, f: impl Fn(&str) -> String) -> Self {
        Self {
            requirements: self
                .requirements
                .iter()
                .map(|r| Requirement {
                    key: f(&r.key),
                    operator: r.operator,
                    values: r.values.clone(),
                })
                .collect(),
        }
    }

    /// The AND of two selectors.
    pub fn and(mut self, other: &Selector) -> Self {
        self.requirements.extend(other.requirements.iter().cloned());
        self
    }

    /// Validates a YAML selector, recording each problem under `path`.
    /// Returns `None` when there was any problem.
    pub fn from_spec(
        spec: &LabelSelectorSpec,
        path: &Path,
        errors: &mut FieldErrors,
    ) -> Option<Self> {
        let before = errors.len();
        let mut sel = Selector::all();
        if let Some(ml) = &spec.match_labels {
            for (k, v) in ml {
                let p = path.field("matchLabels").key(k);
                validate_label_key(k, &p, errors);
                validate_label_value(v, &p, errors);
                sel.requirements.insert(Requirement::equals(k.clone(), v));
            }
        }
        for (i, e) in spec.match_expressions.iter().flatten().enumerate() {
            let p = path.field("matchExpressions").index(i);
            validate_label_key(&e.key, &p.field("key"), errors);
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Some(Operator::In),
                "NotIn" => Some(Operator::NotIn),
                "Exists" => Some(Operator::Exists),
                "DoesNotExist" => Some(Operator::DoesNotExist),
                "" => {
                    errors.push(p.field("operator"), "operator is required");
                    None
                }
                other => {
                    errors.push(p.field("operator"), format!("unknown operator {other:?}"));
                    None
                }
            };
            match op {
                Some(Operator::In | Operator::NotIn) if values.is_empty() => errors.push(
                    p.field("values"),
                    format!(
                        "must be non-empty when operator is {}",
                        op.unwrap_or(Operator::In)
                    ),
                ),
                Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => errors
                    .push(
                        p.field("values"),
                        format!(
                            "must be empty when operator is {}",
                            op.unwrap_or(Operator::Exists)
                        ),
                    ),
                _ => {}
            }
            for (j, v) in values.iter().enumerate() {
                validate_label_value(v, &p.field("values").index(j), errors);
            }
            if let Some(op) = op {
                sel.requirements.insert(Requirement {
                    key: e.key.clone(),
                    operator: op,
                    values: values.into_iter().collect(),
                });
            }
        }
        (errors.len() == before).then_some(sel)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// A Kubernetes qualified name part: 1-63 chars, alphanumeric at both ends,
/// `-`, `_`, `.` inside.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(is_name_char)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A DNS subdomain (the optional prefix of a label key).
fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Validates a selector key: `[source:][prefix/]name` with Kubernetes rules
/// for prefix and name.
pub fn validate_label_key(full_key: &str, path: &Path, errors: &mut FieldErrors) {
    let (source, key) = split_source(full_key);
    if let Some(source) = source {
        if source.is_empty()
            || !source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            errors.push(
                path.clone(),
                format!("invalid label source in key {full_key:?}"),
            );
            return;
        }
        // Reserved and CIDR labels are not Kubernetes names (`cidr:10.0.0.0/8`).
        if source != "k8s" && source != SOURCE_ANY {
            if key.is_empty() {
                errors.push(path.clone(), format!("empty label key in {full_key:?}"));
            }
            return;
        }
    }
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !valid_dns_subdomain(prefix) {
            errors.push(
                path.clone(),
                format!("invalid label key {full_key:?}: prefix must be a DNS subdomain"),
            );
            return;
        }
    }
    if !valid_name(name) {
        errors.push(
            path.clone(),
            format!(
                "invalid label key {full_key:?}: name must be 1-63 characters, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character"
            ),
        );
    }
}

/// Validates a label value: empty, or a valid name part.
pub fn validate_label_value(value: &str, path: &Path, errors: &mut FieldErrors) {
    if !value.is_empty() && !valid_name(value) {
        errors.push(
            path.clone(),
            format!(
                "invalid label value {value:?}: must be at most 63 characters, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character"
            ),
        );
    }
}

#[cfg(test)]
mod tests;
