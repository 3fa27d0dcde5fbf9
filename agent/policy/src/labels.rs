//! The label filter that decides which pod labels form a security
//! identity, and the security labels of a pod.
//!
//! Label sets themselves, and the `source:key` convention their keys follow
//! (`k8s:app`, `reserved:host`, `cidr:10.0.0.0/8`), are `weir_types::labels`:
//! the identity allocator stores the same sets this crate selects on.
//!
//! Selector keys may name a source (`k8s:app`, `reserved:host`) or not (`app`,
//! or explicitly `any:app`); a key without a source matches a label of that key
//! from any source (see [`crate::selector`]).

use std::fmt;

use regex::Regex;
pub use weir_types::labels::{
    split_source, LabelSet, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, SOURCE_ANY, SOURCE_CIDR,
    SOURCE_K8S, SOURCE_RESERVED,
};

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
        set.insert_source(SOURCE_K8S, &format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
    }
    set.insert_source(SOURCE_K8S, POD_NAMESPACE_LABEL, namespace);
    filter.filter(&set)
}

#[cfg(test)]
mod tests;
