//! Labels, label sets and the label filter that decides which pod labels
//! form a security identity.
//!
//! # Key convention
//!
//! Every label in a [`LabelSet`] carries a *source*, written Cilium's way as a
//! prefix of the key: `k8s:app`, `reserved:host`, `cidr:10.0.0.0/8`. Pod labels,
//! the namespace name and the namespace labels all have source `k8s`, so the
//! namespace of a pod is `k8s:io.kubernetes.pod.namespace=<name>` and a
//! namespace label `team=a` is `k8s:io.cilium.k8s.namespace.labels.team=a`.
//! This is the same shape `weir-identity` stores (`SecurityLabels`), so a set
//! converts one to one.
//!
//! Selector keys may name a source (`k8s:app`, `reserved:host`) or not (`app`,
//! or explicitly `any:app`); a key without a source matches a label of that key
//! from any source (see [`crate::selector`]). Kubernetes label keys never
//! contain `:`, so the first `:` always separates the source.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// Source of pod, namespace and namespace-label labels.
pub const SOURCE_K8S: &str = "k8s";
/// Source of the labels of reserved identities (`reserved:host`, ...).
pub const SOURCE_RESERVED: &str = "reserved";
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
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSet(BTreeMap<String, String>);

impl LabelSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the label `source:key=value`; returns `self` for chaining.
    pub fn with(mut self, source: &str, key: &str, value: &str) -> Self {
        self.insert(source, key, value);
        self
    }

    /// Adds or replaces the label `source:key=value`.
    pub fn insert(&mut self, source: &str, key: &str, value: &str) {
        self.0.insert(format!("{source}:{key}"), value.to_string());
    }

    /// Adds or replaces a label given its full `source:key`.
    pub fn insert_full(&mut self, full_key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(full_key.into(), value.into());
    }

    /// Builds a set from Kubernetes labels, giving each the `k8s` source.
    pub fn from_k8s<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut set = Self::new();
        for (k, v) in labels {
            set.insert(SOURCE_K8S, k, v);
        }
        set
    }

    /// The value of an exact `source:key`.
    pub fn get_full(&self, full_key: &str) -> Option<&str> {
        self.0.get(full_key).map(String::as_str)
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

    /// The namespace name of a pod identity, if the set has one.
    pub fn namespace(&self) -> Option<&str> {
        self.get_full(&format!("{SOURCE_K8S}:{POD_NAMESPACE_LABEL}"))
    }
}

impl FromIterator<(String, String)> for LabelSet {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for LabelSet {
    /// `k8s:app=web,k8s:io.kubernetes.pod.namespace=default`
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

/// A pattern of the label filter: a regular expression matched at the start
/// of a label key, optionally restricted to one source, including or (with a
/// leading `!`) excluding what it matches.
#[derive(Debug, Clone)]
pub struct LabelPattern {
    source: Option<String>,
    exclude: bool,
    expr: Regex,
    text: String,
}

/// A label filter pattern that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("label filter pattern {pattern:?}: {source}")]
pub struct PatternError {
    pattern: String,
    #[source]
    source: regex::Error,
}

impl LabelPattern {
    /// Parses `[source:][!]regex`, e.g. `reserved:.*`, `!io\.kubernetes`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let (source, rest) = match text.split_once(':') {
            Some((s, r)) => (Some(s.to_string()), r),
            None => (None, text),
        };
        let (exclude, expr) = match rest.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let expr = Regex::new(expr).map_err(|source| PatternError {
            pattern: text.to_string(),
            source,
        })?;
        Ok(Self {
            source,
            exclude,
            expr,
            text: text.to_string(),
        })
    }

    /// Length of the match if the pattern matches at the start of the key.
    fn match_len(&self, source: Option<&str>, key: &str) -> Option<usize> {
        if let Some(want) = &self.source {
            if source != Some(want.as_str()) {
                return None;
            }
        }
        let m = self.expr.find(key)?;
        (m.start() == 0).then_some(m.end())
    }
}

impl fmt::Display for LabelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Decides which labels are security relevant, with Cilium's algorithm
/// (`pkg/labelsfilter`): the longest matching include pattern is compared with
/// the shortest matching exclude pattern; a label matching neither is kept
/// unless user include patterns were given (then only included labels count).
#[derive(Debug, Clone)]
pub struct LabelFilter {
    patterns: Vec<LabelPattern>,
    include_only: bool,
}

/// Cilium's default patterns plus the per-pod labels REFERENCE §3.3 lists.
pub const DEFAULT_PATTERNS: &[&str] = &[
    r"reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"io\.cilium\.k8s\.policy\.cluster",
    r"io\.cilium\.k8s\.policy\.serviceaccount",
    r"app\.kubernetes\.io",
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!batch\.kubernetes\.io/controller-uid",
    r"!batch\.kubernetes\.io/job-name",
    r"!job-name$",
    r"!controller-uid$",
    r"!pod-template-generation",
    r"!pod-template-hash",
    r"!controller-revision-hash",
    r"!annotation.*",
    r"!etcd_node",
];

impl Default for LabelFilter {
    fn default() -> Self {
        let patterns = DEFAULT_PATTERNS
            .iter()
            .map(|p| LabelPattern::parse(p).expect("default label patterns are valid"))
            .collect();
        Self {
            patterns,
            include_only: false,
        }
    }
}

impl LabelFilter {
    /// The default filter extended with user patterns (Cilium's `--labels`).
    /// Any user include pattern switches the filter to "only included labels".
    pub fn with_user_patterns(patterns: &[&str]) -> Result<Self, PatternError> {
        let mut filter = Self::default();
        for p in patterns.iter().filter(|p| !p.is_empty()) {
            let p = LabelPattern::parse(p)?;
            if !p.exclude {
                filter.include_only = true;
            }
            filter.patterns.push(p);
        }
        Ok(filter)
    }

    /// Whether the label `source:key` is security relevant.
    pub fn keeps(&self, full_key: &str) -> bool {
        let (source, key) = split_source(full_key);
        let mut included = 0;
        let mut ignored = 0;
        for p in &self.patterns {
            if let Some(len) = p.match_len(source, key) {
                if p.exclude {
                    if ignored == 0 || len < ignored {
                        ignored = len;
                    }
                } else if len > included {
                    included = len;
                }
            }
        }
        (!self.include_only && ignored == 0) || included > ignored
    }

    /// The security-relevant subset of `labels`.
    pub fn filter(&self, labels: &LabelSet) -> LabelSet {
        labels
            .iter()
            .filter(|(k, _)| self.keeps(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// The security labels of a pod: its labels, its namespace name under
/// `io.kubernetes.pod.namespace` and each namespace label under
/// `io.cilium.k8s.namespace.labels.<key>`, all with source `k8s`, passed
/// through `filter`.
pub fn pod_security_labels<'a>(
    namespace: &str,
    namespace_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    pod_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    filter: &LabelFilter,
) -> LabelSet {
    let mut set = LabelSet::from_k8s(pod_labels);
    for (k, v) in namespace_labels {
        set.insert(SOURCE_K8S, &format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
    }
    set.insert(SOURCE_K8S, POD_NAMESPACE_LABEL, namespace);
    filter.filter(&set)
}

#[cfg(test)]
mod tests;
