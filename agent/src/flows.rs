//! From the datapath's event ring buffer to Hubble flows: decode each
//! `FlowEvent`, enrich it with what the agent knows (pods, namespaces,
//! identities), keep it in the flow ring, and serve the ring with the
//! Observer API.

pub mod agent_events;
pub mod export;
pub mod feed;
pub mod metrics;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::warn;
use weir_abi::events::*;
use weir_abi::FlowEvent;
use weir_observer::parser::{EndpointInfo, Enricher, WallClock};
use weir_observer::{DatapathEvent, EventKind, FlowRing, Parser, PolicyDirection};

use crate::cluster::kvstore::SharedView;
use crate::datapath::{maps, SharedDatapath};
use crate::endpoint::manager::EndpointManager;

/// The observer's view of one datapath record.
pub fn decode(event: &FlowEvent) -> DatapathEvent {
    let ingress = event.flags & FlowEvent::FLAG_INGRESS != 0;
    let reply = event.flags & FlowEvent::FLAG_REPLY != 0;
    let kind = match event.kind {
        EVENT_DROP => EventKind::Drop {
            reason: event.subtype,
        },
        EVENT_POLICY_VERDICT => EventKind::PolicyVerdict {
            allowed: event.verdict_reason == 0,
            audited: event.flags & FlowEvent::FLAG_AUDIT != 0,
            direction: if ingress {
                PolicyDirection::Ingress
            } else {
                PolicyDirection::Egress
            },
            match_type: event.match_type,
            reason: event.verdict_reason,
        },
        _ => EventKind::Trace {
            observation_point: event.subtype,
            reason: match event.ct_state {
                CT_NEW => weir_observer::event::trace_reason::POLICY,
                CT_REPLY => weir_observer::event::trace_reason::CT_REPLY,
                CT_RELATED => weir_observer::event::trace_reason::CT_RELATED,
                _ => weir_observer::event::trace_reason::CT_ESTABLISHED,
            },
        },
    };
    let (src_port, dst_port) = (
        u16::from_be_bytes(event.sport),
        u16::from_be_bytes(event.dport),
    );
    DatapathEvent {
        kind,
        timestamp_ns: event.timestamp_ns,
        ifindex: event.ifindex,
        endpoint_id: event.endpoint_id,
        src_ip: maps::ip_address(event.family, &event.saddr),
        dst_ip: maps::ip_address(event.family, &event.daddr),
        protocol: event.protocol,
        src_port,
        dst_port,
        tcp_flags: u16::from(event.tcp_flags),
        icmp_type: event.icmp_type,
        icmp_code: 0,
        src_identity: event.src_identity,
        dst_identity: event.dst_identity,
        is_reply: if event.family == 0 { None } else { Some(reply) },
        packet_len: event.len,
    }
}

/// Enrichment from the agent's own state: local endpoints (with their ids),
/// every pod address in the cluster (endpoint records), identity labels,
/// service frontends (the service sync's status).
pub struct AgentEnricher {
    pub agent: Arc<EndpointManager<SharedDatapath>>,
    pub view: Arc<Mutex<SharedView>>,
    pub services: crate::reconcile::lb_sync::SharedLbStatus,
}

impl Enricher for AgentEnricher {
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<EndpointInfo> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let record = view.endpoints.get(&ip)?;
        let labels = view
            .identities
            .get(&record.identity)
            .map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        let id = match ip {
            IpAddr::V4(v4) => self
                .agent
                .endpoints()
                .iter()
                .find(|e| e.ipv4 == v4)
                .map_or(0, |e| u32::from(e.id)),
            IpAddr::V6(_) => 0,
        };
        Some(EndpointInfo {
            id,
            identity: record.identity,
            namespace: record.namespace.clone(),
            pod_name: record.pod.clone(),
            labels,
            workloads: Vec::new(),
        })
    }

    fn service_by_frontend(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: u8,
    ) -> Option<weir_observer::ServiceInfo> {
        let IpAddr::V4(address) = ip else {
            return None;
        };
        let status = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let service = status.service_at(address, port, protocol)?;
        Some(weir_observer::ServiceInfo {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
        })
    }

    fn identity_labels(&self, identity: u32) -> Vec<String> {
        if let Some(reserved) = weir_abi::identity::reserved_by_id(identity) {
            return reserved.labels().map(String::from).collect();
        }
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.identities
            .get(&identity)
            .map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default()
    }
}

/// Removes the flow metrics' series naming pods that have left the
/// cluster, every [`metrics::SWEEP_INTERVAL`] ([`sweep_metrics`]).
pub async fn metrics_sweeper(metrics: metrics::FlowMetrics, view: Arc<Mutex<SharedView>>) {
    let mut interval = tokio::time::interval(metrics::SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        let removed = sweep_metrics(&metrics, &view, std::time::Instant::now());
        if removed > 0 {
            tracing::debug!(removed, "flow metric series of deleted pods removed");
        }
    }
}

/// One sweep at `now`: a pod is live while the shared view has an endpoint
/// record for it; series of a pod gone for [`metrics::POD_GRACE`] are
/// removed. Nothing happens before the view has synced (an empty view
/// would say every pod is gone). Returns the series removed.
pub fn sweep_metrics(
    metrics: &metrics::FlowMetrics,
    view: &Mutex<SharedView>,
    now: std::time::Instant,
) -> usize {
    let live: std::collections::HashSet<metrics::context::PodKey> = {
        let view = view.lock().unwrap_or_else(|e| e.into_inner());
        if !view.synced() {
            return 0;
        }
        view.endpoints
            .values()
            .map(|record| metrics::context::PodKey {
                namespace: record.namespace.clone(),
                name: record.pod.clone(),
            })
            .collect()
    };
    metrics.sweep(&|pod| live.contains(pod), now, metrics::POD_GRACE)
}

/// A wall clock for converting `bpf_ktime_get_ns` stamps.
pub fn wall_clock() -> WallClock {
    WallClock::from_sample(maps::monotonic_now_ns(), SystemTime::now())
}

/// Reads the ring buffer as events arrive, hands each decoded event to the
/// monitor's listeners and pushes its flow into `ring`.
pub async fn run(
    ring_buffer: RingBuf<MapData>,
    parser: Parser,
    ring: Arc<FlowRing>,
    metrics: metrics::FlowMetrics,
    monitor: feed::MonitorFeed,
    exporter: Option<export::Exporter>,
    readiness: weir_observer::Readiness,
) {
    // The Observer API's health service says SERVING only while this
    // loop reads events, and NOT_SERVING once it stops for good.
    struct Down(weir_observer::Readiness);
    impl Drop for Down {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    let _down = Down(readiness.clone());
    // SAFETY: the RingBuf owns its map's file descriptor for as long as the
    // AsyncFd owns the RingBuf, and always reports that same descriptor.
    let mut fd = match unsafe { AsyncFd::register(ring_buffer) } {
        Ok(fd) => fd,
        Err(error) => {
            warn!(error = %error, "cannot poll the event ring buffer; no flows");
            return;
        }
    };
    readiness.set(true);
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(error) => {
                warn!(%error, "event ring buffer");
                return;
            }
        };
        let events = guard.get_inner_mut();
        while let Some(item) = events.next() {
            let Some(event) = maps::read_event(&item) else {
                continue;
            };
            let event = decode(&event);
            monitor.publish(&event);
            let flow = parser.parse(&event);
            metrics.observe(&flow);
            if let Some(exporter) = &exporter {
                exporter.offer(&flow);
            }
            ring.push(flow);
        }
        guard.clear_ready();
    }
}
