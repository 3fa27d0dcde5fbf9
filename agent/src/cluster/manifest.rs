//! Kubernetes manifests without Kubernetes: a typed subset of the Namespace
//! and Pod kinds (unknown fields are ignored, as `kubectl apply` would keep
//! them), the policy kinds (NetworkPolicy, WeirNetworkPolicy,
//! WeirClusterwideNetworkPolicy, kept as documents for the policy engine to
//! parse and validate), and Service and EndpointSlice (validated by
//! weir-lb), read from multi-document YAML. The lab's `apply` and
//! the agent's manifest-directory source both read them here.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use weir_types::NamespacedName;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Policy(PolicyDocument),
    Service(Box<Validated<weir_lb::Service>>),
    /// Either address type (`addressType: IPv4` or `IPv6`).
    EndpointSlice(Box<Validated<weir_lb::AnyEndpointSlice>>),
}

impl Object {
    /// `kind/namespace/name` (or `kind/name` when cluster-wide), the key
    /// under which `weir policy get` names it.
    pub fn key(&self) -> String {
        match self {
            Object::Namespace(ns) => format!("Namespace/{}", ns.name),
            Object::Pod(pod) => format!("Pod/{}/{}", pod.namespace, pod.name),
            Object::Policy(policy) => policy.key(),
            Object::Service(service) => format!("Service/{}", service.object.service_name()),
            Object::EndpointSlice(slice) => format!(
                "EndpointSlice/{}/{}",
                slice.object.namespace(),
                slice.object.name()
            ),
        }
    }
}

/// A validated object with the document it was read from (the lab writes
/// the document back out as the agents' source).
#[derive(Clone, Debug, PartialEq)]
pub struct Validated<T> {
    pub object: T,
    pub document: serde_yaml_ng::Value,
}

/// A policy object as written; the policy engine parses and validates it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
pub struct PolicyDocument {
    pub api_version: String,
    pub kind: String,
    /// None for the cluster-wide kind.
    pub namespace: Option<String>,
    pub name: String,
    pub document: serde_yaml_ng::Value,
}

impl PolicyDocument {
    /// `kind/namespace/name` (or `kind/name` when cluster-wide).
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// The policy kinds, by (apiVersion, kind).
pub const POLICY_KINDS: [(&str, &str); 3] = [
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("weir.io/v1", "WeirNetworkPolicy"),
    ("weir.io/v1", "WeirClusterwideNetworkPolicy"),
];

/// The annotation that puts a pod, or every pod of a namespace, in policy
/// audit mode (`"true"`) or out of it (`"false"`): a pod's own annotation
/// wins over its namespace's, which wins over the agent's
/// `--policy-audit-mode`.
pub const AUDIT_MODE_ANNOTATION: &str = "policy.weir.io/audit-mode";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    /// [`AUDIT_MODE_ANNOTATION`], when set.
    pub policy_audit_mode: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.nodeName`; the lab schedules the pod when absent.
    pub node: Option<String>,
    pub ports: Vec<ContainerPort>,
    /// [`AUDIT_MODE_ANNOTATION`], when set.
    pub policy_audit_mode: Option<bool>,
}

/// The annotations Weir reads, as an object's metadata carries them (what
/// the lab writes back out).
pub fn annotations(policy_audit_mode: Option<bool>) -> Labels {
    policy_audit_mode
        .map(|audit| (AUDIT_MODE_ANNOTATION.to_string(), audit.to_string()))
        .into_iter()
        .collect()
}

impl Pod {
    /// `namespace/name`: the pod's key.
    pub fn namespaced_name(&self) -> NamespacedName {
        NamespacedName::new(&self.namespace, &self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct ContainerPort {
    // Field order is the sort order: port, then protocol.
    pub port: u16,
    pub protocol: Protocol,
    pub name: Option<String>,
    /// `hostPort`: the runtime asks the CNI plugin to serve it on the
    /// node's address (`portMappings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// The protocol of a container port: the one Kubernetes `Protocol`.
pub use weir_types::Protocol;

/// The wire shape of the fields read from a manifest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: RawMetadata,
    /// Only read for Pods; other kinds keep theirs in the document.
    #[serde(default)]
    spec: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
struct RawMetadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
}

impl RawMetadata {
    /// [`AUDIT_MODE_ANNOTATION`]: "true" or "false"; anything else is
    /// refused, so a typo never silently turns enforcement off (or on).
    fn policy_audit_mode(&self) -> Result<Option<bool>> {
        match self
            .annotations
            .get(AUDIT_MODE_ANNOTATION)
            .map(String::as_str)
        {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => {
                bail!("annotation {AUDIT_MODE_ANNOTATION}: {other:?} is neither \"true\" nor \"false\"")
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPodSpec {
    node_name: Option<String>,
    #[serde(default)]
    containers: Vec<RawContainer>,
}

#[derive(Deserialize, Default)]
struct RawContainer {
    #[serde(default)]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPort {
    name: Option<String>,
    container_port: i64,
    protocol: Option<String>,
    host_port: Option<i64>,
}

/// Parses every document of `yaml`; the whole file is rejected if any
/// document is invalid, so nothing of a bad file is applied.
pub fn parse(yaml: &str) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(document)
            .with_context(|| format!("document {}: not valid YAML", index + 1))?;
        if value.is_null() {
            continue; // an empty document between separators
        }
        objects.push(from_document(value).with_context(|| format!("document {}", index + 1))?);
    }
    Ok(objects)
}

/// One object from its document, as read from a file or from the
/// Kubernetes API (the API source hands every object through here, so both
/// sources accept and reject the same).
pub fn from_document(document: serde_yaml_ng::Value) -> Result<Object> {
    let raw: RawObject =
        serde_yaml_ng::from_value(document.clone()).context("not a Kubernetes object")?;
    convert(raw, document)
}

fn convert(raw: RawObject, document: serde_yaml_ng::Value) -> Result<Object> {
    let kind = raw.kind.as_deref().unwrap_or_default();
    let name = raw
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{kind}: metadata.name is required"))?;
    // As the API server validates names: a Namespace's is a DNS label,
    // most other kinds' (Pods, the policy kinds) a DNS subdomain; Services
    // and EndpointSlices are checked by weir-lb.
    if kind == "Namespace" {
        validate_dns_label(&name)
    } else {
        validate_dns_subdomain(&name)
    }
    .with_context(|| format!("{kind} name"))?;
    match (raw.api_version.as_deref(), kind) {
        (Some("v1"), "Namespace") => Ok(Object::Namespace(Namespace {
            name,
            policy_audit_mode: raw.metadata.policy_audit_mode()?,
            labels: raw.metadata.labels,
        })),
        (Some("v1"), "Pod") => {
            let policy_audit_mode = raw.metadata.policy_audit_mode()?;
            let namespace = raw.metadata.namespace.unwrap_or_else(|| "default".into());
            validate_dns_label(&namespace).context("Pod namespace")?;
            let spec: RawPodSpec = match raw.spec {
                Some(spec) => serde_yaml_ng::from_value(spec).context("Pod spec")?,
                None => RawPodSpec::default(),
            };
            let mut ports = Vec::new();
            for port in spec.containers.iter().flat_map(|c| &c.ports) {
                let number = u16::try_from(port.container_port)
                    .ok()
                    .filter(|p| *p != 0)
                    .with_context(|| {
                        format!("containerPort {} is outside 1-65535", port.container_port)
                    })?;
                // Read case-insensitively (`tcp` too), unlike the API server.
                let protocol = port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_uppercase()
                    .parse::<Protocol>()?;
                let host_port = match port.host_port {
                    None | Some(0) => None,
                    Some(host_port) => Some(
                        u16::try_from(host_port)
                            .ok()
                            .with_context(|| format!("hostPort {host_port} is outside 1-65535"))?,
                    ),
                };
                ports.push(ContainerPort {
                    name: port.name.clone(),
                    port: number,
                    protocol,
                    host_port,
                });
            }
            ports.sort();
            ports.dedup();
            Ok(Object::Pod(Pod {
                namespace,
                name,
                policy_audit_mode,
                labels: raw.metadata.labels,
                node: spec.node_name,
                ports,
            }))
        }
        (Some(version), kind) if POLICY_KINDS.contains(&(version, kind)) => {
            let namespace = match kind {
                "WeirClusterwideNetworkPolicy" => None,
                _ => {
                    let ns = raw.metadata.namespace.unwrap_or_else(|| "default".into());
                    validate_dns_label(&ns).with_context(|| format!("{kind} namespace"))?;
                    Some(ns)
                }
            };
            Ok(Object::Policy(PolicyDocument {
                api_version: version.to_string(),
                kind: kind.to_string(),
                namespace,
                name,
                document,
            }))
        }
        (Some("v1"), "Service") => match weir_lb::Service::from_document(&document) {
            Ok(object) => Ok(Object::Service(Box::new(Validated { object, document }))),
            Err(e) => bail!("Service {name}: {e}"),
        },
        (Some("discovery.k8s.io/v1"), "EndpointSlice") => {
            match weir_lb::AnyEndpointSlice::from_document(&document) {
                Ok(object) => Ok(Object::EndpointSlice(Box::new(Validated {
                    object,
                    document,
                }))),
                Err(e) => bail!("EndpointSlice {name}: {e}"),
            }
        }
        (version, kind) => bail!(
            "kind {kind:?} (apiVersion {}) is not supported by the lab yet: Namespace, Pod, \
             Service, EndpointSlice and the policy kinds are",
            version.unwrap_or("none")
        ),
    }
}

/// RFC 1123 subdomain, what Kubernetes requires of most object names
/// (Pods, NetworkPolicies): labels joined by '.', at most 253 in all.
fn validate_dns_subdomain(name: &str) -> Result<()> {
    // Kubernetes' rule bounds the whole name only, not each part.
    let ok = name.len() <= 253 && name.split('.').all(is_dns_label_shaped);
    if !ok {
        bail!(
            "{name:?} is not a valid name (lower-case letters, digits, '-' and '.', \
             at most 253; alphanumeric at both ends of each '.'-separated part)"
        );
    }
    Ok(())
}

/// RFC 1123 label: what Kubernetes requires of namespace names.
fn validate_dns_label(name: &str) -> Result<()> {
    if !(name.len() <= 63 && is_dns_label_shaped(name)) {
        bail!("{name:?} is not a valid name (lower-case letters, digits and '-', at most 63)");
    }
    Ok(())
}

/// Lower-case letters, digits and '-', alphanumeric at both ends.
fn is_dns_label_shaped(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {ns: x}
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: x
  labels:
    pod: a
spec:
  nodeName: n1
  containers:
  - name: c
    image: ignored
    ports:
    - {name: serve-80-tcp, containerPort: 80, protocol: TCP}
    - {containerPort: 80, protocol: UDP}
    - {containerPort: 81}
---
"#;

    #[test]
    fn parses_namespaces_and_pods() {
        let objects = parse(PODS).unwrap();
        assert_eq!(objects.len(), 2);
        let Object::Pod(pod) = &objects[1] else {
            panic!("second object is a pod")
        };
        assert_eq!(pod.namespace, "x");
        assert_eq!(pod.node.as_deref(), Some("n1"));
        assert_eq!(pod.labels["pod"], "a");
        assert_eq!(
            pod.ports,
            vec![
                ContainerPort {
                    name: Some("serve-80-tcp".into()),
                    port: 80,
                    protocol: Protocol::Tcp,
                    host_port: None,
                },
                ContainerPort {
                    name: None,
                    port: 80,
                    protocol: Protocol::Udp,
                    host_port: None,
                },
                ContainerPort {
                    name: None,
                    port: 81,
                    protocol: Protocol::Tcp,
                    host_port: None,
                },
            ]
        );
    }

    #[test]
    fn the_audit_mode_annotation_is_read_and_a_bad_value_refused() {
        let objects = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations: {policy.weir.io/audit-mode: \"false\", other: y}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: x\n  annotations: {policy.weir.io/audit-mode: \"true\"}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\n",
        )
        .unwrap();
        let audit: Vec<Option<bool>> = objects
            .iter()
            .map(|o| match o {
                Object::Namespace(ns) => ns.policy_audit_mode,
                Object::Pod(pod) => pod.policy_audit_mode,
                _ => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(audit, [Some(false), Some(true), None]);
        // Written back out as it was read.
        assert_eq!(
            annotations(Some(true)),
            Labels::from([(AUDIT_MODE_ANNOTATION.to_string(), "true".to_string())])
        );
        assert!(annotations(None).is_empty());
        let err = parse(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations: {policy.weir.io/audit-mode: \"yes\"}\n",
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("policy.weir.io/audit-mode") && err.contains("\"yes\""),
            "{err}"
        );
    }

    #[test]
    fn one_bad_document_rejects_the_file() {
        let yaml = format!("{PODS}\napiVersion: v1\nkind: Pod\nmetadata: {{name: Bad_Name}}\n");
        let err = parse(&yaml).unwrap_err();
        assert!(format!("{err:#}").contains("not a valid name"), "{err:#}");
    }

    #[test]
    fn bad_ports_and_protocols_are_rejected_with_a_reason() {
        let pod = |ports: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - ports: [{ports}]\n")
        };
        let err = parse(&pod("{containerPort: 70000}")).unwrap_err();
        assert!(format!("{err:#}").contains("outside 1-65535"), "{err:#}");
        let err = parse(&pod("{containerPort: 80, protocol: ICMP}")).unwrap_err();
        assert!(format!("{err:#}").contains("unknown protocol"), "{err:#}");
    }

    #[test]
    fn policy_kinds_are_kept_as_documents() {
        let objects = parse(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n---\napiVersion: weir.io/v1\nkind: WeirClusterwideNetworkPolicy\nmetadata: {name: cw}\nspec: {}\n",
        )
        .unwrap();
        let keys: Vec<String> = objects
            .iter()
            .map(|o| match o {
                Object::Policy(p) => p.key(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            ["NetworkPolicy/x/deny", "WeirClusterwideNetworkPolicy/cw"]
        );
    }

    /// Names as the API server takes them: a policy or Pod name is a DNS
    /// subdomain (the upstream e2e suite names a NetworkPolicy with 72
    /// characters, which a 63-character rule once rejected, leaving its
    /// pods open), a Namespace name a DNS label.
    #[test]
    fn names_follow_the_api_servers_rules_per_kind() {
        let long = "allow-any-ns-different-than-ns-a-via-ns-selector-with-match-expressions";
        let policy = |name: &str| {
            format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\nspec: {{podSelector: {{}}}}\n")
        };
        let pod = |name: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n");
        let namespace =
            |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
        for good in [long, "web.v2", "a"] {
            parse(&policy(good)).unwrap();
            parse(&pod(good)).unwrap();
        }
        let too_long = "a".repeat(254);
        for bad in ["Web", "web..v2", "-web", "web.-v2", too_long.as_str()] {
            assert!(parse(&policy(bad)).is_err(), "policy {bad}");
            assert!(parse(&pod(bad)).is_err(), "pod {bad}");
        }
        parse(&namespace("x")).unwrap();
        for bad in [long, "x.y"] {
            assert!(parse(&namespace(bad)).is_err(), "namespace {bad}");
        }
    }

    #[test]
    fn unsupported_kinds_say_so() {
        let err =
            parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("not supported by the lab yet"),
            "{err:#}"
        );
    }
}
