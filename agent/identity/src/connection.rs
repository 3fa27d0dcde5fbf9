//! The state of the connection to the shared store, as the agent reports it
//! (`/readyz`, `weir status`, `weir_kvstore_connected`). Pure: the
//! transitions take the time of the attempt and its outcome.

use std::time::{Duration, SystemTime};

/// Which store a connection is to, when the agent says so (`etcd`,
/// `crd`): named by [`Connection::describe`].
pub type StoreName = Option<&'static str>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No attempt has answered yet since `since` (the start); `error` is
    /// the last failed attempt's.
    Connecting {
        since: SystemTime,
        error: Option<String>,
        store: StoreName,
    },
    /// The store answered every check since `since`.
    Connected { since: SystemTime, store: StoreName },
    /// The store stopped answering at `since`; `error` is the last check's.
    Unreachable {
        since: SystemTime,
        error: String,
        store: StoreName,
    },
}

impl Connection {
    pub fn starting(now: SystemTime) -> Connection {
        Connection::Connecting {
            since: now,
            error: None,
            store: None,
        }
    }

    /// Starting, to the store named `store` (named in every description).
    pub fn starting_to(store: &'static str, now: SystemTime) -> Connection {
        Connection::Connecting {
            since: now,
            error: None,
            store: Some(store),
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self, Connection::Connected { .. })
    }

    fn store(&self) -> StoreName {
        match self {
            Connection::Connecting { store, .. }
            | Connection::Connected { store, .. }
            | Connection::Unreachable { store, .. } => *store,
        }
    }

    /// The state after a check (or a call) at `now` that answered (`Ok`)
    /// or failed. `since` moves only when connected-ness changes, so it
    /// says how long the current state has lasted.
    pub fn after(&self, now: SystemTime, outcome: Result<(), String>) -> Connection {
        let store = self.store();
        match (self, outcome) {
            (Connection::Connected { since, .. }, Ok(())) => Connection::Connected {
                since: *since,
                store,
            },
            (_, Ok(())) => Connection::Connected { since: now, store },
            (Connection::Connecting { since, .. }, Err(error)) => Connection::Connecting {
                since: *since,
                error: Some(error),
                store,
            },
            (Connection::Unreachable { since, .. }, Err(error)) => Connection::Unreachable {
                since: *since,
                error,
                store,
            },
            (Connection::Connected { .. }, Err(error)) => Connection::Unreachable {
                since: now,
                error,
                store,
            },
        }
    }

    /// One line for people: `connected for 3 s`, `unreachable for 12 s:
    /// <error>`, `connecting for 5 s: <error>`; with the store named after
    /// the state word when it is (`connected (crd) for 3 s`).
    pub fn describe(&self, now: SystemTime) -> String {
        let age = |since: &SystemTime| {
            now.duration_since(*since)
                .unwrap_or(Duration::ZERO)
                .as_secs()
        };
        let (word, since, error) = match self {
            Connection::Connecting { since, error, .. } => ("connecting", since, error.as_deref()),
            Connection::Connected { since, .. } => ("connected", since, None),
            Connection::Unreachable { since, error, .. } => {
                ("unreachable", since, Some(error.as_str()))
            }
        };
        let store = self.store().map(|s| format!(" ({s})")).unwrap_or_default();
        let error = error.map(|e| format!(": {e}")).unwrap_or_default();
        format!("{word}{store} for {} s{error}", age(since))
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
                error: Some("refused".into()),
                store: None
            }
        );
        let state = state.after(t0 + 2 * S, Ok(()));
        assert_eq!(
            state,
            Connection::Connected {
                since: t0 + 2 * S,
                store: None
            }
        );
        let state = state.after(t0 + 3 * S, Ok(()));
        assert_eq!(
            state,
            Connection::Connected {
                since: t0 + 2 * S,
                store: None
            }
        );
        let state = state.after(t0 + 4 * S, Err("timed out".into()));
        assert_eq!(
            state,
            Connection::Unreachable {
                since: t0 + 4 * S,
                error: "timed out".into(),
                store: None
            }
        );
        // The outage keeps its start; the error is the latest.
        let state = state.after(t0 + 9 * S, Err("refused".into()));
        assert_eq!(
            state,
            Connection::Unreachable {
                since: t0 + 4 * S,
                error: "refused".into(),
                store: None
            }
        );
        assert_eq!(state.describe(t0 + 16 * S), "unreachable for 12 s: refused");
        let state = state.after(t0 + 20 * S, Ok(()));
        assert_eq!(
            state,
            Connection::Connected {
                since: t0 + 20 * S,
                store: None
            }
        );
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

    #[test]
    fn a_named_store_is_named_in_every_state() {
        let t0 = SystemTime::UNIX_EPOCH;
        let state = Connection::starting_to("crd", t0);
        assert_eq!(state.describe(t0 + S), "connecting (crd) for 1 s");
        let state = state.after(t0 + S, Ok(()));
        assert_eq!(state.describe(t0 + 4 * S), "connected (crd) for 3 s");
        let state = state.after(t0 + 5 * S, Err("refused".into()));
        assert_eq!(
            state.describe(t0 + 6 * S),
            "unreachable (crd) for 1 s: refused"
        );
    }
}
