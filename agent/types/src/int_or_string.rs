//! Kubernetes' IntOrString: a field that holds a number or a name
//! (`port: 80`, `port: http`, `targetPort: web`).

use serde::{Deserialize, Serialize};

/// An integer or a string, as written (not yet validated: a number may be
/// out of range, a string may not be a valid name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_either_from_yaml() {
        let read = |s: &str| serde_yaml_ng::from_str::<IntOrString>(s).unwrap();
        assert_eq!(read("80"), IntOrString::Int(80));
        assert_eq!(read("http"), IntOrString::String("http".into()));
        assert_eq!(read("'80'"), IntOrString::String("80".into()));
        assert!(serde_yaml_ng::from_str::<IntOrString>("[1]").is_err());
    }
}
