//! Label sets: the labels a security identity stands for.
//!
//! A [`LabelSet`] is a sorted map `source:key → value`. Every key carries its
//! *source*, written Cilium's way as a prefix: `k8s:app`, `reserved:host`,
//! `cidr:10.0.0.0/8`. Pod labels, the namespace name and the namespace labels
//! all have source `k8s`, so the namespace of a pod is
//! `k8s:io.kubernetes.pod.namespace=<name>` and a namespace label `team=a` is
//! `k8s:io.cilium.k8s.namespace.labels.team=a`. Kubernetes label keys never
//! contain `:`, so the first `:` always separates the source.
//!
//! The same type serves the identity allocator (which stores a set and
//! compares sets, see [`LabelSet::canonical`]) and the policy engine (whose
//! selectors match sets, see [`LabelSet::values_for_selector_key`]); which
//! pod labels count is the policy engine's label filter's decision.
//!
//! # Canonical encoding
//!
//! [`LabelSet::canonical`] is the string used as the etcd key of the
//! identity, so two agents must produce the same bytes for the same set:
//!
//! ```text
//! key1=value1;key2=value2;
//! ```
//!
//! Labels are in byte order of their keys (a `BTreeMap`), each written as
//! `key=value;`. In keys and values the three characters `%`, `=` and `;` are
//! written `%25`, `%3D` and `%3B`, so the encoding is injective and
//! [`LabelSet::from_canonical`] reverses it. Kubernetes label keys and
//! values never contain those characters, so in practice the encoding reads
//! like Cilium's (`k8s:app=web;k8s:io.kubernetes.pod.namespace=default;`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use weir_abi::identity as reserved;

/// Source of pod, namespace and namespace-label labels.
pub const SOURCE_K8S: &str = "k8s";
/// Source of the labels of reserved identities (`reserved:host`, ...).
pub const SOURCE_RESERVED: &str = reserved::LABEL_SOURCE;
/// Source of CIDR identity labels (`cidr:10.0.0.0/8`).
pub const SOURCE_CIDR: &str = "cidr";
/// Wildcard source used in selectors: matches a label from any source.
pub const SOURCE_ANY: &str = "any";

/// Label key carrying the pod's namespace name.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Prefix under which every namespace label is copied into a pod identity.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// Splits `source:key` into its parts; a key without `:` has no source.
pub fn split_source(full_key: &str) -> (Option<&str>, &str) {
    match full_key.split_once(':') {
        Some((source, key)) => (Some(source), key),
        None => (None, full_key),
    }
}

/// A sorted set of labels, keyed by `source:key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabelSet(BTreeMap<String, String>);

/// A canonical label string that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelsError {
    #[error("label {0:?} has no '='")]
    MissingEquals(String),
    #[error("label string {0:?} does not end with ';'")]
    Unterminated(String),
    #[error("bad escape in {0:?}: only %25, %3D and %3B are used")]
    BadEscape(String),
    #[error("label key {0:?} appears twice")]
    DuplicateKey(String),
}

impl LabelSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the label with the full key `source:key`; returns
    /// `self` for chaining.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds or replaces the label with the full key `source:key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Adds or replaces the label `source:key=value`; returns `self` for
    /// chaining.
    pub fn with_source(mut self, source: &str, key: &str, value: &str) -> Self {
        self.insert_source(source, key, value);
        self
    }

    /// Adds or replaces the label `source:key=value`.
    pub fn insert_source(&mut self, source: &str, key: &str, value: &str) {
        self.0.insert(format!("{source}:{key}"), value.to_string());
    }

    /// Builds a set from Kubernetes labels, giving each the `k8s` source.
    pub fn from_k8s<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut set = Self::new();
        for (k, v) in labels {
            set.insert_source(SOURCE_K8S, k, v);
        }
        set
    }

    /// The labels of a reserved identity (`reserved:host`, empty values;
    /// kube-apiserver also carries `reserved:remote-node`), from the table
    /// in `weir_abi::identity`.
    pub fn reserved(id: u32) -> Option<Self> {
        reserved::reserved_by_id(id).map(|r| r.labels().map(|label| (label, "")).collect())
    }

    /// The reserved identity this set stands for: one label that names a
    /// reserved identity (`reserved:host`), alone or with the other labels
    /// that identity carries (`reserved:kube-apiserver` with
    /// `reserved:remote-node`).
    pub fn reserved_identity(&self) -> Option<u32> {
        reserved::RESERVED
            .iter()
            .find(|r| {
                self.0.contains_key(r.label)
                    && self.0.keys().all(|key| r.labels().any(|l| l == key))
            })
            .map(|r| r.id)
    }

    /// The value of the label with the full key `source:key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Values of the labels a selector key names: the exact `source:key` if
    /// the selector key has a source other than `any`, otherwise every label
    /// whose key (after its source) equals `key`.
    pub fn values_for_selector_key<'a>(
        &'a self,
        selector_key: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let (source, key) = split_source(selector_key);
        let wildcard = matches!(source, None | Some(SOURCE_ANY));
        self.0.iter().filter_map(move |(full, value)| {
            let (label_source, label_key) = split_source(full);
            let hit = if wildcard {
                label_key == key
            } else {
                label_source == source && label_key == key
            };
            hit.then_some(value.as_str())
        })
    }

    /// The namespace name of a pod identity, if the set has one.
    pub fn namespace(&self) -> Option<&str> {
        self.get(&format!("{SOURCE_K8S}:{POD_NAMESPACE_LABEL}"))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Labels as `(source:key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The canonical string (see the module documentation).
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            escape_into(&mut out, k);
            out.push('=');
            escape_into(&mut out, v);
            out.push(';');
        }
        out
    }

    /// Parses a string written by [`LabelSet::canonical`].
    pub fn from_canonical(s: &str) -> Result<Self, LabelsError> {
        let mut labels = BTreeMap::new();
        if s.is_empty() {
            return Ok(Self(labels));
        }
        let Some(body) = s.strip_suffix(';') else {
            return Err(LabelsError::Unterminated(s.to_owned()));
        };
        for item in body.split(';') {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| LabelsError::MissingEquals(item.to_owned()))?;
            let key = unescape(k)?;
            if labels.insert(key.clone(), unescape(v)?).is_some() {
                return Err(LabelsError::DuplicateKey(key));
            }
        }
        Ok(Self(labels))
    }
}

impl fmt::Display for LabelSet {
    /// `k8s:app=web,reserved:host` (a label without a value is its key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if v.is_empty() {
                write!(f, "{k}")?;
            } else {
                write!(f, "{k}={v}")?;
            }
        }
        Ok(())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for LabelSet {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '=' => out.push_str("%3D"),
            ';' => out.push_str("%3B"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Result<String, LabelsError> {
    let bad = || LabelsError::BadEscape(s.to_owned());
    // A raw '=' or ';' inside a field means the string was not ours.
    if s.contains(['=', ';']) {
        return Err(bad());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).ok_or_else(bad)?;
        out.push(match code {
            "25" => '%',
            "3D" => '=',
            "3B" => ';',
            _ => return Err(bad()),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
