//! Security labels: the label set an identity stands for.
//!
//! A [`SecurityLabels`] is a sorted map `key → value`. Keys carry their
//! source as Cilium's do (`k8s:app`, `reserved:host`), but this crate does not
//! interpret them: another crate decides which pod labels count, this one only
//! stores and compares the result.
//!
//! # Canonical encoding
//!
//! [`SecurityLabels::canonical`] is the string used as the etcd key of the
//! identity, so two agents must produce the same bytes for the same set:
//!
//! ```text
//! key1=value1;key2=value2;
//! ```
//!
//! Labels are in byte order of their keys (a `BTreeMap`), each written as
//! `key=value;`. In keys and values the three characters `%`, `=` and `;` are
//! written `%25`, `%3D` and `%3B`, so the encoding is injective and
//! [`SecurityLabels::from_canonical`] reverses it. Kubernetes label keys and
//! values never contain those characters, so in practice the encoding reads
//! like Cilium's (`k8s:app=web;k8s:io.kubernetes.pod.namespace=default;`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A canonical, sorted set of labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecurityLabels(BTreeMap<String, String>);

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

impl SecurityLabels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one label; returns `self` for chaining.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Labels in key order.
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

    /// Parses a string written by [`SecurityLabels::canonical`].
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

impl fmt::Display for SecurityLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for SecurityLabels {
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
