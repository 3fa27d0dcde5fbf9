//! The key of a namespaced object: its namespace and name, written
//! `namespace/name` wherever a string is needed (logs, the CLI, protos).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A namespaced object's namespace and name. Ordered by namespace, then
/// name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

/// Text that is not `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not namespace/name")]
pub struct NamespacedNameError(pub String);

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    /// `namespace/name`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for NamespacedName {
    type Err = NamespacedNameError;

    /// Parses `namespace/name`: both parts non-empty, one `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self::new(namespace, name))
            }
            _ => Err(NamespacedNameError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_parses_as_namespace_slash_name() {
        let web = NamespacedName::new("shop", "web");
        assert_eq!(web.to_string(), "shop/web");
        assert_eq!("shop/web".parse::<NamespacedName>(), Ok(web));
        for bad in ["web", "/web", "shop/", "a/b/c", ""] {
            assert!(bad.parse::<NamespacedName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn orders_by_namespace_then_name() {
        let mut names = [
            NamespacedName::new("b", "a"),
            NamespacedName::new("a", "z"),
            NamespacedName::new("a", "b"),
        ];
        names.sort();
        let text: Vec<String> = names.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["a/b", "a/z", "b/a"]);
    }
}
