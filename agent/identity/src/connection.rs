//! The state of the connection to the shared store, as the agent reports it
//! (`/readyz`, `weir status`, `weir_kvstore_connected`). Pure: the
//! transitions take the time of the attempt and its outcome.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No attempt has answered yet since `since` (the start); `error` is
    /// the last failed attempt's.
    Connecting {
        since: SystemTime,
        error: Option<String>,
    },
    /// The store answered every check since `since`.
    Connected { since: SystemTime },
    /// The store stopped answering at `since`; `error` is the last check's.
    Unreachable { since: SystemTime, error: String },
}

impl Connection {
    pub fn starting(now: SystemTime) -> Connection {
        Connection::Connecting {
            since: now,
            error: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self, Connection::Connected { .. })
    }

    /// The state after a check (or a call) at `now` that answered (`Ok`)
    /// or failed. `since` moves only when connected-ness changes, so it
    /// says how long the current state has lasted.
    pub fn after(&self, now: SystemTime, outcome: Result<(), String>) -> Connection {
        match (self, outcome) {
            (Connection::Connected { since }, Ok(())) => Connection::Connected { since: *since },
            (_, Ok(())) => Connection::Connected { since: now },
            (Connection::Connecting { since, .. }, Err(error)) => Connection::Connecting {
                since: *since,
                error: Some(error),
            },
            (Connection::Unreachable { since, .. }, Err(error)) => Connection::Unreachable {
                since: *since,
                error,
            },
            (Connection::Connected { .. }, Err(error)) => {
                Connection::Unreachable { since: now, error }
            }
        }
    }

    /// One line for people: `connected for 3 s`, `unreachable for 12 s:
    /// <error>`, `connecting for 5 s: <error>`.
    pub fn describe(&self, now: SystemTime) -> String {
        let age = |since: &SystemTime| {
            now.duration_since(*since)
                .unwrap_or(Duration::ZERO)
                .as_secs()
        };
        match self {
            Connection::Connecting { since, error: None } => {
                format!("connecting for {} s", age(since))
            }
            Connection::Connecting {
                since,
                error: Some(error),
            } => format!("connecting for {} s: {error}", age(since)),
            Connection::Connected { since } => format!("connected for {} s", age(since)),
            Connection::Unreachable { since, error } => {
                format!("unreachable for {} s: {error}", age(since))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn since_moves_only_when_connectedness_changes() {
        let t0 = SystemTime::UNIX_EPOCH + 1000 * S;
        let state = Connection::starting(t0);
        assert!(!state.is_connected());
        let state = state.after(t0 + S, Err("refused".into()));
        assert_eq!(
            state,
            Connection::Connecting {
                since: t0,
                error: Some("refused".into())
            }
        );
        let state = state.after(t0 + 2 * S, Ok(()));
        assert_eq!(state, Connection::Connected { since: t0 + 2 * S });
        let state = state.after(t0 + 3 * S, Ok(()));
        assert_eq!(state, Connection::Connected { since: t0 + 2 * S });
        let state = state.after(t0 + 4 * S, Err("timed out".into()));
        assert_eq!(
            state,
            Connection::Unreachable {
                since: t0 + 4 * S,
                error: "timed out".into()
            }
        );
        // The outage keeps its start; the error is the latest.
        let state = state.after(t0 + 9 * S, Err("refused".into()));
        assert_eq!(
            state,
            Connection::Unreachable {
                since: t0 + 4 * S,
                error: "refused".into()
            }
        );
        assert_eq!(state.describe(t0 + 16 * S), "unreachable for 12 s: refused");
        let state = state.after(t0 + 20 * S, Ok(()));
        assert_eq!(state, Connection::Connected { since: t0 + 20 * S });
        assert_eq!(state.describe(t0 + 23 * S), "connected for 3 s");
    }

    #[test]
    fn describes_a_start_without_answer() {
        let t0 = SystemTime::UNIX_EPOCH;
        assert_eq!(
            Connection::starting(t0).describe(t0 + 2 * S),
            "connecting for 2 s"
        );
        // A clock stepping back never underflows.
        let state = Connection::starting(t0 + 5 * S).after(t0 + 5 * S, Err("refused".into()));
        assert_eq!(state.describe(t0), "connecting for 0 s: refused");
    }
}
