//! The services API behind `weir service list` (what the agent programmed,
//! from the service sync's status) and `weir bpf lb list` (what the LB maps
//! hold, read from the kernel).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tonic::{Request, Response, Status};
use weir_abi::ip_proto;
use weir_abi::lb::{
    ipv6_bytes, Lb4Backend, Lb4Key, Lb4Service, Lb6Backend, Lb6Key, LbNatEntry, LbNatKey,
};
use weir_agent_api::services as api;
use weir_agent_api::services::services_server::Services;
use weir_lb::{Algorithm, BackendState, FrontendKey, FrontendKind, LbAddress, Scope};

use crate::datapath::maps::lb::{self as lb, LbFamily, ServiceMapEntry};
use crate::datapath::SharedDatapath;
use crate::reconcile::lb_sync::{FrontendStatus, SharedLbStatus};

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

/// A per-packet NAT mapping of either family (`address` reads its addresses).
fn nat_entry<A: Copy>(
    key: &LbNatKey<A>,
    entry: &LbNatEntry<A>,
    address: impl Fn(A) -> IpAddr,
) -> api::LbNatEntry {
    let endpoint =
        |a: A, port: [u8; 2]| SocketAddr::new(address(a), u16::from_be_bytes(port)).to_string();
    api::LbNatEntry {
        direction: if key.direction == LbNatKey::<A>::FORWARD {
            "forward".into()
        } else {
            "reply".into()
        },
        protocol: ip_proto::Named(key.protocol).to_string(),
        source: endpoint(key.saddr, key.sport),
        destination: endpoint(key.daddr, key.dport),
        new_source: endpoint(entry.saddr, entry.sport),
        new_destination: endpoint(entry.daddr, entry.dport),
        backend_id: entry.backend_id,
        snat: entry.flags & LbNatEntry::<A>::FLAG_SNAT != 0,
    }
}

fn kind_name(kind: FrontendKind) -> &'static str {
    match kind {
        FrontendKind::ClusterIp => "ClusterIP",
        FrontendKind::NodePort => "NodePort",
        FrontendKind::ExternalIp => "ExternalIP",
        FrontendKind::LoadBalancer => "LoadBalancer",
        FrontendKind::HostPort => "HostPort",
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::External => "external",
        Scope::Internal => "internal",
    }
}

fn state_name(state: BackendState) -> &'static str {
    match state {
        BackendState::Active => "active",
        BackendState::Terminating => "terminating",
    }
}

/// A service map entry as `weir bpf lb list` shows it; one the agent would
/// not have written shows why in its flags (with the key's raw fields,
/// `raw`).
fn lb_service_entry<F: LbFamily>(
    key: &F::Key,
    value: &Lb4Service,
    raw: impl Fn(&F::Key) -> api::LbServiceEntry,
) -> api::LbServiceEntry {
    let frontend = |key: &FrontendKey<F>| api::LbServiceEntry {
        frontend: key.address.with_port(key.port),
        protocol: key.protocol.name().into(),
        scope: scope_name(key.scope).into(),
        ..Default::default()
    };
    match F::decode_service(key, value) {
        Ok(ServiceMapEntry::Slot(slot)) => api::LbServiceEntry {
            slot: u32::from(slot.slot),
            backend_id: slot.backend_id,
            ..frontend(&slot.frontend)
        },
        Ok(ServiceMapEntry::Service(service)) => {
            let mut flags = vec![kind_name(service.kind).to_string()];
            if service.affinity_timeout.is_some() {
                flags.push("affinity".into());
            }
            if service.maglev_table.is_some() {
                flags.push("maglev".into());
            }
            api::LbServiceEntry {
                count: u32::from(service.count),
                rev_nat_id: u32::from(service.rev_nat_id),
                flags,
                affinity_timeout_seconds: service.affinity_timeout.unwrap_or(0),
                maglev_table: service.maglev_table.unwrap_or(0),
                ..frontend(&service.frontend)
            }
        }
        Err(error) => api::LbServiceEntry {
            flags: vec![format!("invalid: {error}")],
            ..raw(key)
        },
    }
}

fn raw_service_key4(key: &Lb4Key) -> api::LbServiceEntry {
    api::LbServiceEntry {
        frontend: endpoint(key.address, key.port),
        protocol: ip_proto::Named(key.protocol).to_string(),
        scope: key.scope.to_string(),
        slot: u32::from(key.backend_slot),
        ..Default::default()
    }
}

fn raw_service_key6(key: &Lb6Key) -> api::LbServiceEntry {
    api::LbServiceEntry {
        frontend: Ipv6Addr::from(key.address).with_port(u16::from_be_bytes(key.port)),
        protocol: ip_proto::Named(key.protocol).to_string(),
        scope: key.scope.to_string(),
        slot: u32::from(key.backend_slot),
        ..Default::default()
    }
}

/// A backend map entry as `weir bpf lb list` shows it; `raw`: the address
/// and protocol of one that does not decode.
fn lb_backend_entry<F: LbFamily>(
    id: u32,
    value: &F::Backend,
    raw: impl Fn(&F::Backend) -> (String, String),
) -> api::LbBackendEntry {
    match F::decode_backend(value) {
        Ok(backend) => api::LbBackendEntry {
            id,
            address: backend.address.with_port(backend.port),
            protocol: backend.protocol.name().into(),
            state: state_name(backend.state).into(),
            local: backend.local,
        },
        Err(error) => {
            let (address, protocol) = raw(value);
            api::LbBackendEntry {
                id,
                address,
                protocol,
                state: format!("invalid: {error}"),
                local: false,
            }
        }
    }
}

fn raw_backend4(value: &Lb4Backend) -> (String, String) {
    (
        endpoint(value.address, value.port),
        ip_proto::Named(value.protocol).to_string(),
    )
}

fn raw_backend6(value: &Lb6Backend) -> (String, String) {
    (
        Ipv6Addr::from(value.address).with_port(u16::from_be_bytes(value.port)),
        ip_proto::Named(value.protocol).to_string(),
    )
}

/// The Maglev table of a service entry, if it has one.
fn maglev_table_of<F: LbFamily>(key: &F::Key, value: &Lb4Service) -> Option<u32> {
    match F::decode_service(key, value) {
        Ok(ServiceMapEntry::Service(service)) => service.maglev_table,
        _ => None,
    }
}

/// A frontend as written, for `weir service list`.
fn service_frontend<A: LbAddress>(f: &FrontendStatus<A>) -> api::ServiceFrontend {
    let frontend = &f.frontend;
    api::ServiceFrontend {
        service: frontend.service.to_string(),
        port_name: frontend.port_name.clone().unwrap_or_default(),
        kind: kind_name(frontend.kind).into(),
        address: frontend.address.with_port(frontend.port),
        protocol: frontend.protocol.name().into(),
        scope: scope_name(frontend.scope).into(),
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
                address: b.address.with_port(b.port),
                state: state_name(b.state).into(),
                node: b.node.clone().unwrap_or_default(),
                pod: b.pod.as_ref().map(ToString::to_string).unwrap_or_default(),
            })
            .collect(),
        note: f.note.clone().unwrap_or_default(),
    }
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
        // IPv4 first, then IPv6 (bracketed addresses).
        let frontends = status
            .frontends
            .values()
            .map(service_frontend)
            .chain(status.frontends_v6.values().map(service_frontend))
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
        // IPv4 first, then IPv6 (weir_lb6_*: the same entries, bracketed
        // addresses; Maglev tables are shared).
        let mut services = lb::services(ebpf).map_err(internal)?;
        services.sort_by_key(|(k, _)| *k);
        let mut services6 = lb::services6(ebpf).map_err(internal)?;
        services6.sort_by_key(|(k, _)| *k);
        let mut tables: Vec<u32> = services
            .iter()
            .filter_map(|(key, value)| maglev_table_of::<Ipv4Addr>(key, value))
            .chain(
                services6
                    .iter()
                    .filter_map(|(key, value)| maglev_table_of::<Ipv6Addr>(key, value)),
            )
            .collect();
        let services = services
            .iter()
            .map(|(key, value)| lb_service_entry::<Ipv4Addr>(key, value, raw_service_key4))
            .chain(
                services6
                    .iter()
                    .map(|(key, value)| lb_service_entry::<Ipv6Addr>(key, value, raw_service_key6)),
            )
            .collect();
        let mut backends = lb::backends(ebpf).map_err(internal)?;
        backends.sort_by_key(|(id, _)| *id);
        let mut backends6 = lb::backends6(ebpf).map_err(internal)?;
        backends6.sort_by_key(|(id, _)| *id);
        let backends = backends
            .iter()
            .map(|(id, b)| lb_backend_entry::<Ipv4Addr>(*id, b, raw_backend4))
            .chain(
                backends6
                    .iter()
                    .map(|(id, b)| lb_backend_entry::<Ipv6Addr>(*id, b, raw_backend6)),
            )
            .collect();
        let mut rev_nat = lb::revnats(ebpf).map_err(internal)?;
        rev_nat.sort_by_key(|(id, _)| *id);
        let rev_nat = rev_nat
            .iter()
            .map(|(id, r)| {
                let revnat = lb::decode_revnat(r);
                api::LbRevNatEntry {
                    id: u32::from(*id),
                    address: format!("{}:{}", revnat.address, revnat.port),
                }
            })
            .collect();
        let nat = if request.nat {
            let v4 = lb::nat_entries(ebpf).map_err(internal)?;
            let v6 = lb::nat6_entries_live(ebpf).map_err(internal)?;
            v4.iter()
                .map(|(k, e)| nat_entry(k, e, IpAddr::from))
                .chain(
                    v6.iter()
                        .map(|(k, e)| nat_entry(k, e, |a| IpAddr::from(ipv6_bytes(&a)))),
                )
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
                    lb::maglev_table(ebpf, table, self.maglev_table_size).map_err(internal)?;
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
