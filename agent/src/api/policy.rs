//! The policy inspection API (`weir policy get`, `weir policy trace`,
//! `weir policy diff`), answered from the snapshot the policy reconciler
//! publishes after every pass: the very compiled state it wrote to the
//! policy map.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weir_agent_api::v1;
use weir_agent_api::v1::policy_server::Policy as PolicyRpc;
use weir_observer::FlowRing;
use weir_policy::{Direction, PeerKey, Ports, Verdict};
use weir_types::NamespacedName;

use super::wire;
use crate::reconcile::snapshot::{PolicySnapshot, SharedSnapshot};

mod diff;

pub struct PolicyService {
    snapshot: SharedSnapshot,
    /// The observer's flows, which `Diff` replays (none: Diff answers
    /// Unavailable).
    flows: Option<Arc<FlowRing>>,
}

impl PolicyService {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        PolicyService {
            snapshot,
            flows: None,
        }
    }

    pub fn with_flows(mut self, flows: Arc<FlowRing>) -> Self {
        self.flows = Some(flows);
        self
    }

    fn snapshot(&self) -> PolicySnapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn pod_ref(pod: &NamespacedName) -> v1::PolicyPodRef {
    v1::PolicyPodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    }
}

#[tonic::async_trait]
impl PolicyRpc for PolicyService {
    async fn get_policy(
        &self,
        _request: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::GetPolicyResponse>, Status> {
        let snapshot = self.snapshot();
        let mut endpoints = Vec::new();
        for (pod, local) in &snapshot.local {
            let Some(policy) = snapshot.compiled.endpoints.get(&local.endpoint) else {
                continue;
            };
            let mut rules = Vec::new();
            for direction in [Direction::Ingress, Direction::Egress] {
                for entry in &policy.direction(direction).entries {
                    let peer_labels = match entry.key.peer {
                        PeerKey::Identity(id) => snapshot
                            .view
                            .labels_of(id)
                            .map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect())
                            .unwrap_or_default(),
                        PeerKey::Any => Vec::new(),
                    };
                    rules.push(v1::PolicyRule {
                        direction: wire::direction(direction).into(),
                        peer: match entry.key.peer {
                            PeerKey::Any => "any".into(),
                            PeerKey::Identity(id) => id.to_string(),
                        },
                        peer_labels,
                        protocol: wire::l4_protocol(entry.key.protocol),
                        ports: match entry.key.ports {
                            Ports::Any => "any".into(),
                            Ports::Range(lo, hi) if lo == hi => lo.to_string(),
                            Ports::Range(lo, hi) => format!("{lo}-{hi}"),
                        },
                        verdict: wire::verdict(entry.verdict).into(),
                        source: entry.provenance.to_string(),
                    });
                }
            }
            endpoints.push(v1::EndpointPolicy {
                endpoint_id: local.endpoint,
                pod: Some(pod_ref(pod)),
                identity: local.identity,
                ingress_enforced: policy.ingress.enforced,
                egress_enforced: policy.egress.enforced,
                rules,
            });
        }
        let rejected = snapshot
            .rejected
            .iter()
            .map(|(policy, reasons)| v1::RejectedPolicy {
                policy: policy.clone(),
                reasons: reasons.clone(),
            })
            .collect();
        let stale = snapshot
            .stale
            .iter()
            .map(|(object, errors)| v1::StaleObject {
                object: object.clone(),
                errors: errors.clone(),
            })
            .collect();
        Ok(Response::new(v1::GetPolicyResponse {
            endpoints,
            rejected,
            map_entries: snapshot.map_entries as u64,
            stale,
        }))
    }

    async fn trace(
        &self,
        request: Request<v1::TraceRequest>,
    ) -> Result<Response<v1::TraceResponse>, Status> {
        let request = request.into_inner();
        let key = |p: Option<v1::PolicyPodRef>| -> Result<NamespacedName, Status> {
            let p = p.ok_or_else(|| Status::invalid_argument("src and dst are required"))?;
            Ok(NamespacedName::new(p.namespace, p.name))
        };
        let (src, dst) = (key(request.src)?, key(request.dst)?);
        let protocol = wire::trace_protocol(request.protocol).ok_or_else(|| {
            Status::invalid_argument(format!(
                "protocol {} is not TCP, UDP or SCTP",
                request.protocol
            ))
        })?;
        let port = u16::try_from(request.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument("port must be 1-65535"))?;
        let snapshot = self.snapshot();
        let flow = snapshot
            .trace(&src, &dst, protocol, port)
            .map_err(Status::not_found)?;
        Ok(Response::new(v1::TraceResponse {
            allowed: flow.verdict() == Verdict::Allow,
            explanation: flow.to_string(),
        }))
    }

    async fn diff(
        &self,
        request: Request<v1::DiffRequest>,
    ) -> Result<Response<v1::DiffResponse>, Status> {
        diff::answer(request.into_inner(), self.flows.as_deref(), self.snapshot()).await
    }
}
