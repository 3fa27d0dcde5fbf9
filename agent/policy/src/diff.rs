//! Deterministic difference between two compiled states, so the agent can
//! apply only what changed.
//!
//! Order: endpoints by id; for each endpoint first `EndpointAdded` or
//! `EndpointRemoved`, then per direction (ingress, egress) the enforced flag
//! change, then entries added, then entries removed (make before break), each
//! in entry order. A removed endpoint yields only `EndpointRemoved`; an added
//! endpoint yields its enforced flags that are `true` and all its entries.

use std::fmt;

use crate::compile::Compiled;
use crate::identity::EndpointId;
use crate::mapstate::{DirectionPolicy, EndpointPolicy, Entry};
use crate::rule::Direction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    EndpointAdded {
        endpoint: EndpointId,
    },
    EndpointRemoved {
        endpoint: EndpointId,
    },
    EnforcedChanged {
        endpoint: EndpointId,
        direction: Direction,
        enforced: bool,
    },
    EntryAdded {
        endpoint: EndpointId,
        direction: Direction,
        entry: Entry,
    },
    EntryRemoved {
        endpoint: EndpointId,
        direction: Direction,
        entry: Entry,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::EndpointAdded { endpoint } => write!(f, "endpoint {endpoint}: added"),
            Change::EndpointRemoved { endpoint } => write!(f, "endpoint {endpoint}: removed"),
            Change::EnforcedChanged {
                endpoint,
                direction,
                enforced,
            } => write!(f, "endpoint {endpoint} {direction}: enforced={enforced}"),
            Change::EntryAdded {
                endpoint,
                direction,
                entry,
            } => write!(f, "endpoint {endpoint} {direction}: + {entry}"),
            Change::EntryRemoved {
                endpoint,
                direction,
                entry,
            } => write!(f, "endpoint {endpoint} {direction}: - {entry}"),
        }
    }
}

fn direction_changes(
    endpoint: EndpointId,
    direction: Direction,
    old: &DirectionPolicy,
    new: &DirectionPolicy,
    out: &mut Vec<Change>,
) {
    if old.enforced != new.enforced {
        out.push(Change::EnforcedChanged {
            endpoint,
            direction,
            enforced: new.enforced,
        });
    }
    for e in new.entries.difference(&old.entries) {
        out.push(Change::EntryAdded {
            endpoint,
            direction,
            entry: e.clone(),
        });
    }
    for e in old.entries.difference(&new.entries) {
        out.push(Change::EntryRemoved {
            endpoint,
            direction,
            entry: e.clone(),
        });
    }
}

/// Changes that turn `old` into `new`.
pub fn diff(old: &Compiled, new: &Compiled) -> Vec<Change> {
    let mut out = Vec::new();
    let ids: std::collections::BTreeSet<EndpointId> = old
        .endpoints
        .keys()
        .chain(new.endpoints.keys())
        .copied()
        .collect();
    let empty = EndpointPolicy::default();
    for id in ids {
        match (old.endpoints.get(&id), new.endpoints.get(&id)) {
            (Some(_), None) => out.push(Change::EndpointRemoved { endpoint: id }),
            (o, Some(n)) => {
                if o.is_none() {
                    out.push(Change::EndpointAdded { endpoint: id });
                }
                let o = o.unwrap_or(&empty);
                for d in Direction::BOTH {
                    direction_changes(id, d, o.direction(d), n.direction(d), &mut out);
                }
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
