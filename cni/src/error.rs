//! The CNI error result: a numeric code, a short message and details, printed
//! as JSON on stdout with a non-zero exit status.

use serde_json::{json, Value};

/// Error codes: 1–99 are the specification's well-known codes, 100+ are Weir's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the configuration's `cniVersion` is not supported (or does not
    /// allow the command).
    IncompatibleVersion,
    /// 2: the configuration holds a field the plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure (e.g. reading stdin).
    Io,
    /// 6: stdin could not be decoded.
    Decode,
    /// 7: the network configuration is invalid.
    InvalidConfig,
    /// 11: a transient condition (the agent is unreachable); retry later.
    TryAgainLater,
    /// 50 (STATUS): the plugin cannot service ADD requests.
    PluginNotAvailable,
    /// 51 (STATUS): not available, and existing containers may have
    /// limited connectivity.
    LimitedConnectivity,
    /// 100: a netlink operation failed.
    Netlink,
    /// 101: the agent answered a request with an error.
    AgentRejected,
    /// 102: CHECK found the attachment differing from `prevResult`.
    CheckFailed,
    /// 103: the agent answered with data the plugin cannot use.
    AgentResponseInvalid,
}

impl ErrorCode {
    /// The number printed in the error result.
    pub fn value(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidConfig => 7,
            Self::TryAgainLater => 11,
            Self::PluginNotAvailable => 50,
            Self::LimitedConnectivity => 51,
            Self::Netlink => 100,
            Self::AgentRejected => 101,
            Self::CheckFailed => 102,
            Self::AgentResponseInvalid => 103,
        }
    }
}

/// A failure reported to the runtime as a CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {}){}", code.value(), if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: ErrorCode,
    /// Short, stable message.
    pub msg: String,
    /// Longer explanation, e.g. the underlying error; may be empty.
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error result as the specification defines it. `cni_version` is the
    /// version the runtime asked for (or the plugin's latest if unknown).
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code.value(),
            "msg": self.msg,
            "details": self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_exactly_the_spec_fields() {
        let error = CniError::new(ErrorCode::InvalidEnvironment, "CNI_IFNAME is required")
            .with_details("set CNI_IFNAME to the interface name");
        assert_eq!(
            error.to_json("1.0.0"),
            json!({
                "cniVersion": "1.0.0",
                "code": 4,
                "msg": "CNI_IFNAME is required",
                "details": "set CNI_IFNAME to the interface name",
            })
        );
    }

    #[test]
    fn well_known_codes_match_the_specification() {
        let expected = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::Decode, 6),
            (ErrorCode::InvalidConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::PluginNotAvailable, 50),
            (ErrorCode::LimitedConnectivity, 51),
        ];
        for (code, value) in expected {
            assert_eq!(code.value(), value, "{code:?}");
        }
        for code in [
            ErrorCode::Netlink,
            ErrorCode::AgentRejected,
            ErrorCode::CheckFailed,
            ErrorCode::AgentResponseInvalid,
        ] {
            assert!(code.value() >= 100, "{code:?} must be plugin-specific");
        }
    }

    #[test]
    fn display_includes_code_and_details() {
        let error = CniError::new(ErrorCode::Netlink, "cannot create veth").with_details("EEXIST");
        assert_eq!(error.to_string(), "cannot create veth (code 100): EEXIST");
        let bare = CniError::new(ErrorCode::Io, "cannot read stdin");
        assert_eq!(bare.to_string(), "cannot read stdin (code 5)");
    }
}
