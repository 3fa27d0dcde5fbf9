//! The datapath's debug messages (Hubble's `DebugEvent`, GetDebugEvents):
//! the last N in memory and a live feed for `follow`
//! ([`crate::event_ring`]). Weir's kernel programs write text (aya-log),
//! so every event is `DBG_GENERIC` with the text in `message` and the
//! endpoint it is about as `source`.

use std::time::SystemTime;

use crate::event_ring::{
    window_request, EventFollower, EventQuery, EventRing, FollowedEvent, RingResponse,
};
use crate::proto::flow::{DebugEvent, DebugEventType, Endpoint};
use crate::proto::observer::{GetDebugEventsRequest, GetDebugEventsResponse};
use crate::proto::Timestamp;

/// Debug messages kept by default: a few seconds of one busy endpoint's.
pub const DEFAULT_DEBUG_EVENT_CAPACITY: usize = 4095;

/// Bounded history of debug events, oldest evicted first.
pub type DebugEventRing = EventRing<GetDebugEventsResponse>;
/// Live debug events for one `follow` request.
pub type DebugEventFollower = EventFollower<GetDebugEventsResponse>;
/// The next thing a debug-event follower sees.
pub type FollowedDebugEvent = FollowedEvent<GetDebugEventsResponse>;
/// What a GetDebugEvents request selects.
pub type DebugEventQuery = EventQuery;

impl RingResponse for GetDebugEventsResponse {
    type Event = DebugEvent;

    fn wrap(event: DebugEvent, node_name: &str, time: SystemTime) -> Self {
        GetDebugEventsResponse {
            debug_event: Some(event),
            node_name: node_name.to_string(),
            time: Some(time.into()),
        }
    }

    fn time(&self) -> Option<Timestamp> {
        self.time
    }
}

window_request!(GetDebugEventsRequest);

/// A message of the kernel programs about endpoint `endpoint_id` (0: the
/// node's devices, no source), with the endpoint's identity when known.
pub fn generic(endpoint_id: u16, identity: Option<u32>, message: String) -> DebugEvent {
    DebugEvent {
        r#type: DebugEventType::DbgGeneric as i32,
        source: (endpoint_id != 0).then(|| Endpoint {
            id: u32::from(endpoint_id),
            identity: identity.unwrap_or_default(),
            ..Endpoint::default()
        }),
        message,
        ..DebugEvent::default()
    }
}
