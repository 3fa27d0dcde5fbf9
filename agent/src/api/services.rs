//! The services API behind `weir service list` (what the agent programmed,
//! from the service sync's status) and `weir bpf lb list` (what the LB maps
//! hold, read from the kernel).

use std::net::Ipv4Addr;

use tonic::{Request, Response, Status};
use weir_abi::ip_proto;
use weir_abi::lb::*;
use weir_agent_api::services as api;
use weir_agent_api::services::services_server::Services;
use weir_lb::{Algorithm, BackendState, FrontendKind, Scope};

use crate::datapath::{maps::lb as lb_maps, SharedDatapath};
use crate::reconcile::lb_sync::SharedLbStatus;

pub struct ServicesService {
    pub datapath: SharedDatapath,
    pub status: SharedLbStatus,
    /// Slots per Maglev table (to read tables back).
    pub maglev_table_size: u32,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn endpoint(address: [u8; 4], port: [u8; 2]) -> String {
    format!("{}:{}", Ipv4Addr::from(address), u16::from_be_bytes(port))
}

fn scope_name(scope: u8) -> String {
    match scope {
        LB_SCOPE_EXTERNAL => "external".into(),
        LB_SCOPE_INTERNAL => "internal".into(),
        other => other.to_string(),
    }
}

fn service_flags(flags: u16) -> Vec<String> {
    [
        (Lb4Service::FLAG_CLUSTER_IP, "ClusterIP"),
        (Lb4Service::FLAG_NODE_PORT, "NodePort"),
        (Lb4Service::FLAG_EXTERNAL_IP, "ExternalIP"),
        (Lb4Service::FLAG_LOAD_BALANCER, "LoadBalancer"),
        (Lb4Service::FLAG_AFFINITY, "affinity"),
        (Lb4Service::FLAG_MAGLEV, "maglev"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name.to_string())
    .collect()
}

#[tonic::async_trait]
impl Services for ServicesService {
    async fn list_services(
        &self,
        _request: Request<api::ListServicesRequest>,
    ) -> Result<Response<api::ListServicesResponse>, Status> {
        let status = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let frontends = status
            .frontends
            .values()
            .map(|f| {
                let frontend = &f.frontend;
                api::ServiceFrontend {
                    service: frontend.service.to_string(),
                    port_name: frontend.port_name.clone().unwrap_or_default(),
                    kind: match frontend.kind {
                        FrontendKind::ClusterIp => "ClusterIP",
                        FrontendKind::NodePort => "NodePort",
                        FrontendKind::ExternalIp => "ExternalIP",
                        FrontendKind::LoadBalancer => "LoadBalancer",
                    }
                    .into(),
                    address: format!("{}:{}", frontend.address, frontend.port),
                    protocol: frontend.protocol.name().into(),
                    scope: match frontend.scope {
                        Scope::External => "external",
                        Scope::Internal => "internal",
                    }
                    .into(),
                    algorithm: match (frontend.algorithm, f.maglev_table) {
                        (Algorithm::Maglev, Some(_)) => "maglev",
                        _ => "random",
                    }
                    .into(),
                    affinity_timeout_seconds: frontend.affinity_timeout.unwrap_or(0),
                    rev_nat_id: u32::from(f.rev_nat_id),
                    backends: frontend
                        .backends
                        .iter()
                        .zip(&f.backend_ids)
                        .map(|(b, id)| api::ServiceBackend {
                            id: *id,
                            address: format!("{}:{}", b.address, b.port),
                            state: match b.state {
                                BackendState::Active => "active",
                                BackendState::Terminating => "terminating",
                            }
                            .into(),
                            node: b.node.clone().unwrap_or_default(),
                            pod: b.pod.as_ref().map(ToString::to_string).unwrap_or_default(),
                        })
                        .collect(),
                    note: f.note.clone().unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(api::ListServicesResponse {
            frontends,
            problems: status.problems,
            write_failures: status.write_failures,
            last_error: status.last_error.unwrap_or_default(),
        }))
    }

    async fn list_lb_maps(
        &self,
        request: Request<api::ListLbMapsRequest>,
    ) -> Result<Response<api::ListLbMapsResponse>, Status> {
        let request = request.into_inner();
        let mut datapath = self.datapath.lock();
        let ebpf = datapath.ebpf_mut();
        let mut services = lb_maps::services(ebpf).map_err(internal)?;
        services.sort_by_key(|(k, _)| *k);
        let mut tables = Vec::new();
        let services = services
            .into_iter()
            .map(|(key, value)| {
                if key.backend_slot == 0 && value.flags & Lb4Service::FLAG_MAGLEV != 0 {
                    tables.push(value.maglev_table);
                }
                api::LbServiceEntry {
                    frontend: endpoint(key.address, key.port),
                    protocol: ip_proto::Named(key.protocol).to_string(),
                    scope: scope_name(key.scope),
                    slot: u32::from(key.backend_slot),
                    backend_id: value.backend_id,
                    count: u32::from(value.count),
                    rev_nat_id: u32::from(value.rev_nat_id),
                    flags: service_flags(value.flags),
                    affinity_timeout_seconds: value.affinity_timeout_s,
                    maglev_table: value.maglev_table,
                }
            })
            .collect();
        let mut backends = lb_maps::backends(ebpf).map_err(internal)?;
        backends.sort_by_key(|(id, _)| *id);
        let backends = backends
            .into_iter()
            .map(|(id, b)| api::LbBackendEntry {
                id,
                address: endpoint(b.address, b.port),
                protocol: ip_proto::Named(b.protocol).to_string(),
                state: if b.state == Lb4Backend::STATE_TERMINATING {
                    "terminating".into()
                } else {
                    "active".into()
                },
                local: b.flags & Lb4Backend::FLAG_LOCAL != 0,
            })
            .collect();
        let mut rev_nat = lb_maps::revnats(ebpf).map_err(internal)?;
        rev_nat.sort_by_key(|(id, _)| *id);
        let rev_nat = rev_nat
            .into_iter()
            .map(|(id, r)| api::LbRevNatEntry {
                id: u32::from(id),
                address: endpoint(r.address, r.port),
            })
            .collect();
        let nat = if request.nat {
            lb_maps::nat_entries(ebpf)
                .map_err(internal)?
                .into_iter()
                .map(|(k, e)| api::LbNatEntry {
                    direction: if k.direction == Lb4NatKey::FORWARD {
                        "forward".into()
                    } else {
                        "reply".into()
                    },
                    protocol: ip_proto::Named(k.protocol).to_string(),
                    source: endpoint(k.saddr, k.sport),
                    destination: endpoint(k.daddr, k.dport),
                    new_source: endpoint(e.saddr, e.sport),
                    new_destination: endpoint(e.daddr, e.dport),
                    backend_id: e.backend_id,
                    snat: e.flags & Lb4NatEntry::FLAG_SNAT != 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut maglev = Vec::new();
        if request.maglev {
            tables.sort_unstable();
            tables.dedup();
            for table in tables {
                let slots =
                    lb_maps::maglev_table(ebpf, table, self.maglev_table_size).map_err(internal)?;
                maglev.push(api::LbMaglevTable { table, slots });
            }
        }
        Ok(Response::new(api::ListLbMapsResponse {
            services,
            backends,
            rev_nat,
            nat,
            maglev,
        }))
    }
}
