//! A bounded history of one kind of event with a live feed for `follow`,
//! shared by the agent's events (GetAgentEvents, [`crate::AgentEventRing`])
//! and the datapath's debug messages (GetDebugEvents,
//! [`crate::DebugEventRing`]), as [`crate::FlowRing`] keeps flows.
//!
//! Publishing never blocks: the publisher pushes under a short lock and a
//! follower that falls behind is told how many it lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::proto::Timestamp;
use crate::ring::window;

/// A response of a ring's RPC: the event, the node and the time.
pub trait RingResponse: Send + Sync + 'static {
    /// What publishers hand to the ring.
    type Event;
    fn wrap(event: Self::Event, node_name: &str, time: SystemTime) -> Self;
    fn time(&self) -> Option<Timestamp>;
}

/// The window fields every event request has (Hubble's GetAgentEvents and
/// GetDebugEvents requests).
pub trait WindowRequest {
    fn number(&self) -> u64;
    fn first(&self) -> bool;
    fn follow(&self) -> bool;
    fn since(&self) -> Option<Timestamp>;
    fn until(&self) -> Option<Timestamp>;
}

/// Bounded history of events, oldest evicted first.
pub struct EventRing<R> {
    inner: Mutex<VecDeque<Arc<R>>>,
    feed: broadcast::Sender<Arc<R>>,
    capacity: usize,
    node_name: String,
}

impl<R: RingResponse> EventRing<R> {
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

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<R>>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store an event observed now and hand it to every follower.
    pub fn publish(&self, event: R::Event) {
        self.publish_at(event, SystemTime::now());
    }

    /// Store an event observed at `time` and hand it to every follower.
    pub fn publish_at(&self, event: R::Event, time: SystemTime) {
        let response = Arc::new(R::wrap(event, &self.node_name, time));
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
    pub fn query(&self, query: EventQuery) -> (Vec<Arc<R>>, Option<EventFollower<R>>) {
        let only_new = query.number == 0 && query.follow && query.since.is_none();
        let (stored, follower) = {
            let inner = self.lock();
            let follower = query.follow.then(|| EventFollower {
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
        let matching = stored.into_iter().filter(|e| query.admits(e.as_ref()));
        let history = window(matching, query.number, query.first);
        (history, follower)
    }
}

/// What an event request selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<(i64, i32)>,
    pub until: Option<(i64, i32)>,
}

impl EventQuery {
    pub fn from_request(req: &impl WindowRequest) -> Self {
        Self {
            number: req.number(),
            first: req.first(),
            follow: req.follow(),
            since: req.since().map(|t| (t.seconds, t.nanos)),
            until: req.until().map(|t| (t.seconds, t.nanos)),
        }
    }

    /// Inside the time window.
    pub fn admits(&self, event: &impl RingResponse) -> bool {
        let t = event_time(event);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    fn past_until(&self, event: &impl RingResponse) -> bool {
        self.until.is_some_and(|u| event_time(event) > u)
    }
}

fn event_time(event: &impl RingResponse) -> (i64, i32) {
    event.time().map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// Live events for one `follow` request.
pub struct EventFollower<R> {
    feed: broadcast::Receiver<Arc<R>>,
    query: EventQuery,
}

/// The next thing a follower sees.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowedEvent<R> {
    Event(Arc<R>),
    /// The follower fell behind and this many events were skipped.
    Lost(u64),
    /// The ring is gone or an event passed `until`.
    Done,
}

impl<R: RingResponse> EventFollower<R> {
    pub async fn next(&mut self) -> FollowedEvent<R> {
        loop {
            match self.feed.recv().await {
                Ok(event) if self.query.past_until(event.as_ref()) => return FollowedEvent::Done,
                Ok(event) if self.query.admits(event.as_ref()) => {
                    return FollowedEvent::Event(event)
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return FollowedEvent::Lost(n),
                Err(broadcast::error::RecvError::Closed) => return FollowedEvent::Done,
            }
        }
    }
}

/// Implements [`WindowRequest`] for a request type with the window fields.
macro_rules! window_request {
    ($request:ty) => {
        impl $crate::event_ring::WindowRequest for $request {
            fn number(&self) -> u64 {
                self.number
            }
            fn first(&self) -> bool {
                self.first
            }
            fn follow(&self) -> bool {
                self.follow
            }
            fn since(&self) -> Option<$crate::proto::Timestamp> {
                self.since
            }
            fn until(&self) -> Option<$crate::proto::Timestamp> {
                self.until
            }
        }
    };
}
pub(crate) use window_request;
