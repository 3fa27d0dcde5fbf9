//! CNI specification versions: which ones Weir speaks, what each allows, and
//! the VERSION command's answer.

use serde_json::{json, Value};

use crate::env::Command;
use crate::error::{CniError, ErrorCode};

/// A CNI specification version the plugin supports, oldest first (so `Ord`
/// compares releases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const SUPPORTED: [CniVersion; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    /// The version this plugin implements; used for VERSION and for errors
    /// raised before the requested version is known.
    pub const LATEST: CniVersion = Self::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Exact match against the supported versions.
    pub fn parse(version: &str) -> Option<Self> {
        Self::SUPPORTED
            .into_iter()
            .find(|supported| supported.as_str() == version)
    }

    /// Before 1.0.0 every `ips` entry carried `"version": "4"|"6"`.
    pub fn ip_entries_carry_version(self) -> bool {
        self < Self::V1_0_0
    }

    /// 1.1.0 added `mtu` to the result's interfaces (older readers, such as
    /// libcni 1.1 in containerd 1.6/1.7, refuse fields they do not know).
    pub fn interfaces_carry_mtu(self) -> bool {
        self >= Self::V1_1_0
    }

    /// The first version that defines `command` (CHECK arrived in 0.4.0,
    /// GC and STATUS in 1.1.0).
    pub fn introducing(command: Command) -> Self {
        match command {
            Command::Add | Command::Del | Command::Version => Self::V0_3_0,
            Command::Check => Self::V0_4_0,
            Command::Gc | Command::Status => Self::V1_1_0,
        }
    }
}

/// Resolves the configuration's `cniVersion` to a supported version that
/// allows `command`; otherwise error 1 (incompatible CNI version).
pub fn negotiate(requested: &str, command: Command) -> Result<CniVersion, CniError> {
    let supported = CniVersion::SUPPORTED.map(CniVersion::as_str).join(", ");
    let version = CniVersion::parse(requested).ok_or_else(|| {
        CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI version").with_details(
            format!("config is {requested:?}, plugin supports [{supported}]"),
        )
    })?;
    let introduced = CniVersion::introducing(command);
    if version < introduced {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("config version does not allow {}", command.as_str()),
        )
        .with_details(format!(
            "{} requires cniVersion {} or later, config is {}",
            command.as_str(),
            introduced.as_str(),
            version.as_str()
        )));
    }
    Ok(version)
}

/// The VERSION command's result.
pub fn version_info() -> Value {
    json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": CniVersion::SUPPORTED.map(CniVersion::as_str),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_info_lists_every_supported_version() {
        assert_eq!(
            version_info(),
            json!({
                "cniVersion": "1.1.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            })
        );
    }

    #[test]
    fn parse_accepts_only_exact_supported_versions() {
        for version in CniVersion::SUPPORTED {
            assert_eq!(CniVersion::parse(version.as_str()), Some(version));
        }
        for unsupported in ["0.1.0", "0.2.0", "1.1", "1.2.0", "", "v1.0.0", "1.0.0 "] {
            assert_eq!(CniVersion::parse(unsupported), None, "{unsupported:?}");
        }
    }

    #[test]
    fn unsupported_version_is_error_1_naming_what_is_supported() {
        let error = negotiate("0.2.0", Command::Add).unwrap_err();
        assert_eq!(error.code, ErrorCode::IncompatibleVersion);
        assert!(error.details.contains("\"0.2.0\""), "{}", error.details);
        assert!(error.details.contains("1.1.0"), "{}", error.details);
    }

    #[test]
    fn check_needs_0_4_0() {
        for old in ["0.3.0", "0.3.1"] {
            let error = negotiate(old, Command::Check).unwrap_err();
            assert_eq!(error.code, ErrorCode::IncompatibleVersion);
            assert!(error.msg.contains("CHECK"));
        }
        for ok in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(negotiate(ok, Command::Check).is_ok(), "{ok}");
        }
    }

    #[test]
    fn gc_and_status_need_1_1_0() {
        for command in [Command::Gc, Command::Status] {
            for old in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
                let error = negotiate(old, command).unwrap_err();
                assert_eq!(error.code, ErrorCode::IncompatibleVersion, "{old}");
            }
            assert_eq!(negotiate("1.1.0", command), Ok(CniVersion::V1_1_0));
        }
    }

    #[test]
    fn add_and_del_work_with_every_supported_version() {
        for version in CniVersion::SUPPORTED {
            assert_eq!(negotiate(version.as_str(), Command::Add), Ok(version));
            assert_eq!(negotiate(version.as_str(), Command::Del), Ok(version));
        }
    }

    #[test]
    fn only_pre_1_0_results_carry_ip_version() {
        assert!(CniVersion::V0_3_0.ip_entries_carry_version());
        assert!(CniVersion::V0_3_1.ip_entries_carry_version());
        assert!(CniVersion::V0_4_0.ip_entries_carry_version());
        assert!(!CniVersion::V1_0_0.ip_entries_carry_version());
        assert!(!CniVersion::V1_1_0.ip_entries_carry_version());
    }
}
