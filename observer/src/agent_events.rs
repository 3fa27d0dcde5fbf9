//! The agent's own events (Hubble's `AgentEvent`: agent started, policy
//! updated or deleted, endpoints created, deleted or regenerated, ipcache
//! entries and services upserted or deleted): the last N in memory and a
//! live feed for `follow` ([`crate::event_ring`]), and the builders of
//! Hubble's notifications.

use std::time::SystemTime;

use crate::event_ring::{
    window_request, EventFollower, EventQuery, EventRing, FollowedEvent, RingResponse,
};
use crate::proto::flow::{agent_event, AgentEvent, AgentEventType};
use crate::proto::observer::{GetAgentEventsRequest, GetAgentEventsResponse};
use crate::proto::Timestamp;

/// Agent events kept by default (Hubble keeps them in its one event ring;
/// agent events are rare, a few hundred per policy or pod change at most).
pub const DEFAULT_AGENT_EVENT_CAPACITY: usize = 1023;

/// Bounded history of agent events, oldest evicted first.
pub type AgentEventRing = EventRing<GetAgentEventsResponse>;
/// What a GetAgentEvents request selects.
pub type AgentEventQuery = EventQuery;
/// Live agent events for one `follow` request.
pub type AgentEventFollower = EventFollower<GetAgentEventsResponse>;
/// The next thing an agent-event follower sees.
pub type FollowedAgentEvent = FollowedEvent<GetAgentEventsResponse>;

impl RingResponse for GetAgentEventsResponse {
    type Event = AgentEvent;

    fn wrap(event: AgentEvent, node_name: &str, time: SystemTime) -> Self {
        GetAgentEventsResponse {
            agent_event: Some(event),
            node_name: node_name.to_string(),
            time: Some(time.into()),
        }
    }

    fn time(&self) -> Option<Timestamp> {
        self.time
    }
}

window_request!(GetAgentEventsRequest);

/// Builders of Hubble's notifications, as Cilium fills them.
pub mod build {
    use super::*;
    use crate::proto::flow::{
        EndpointRegenNotification, EndpointUpdateNotification, IpCacheNotification,
        PolicyUpdateNotification, ServiceDeleteNotification, ServiceUpsertNotification,
        ServiceUpsertNotificationAddr, TimeNotification,
    };

    fn event(kind: AgentEventType, notification: agent_event::Notification) -> AgentEvent {
        AgentEvent {
            r#type: kind as i32,
            notification: Some(notification),
        }
    }

    /// `AGENT_STARTED`, with the time the agent started.
    pub fn agent_started(time: SystemTime) -> AgentEvent {
        event(
            AgentEventType::AgentStarted,
            agent_event::Notification::AgentStart(TimeNotification {
                time: Some(time.into()),
            }),
        )
    }

    /// `POLICY_UPDATED` (or `POLICY_DELETED` when `deleted`): the policy's
    /// labels, the policy revision after the change and its rule count.
    pub fn policy(deleted: bool, labels: Vec<String>, revision: u64, rules: i64) -> AgentEvent {
        let kind = if deleted {
            AgentEventType::PolicyDeleted
        } else {
            AgentEventType::PolicyUpdated
        };
        event(
            kind,
            agent_event::Notification::PolicyUpdate(PolicyUpdateNotification {
                labels,
                revision,
                rule_count: rules,
            }),
        )
    }

    /// `ENDPOINT_REGENERATE_SUCCESS`, or `..._FAILURE` with an error.
    pub fn endpoint_regenerated(id: u64, labels: Vec<String>, error: Option<String>) -> AgentEvent {
        let kind = if error.is_some() {
            AgentEventType::EndpointRegenerateFailure
        } else {
            AgentEventType::EndpointRegenerateSuccess
        };
        event(
            kind,
            agent_event::Notification::EndpointRegenerate(EndpointRegenNotification {
                id,
                labels,
                error: error.unwrap_or_default(),
            }),
        )
    }

    /// `ENDPOINT_CREATED` (or `ENDPOINT_DELETED` when `deleted`).
    pub fn endpoint(
        deleted: bool,
        id: u64,
        labels: Vec<String>,
        namespace: &str,
        pod: &str,
    ) -> AgentEvent {
        let kind = if deleted {
            AgentEventType::EndpointDeleted
        } else {
            AgentEventType::EndpointCreated
        };
        event(
            kind,
            agent_event::Notification::EndpointUpdate(EndpointUpdateNotification {
                id,
                labels,
                error: String::new(),
                pod_name: pod.to_string(),
                namespace: namespace.to_string(),
            }),
        )
    }

    /// An ipcache entry and what it replaced.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct IpcacheChange {
        pub cidr: String,
        pub identity: u32,
        pub old_identity: Option<u32>,
        pub host_ip: String,
        pub old_host_ip: String,
        pub namespace: String,
        pub pod_name: String,
    }

    /// `IPCACHE_UPSERTED` (or `IPCACHE_DELETED` when `deleted`).
    pub fn ipcache(deleted: bool, change: IpcacheChange) -> AgentEvent {
        let kind = if deleted {
            AgentEventType::IpcacheDeleted
        } else {
            AgentEventType::IpcacheUpserted
        };
        event(
            kind,
            agent_event::Notification::IpcacheUpdate(IpCacheNotification {
                cidr: change.cidr,
                identity: change.identity,
                old_identity: change.old_identity,
                host_ip: change.host_ip,
                old_host_ip: change.old_host_ip,
                encrypt_key: 0,
                namespace: change.namespace,
                pod_name: change.pod_name,
            }),
        )
    }

    /// A service frontend as programmed.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct ServiceUpsert {
        pub id: u32,
        pub frontend: (String, u16),
        pub backends: Vec<(String, u16)>,
        /// Cilium's spelling: `ClusterIP`, `NodePort`, `ExternalIPs`,
        /// `LoadBalancer`.
        pub kind: String,
        pub name: String,
        pub namespace: String,
        pub ext_traffic_policy: String,
        pub int_traffic_policy: String,
    }

    fn addr((ip, port): (String, u16)) -> ServiceUpsertNotificationAddr {
        ServiceUpsertNotificationAddr {
            ip,
            port: u32::from(port),
        }
    }

    /// `SERVICE_UPSERTED`.
    pub fn service_upserted(service: ServiceUpsert) -> AgentEvent {
        event(
            AgentEventType::ServiceUpserted,
            agent_event::Notification::ServiceUpsert(ServiceUpsertNotification {
                id: service.id,
                frontend_address: Some(addr(service.frontend)),
                backend_addresses: service.backends.into_iter().map(addr).collect(),
                r#type: service.kind,
                name: service.name,
                namespace: service.namespace,
                ext_traffic_policy: service.ext_traffic_policy,
                int_traffic_policy: service.int_traffic_policy,
            }),
        )
    }

    /// `SERVICE_DELETED`: the service id (Cilium's frontend id).
    pub fn service_deleted(id: u32) -> AgentEvent {
        event(
            AgentEventType::ServiceDeleted,
            agent_event::Notification::ServiceDelete(ServiceDeleteNotification { id }),
        )
    }
}

#[cfg(test)]
mod tests;
