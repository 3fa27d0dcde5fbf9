//! The agent's events (Hubble's `AgentEvent`) as the reconcile loop makes
//! changes: policies updated or deleted, endpoints created, deleted and
//! regenerated, ipcache entries and service frontends upserted or deleted.
//!
//! [`AgentEvents`] is what the reconciler holds: a handle on the bounded
//! [`AgentEventRing`] the Observer API serves (GetAgentEvents), and what it
//! announced so far, so each change is published once. Publishing takes
//! the ring's lock for a push and never waits on a reader. The functions
//! turning the agent's objects into Hubble's notifications are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use weir_abi::IpcacheValue;
use weir_observer::agent_events::build::{self, IpcacheChange, ServiceUpsert};
use weir_observer::AgentEventRing;
use weir_types::{LabelSet, NamespacedName};

use crate::cluster::manifest::PolicyDocument;
use crate::endpoint::registry::Endpoint;
use crate::reconcile::ipcache::IpcacheWrite;

/// Cilium's policy label keys (`pkg/k8s/utils`, `pkg/policy/api`).
const POLICY_DERIVED_FROM: &str = "k8s:io.cilium.k8s.policy.derived-from";
const POLICY_NAME: &str = "k8s:io.cilium.k8s.policy.name";
const POLICY_NAMESPACE: &str = "k8s:io.cilium.k8s.policy.namespace";
const POLICY_UID: &str = "k8s:io.cilium.k8s.policy.uid";

/// The labels Cilium gives a policy's rules, sorted: derived-from (the
/// kind), name, namespace (namespaced kinds), uid (when the object has one).
pub fn policy_labels(policy: &PolicyDocument) -> Vec<String> {
    let mut labels = vec![
        format!("{POLICY_DERIVED_FROM}={}", policy.kind),
        format!("{POLICY_NAME}={}", policy.name),
    ];
    if let Some(namespace) = &policy.namespace {
        labels.push(format!("{POLICY_NAMESPACE}={namespace}"));
    }
    if let Some(uid) = policy
        .document
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(|u| u.as_str())
    {
        labels.push(format!("{POLICY_UID}={uid}"));
    }
    labels
}

/// The rules a policy document holds, as Cilium counts them: one per
/// object, or one per entry of a `specs` list.
pub fn policy_rules(policy: &PolicyDocument) -> i64 {
    match policy.document.get("specs").and_then(|s| s.as_sequence()) {
        Some(specs) => specs.len() as i64,
        None => 1,
    }
}

/// Labels as Hubble prints them: `source:key=value`.
pub fn label_strings(labels: &LabelSet) -> Vec<String> {
    labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.to_string()
            } else {
                format!("{k}={v}")
            }
        })
        .collect()
}

/// A local endpoint as last announced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    pod: NamespacedName,
    labels: Vec<String>,
}

/// What the reconciler publishes into, and what it announced so far.
pub struct AgentEvents {
    ring: Arc<AgentEventRing>,
    /// The policy revision: moves on with every policy change published.
    revision: u64,
    endpoints: BTreeMap<u16, Announced>,
}

impl AgentEvents {
    /// Publishes into `ring`; `existing` are the endpoints restored from an
    /// earlier run, not announced as created.
    pub fn new(ring: Arc<AgentEventRing>, existing: &[Endpoint]) -> Self {
        Self {
            ring,
            revision: 0,
            endpoints: existing
                .iter()
                .map(|e| {
                    (
                        e.id,
                        Announced {
                            pod: e.pod.clone(),
                            labels: Vec::new(),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn ring(&self) -> &Arc<AgentEventRing> {
        &self.ring
    }

    /// The policy revision after the changes published so far.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// POLICY_UPDATED for every policy new or changed from `before` to
    /// `after`, POLICY_DELETED for every one gone, each with its own
    /// revision.
    pub fn policies(
        &mut self,
        before: &BTreeMap<String, PolicyDocument>,
        after: &BTreeMap<String, PolicyDocument>,
    ) {
        for (key, policy) in after {
            if before.get(key) != Some(policy) {
                self.revision += 1;
                self.ring.publish(build::policy(
                    false,
                    policy_labels(policy),
                    self.revision,
                    policy_rules(policy),
                ));
            }
        }
        for (key, policy) in before {
            if !after.contains_key(key) {
                self.revision += 1;
                self.ring.publish(build::policy(
                    true,
                    policy_labels(policy),
                    self.revision,
                    policy_rules(policy),
                ));
            }
        }
    }

    /// ENDPOINT_CREATED for every endpoint not announced yet, with its pod
    /// and the labels of its identity (`labels_of`; none while it has
    /// none), ENDPOINT_DELETED for every announced one gone.
    pub fn endpoints(
        &mut self,
        endpoints: &[Endpoint],
        labels_of: impl Fn(&Endpoint) -> Option<LabelSet>,
    ) {
        let present: BTreeSet<u16> = endpoints.iter().map(|e| e.id).collect();
        let gone: Vec<u16> = self
            .endpoints
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(announced) = self.endpoints.remove(&id) {
                self.ring.publish(build::endpoint(
                    true,
                    u64::from(id),
                    announced.labels,
                    &announced.pod.namespace,
                    &announced.pod.name,
                ));
            }
        }
        for endpoint in endpoints {
            if self.endpoints.contains_key(&endpoint.id) {
                continue;
            }
            let labels = labels_of(endpoint)
                .map(|l| label_strings(&l))
                .unwrap_or_default();
            self.ring.publish(build::endpoint(
                false,
                u64::from(endpoint.id),
                labels.clone(),
                &endpoint.pod.namespace,
                &endpoint.pod.name,
            ));
            self.endpoints.insert(
                endpoint.id,
                Announced {
                    pod: endpoint.pod.clone(),
                    labels,
                },
            );
        }
    }

    /// ENDPOINT_REGENERATE_SUCCESS (or `_FAILURE` with `error`) for the
    /// endpoints `ids` a pass wrote (or failed to write).
    pub fn regenerated(
        &self,
        ids: &BTreeSet<u16>,
        endpoints: &[Endpoint],
        labels_of: impl Fn(&Endpoint) -> Option<LabelSet>,
        error: Option<&str>,
    ) {
        for endpoint in endpoints.iter().filter(|e| ids.contains(&e.id)) {
            let labels = labels_of(endpoint)
                .map(|l| label_strings(&l))
                .unwrap_or_default();
            self.ring.publish(build::endpoint_regenerated(
                u64::from(endpoint.id),
                labels,
                error.map(str::to_string),
            ));
        }
    }

    /// IPCACHE_UPSERTED / IPCACHE_DELETED for the entries written, each
    /// with what it replaced, and the local pod of the address if any.
    pub fn ipcache(&self, changes: &[IpcacheWrite], endpoints: &[Endpoint]) {
        for change in changes {
            let pod = match change.prefix {
                IpNetwork::V4(net) if net.prefix() == 32 => endpoints
                    .iter()
                    .find(|e| e.ipv4 == net.ip())
                    .map(|e| &e.pod),
                _ => None,
            };
            let host = |value: &IpcacheValue| {
                if value.node_ipv4 == [0; 4] {
                    String::new()
                } else {
                    IpAddr::from(value.node_ipv4).to_string()
                }
            };
            let (deleted, identity, host_ip) = match &change.new {
                Some(new) => (false, new.identity, host(new)),
                // Cilium reports a deletion with the identity it had.
                None => (
                    true,
                    change.old.as_ref().map_or(0, |old| old.identity),
                    change.old.as_ref().map(host).unwrap_or_default(),
                ),
            };
            let (old_identity, old_host_ip) = match (&change.old, &change.new) {
                (Some(old), Some(_)) => (Some(old.identity), host(old)),
                _ => (None, String::new()),
            };
            self.ring.publish(build::ipcache(
                deleted,
                IpcacheChange {
                    cidr: change.prefix.to_string(),
                    identity,
                    old_identity,
                    host_ip,
                    old_host_ip,
                    namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
                    pod_name: pod.map(|p| p.name.clone()).unwrap_or_default(),
                },
            ));
        }
    }

    /// SERVICE_UPSERTED for a frontend programmed, with its id (the reverse
    /// NAT index, Cilium's service id).
    pub fn service_upserted(
        &self,
        id: u16,
        frontend: &weir_lb::Frontend,
        service: Option<&weir_lb::Service>,
    ) {
        self.ring.publish(build::service_upserted(service_upsert(
            id, frontend, service,
        )));
    }

    /// SERVICE_DELETED for a frontend removed.
    pub fn service_deleted(&self, id: u16) {
        self.ring.publish(build::service_deleted(u32::from(id)));
    }

    /// AGENT_STARTED, once.
    pub fn agent_started(ring: &AgentEventRing, at: std::time::SystemTime) {
        ring.publish(build::agent_started(at));
    }
}

/// Hubble's service notification for a frontend (Cilium's type names),
/// with the traffic policies of its Service when known.
pub fn service_upsert(
    id: u16,
    frontend: &weir_lb::Frontend,
    service: Option<&weir_lb::Service>,
) -> ServiceUpsert {
    use weir_lb::{FrontendKind, TrafficPolicy};
    let kind = match frontend.kind {
        FrontendKind::ClusterIp => "ClusterIP",
        FrontendKind::NodePort => "NodePort",
        FrontendKind::ExternalIp => "ExternalIPs",
        FrontendKind::LoadBalancer => "LoadBalancer",
        FrontendKind::HostPort => "HostPort",
    };
    let policy = |p: TrafficPolicy| match p {
        TrafficPolicy::Cluster => "Cluster".to_string(),
        TrafficPolicy::Local => "Local".to_string(),
    };
    let (ext, int) = service.map_or((String::new(), String::new()), |s| {
        (
            policy(s.external_traffic_policy),
            policy(s.internal_traffic_policy),
        )
    });
    ServiceUpsert {
        id: u32::from(id),
        frontend: (frontend.address.to_string(), frontend.port),
        backends: frontend
            .backends
            .iter()
            .filter(|b| b.state == weir_lb::BackendState::Active)
            .map(|b| (b.address.to_string(), b.port))
            .collect(),
        kind: kind.to_string(),
        name: frontend.service.name.clone(),
        namespace: frontend.service.namespace.clone(),
        ext_traffic_policy: ext,
        int_traffic_policy: int,
    }
}

#[cfg(test)]
mod tests;
