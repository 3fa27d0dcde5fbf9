//! Decisions and flow traces: what `weir policy trace` prints.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::compile::Compiled;
use crate::identity::{EndpointId, NumericIdentity};
use crate::mapstate::{DirectionPolicy, Provenance};
use crate::rule::{CidrScope, Direction, Peer, Policy, Protocol, Verdict};

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
    /// The NetworkPolicy `ipBlock`s of the source's egress rules that cover
    /// the destination's address, and whether an `except` leaves it out
    /// ([`ip_block_notes`]).
    pub egress_ip_blocks: Vec<String>,
    /// The same for the destination's ingress rules and the source's
    /// address.
    pub ingress_ip_blocks: Vec<String>,
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
        for note in &self.egress_ip_blocks {
            writeln!(f, "  {note}")?;
        }
        match &self.ingress {
            Some(d) => writeln!(f, "ingress of destination: {d}")?,
            None => writeln!(
                f,
                "ingress of destination: not a local endpoint, not checked"
            )?,
        }
        for note in &self.ingress_ip_blocks {
            writeln!(f, "  {note}")?;
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
    Some(FlowTrace {
        egress,
        ingress,
        egress_ip_blocks: Vec::new(),
        ingress_ip_blocks: Vec::new(),
    })
}

/// [`trace_flow`] for two sides with their addresses (a pod's address, when
/// known): the datapath's address identity fallback
/// ([`crate::DirectionPolicy::verdict_at`]) with the address identity of
/// each address ([`Compiled::address_identity_of`]), and the `ipBlock`s of
/// `policies` whose rules apply to the checking endpoint and cover the
/// peer's address, each with the except that leaves it out, if any.
pub fn trace_flow_at(
    compiled: &Compiled,
    policies: &[Policy],
    (src, src_address): (FlowSide, Option<IpAddr>),
    (dst, dst_address): (FlowSide, Option<IpAddr>),
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
    let address_id =
        |address: Option<IpAddr>| address.and_then(|a| compiled.address_identity_of(a));
    let mut trace = FlowTrace {
        egress: None,
        ingress: None,
        egress_ip_blocks: Vec::new(),
        ingress_ip_blocks: Vec::new(),
    };
    if let FlowSide::Endpoint(ep) = src {
        let policy = compiled.endpoints.get(&ep)?.direction(Direction::Egress);
        trace.egress = Some(policy.verdict_at(dst_id, address_id(dst_address), protocol, port));
        if let Some(address) = dst_address {
            trace.egress_ip_blocks = ip_block_notes(policy, policies, Direction::Egress, address);
        }
    }
    if let FlowSide::Endpoint(ep) = dst {
        let policy = compiled.endpoints.get(&ep)?.direction(Direction::Ingress);
        trace.ingress = Some(policy.verdict_at(src_id, address_id(src_address), protocol, port));
        if let Some(address) = src_address {
            trace.ingress_ip_blocks = ip_block_notes(policy, policies, Direction::Ingress, address);
        }
    }
    Some(trace)
}

/// One line per NetworkPolicy `ipBlock` of the rules in force for `policy`
/// (the rules its entries came from) whose `cidr` contains `address`:
/// `ipBlock 0.0.0.0/0 of NetworkPolicy x/p (spec.egress[0]) covers
/// 10.244.1.5` or `... contains 10.244.1.5 but its except 10.244.1.5/32
/// leaves it out`.
pub fn ip_block_notes(
    policy: &DirectionPolicy,
    policies: &[Policy],
    direction: Direction,
    address: IpAddr,
) -> Vec<String> {
    if !policy.enforced {
        return Vec::new();
    }
    let in_force: BTreeSet<&Provenance> = policy.entries.iter().map(|e| &e.provenance).collect();
    let mut notes = Vec::new();
    for p in policies {
        let rules = p.rule_sets.iter().flat_map(|rs| &rs.rules);
        for rule in rules.filter(|r| r.direction == direction) {
            let provenance = Provenance {
                policy: p.id.clone(),
                rule: rule.path.clone(),
            };
            if !in_force.contains(&provenance) {
                continue;
            }
            for peer in &rule.peers {
                let Peer::Cidr {
                    cidr,
                    except,
                    scope: CidrScope::Addresses,
                } = peer
                else {
                    continue;
                };
                if !cidr.contains(address) {
                    continue;
                }
                let line = match except.iter().find(|e| e.contains(address)) {
                    Some(e) => format!(
                        "ipBlock {cidr} of {provenance} contains {address} but its except {e} leaves it out"
                    ),
                    None => format!("ipBlock {cidr} of {provenance} covers {address}"),
                };
                notes.push(line);
            }
        }
    }
    notes
}
