//! The `CNI_*` environment variables: where they come from, and their
//! validation into typed values (errors are code 4).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::attachment::{Attachment, PodRef};
use crate::error::{CniError, ErrorCode};

/// Where the plugin reads its environment; the process environment in
/// production, a map in tests.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The operation requested by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Gc => "GC",
            Self::Status => "STATUS",
            Self::Version => "VERSION",
        }
    }

    /// Reads and validates `CNI_COMMAND`.
    pub fn from_env(env: &dyn Environment) -> Result<Self, CniError> {
        let value = non_empty(env, "CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?;
        [
            Self::Add,
            Self::Del,
            Self::Check,
            Self::Gc,
            Self::Status,
            Self::Version,
        ]
        .into_iter()
        .find(|command| command.as_str() == value)
        .ok_or_else(|| {
            CniError::new(ErrorCode::InvalidEnvironment, "unknown CNI_COMMAND").with_details(
                format!("CNI_COMMAND={value:?}; expected ADD, DEL, CHECK, GC, STATUS or VERSION"),
            )
        })
    }
}

/// The environment of a command that acts on one attachment (ADD, DEL, CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentEnv {
    pub attachment: Attachment,
    pub pod: PodRef,
    /// `CNI_NETNS`; `None` only for DEL, where the runtime may omit it.
    pub netns: Option<PathBuf>,
}

impl AttachmentEnv {
    /// Reads `CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_NETNS` (required unless
    /// `netns_required` is false) and `CNI_ARGS`.
    pub fn from_env(env: &dyn Environment, netns_required: bool) -> Result<Self, CniError> {
        let container_id =
            non_empty(env, "CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID"))?;
        validate_container_id(&container_id)?;
        let ifname = non_empty(env, "CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME"))?;
        validate_ifname(&ifname)?;
        let netns = non_empty(env, "CNI_NETNS").map(PathBuf::from);
        if netns_required && netns.is_none() {
            return Err(missing("CNI_NETNS"));
        }
        let args = CniArgs::parse(&env.var("CNI_ARGS").unwrap_or_default())?;
        Ok(Self {
            attachment: Attachment {
                container_id,
                ifname,
            },
            pod: args.pod(),
            netns,
        })
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for item in raw.split(';').filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                CniError::new(ErrorCode::InvalidEnvironment, "invalid CNI_ARGS")
                    .with_details(format!("{item:?} is not a KEY=VALUE pair"))
            })?;
            if key.is_empty() {
                return Err(
                    CniError::new(ErrorCode::InvalidEnvironment, "invalid CNI_ARGS")
                        .with_details(format!("{item:?} has an empty key")),
                );
            }
            pairs.push((key.to_string(), value.to_string()));
        }
        Ok(Self { pairs })
    }

    /// The value of `key`; the last one wins if repeated.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The Kubernetes pod the runtime names (empty outside Kubernetes).
    pub fn pod(&self) -> PodRef {
        PodRef {
            namespace: self
                .get("K8S_POD_NAMESPACE")
                .unwrap_or_default()
                .to_string(),
            name: self.get("K8S_POD_NAME").unwrap_or_default().to_string(),
        }
    }
}

fn non_empty(env: &dyn Environment, name: &str) -> Option<String> {
    env.var(name).filter(|value| !value.is_empty())
}

fn missing(name: &str) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, format!("{name} is required"))
        .with_details(format!("environment variable {name} is missing or empty"))
}

/// The specification: an alphanumeric first character, then alphanumerics,
/// `_`, `.` or `-`.
fn validate_container_id(container_id: &str) -> Result<(), CniError> {
    let mut chars = container_id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(
            CniError::new(ErrorCode::InvalidEnvironment, "invalid CNI_CONTAINERID").with_details(
                format!("{container_id:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
            ),
        )
    }
}

/// The specification (Linux rules): at most 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
fn validate_ifname(ifname: &str) -> Result<(), CniError> {
    let problem = if ifname.len() > 15 {
        Some("is longer than 15 bytes")
    } else if ifname == "." || ifname == ".." {
        Some("must not be \".\" or \"..\"")
    } else if ifname
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("must not contain '/', ':' or whitespace")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(
            CniError::new(ErrorCode::InvalidEnvironment, "invalid CNI_IFNAME")
                .with_details(format!("{ifname:?} {problem}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn full_env() -> HashMap<String, String> {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
    }

    #[test]
    fn every_command_parses() {
        for (value, command) in [
            ("ADD", Command::Add),
            ("DEL", Command::Del),
            ("CHECK", Command::Check),
            ("GC", Command::Gc),
            ("STATUS", Command::Status),
            ("VERSION", Command::Version),
        ] {
            assert_eq!(
                Command::from_env(&env(&[("CNI_COMMAND", value)])),
                Ok(command)
            );
        }
    }

    #[test]
    fn missing_or_unknown_command_is_error_4() {
        for environment in [
            env(&[]),
            env(&[("CNI_COMMAND", "")]),
            env(&[("CNI_COMMAND", "add")]),
            env(&[("CNI_COMMAND", "UPDATE")]),
        ] {
            let error = Command::from_env(&environment).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidEnvironment);
        }
    }

    #[test]
    fn attachment_env_reads_everything() {
        let parsed = AttachmentEnv::from_env(&full_env(), true).unwrap();
        assert_eq!(parsed.attachment.container_id, "abc123");
        assert_eq!(parsed.attachment.ifname, "eth0");
        assert_eq!(parsed.netns, Some(PathBuf::from("/run/netns/pod")));
        assert_eq!(
            parsed.pod,
            PodRef {
                namespace: "default".into(),
                name: "web-0".into()
            }
        );
    }

    #[test]
    fn each_missing_variable_is_error_4_naming_it() {
        for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            for value in [None, Some("")] {
                let mut environment = full_env();
                match value {
                    None => environment.remove(name),
                    Some(value) => environment.insert(name.to_string(), value.to_string()),
                };
                let error = AttachmentEnv::from_env(&environment, true).unwrap_err();
                assert_eq!(error.code, ErrorCode::InvalidEnvironment, "{name}");
                assert!(error.msg.contains(name), "{}", error.msg);
            }
        }
    }

    #[test]
    fn netns_is_optional_when_not_required() {
        let mut environment = full_env();
        environment.insert("CNI_NETNS".into(), String::new());
        assert_eq!(
            AttachmentEnv::from_env(&environment, false).unwrap().netns,
            None
        );
        environment.remove("CNI_NETNS");
        assert_eq!(
            AttachmentEnv::from_env(&environment, false).unwrap().netns,
            None
        );
    }

    #[test]
    fn invalid_container_ids_are_rejected() {
        for bad in ["-abc", "_abc", ".abc", "ab c", "ab/c", "ab;c", "äbc"] {
            let mut environment = full_env();
            environment.insert("CNI_CONTAINERID".into(), bad.into());
            let error = AttachmentEnv::from_env(&environment, true).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidEnvironment, "{bad:?}");
        }
        for good in ["a", "0", "a-b_c.d", "3f6940ab5ab43bc522569d15b23f8c1b"] {
            let mut environment = full_env();
            environment.insert("CNI_CONTAINERID".into(), good.into());
            assert!(
                AttachmentEnv::from_env(&environment, true).is_ok(),
                "{good:?}"
            );
        }
    }

    #[test]
    fn invalid_ifnames_are_rejected() {
        for bad in [
            ".",
            "..",
            "eth/0",
            "eth:0",
            "eth 0",
            "eth\t0",
            "sixteen-chars-xx",
        ] {
            let mut environment = full_env();
            environment.insert("CNI_IFNAME".into(), bad.into());
            let error = AttachmentEnv::from_env(&environment, true).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidEnvironment, "{bad:?}");
        }
        let mut environment = full_env();
        environment.insert("CNI_IFNAME".into(), "fifteen-chars-x".into());
        assert!(AttachmentEnv::from_env(&environment, true).is_ok());
    }

    #[test]
    fn cni_args_ignores_unknown_keys_and_empty_items() {
        let args = CniArgs::parse(";FOO=bar;;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;EMPTY=;").unwrap();
        assert_eq!(args.get("FOO"), Some("bar"));
        assert_eq!(args.get("EMPTY"), Some(""));
        assert_eq!(args.get("MISSING"), None);
        assert_eq!(
            args.pod(),
            PodRef {
                namespace: "ns".into(),
                name: "p".into()
            }
        );
    }

    #[test]
    fn cni_args_values_may_contain_equals_and_last_wins() {
        let args = CniArgs::parse("A=x=y;A=z").unwrap();
        assert_eq!(args.get("A"), Some("z"));
        assert_eq!(CniArgs::parse("A=x=y").unwrap().get("A"), Some("x=y"));
    }

    #[test]
    fn malformed_cni_args_are_error_4() {
        for bad in ["NOEQUALS", "A=1;B", "=value"] {
            let error = CniArgs::parse(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidEnvironment, "{bad:?}");
        }
    }

    #[test]
    fn missing_pod_identity_is_empty() {
        let mut environment = full_env();
        environment.remove("CNI_ARGS");
        assert_eq!(
            AttachmentEnv::from_env(&environment, true).unwrap().pod,
            PodRef::default()
        );
    }
}
