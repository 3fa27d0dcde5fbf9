//! The agent's own events (Hubble's `AgentEvent`: agent started, policy
//! updated or deleted, endpoints created, deleted or regenerated, ipcache
//! entries and services upserted or deleted): the last N in memory and a
//! live feed for `follow`, as [`crate::FlowRing`] keeps flows.
//!
//! Publishing never blocks: the agent's reconciler pushes under a short
//! lock and a follower that falls behind is told how many it lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::proto::flow::{agent_event, AgentEvent, AgentEventType};
use crate::proto::observer::{GetAgentEventsRequest, GetAgentEventsResponse};

/// Agent events kept by default (Hubble keeps them in its one event ring;
/// agent events are rare, a few hundred per policy or pod change at most).
pub const DEFAULT_AGENT_EVENT_CAPACITY: usize = 1023;

/// Bounded history of agent events, oldest evicted first.
pub struct AgentEventRing {
    inner: Mutex<VecDeque<Arc<GetAgentEventsResponse>>>,
    feed: broadcast::Sender<Arc<GetAgentEventsResponse>>,
    capacity: usize,
    node_name: String,
}

impl AgentEventRing {
    /// A ring keeping the last `capacity` events (at least one) of the node
    /// `node_name`.
    pub fn new(capacity: usize, node_name: impl Into<String>) -> Self {
        let capacity = capacity.max(1);
        let (feed, _) = broadcast::channel(capacity.clamp(64, 4096));
        Self {
            inner: Mutex::new(VecDeque::with_capacity(capacity)),
            feed,
            capacity,
            node_name: node_name.into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<GetAgentEventsResponse>>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store an event observed now and hand it to every follower.
    pub fn publish(&self, event: AgentEvent) {
        self.publish_at(event, SystemTime::now());
    }

    /// Store an event observed at `time` and hand it to every follower.
    pub fn publish_at(&self, event: AgentEvent, time: SystemTime) {
        let response = Arc::new(GetAgentEventsResponse {
            agent_event: Some(event),
            node_name: self.node_name.clone(),
            time: Some(time.into()),
        });
        let mut inner = self.lock();
        if inner.len() == self.capacity {
            inner.pop_front();
        }
        inner.push_back(response.clone());
        // Sent under the lock so a query's snapshot and its feed neither
        // overlap nor leave a gap. No receivers is not an error.
        let _ = self.feed.send(response);
    }

    /// Events stored now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored events answering `query`, oldest first, and a follower
    /// for newer ones when it asks to follow.
    pub fn query(
        &self,
        query: AgentEventQuery,
    ) -> (Vec<Arc<GetAgentEventsResponse>>, Option<AgentEventFollower>) {
        let only_new = query.number == 0 && query.follow && query.since.is_none();
        let (stored, follower) = {
            let inner = self.lock();
            let follower = query.follow.then(|| AgentEventFollower {
                feed: self.feed.subscribe(),
                query: query.clone(),
            });
            let stored: Vec<_> = if only_new {
                Vec::new()
            } else {
                inner.iter().cloned().collect()
            };
            (stored, follower)
        };
        let matching = stored.into_iter().filter(|e| query.admits(e));
        let n = if query.number == 0 {
            usize::MAX
        } else {
            usize::try_from(query.number).unwrap_or(usize::MAX)
        };
        let history = if query.first {
            matching.take(n).collect()
        } else {
            let mut last: Vec<_> = matching.rev().take(n).collect();
            last.reverse();
            last
        };
        (history, follower)
    }
}

/// What a GetAgentEvents request selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentEventQuery {
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<(i64, i32)>,
    pub until: Option<(i64, i32)>,
}

impl AgentEventQuery {
    pub fn from_request(req: &GetAgentEventsRequest) -> Self {
        Self {
            number: req.number,
            first: req.first,
            follow: req.follow,
            since: req.since.map(|t| (t.seconds, t.nanos)),
            until: req.until.map(|t| (t.seconds, t.nanos)),
        }
    }

    /// Inside the time window.
    pub fn admits(&self, event: &GetAgentEventsResponse) -> bool {
        let t = event_time(event);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    fn past_until(&self, event: &GetAgentEventsResponse) -> bool {
        self.until.is_some_and(|u| event_time(event) > u)
    }
}

fn event_time(event: &GetAgentEventsResponse) -> (i64, i32) {
    event.time.map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// Live agent events for one `follow` request.
pub struct AgentEventFollower {
    feed: broadcast::Receiver<Arc<GetAgentEventsResponse>>,
    query: AgentEventQuery,
}

/// The next thing an agent-event follower sees.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowedAgentEvent {
    Event(Arc<GetAgentEventsResponse>),
    /// The follower fell behind and this many events were skipped.
    Lost(u64),
    /// The ring is gone or an event passed `until`.
    Done,
}

impl AgentEventFollower {
    pub async fn next(&mut self) -> FollowedAgentEvent {
        loop {
            match self.feed.recv().await {
                Ok(event) if self.query.past_until(&event) => return FollowedAgentEvent::Done,
                Ok(event) if self.query.admits(&event) => return FollowedAgentEvent::Event(event),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return FollowedAgentEvent::Lost(n),
                Err(broadcast::error::RecvError::Closed) => return FollowedAgentEvent::Done,
            }
        }
    }
}

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
