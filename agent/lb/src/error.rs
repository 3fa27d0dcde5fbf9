//! Errors: field-level problems of a Service or EndpointSlice document (every
//! problem is reported, each with its path), and the option and Maglev
//! errors.

pub use weir_validation::{FieldError, FieldErrors, Path};

/// Why a Maglev table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("Maglev table size {0} is not allowed: it must be one of the primes {sizes}", sizes = crate::maglev::allowed_sizes_text())]
    SizeNotAllowed(u32),
    #[error("a Maglev table needs at least one backend")]
    NoBackends,
    #[error("backend {0} is listed twice")]
    DuplicateBackend(String),
}

/// Why [`crate::LbOptions`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("node port range {start}-{end} is empty or starts at 0")]
    NodePortRange { start: u16, end: u16 },
    #[error(transparent)]
    MaglevTableSize(#[from] MaglevError),
}
