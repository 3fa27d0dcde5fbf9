//! The last N flows, plus a live feed of new ones for `follow` requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::filter::{FilterError, FlowFilters};
use crate::proto::flow::Flow;
use crate::proto::observer::GetFlowsRequest;

/// Hubble's default `hubble-event-buffer-capacity`.
pub const DEFAULT_CAPACITY: usize = 4095;

/// Bounded history of flows, oldest evicted first.
pub struct FlowRing {
    inner: Mutex<Inner>,
    feed: broadcast::Sender<Arc<Flow>>,
    capacity: usize,
    started: Instant,
}

struct Inner {
    flows: VecDeque<Arc<Flow>>,
    seen: u64,
    /// Flows seen in each of the last [`RATE_WINDOW_S`] seconds (by second
    /// since start), for `flows_rate`.
    per_second: VecDeque<(u64, u64)>,
}

/// `ServerStatus.flows_rate` is the rate over the last minute, as Hubble's.
const RATE_WINDOW_S: u64 = 60;

/// Counters reported by `ServerStatus` and `GetNodes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingStatus {
    pub num_flows: u64,
    pub max_flows: u64,
    pub seen_flows: u64,
    pub uptime: Duration,
    /// Flows seen per second over the last minute (or since start, when
    /// shorter).
    pub flows_rate: f64,
}

impl Default for FlowRing {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl FlowRing {
    /// A ring keeping the last `capacity` flows (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Followers that fall this far behind are told how many they lost.
        let (feed, _) = broadcast::channel(capacity.clamp(64, 16_384));
        Self {
            inner: Mutex::new(Inner {
                flows: VecDeque::with_capacity(capacity),
                seen: 0,
                per_second: VecDeque::with_capacity(RATE_WINDOW_S as usize + 1),
            }),
            feed,
            capacity,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store a flow and hand it to every follower.
    pub fn push(&self, flow: Flow) {
        let flow = Arc::new(flow);
        let mut inner = self.lock();
        if inner.flows.len() == self.capacity {
            inner.flows.pop_front();
        }
        inner.flows.push_back(flow.clone());
        inner.seen += 1;
        let second = self.started.elapsed().as_secs();
        match inner.per_second.back_mut() {
            Some((s, count)) if *s == second => *count += 1,
            _ => inner.per_second.push_back((second, 1)),
        }
        while inner
            .per_second
            .front()
            .is_some_and(|(s, _)| s + RATE_WINDOW_S <= second)
        {
            inner.per_second.pop_front();
        }
        // Sent under the lock so a query's snapshot and its feed neither
        // overlap nor leave a gap. No receivers is not an error.
        let _ = self.feed.send(flow);
    }

    pub fn status(&self) -> RingStatus {
        let inner = self.lock();
        let uptime = self.started.elapsed();
        let now = uptime.as_secs();
        let recent: u64 = inner
            .per_second
            .iter()
            .filter(|(s, _)| s + RATE_WINDOW_S > now)
            .map(|(_, count)| count)
            .sum();
        let window = uptime.as_secs_f64().clamp(1.0, RATE_WINDOW_S as f64);
        RingStatus {
            num_flows: inner.flows.len() as u64,
            max_flows: self.capacity as u64,
            seen_flows: inner.seen,
            uptime,
            flows_rate: recent as f64 / window,
        }
    }

    /// The namespaces of the endpoints of stored flows from the last hour
    /// (`GetNamespaces`), as (cluster, namespace), sorted.
    pub fn namespaces(&self, now: std::time::SystemTime) -> Vec<(String, String)> {
        let hour_ago = now
            .checked_sub(Duration::from_secs(3600))
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let inner = self.lock();
        let mut seen = std::collections::BTreeSet::new();
        // Newest first: flows are stored as they arrive.
        for flow in inner.flows.iter().rev() {
            if flow.time.as_ref().is_some_and(|t| t.seconds < hour_ago) {
                break;
            }
            for endpoint in [&flow.source, &flow.destination].into_iter().flatten() {
                if !endpoint.namespace.is_empty() {
                    seen.insert((endpoint.cluster_name.clone(), endpoint.namespace.clone()));
                }
            }
        }
        seen.into_iter().collect()
    }

    /// The stored flows answering `query`, oldest first, and a follower
    /// for newer flows when the query asks to follow.
    pub fn query(&self, query: Query) -> (Vec<Arc<Flow>>, Option<Follower>) {
        let only_new = query.number == 0 && query.follow && query.since.is_none();
        // Under the lock only a copy of the pointers is taken (and the
        // follower subscribed, so history and feed neither overlap nor
        // leave a gap): the filters, which a client chose, run after it is
        // released and never stall the reader pushing flows.
        let (stored, follower) = {
            let inner = self.lock();
            let follower = query.follow.then(|| Follower {
                feed: self.feed.subscribe(),
                query: query.clone(),
            });
            let stored: Vec<Arc<Flow>> = if only_new {
                // `follow` without a count or start time means only new flows.
                Vec::new()
            } else {
                inner.flows.iter().cloned().collect()
            };
            (stored, follower)
        };
        let matching = stored.into_iter().filter(|f| query.admits(f));
        let history = window(matching, query.number, query.first);
        (history, follower)
    }
}

/// The first or last `number` of `matching` (all when 0), oldest first:
/// the history a flow or event query answers with.
pub(crate) fn window<T>(
    matching: impl DoubleEndedIterator<Item = T>,
    number: u64,
    first: bool,
) -> Vec<T> {
    let n = if number == 0 {
        usize::MAX
    } else {
        usize::try_from(number).unwrap_or(usize::MAX)
    };
    if first {
        matching.take(n).collect()
    } else {
        let mut last: Vec<_> = matching.rev().take(n).collect();
        last.reverse();
        last
    }
}

/// What a GetFlows request selects.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<(i64, i32)>,
    pub until: Option<(i64, i32)>,
    pub filters: FlowFilters,
}

impl Query {
    pub fn from_request(req: &GetFlowsRequest) -> Result<Self, FilterError> {
        Ok(Self {
            number: req.number,
            first: req.first,
            follow: req.follow,
            since: req.since.map(|t| (t.seconds, t.nanos)),
            until: req.until.map(|t| (t.seconds, t.nanos)),
            filters: FlowFilters::new(&req.whitelist, &req.blacklist)?,
        })
    }

    /// Inside the time window and passing the filters.
    pub fn admits(&self, flow: &Flow) -> bool {
        let t = flow_time(flow);
        self.since.is_none_or(|s| t >= s)
            && self.until.is_none_or(|u| t <= u)
            && self.filters.matches(flow)
    }

    fn past_until(&self, flow: &Flow) -> bool {
        self.until.is_some_and(|u| flow_time(flow) > u)
    }
}

fn flow_time(flow: &Flow) -> (i64, i32) {
    flow.time.map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// Live flows for one `follow` request.
pub struct Follower {
    feed: broadcast::Receiver<Arc<Flow>>,
    query: Query,
}

/// The next thing a follower sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    Flow(Arc<Flow>),
    /// The follower fell behind and this many flows were skipped.
    Lost(u64),
    /// The ring is gone or a flow passed `until`.
    Done,
}

impl Follower {
    pub async fn next(&mut self) -> Followed {
        loop {
            match self.feed.recv().await {
                Ok(flow) if self.query.past_until(&flow) => return Followed::Done,
                Ok(flow) if self.query.admits(&flow) => return Followed::Flow(flow),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Followed::Lost(n),
                Err(broadcast::error::RecvError::Closed) => return Followed::Done,
            }
        }
    }
}

#[cfg(test)]
mod tests;
