//! What Weir's ServiceAccounts may do (the RBAC in deploy/kubernetes) set
//! against what they did (the API server's audit log): the lab's RBAC
//! usage check. A request the role refused, or a grant nothing used, is a
//! finding; a grant the lab cannot exercise is excused by name, with why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Context, Result};
use serde::Deserialize;

/// One permission: a verb on a resource (`pods`, `services/status`) of an
/// API group (`""` for the core group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

impl Grant {
    pub fn new(group: &str, resource: &str, verb: &str) -> Grant {
        Grant {
            group: group.to_string(),
            resource: resource.to_string(),
            verb: verb.to_string(),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

/// ServiceAccount user name (`system:serviceaccount:ns:name`) to what its
/// bindings grant.
pub type Grants = BTreeMap<String, BTreeSet<Grant>>;

#[derive(Deserialize)]
struct Object {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(rename = "roleRef")]
    role_ref: Option<RoleRef>,
    #[serde(default)]
    subjects: Vec<Subject>,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(rename = "apiGroups", default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
}

#[derive(Deserialize)]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
struct Subject {
    kind: String,
    name: String,
    namespace: Option<String>,
}

/// The grants of every ServiceAccount bound in `documents` (YAML streams).
/// Wildcards are refused: a role of Weir's names what it needs.
pub fn grants(documents: &[&str]) -> Result<Grants> {
    let mut roles: BTreeMap<(String, String), Vec<Rule>> = BTreeMap::new();
    let mut bindings = Vec::new();
    for text in documents {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value = serde_yaml_ng::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let object: Object = match serde_yaml_ng::from_value(value) {
                Ok(object) => object,
                // Not an RBAC object (a Deployment, a Service...).
                Err(_) => continue,
            };
            match object.kind.as_str() {
                "ClusterRole" | "Role" => {
                    roles.insert((object.kind, object.metadata.name), object.rules);
                }
                "ClusterRoleBinding" | "RoleBinding" => bindings.push(object),
                _ => {}
            }
        }
    }
    let mut grants = Grants::new();
    for binding in bindings {
        let role_ref = binding
            .role_ref
            .with_context(|| format!("binding {} has no roleRef", binding.metadata.name))?;
        let rules = roles
            .get(&(role_ref.kind.clone(), role_ref.name.clone()))
            .with_context(|| {
                format!(
                    "binding {} refers to {} {}, which deploy/ does not define",
                    binding.metadata.name, role_ref.kind, role_ref.name
                )
            })?;
        for subject in binding
            .subjects
            .iter()
            .filter(|s| s.kind == "ServiceAccount")
        {
            let namespace = subject
                .namespace
                .as_deref()
                .or(binding.metadata.namespace.as_deref())
                .context("a ServiceAccount subject without a namespace")?;
            let user = format!("system:serviceaccount:{namespace}:{}", subject.name);
            let set = grants.entry(user).or_default();
            for rule in rules {
                for part in [&rule.api_groups, &rule.resources, &rule.verbs] {
                    anyhow::ensure!(
                        !part.iter().any(|p| p == "*"),
                        "{} {} grants a wildcard",
                        role_ref.kind,
                        role_ref.name
                    );
                }
                for group in &rule.api_groups {
                    for resource in &rule.resources {
                        for verb in &rule.verbs {
                            set.insert(Grant::new(group, resource, verb));
                        }
                    }
                }
            }
        }
    }
    Ok(grants)
}

#[derive(Deserialize)]
struct AuditEvent {
    verb: String,
    #[serde(default)]
    stage: String,
    user: AuditUser,
    #[serde(rename = "objectRef")]
    object_ref: Option<ObjectRef>,
    #[serde(rename = "responseStatus")]
    response_status: Option<ResponseStatus>,
    #[serde(rename = "requestURI", default)]
    request_uri: String,
}

#[derive(Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
    #[serde(rename = "apiGroup", default)]
    api_group: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// What each user did, as the audit log (one JSON event per line) says.
#[derive(Debug, Default)]
pub struct Usage {
    /// User to the permissions its answered requests needed.
    pub used: BTreeMap<String, BTreeSet<Grant>>,
    /// User to its requests RBAC refused (`verb resource URI`).
    pub denied: BTreeMap<String, BTreeSet<String>>,
}

/// Reads an audit log. A request counts once answered, except a watch,
/// which counts once received (it may still be open). A server-side apply
/// that created its object (201) needed `create` as well as `patch`.
pub fn usage(log: &str) -> Result<Usage> {
    let mut usage = Usage::default();
    for (n, line) in log
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let event: AuditEvent =
            serde_json::from_str(line).with_context(|| format!("audit log line {}", n + 1))?;
        // Discovery and other non-resource URLs are every user's.
        let Some(object) = event.object_ref else {
            continue;
        };
        let Some(resource) = object.resource else {
            continue;
        };
        let resource = match object.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let counts = match event.stage.as_str() {
            "ResponseStarted" | "ResponseComplete" => true,
            "RequestReceived" => event.verb == "watch",
            _ => false,
        };
        if !counts {
            continue;
        }
        let code = event.response_status.map(|s| s.code).unwrap_or_default();
        if code == 403 {
            usage
                .denied
                .entry(event.user.username)
                .or_default()
                .insert(format!("{} {resource} {}", event.verb, event.request_uri));
            continue;
        }
        let set = usage.used.entry(event.user.username).or_default();
        set.insert(Grant::new(&object.api_group, &resource, &event.verb));
        if event.verb == "patch" && code == 201 {
            set.insert(Grant::new(&object.api_group, &resource, "create"));
        }
    }
    Ok(usage)
}

/// Grants nothing used, per user: `granted` minus `used` minus what
/// `excused` names for that user.
pub fn unused(
    granted: &Grants,
    used: &BTreeMap<String, BTreeSet<Grant>>,
    excused: &BTreeMap<String, BTreeSet<Grant>>,
) -> BTreeMap<String, Vec<Grant>> {
    let empty = BTreeSet::new();
    granted
        .iter()
        .map(|(user, grants)| {
            let used = used.get(user).unwrap_or(&empty);
            let excused = excused.get(user).unwrap_or(&empty);
            let unused: Vec<Grant> = grants
                .iter()
                .filter(|g| !used.contains(*g) && !excused.contains(*g))
                .cloned()
                .collect();
            (user.clone(), unused)
        })
        .filter(|(_, unused)| !unused.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
