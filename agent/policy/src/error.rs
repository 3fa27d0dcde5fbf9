//! Errors: field-level validation problems and document parse errors.

pub use weir_validation::{FieldError, FieldErrors, Path};

/// Why a policy document could not be turned into rules.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The YAML does not deserialize into the typed structure.
    #[error("{what}: invalid YAML: {source}")]
    Yaml {
        what: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// `apiVersion`/`kind` is not a policy kind this crate knows.
    #[error("unsupported policy kind {api_version}/{kind}")]
    UnsupportedKind { api_version: String, kind: String },
    /// The policy parsed but is invalid; every problem is listed.
    #[error("{policy} is invalid: {errors}")]
    Invalid { policy: String, errors: FieldErrors },
}
