//! Weir's policy CRDs (`weir.io/v1`), modelled on CiliumNetworkPolicy:
//! `WeirNetworkPolicy` (namespaced) and `WeirClusterwideNetworkPolicy`.
//!
//! Scoping follows Cilium (`pkg/k8s/apis/cilium.io/utils/utils.go`):
//! - namespaced: `endpointSelector` gets `k8s:io.kubernetes.pod.namespace=<ns>`;
//!   naming another namespace there is a validation error (Cilium silently
//!   overrides it; Weir prefers to say so). Each `fromEndpoints`/`toEndpoints`
//!   selector gets the same requirement unless it names the namespace key
//!   itself or a `reserved:` label.
//! - cluster-wide: peer selectors that name neither the namespace key nor a
//!   `reserved:` label get "has a namespace" (`k8s:io.kubernetes.pod.namespace`
//!   exists), so `{}` means every pod, not world or host.
//!
//! Rules: a rule's peers are the union of `from/toEndpoints`, `CIDR`,
//! `CIDRSet` and `Entities`. A rule with no peer field at all but with
//! `toPorts` applies to every peer (Cilium's L4-only rule); a rule with no
//! peer field and no ports matches nothing (`ingress: [{}]` only turns on
//! default deny). `toPorts` ports default to protocol `ANY`; port `"0"` or no
//! port means all ports.
//!
//! Enforcement: a spec whose `ingress` or `ingressDeny` has at least one rule
//! makes its selected endpoints default-deny on ingress (same for egress), as
//! Cilium's default `enableDefaultDeny`. `enableDefaultDeny: false` is
//! rejected as unsupported rather than ignored.
//!
//! Fields Weir does not implement (`fromRequires`, `toFQDNs`, `toServices`,
//! L7 `rules`, `icmps`, `nodeSelector`, ...) are validation errors: ignoring
//! them could turn a narrow rule into a wide one. Other unknown fields are
//! ignored, as kubectl does.
//!
//! The spec types also derive `Serialize` and `JsonSchema`: weir-crds builds
//! the CRDs' schemas from them (their doc comments are the field
//! descriptions `kubectl explain` shows), so keep those comments plain text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use weir_types::IntOrString;

use crate::error::{FieldErrors, Path, PolicyError};
use crate::k8s::ObjectMeta;
use crate::labels::{POD_NAMESPACE_LABEL, SOURCE_K8S};
use crate::rule::{
    CidrScope, Direction, Entity, Peer, Policy, PolicyId, PolicyKind, PortMatch, Protocol, Rule,
    RuleSet, Verdict,
};
use crate::selector::{LabelSelectorSpec, Operator, Requirement, Selector};
use crate::validate::{parse_cidr, parse_cidr_peer, parse_port, PortStyle};

/// A field Weir does not implement, kept as written so that validation can
/// refuse it (see the module doc).
type Unsupported = Option<Raw>;

/// Any YAML/JSON value, unvalidated. Its schema keeps whatever is written
/// (`x-kubernetes-preserve-unknown-fields`): an API server that pruned an
/// unsupported field would turn a narrow rule into a wide one unseen.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Raw(pub serde_yaml_ng::Value);

impl JsonSchema for Raw {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Raw".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
    }
}

/// Kubernetes' integer-or-string schema, for `port`.
fn int_or_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{ "type": "integer" }, { "type": "string" }],
    })
}

/// `WeirNetworkPolicy` or `WeirClusterwideNetworkPolicy` (same shape).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeirPolicy {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<WeirRule>,
    #[serde(default)]
    pub specs: Option<Vec<WeirRule>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeirRule {
    /// The endpoints the rule set applies to (required); `{}` is every endpoint in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<LabelSelectorSpec>,
    /// Allowed incoming traffic; any rule here makes the selected endpoints default-deny on ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<PeerRule>>,
    /// Denied incoming traffic; deny beats allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_deny: Option<Vec<PeerRule>>,
    /// Allowed outgoing traffic; any rule here makes the selected endpoints default-deny on egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<PeerRule>>,
    /// Denied outgoing traffic; deny beats allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<PeerRule>>,
    /// Only `true` (the default) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefaultDeny {
    /// Must not be `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    /// Must not be `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// One ingress, ingressDeny, egress or egressDeny rule. The `from*` fields
/// are valid only in ingress rules and the `to*` peer fields only in egress
/// rules; validation checks that.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerRule {
    /// Ingress peers: endpoints whose labels match one of these selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<LabelSelectorSpec>>,
    /// Ingress peers: addresses in these CIDRs (never pods).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    /// Ingress peers: CIDRs with exceptions.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "fromCIDRSet"
    )]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    /// Ingress peers: world, cluster, host, remote-node or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<String>>,
    /// Egress peers: endpoints whose labels match one of these selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<LabelSelectorSpec>>,
    /// Egress peers: addresses in these CIDRs (never pods).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    /// Egress peers: CIDRs with exceptions.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    /// Egress peers: world, cluster, host, remote-node or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<String>>,
    /// The destination ports the rule covers; none means all. With no peer field, the rule applies to every peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,

    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_requires: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_groups: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_nodes: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_requires: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_groups: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_nodes: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_services: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "toFQDNs")]
    pub to_fqdns: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmps: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CidrRule {
    /// The CIDR (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// CIDRs inside `cidr` that are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_group_ref: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    /// Ports, each with a protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_names: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "terminatingTLS"
    )]
    pub terminating_tls: Unsupported,
    /// Not supported by Weir: a policy that sets it is refused.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "originatingTLS"
    )]
    pub originating_tls: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortProtocol {
    /// A number, a named port, or `0`/absent for all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string_schema")]
    pub port: Option<IntOrString>,
    /// The last port of a range starting at `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
    /// TCP, UDP, SCTP or ANY (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl WeirPolicy {
    pub fn from_yaml(yaml: &str) -> Result<Self, PolicyError> {
        serde_yaml_ng::from_str(yaml).map_err(|source| PolicyError::Yaml {
            what: "Weir policy".into(),
            source,
        })
    }

    /// Validates and translates. `clusterwide` selects the
    /// `WeirClusterwideNetworkPolicy` scoping; otherwise the policy is
    /// namespaced (namespace `default` when unset).
    pub fn to_policy(&self, clusterwide: bool) -> Result<Policy, PolicyError> {
        let mut errors = FieldErrors::new();
        let name = self.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            errors.push(Path::root("metadata.name"), "name is required");
        }
        let namespace = if clusterwide {
            None
        } else {
            Some(
                self.metadata
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".to_string()),
            )
        };
        let id = PolicyId {
            kind: if clusterwide {
                PolicyKind::WeirClusterwideNetworkPolicy
            } else {
                PolicyKind::WeirNetworkPolicy
            },
            namespace: namespace.clone(),
            name,
        };

        let mut specs: Vec<(Path, &WeirRule)> = Vec::new();
        if let Some(s) = &self.spec {
            specs.push((Path::root("spec"), s));
        }
        for (i, s) in self.specs.iter().flatten().enumerate() {
            specs.push((Path::root("specs").index(i), s));
        }
        if specs.is_empty() {
            errors.push(Path::root("spec"), "spec or specs is required");
        }

        let scope = Scope {
            namespace: namespace.as_deref(),
        };
        let rule_sets: Vec<RuleSet> = specs
            .iter()
            .filter_map(|(path, rule)| scope.rule_set(rule, path, &mut errors))
            .collect();

        if errors.is_empty() {
            Ok(Policy { id, rule_sets })
        } else {
            Err(PolicyError::Invalid {
                policy: id.to_string(),
                errors,
            })
        }
    }
}

fn namespace_key() -> String {
    format!("{SOURCE_K8S}:{POD_NAMESPACE_LABEL}")
}

fn unsupported(field: &Unsupported, path: Path, name: &str, errors: &mut FieldErrors) {
    if field.is_some() {
        errors.push(path, format!("{name} is not supported by Weir"));
    }
}

/// Namespace scoping of one policy.
struct Scope<'a> {
    /// `None` for the cluster-wide kind.
    namespace: Option<&'a str>,
}

impl Scope<'_> {
    fn rule_set(&self, rule: &WeirRule, path: &Path, errors: &mut FieldErrors) -> Option<RuleSet> {
        let before = errors.len();
        unsupported(
            &rule.node_selector,
            path.field("nodeSelector"),
            "nodeSelector (host policy)",
            errors,
        );
        if let Some(dd) = &rule.enable_default_deny {
            for (v, f) in [(dd.ingress, "ingress"), (dd.egress, "egress")] {
                if v == Some(false) {
                    errors.push(
                        path.field("enableDefaultDeny").field(f),
                        "false is not supported by Weir (rules always enable default deny)",
                    );
                }
            }
        }
        let subject = match &rule.endpoint_selector {
            None => {
                errors.push(
                    path.field("endpointSelector"),
                    "endpointSelector is required",
                );
                None
            }
            Some(spec) => self.subject(spec, &path.field("endpointSelector"), errors),
        };

        let mut rules = Vec::new();
        let sections = [
            ("ingress", Direction::Ingress, Verdict::Allow, &rule.ingress),
            (
                "ingressDeny",
                Direction::Ingress,
                Verdict::Deny,
                &rule.ingress_deny,
            ),
            ("egress", Direction::Egress, Verdict::Allow, &rule.egress),
            (
                "egressDeny",
                Direction::Egress,
                Verdict::Deny,
                &rule.egress_deny,
            ),
        ];
        for (field, direction, verdict, list) in sections {
            for (i, r) in list.iter().flatten().enumerate() {
                if let Some(r) =
                    self.peer_rule(r, direction, verdict, &path.field(field).index(i), errors)
                {
                    rules.push(r);
                }
            }
        }
        let non_empty = |l: &Option<Vec<PeerRule>>| l.as_ref().is_some_and(|l| !l.is_empty());
        let subject = subject?;
        (errors.len() == before).then(|| RuleSet {
            subject,
            enforces_ingress: non_empty(&rule.ingress) || non_empty(&rule.ingress_deny),
            enforces_egress: non_empty(&rule.egress) || non_empty(&rule.egress_deny),
            rules,
        })
    }

    fn subject(
        &self,
        spec: &LabelSelectorSpec,
        path: &Path,
        errors: &mut FieldErrors,
    ) -> Option<Selector> {
        let sel = Selector::from_spec(spec, path, errors)?;
        let Some(ns) = self.namespace else {
            return Some(sel);
        };
        for r in sel.requirements() {
            let is_ns_key = crate::labels::split_source(&r.key).1 == POD_NAMESPACE_LABEL;
            let only_own =
                r.operator == Operator::In && r.values.len() == 1 && r.values.contains(ns);
            if is_ns_key && !only_own {
                errors.push(
                    path.clone(),
                    format!("a namespaced policy selects endpoints only in its own namespace {ns:?}; remove the requirement {r}"),
                );
                return None;
            }
        }
        Some(sel.with(Requirement::equals(namespace_key(), ns)))
    }

    /// Applies namespace scoping to a peer selector.
    fn peer_selector(
        &self,
        spec: &LabelSelectorSpec,
        path: &Path,
        errors: &mut FieldErrors,
    ) -> Option<Selector> {
        let sel = Selector::from_spec(spec, path, errors)?;
        if sel.names_reserved() || sel.names_namespace() {
            return Some(sel);
        }
        Some(match self.namespace {
            Some(ns) => sel.with(Requirement::equals(namespace_key(), ns)),
            None => sel.with(Requirement::new(namespace_key(), Operator::Exists, &[])),
        })
    }

    fn peer_rule(
        &self,
        r: &PeerRule,
        direction: Direction,
        verdict: Verdict,
        path: &Path,
        errors: &mut FieldErrors,
    ) -> Option<Rule> {
        let before = errors.len();
        let (own, other) = match direction {
            Direction::Ingress => ("from", "to"),
            Direction::Egress => ("to", "from"),
        };
        let (eps, cidrs, cidr_sets, entities, wrong) = match direction {
            Direction::Ingress => (
                &r.from_endpoints,
                &r.from_cidr,
                &r.from_cidr_set,
                &r.from_entities,
                [
                    r.to_endpoints.is_some(),
                    r.to_cidr.is_some(),
                    r.to_cidr_set.is_some(),
                    r.to_entities.is_some(),
                ],
            ),
            Direction::Egress => (
                &r.to_endpoints,
                &r.to_cidr,
                &r.to_cidr_set,
                &r.to_entities,
                [
                    r.from_endpoints.is_some(),
                    r.from_cidr.is_some(),
                    r.from_cidr_set.is_some(),
                    r.from_entities.is_some(),
                ],
            ),
        };
        for (present, suffix) in wrong
            .iter()
            .zip(["Endpoints", "CIDR", "CIDRSet", "Entities"])
        {
            if *present {
                errors.push(
                    path.field(&format!("{other}{suffix}")),
                    format!("not allowed in a {direction} rule (use {own}{suffix})"),
                );
            }
        }
        for (field, name) in [
            (&r.from_requires, "fromRequires"),
            (&r.from_groups, "fromGroups"),
            (&r.from_nodes, "fromNodes"),
            (&r.to_requires, "toRequires"),
            (&r.to_groups, "toGroups"),
            (&r.to_nodes, "toNodes"),
            (&r.to_services, "toServices"),
            (&r.to_fqdns, "toFQDNs"),
            (&r.icmps, "icmps"),
            (&r.authentication, "authentication"),
        ] {
            unsupported(field, path.field(name), name, errors);
        }

        let mut peers = Vec::new();
        for (i, s) in eps.iter().flatten().enumerate() {
            if let Some(sel) =
                self.peer_selector(s, &path.field(&format!("{own}Endpoints")).index(i), errors)
            {
                peers.push(Peer::Endpoints(sel));
            }
        }
        for (i, c) in cidrs.iter().flatten().enumerate() {
            let p = path.field(&format!("{own}CIDR")).index(i);
            if let Some(cidr) = parse_cidr(c, true, &p, errors) {
                peers.push(Peer::Cidr {
                    cidr,
                    except: vec![],
                    scope: CidrScope::OutsideCluster,
                });
            }
        }
        for (i, c) in cidr_sets.iter().flatten().enumerate() {
            let p = path.field(&format!("{own}CIDRSet")).index(i);
            if c.cidr_group_ref.is_some() {
                errors.push(
                    p.field("cidrGroupRef"),
                    "cidrGroupRef is not supported by Weir",
                );
                continue;
            }
            let Some(cidr) = &c.cidr else {
                errors.push(p.field("cidr"), "cidr is required");
                continue;
            };
            if let Some(peer) = parse_cidr_peer(
                cidr,
                c.except.as_deref().unwrap_or(&[]),
                true,
                CidrScope::OutsideCluster,
                &p,
                errors,
            ) {
                peers.push(peer);
            }
        }
        for (i, e) in entities.iter().flatten().enumerate() {
            match Entity::parse(e) {
                Some(ent) => peers.push(Peer::Entity(ent)),
                None => {
                    let names: Vec<&str> = Entity::ALL.iter().map(|(n, _)| *n).collect();
                    errors.push(
                        path.field(&format!("{own}Entities")).index(i),
                        format!("unknown entity {e:?}: must be one of {}", names.join(", ")),
                    );
                }
            }
        }

        let ports = self.ports(
            r.to_ports.as_deref().unwrap_or(&[]),
            &path.field("toPorts"),
            errors,
        );
        let no_peer_field =
            eps.is_none() && cidrs.is_none() && cidr_sets.is_none() && entities.is_none();
        if no_peer_field && r.to_ports.is_some() {
            peers.push(Peer::Any);
        }
        (errors.len() == before).then(|| Rule {
            path: path.to_string(),
            direction,
            verdict,
            peers,
            ports,
        })
    }

    fn ports(&self, rules: &[PortRule], path: &Path, errors: &mut FieldErrors) -> Vec<PortMatch> {
        let mut out = Vec::new();
        for (i, pr) in rules.iter().enumerate() {
            let rp = path.index(i);
            for (field, name) in [
                (&pr.rules, "rules"),
                (&pr.server_names, "serverNames"),
                (&pr.listener, "listener"),
                (&pr.terminating_tls, "terminatingTLS"),
                (&pr.originating_tls, "originatingTLS"),
            ] {
                unsupported(field, rp.field(name), name, errors);
            }
            for (j, p) in pr.ports.iter().flatten().enumerate() {
                let pp = rp.field("ports").index(j);
                // Outer None: invalid (reported); inner None: any protocol.
                let protocol = match p.protocol.as_deref() {
                    None | Some("" | "ANY") => Some(None),
                    Some(s) => match s.parse::<Protocol>() {
                        Ok(proto) => Some(Some(proto)),
                        Err(_) => {
                            errors.push(
                                pp.field("protocol"),
                                format!("unsupported protocol {s:?}: must be \"TCP\", \"UDP\", \"SCTP\" or \"ANY\""),
                            );
                            None
                        }
                    },
                };
                let port = parse_port(p.port.as_ref(), p.end_port, PortStyle::Weir, &pp, errors);
                if let (Some(protocol), Some(port)) = (protocol, port) {
                    out.push(PortMatch { protocol, port });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
