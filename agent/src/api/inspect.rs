//! The inspection API behind `weir status`, `weir endpoint get`,
//! `weir identity list|get`, `weir bpf ipcache list`, `weir bpf ct list`
//! and `weir bpf policy get`.

pub mod detail;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use weir_abi::conntrack::CT_SCOPE_EGRESS;
use weir_abi::ip_proto;
use weir_abi::{CtEntry, EndpointInfo, PolicyEntry};
use weir_agent_api::v1;
use weir_agent_api::v1::inspect_server::Inspect;
use weir_policy::L4Prefix;

use super::wire;
use crate::cluster::kvstore::SharedView;
use crate::datapath::maps::policy::{self, LpmKey};
use crate::datapath::{maps, SharedDatapath};
use crate::endpoint::manager::EndpointManager;
use crate::reconcile::snapshot::SharedSnapshot;
use crate::reconcile::status::SharedReconcileStatus;

pub struct InspectService {
    pub node_name: String,
    pub agent: Arc<EndpointManager<SharedDatapath>>,
    pub datapath: SharedDatapath,
    pub policy: SharedSnapshot,
    pub view: Arc<Mutex<SharedView>>,
    pub reconcile: SharedReconcileStatus,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn tcp_flags(flags: u8) -> String {
    let names = [
        (CtEntry::TCP_SYN, "SYN"),
        (CtEntry::TCP_ACK, "ACK"),
        (CtEntry::TCP_FIN, "FIN"),
        (CtEntry::TCP_RST, "RST"),
    ];
    names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join("|")
}

/// One policy map entry as `weir bpf policy get` shows it; an entry the
/// agent would not have written says why in `invalid`.
fn policy_map_entry(lpm: &LpmKey, entry: &PolicyEntry) -> v1::PolicyMapEntry {
    match policy::decode_key(lpm).and_then(|key| Ok((key, policy::decode_entry(entry)?))) {
        Ok((key, entry)) => {
            let (protocol, ports) = match key.l4 {
                L4Prefix::Any => (0, "any".to_string()),
                L4Prefix::Protocol { number, ports } => (i32::from(number), ports.to_string()),
            };
            v1::PolicyMapEntry {
                direction: wire::direction(key.direction).into(),
                identity: key.peer.identity(),
                protocol,
                ports,
                verdict: wire::verdict(entry.verdict).into(),
                prefix_len: lpm.prefix_len,
                invalid: String::new(),
            }
        }
        Err(error) => v1::PolicyMapEntry {
            identity: lpm.key.identity,
            ports: "?".into(),
            prefix_len: lpm.prefix_len,
            invalid: error.to_string(),
            ..Default::default()
        },
    }
}

/// The order `weir bpf policy get` has always listed entries in (it sorted
/// the words it printed): undecodable ones first, then egress before
/// ingress, by peer, protocol name with any last, and ports.
fn policy_map_order(e: &v1::PolicyMapEntry) -> impl Ord + '_ {
    let direction = match e.direction() {
        v1::TrafficDirection::Unspecified => 0,
        v1::TrafficDirection::Egress => 1,
        v1::TrafficDirection::Ingress => 2,
    };
    let protocol = (
        e.protocol == v1::L4Protocol::Any as i32,
        u8::try_from(e.protocol).ok().and_then(ip_proto::name),
        e.protocol,
    );
    (direction, e.identity, protocol, &e.ports)
}

#[tonic::async_trait]
impl Inspect for InspectService {
    async fn policy_map(
        &self,
        request: Request<v1::PolicyMapRequest>,
    ) -> Result<Response<v1::PolicyMapResponse>, Status> {
        let endpoint = u16::try_from(request.into_inner().endpoint_id)
            .map_err(|_| Status::invalid_argument("endpoint ids are 16-bit"))?;
        let mut datapath = self.datapath.lock();
        let mut entries: Vec<v1::PolicyMapEntry> = maps::policy_entries(datapath.ebpf_mut())
            .map_err(internal)?
            .into_iter()
            .filter(|(lpm, _)| lpm.key.endpoint_id == endpoint)
            .map(|(lpm, entry)| policy_map_entry(&lpm, &entry))
            .collect();
        entries.sort_by(|a, b| policy_map_order(a).cmp(&policy_map_order(b)));
        Ok(Response::new(v1::PolicyMapResponse { entries }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest2>,
    ) -> Result<Response<v1::AgentStatus>, Status> {
        let policy = self
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let endpoints = self.agent.endpoints().len() as u64;
        let (fill, events_lost) = {
            let mut datapath = self.datapath.lock();
            let fill = maps::fill::map_fill(&mut datapath, endpoints, policy.map_entries as u64)
                .map_err(internal)?;
            let lost = maps::events_lost(datapath.ebpf_mut()).map_err(internal)?;
            (fill, lost)
        };
        let maps = fill
            .into_iter()
            .map(|m| v1::MapFill {
                name: m.name.into(),
                entries: m.entries,
                capacity: m.capacity,
            })
            .collect();
        let synced = self.view.lock().unwrap_or_else(|e| e.into_inner()).synced();
        let reconcile = self
            .reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let kvstore_connection = reconcile.kvstore_line(std::time::SystemTime::now());
        let reconcile_steps = reconcile
            .steps
            .iter()
            .chain(&reconcile.node_routes)
            .map(|step| v1::ReconcileStep {
                name: step.name.clone(),
                state: step.state.as_str().into(),
                consecutive_failures: step.consecutive_failures,
                last_error: step.last_error.clone(),
            })
            .collect();
        Ok(Response::new(v1::AgentStatus {
            node_name: self.node_name.clone(),
            datapath_loaded: true,
            maps,
            endpoints: endpoints as u32,
            identities: policy.view.identities.len() as u32,
            policies_in_force: policy.policies.len() as u32,
            policies_rejected: policy.rejected.len() as u32,
            policy_map_entries: policy.map_entries as u64,
            events_lost,
            kvstore_synced: synced,
            reconcile_steps,
            kvstore_connection,
        }))
    }

    async fn list_identities(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListIdentitiesResponse>, Status> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let identities = view
            .identities
            .iter()
            .map(|(id, labels)| v1::IdentityEntry {
                id: *id,
                labels: labels
                    .iter()
                    .map(|(k, v)| detail::label_text(k, v))
                    .collect(),
            })
            .collect();
        Ok(Response::new(v1::ListIdentitiesResponse { identities }))
    }

    async fn list_ipcache(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListIpcacheResponse>, Status> {
        let mut datapath = self.datapath.lock();
        let entries = maps::ipcache_entries(datapath.ebpf_mut())
            .map_err(internal)?
            .into_iter()
            .map(|(prefix, value)| v1::IpcacheEntry {
                prefix: prefix.to_string(),
                identity: value.identity,
                node_ip: if value.node_ipv4 == [0; 4] {
                    String::new()
                } else {
                    IpAddr::from(value.node_ipv4).to_string()
                },
                address_identity: value.address_identity,
            })
            .collect();
        Ok(Response::new(v1::ListIpcacheResponse { entries }))
    }

    async fn list_conntrack(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListConntrackResponse>, Status> {
        let now = maps::monotonic_now_ns();
        let mut datapath = self.datapath.lock();
        let entries = maps::conntrack(datapath.ebpf_mut())
            .map_err(internal)?
            .into_iter()
            .map(|(key, entry)| v1::ConntrackEntry {
                scope: if key.scope == CT_SCOPE_EGRESS {
                    v1::TrafficDirection::Egress.into()
                } else {
                    v1::TrafficDirection::Ingress.into()
                },
                protocol: ip_proto::Named(key.protocol).to_string(),
                source: format!(
                    "{}:{}",
                    maps::ip_address(key.family, &key.saddr),
                    u16::from_be_bytes(key.sport)
                ),
                destination: format!(
                    "{}:{}",
                    maps::ip_address(key.family, &key.daddr),
                    u16::from_be_bytes(key.dport)
                ),
                expires_in_seconds: entry.expires_ns.saturating_sub(now) / 1_000_000_000,
                packets_forward: entry.packets_forward,
                packets_reply: entry.packets_reply,
                tcp_flags: tcp_flags(entry.tcp_flags),
            })
            .collect();
        Ok(Response::new(v1::ListConntrackResponse { entries }))
    }

    async fn get_endpoint(
        &self,
        request: Request<v1::EndpointDetailRequest>,
    ) -> Result<Response<v1::EndpointDetail>, Status> {
        let id = request.into_inner().id;
        let endpoint = self
            .agent
            .endpoints()
            .into_iter()
            .find(|e| u32::from(e.id) == id)
            .ok_or_else(|| Status::not_found(format!("no local endpoint {id}")))?;
        let (map_entries, audit) = {
            let mut datapath = self.datapath.lock();
            let entries = maps::policy_entries(datapath.ebpf_mut())
                .map_err(internal)?
                .iter()
                .filter(|(lpm, _)| lpm.key.endpoint_id == endpoint.id)
                .count() as u64;
            let flags = maps::endpoint_entries(datapath.ebpf_mut())
                .map_err(internal)?
                .get(&endpoint.host_ifindex)
                .map_or(0, |info| info.flags);
            (entries, flags & EndpointInfo::AUDIT != 0)
        };
        let snapshot = self
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Response::new(detail::endpoint_detail(
            &endpoint,
            &snapshot,
            &view,
            detail::InDatapath {
                policy_map_entries: map_entries,
                audit,
            },
        )))
    }

    async fn get_identity(
        &self,
        request: Request<v1::IdentityDetailRequest>,
    ) -> Result<Response<v1::IdentityDetail>, Status> {
        let id = request.into_inner().id;
        let snapshot = self
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        detail::identity_detail(id, &snapshot, &view)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("identity {id} is not known to this agent")))
    }
}

#[cfg(test)]
mod tests;
