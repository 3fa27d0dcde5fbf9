//! Decisions and flow traces: what `weir policy trace` prints.

use std::fmt;

use crate::compile::Compiled;
use crate::identity::{EndpointId, NumericIdentity};
use crate::mapstate::Provenance;
use crate::rule::{Direction, Protocol, Verdict};

/// Why a verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// No policy selects the endpoint for this direction: allowed.
    NotEnforced,
    /// At least one deny rule matches (deny beats allow).
    Denied,
    /// No deny matches and at least one allow rule matches.
    Allowed,
    /// Enforced, and no rule allows.
    DefaultDeny,
}

/// The verdict for one direction, with the rules that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The matching rules of the deciding kind (denies for `Denied`, allows
    /// for `Allowed`), sorted; empty otherwise.
    pub matched: Vec<Provenance>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = || {
            self.matched
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.reason {
            Reason::NotEnforced => f.write_str("allowed: no policy selects this direction"),
            Reason::Denied => write!(f, "denied by {}", list()),
            Reason::Allowed => write!(f, "allowed by {}", list()),
            Reason::DefaultDeny => f.write_str("denied: default deny, no rule allows"),
        }
    }
}

/// The two checks a flow between two identities meets: the source
/// endpoint's egress policy (if the source is a local endpoint) and the
/// destination endpoint's ingress policy (if the destination is local).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTrace {
    pub egress: Option<Decision>,
    pub ingress: Option<Decision>,
}

impl FlowTrace {
    /// Allowed iff every check that applies allows.
    pub fn verdict(&self) -> Verdict {
        let denied = [&self.egress, &self.ingress]
            .into_iter()
            .flatten()
            .any(|d| d.verdict == Verdict::Deny);
        if denied {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }
}

impl fmt::Display for FlowTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.egress {
            Some(d) => writeln!(f, "egress of source: {d}")?,
            None => writeln!(f, "egress of source: not a local endpoint, not checked")?,
        }
        match &self.ingress {
            Some(d) => writeln!(f, "ingress of destination: {d}")?,
            None => writeln!(
                f,
                "ingress of destination: not a local endpoint, not checked"
            )?,
        }
        write!(f, "final verdict: {}", self.verdict())
    }
}

/// One side of a traced flow: a local endpoint, or only an identity (a
/// remote pod, world, a CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSide {
    Endpoint(EndpointId),
    Identity(NumericIdentity),
}

/// Traces a flow `src → dst` on `protocol`/`port` (destination port).
/// Returns `None` if a named endpoint is not in `compiled`.
pub fn trace_flow(
    compiled: &Compiled,
    src: FlowSide,
    dst: FlowSide,
    protocol: Protocol,
    port: u16,
) -> Option<FlowTrace> {
    let identity_of = |side: FlowSide| -> Option<NumericIdentity> {
        match side {
            FlowSide::Identity(id) => Some(id),
            FlowSide::Endpoint(ep) => compiled.endpoints.get(&ep).map(|p| p.identity),
        }
    };
    let src_id = identity_of(src)?;
    let dst_id = identity_of(dst)?;
    let egress = match src {
        FlowSide::Endpoint(ep) => Some(compiled.endpoints.get(&ep)?.verdict(
            Direction::Egress,
            dst_id,
            protocol,
            port,
        )),
        FlowSide::Identity(_) => None,
    };
    let ingress = match dst {
        FlowSide::Endpoint(ep) => Some(compiled.endpoints.get(&ep)?.verdict(
            Direction::Ingress,
            src_id,
            protocol,
            port,
        )),
        FlowSide::Identity(_) => None,
    };
    Some(FlowTrace { egress, ingress })
}
