//! Kubernetes NetworkPolicy (networking.k8s.io/v1): typed YAML form,
//! validation, and translation into the normalized [`Policy`] form, following
//! the API definition and Cilium's translation (REFERENCE §4.4):
//!
//! - `podSelector` selects pods of the policy's namespace.
//! - `policyTypes` defaults to `[Ingress]`, plus `Egress` when `spec.egress`
//!   has at least one rule (Kubernetes' defaulting looks at `len(egress)`).
//!   Each listed type makes selected pods default-deny in that direction;
//!   rules of a direction not listed are ignored (the policy does not apply
//!   to that direction).
//! - A missing or empty `from`/`to` means every peer, world included; a
//!   missing or empty `ports` means every port and protocol.
//! - In one peer, `podSelector` AND `namespaceSelector`; `podSelector` alone
//!   means the policy's namespace; `namespaceSelector` alone means all pods of
//!   the matching namespaces. Namespace label keys become
//!   `k8s:io.cilium.k8s.namespace.labels.<key>`, pod label keys `k8s:<key>`.
//! - `ipBlock` is a CIDR peer with `except` prefixes carved out.
//! - A missing `metadata.namespace` is `default` (as for a manifest applied
//!   without `-n`).

use serde::Deserialize;
use weir_types::IntOrString;

use crate::error::{FieldErrors, Path, PolicyError};
use crate::labels::{NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, SOURCE_K8S};
use crate::rule::{
    CidrScope, Direction, Peer, Policy, PolicyId, PolicyKind, PortMatch, Protocol, Rule, RuleSet,
    Verdict,
};
use crate::selector::{LabelSelectorSpec, Operator, Requirement, Selector};
use crate::validate::{parse_cidr_peer, parse_port, PortStyle};

/// Object metadata (only what policy needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelectorSpec,
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
    #[serde(default)]
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyIngressRule {
    #[serde(default)]
    pub from: Option<Vec<NetworkPolicyPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyEgressRule {
    #[serde(default)]
    pub to: Option<Vec<NetworkPolicyPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPeer {
    #[serde(default)]
    pub pod_selector: Option<LabelSelectorSpec>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelectorSpec>,
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    #[serde(default)]
    pub cidr: String,
    #[serde(default)]
    pub except: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: Option<IntOrString>,
    #[serde(default)]
    pub end_port: Option<i64>,
}

impl NetworkPolicy {
    pub fn from_yaml(yaml: &str) -> Result<Self, PolicyError> {
        serde_yaml_ng::from_str(yaml).map_err(|source| PolicyError::Yaml {
            what: "NetworkPolicy".into(),
            source,
        })
    }

    /// The namespace the policy lives in (`default` when unset).
    pub fn namespace(&self) -> &str {
        self.metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
    }

    /// Validates the policy and translates it. Every problem is reported;
    /// on any problem no rules are produced.
    pub fn to_policy(&self) -> Result<Policy, PolicyError> {
        let ns = self.namespace().to_string();
        let name = self.metadata.name.clone().unwrap_or_default();
        let mut errors = FieldErrors::new();
        if name.is_empty() {
            errors.push(Path::root("metadata.name"), "name is required");
        }
        let spec_path = Path::root("spec");
        let sp = &self.spec;

        let subject = k8s_selector(
            &sp.pod_selector,
            &spec_path.field("podSelector"),
            &mut errors,
        )
        .map(|s| s.with(namespace_is(&ns)));

        let (mut ingress_on, mut egress_on) = (false, false);
        match sp.policy_types.as_deref() {
            None | Some([]) => {
                ingress_on = true;
                egress_on = sp.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
            Some(types) => {
                for (i, t) in types.iter().enumerate() {
                    let (flag, name) = match t.as_str() {
                        "Ingress" => (&mut ingress_on, "Ingress"),
                        "Egress" => (&mut egress_on, "Egress"),
                        other => {
                            errors.push(
                                spec_path.field("policyTypes").index(i),
                                format!("unsupported value {other:?}: must be \"Ingress\" or \"Egress\""),
                            );
                            continue;
                        }
                    };
                    if *flag {
                        errors.push(
                            spec_path.field("policyTypes").index(i),
                            format!("duplicate value {name:?}"),
                        );
                    }
                    *flag = true;
                }
            }
        }

        let mut rules = Vec::new();
        for (i, r) in sp.ingress.iter().flatten().enumerate() {
            let path = spec_path.field("ingress").index(i);
            let rule = k8s_rule(
                Direction::Ingress,
                &ns,
                r.from.as_deref(),
                r.ports.as_deref(),
                "from",
                &path,
                &mut errors,
            );
            if let (Some(rule), true) = (rule, ingress_on) {
                rules.push(rule);
            }
        }
        for (i, r) in sp.egress.iter().flatten().enumerate() {
            let path = spec_path.field("egress").index(i);
            let rule = k8s_rule(
                Direction::Egress,
                &ns,
                r.to.as_deref(),
                r.ports.as_deref(),
                "to",
                &path,
                &mut errors,
            );
            if let (Some(rule), true) = (rule, egress_on) {
                rules.push(rule);
            }
        }

        let id = PolicyId {
            kind: PolicyKind::NetworkPolicy,
            namespace: Some(ns),
            name,
        };
        match subject {
            Some(subject) if errors.is_empty() => Ok(Policy {
                id,
                rule_sets: vec![RuleSet {
                    subject,
                    enforces_ingress: ingress_on,
                    enforces_egress: egress_on,
                    rules,
                }],
            }),
            _ => Err(PolicyError::Invalid {
                policy: id.to_string(),
                errors,
            }),
        }
    }
}

/// `k8s:io.kubernetes.pod.namespace = ns`
fn namespace_is(ns: &str) -> Requirement {
    Requirement::equals(format!("{SOURCE_K8S}:{POD_NAMESPACE_LABEL}"), ns)
}

/// `k8s:io.kubernetes.pod.namespace` exists (the identity is a pod).
fn is_pod() -> Requirement {
    Requirement::new(
        format!("{SOURCE_K8S}:{POD_NAMESPACE_LABEL}"),
        Operator::Exists,
        &[],
    )
}

/// Validates a NetworkPolicy selector (plain Kubernetes keys, no source) and
/// gives its keys the `k8s:` source.
fn k8s_selector(
    spec: &LabelSelectorSpec,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<Selector> {
    let before = errors.len();
    for k in spec.match_labels.iter().flat_map(|m| m.keys()) {
        if k.contains(':') {
            errors.push(
                path.field("matchLabels").key(k),
                format!("invalid label key {k:?}: ':' is not allowed"),
            );
        }
    }
    for (i, e) in spec.match_expressions.iter().flatten().enumerate() {
        if e.key.contains(':') {
            errors.push(
                path.field("matchExpressions").index(i).field("key"),
                format!("invalid label key {:?}: ':' is not allowed", e.key),
            );
        }
    }
    let sel = Selector::from_spec(spec, path, errors);
    if errors.len() != before {
        return None;
    }
    sel.map(|s| s.map_keys(|k| format!("{SOURCE_K8S}:{k}")))
}

fn k8s_peer(
    ns: &str,
    peer: &NetworkPolicyPeer,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<Peer> {
    if let Some(ip) = &peer.ip_block {
        let p = path.field("ipBlock");
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            errors.push(
                p,
                "may not be combined with podSelector or namespaceSelector",
            );
            return None;
        }
        return parse_cidr_peer(
            &ip.cidr,
            ip.except.as_deref().unwrap_or(&[]),
            false,
            CidrScope::Addresses,
            &p,
            errors,
        );
    }
    let pods = peer
        .pod_selector
        .as_ref()
        .map(|s| k8s_selector(s, &path.field("podSelector"), errors));
    let namespaces = peer
        .namespace_selector
        .as_ref()
        .map(|s| k8s_selector(s, &path.field("namespaceSelector"), errors));
    match (pods, namespaces) {
        (None, None) => {
            errors.push(
                path.clone(),
                "must specify a peer: podSelector, namespaceSelector or ipBlock",
            );
            None
        }
        (Some(pods), None) => pods.map(|p| Peer::Endpoints(p.with(namespace_is(ns)))),
        (pods, Some(nss)) => {
            let nss = nss?.map_keys(|k| {
                // k is `k8s:<key>`; namespace labels live under the prefix.
                let key = k.strip_prefix("k8s:").unwrap_or(k);
                format!("{SOURCE_K8S}:{NAMESPACE_LABELS_PREFIX}{key}")
            });
            let mut sel = nss.with(is_pod());
            if let Some(pods) = pods {
                sel = sel.and(&pods?);
            }
            Some(Peer::Endpoints(sel))
        }
    }
}

fn k8s_ports(ports: &[NetworkPolicyPort], path: &Path, errors: &mut FieldErrors) -> Vec<PortMatch> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = path.index(i);
        let protocol = match p.protocol.as_deref() {
            None => Some(Protocol::Tcp),
            Some(s) => s.parse::<Protocol>().ok().or_else(|| {
                errors.push(
                    pp.field("protocol"),
                    format!("unsupported protocol {s:?}: must be \"TCP\", \"UDP\" or \"SCTP\""),
                );
                None
            }),
        };
        let port = parse_port(
            p.port.as_ref(),
            p.end_port,
            PortStyle::Kubernetes,
            &pp,
            errors,
        );
        if let (Some(protocol), Some(port)) = (protocol, port) {
            // A NetworkPolicy port always has one protocol.
            out.push(PortMatch {
                protocol: Some(protocol),
                port,
            });
        }
    }
    out
}

fn k8s_rule(
    direction: Direction,
    ns: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    peers_field: &str,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<Rule> {
    let before = errors.len();
    let peers = match peers {
        None | Some([]) => vec![Peer::Any],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, peer)| k8s_peer(ns, peer, &path.field(peers_field).index(j), errors))
            .collect(),
    };
    let ports = k8s_ports(ports.unwrap_or(&[]), &path.field("ports"), errors);
    (errors.len() == before).then(|| Rule {
        path: path.to_string(),
        direction,
        verdict: Verdict::Allow,
        peers,
        ports,
    })
}

#[cfg(test)]
mod tests;
