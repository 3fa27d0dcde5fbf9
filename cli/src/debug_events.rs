//! `weir observe debug-events`: the kernel programs' debug messages as a
//! node's Observer API keeps them (Hubble's `observe debug-events`), one
//! line each, or Hubble's JSON with `-o json`.

use anyhow::Result;
use weir_observer::proto::observer::{GetDebugEventsRequest, GetDebugEventsResponse};

use crate::args::AgentEventsArgs;
use crate::time;

/// `TIME [NODE] MESSAGE`.
pub fn line(r: &GetDebugEventsResponse) -> String {
    let message = r
        .debug_event
        .as_ref()
        .map(|e| e.message.as_str())
        .unwrap_or_default();
    format!(
        "{} [{}] {message}",
        r.time.as_ref().map(time::clock).unwrap_or_default(),
        r.node_name
    )
}

pub fn render(r: &GetDebugEventsResponse, json: bool) -> Result<String> {
    Ok(if json {
        serde_json::to_string(r)?
    } else {
        line(r)
    })
}

/// The same window as `observe agent-events` (the last 20 unless
/// following, or the first N).
pub fn request(args: &AgentEventsArgs) -> GetDebugEventsRequest {
    let window = crate::agent_events::request(args);
    GetDebugEventsRequest {
        number: window.number,
        first: window.first,
        follow: window.follow,
        since: window.since,
        until: window.until,
    }
}

#[cfg(test)]
mod tests {
    use weir_observer::debug_events::generic;
    use weir_observer::proto::Timestamp;

    use super::*;

    #[test]
    fn a_line_is_time_node_and_message() {
        let response = GetDebugEventsResponse {
            debug_event: Some(generic(7, None, "ep 7 egress: ct new".into())),
            node_name: "n1".into(),
            time: Some(Timestamp {
                seconds: 3_661,
                nanos: 5_000_000,
            }),
        };
        assert_eq!(line(&response), "01:01:01.005 [n1] ep 7 egress: ct new");
        let json: serde_json::Value =
            serde_json::from_str(&render(&response, true).unwrap()).unwrap();
        assert_eq!(json["debug_event"]["type"], "DBG_GENERIC");
        assert_eq!(json["debug_event"]["source"]["ID"], 7);
        assert_eq!(json["debug_event"]["message"], "ep 7 egress: ct new");
    }
}
