//! weir-validation: what Weir's pure engines report about a document they
//! refuse: every problem, each with the path of the field it is about
//! (`spec.ports[1].targetPort: ...`). Shared by weir-policy (policies) and
//! weir-lb (Services, EndpointSlices) so both report alike.

#![forbid(unsafe_code)]

use std::fmt;

/// A field path such as `spec.ingress[0].ports[1].endPort`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Path(String);

impl Path {
    pub fn root(name: &str) -> Self {
        Self(name.to_string())
    }

    /// `self.name`
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `self[i]`
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `self[key]` (map entries: labels, annotations)
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(document)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// One problem: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldError {
    pub path: Path,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in one document, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, path: Path, reason: impl Into<String>) {
        self.0.push(FieldError {
            path,
            reason: reason.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }

    /// The messages as `path: reason` strings.
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(|e| e.to_string()).collect()
    }

    /// `Ok(value)` when nothing was found wrong, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl IntoIterator for FieldErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compose_and_the_empty_path_is_the_document() {
        let path = Path::root("spec")
            .field("ports")
            .index(1)
            .field("targetPort");
        assert_eq!(path.to_string(), "spec.ports[1].targetPort");
        assert_eq!(Path::default().field("a").key("b").to_string(), "a[b]");
        assert_eq!(Path::default().to_string(), "(document)");
    }

    #[test]
    fn every_problem_is_kept_in_order() {
        let mut errors = FieldErrors::new();
        assert_eq!(errors.clone().into_result(1), Ok(1));
        errors.push(Path::root("a"), "first");
        errors.push(Path::root("b"), "second");
        assert_eq!(errors.len(), 2);
        assert_eq!(errors.messages(), ["a: first", "b: second"]);
        assert_eq!(errors.to_string(), "a: first; b: second");
        assert!(errors.into_result(1).is_err());
    }
}
