//! `weir policy diff`: the impact of a candidate policy change judged on
//! the traffic this node recorded, before the change is applied.
//!
//! The connections come from the observer's flow ring, or from every
//! node's through a relay (`weir_observer::connections`: each connection
//! once, by its 5-tuple), grouped by source, destination, protocol and
//! port. Each group is traced twice with the policy engine
//! that compiles what the datapath enforces: against the policies in force
//! and against those policies with the candidate's objects added,
//! replaced or deleted. The groups whose verdict differs are the
//! preview, each with the rules that decide it under the candidate.
//!
//! Peers are judged as the datapath would see them after the change: a
//! pod by its identity (and its address, for `ipBlock`s); any other
//! address by the CIDR identity the candidate's prefixes give it (world
//! when none), or the node identity it was recorded with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use weir_abi::identity;
use weir_observer::connections as recorded;
use weir_observer::proto::flow::Flow;
use weir_policy::compile::most_specific;
use weir_policy::trace::trace_flow_at;
use weir_policy::{compile, Compiled, FlowSide, Policy, PolicyId, Protocol, Verdict};
use weir_types::NamespacedName;

use crate::cluster::manifest::{self, Object};
use crate::reconcile::snapshot::PolicySnapshot;

/// What the candidate changes: policies added or replaced (by their
/// kind, namespace and name), and policies deleted.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    pub upserts: Vec<Policy>,
    /// `Kind/namespace/name` (`Kind/name` cluster-wide), as `weir policy
    /// get` names them.
    pub deletions: BTreeSet<String>,
}

/// `Kind/namespace/name`, or `Kind/name` for a cluster-wide kind.
pub fn policy_key(id: &PolicyId) -> String {
    match &id.namespace {
        Some(ns) => format!("{}/{ns}/{}", id.kind, id.name),
        None => format!("{}/{}", id.kind, id.name),
    }
}

impl Candidate {
    /// The candidate from policy manifests (`yaml`, every document a policy
    /// kind) and the keys of policies to delete. Every invalid document is
    /// reported, as applying it would.
    pub fn parse(yaml: &str, deletions: &[String]) -> Result<Candidate, String> {
        let objects = manifest::parse(yaml).map_err(|e| format!("{e:#}"))?;
        let mut upserts = Vec::new();
        let mut errors = Vec::new();
        for object in objects {
            let Object::Policy(document) = object else {
                errors.push(format!(
                    "{}: not a policy (the preview takes NetworkPolicy, WeirNetworkPolicy and WeirClusterwideNetworkPolicy)",
                    object.key()
                ));
                continue;
            };
            match weir_policy::PolicyDocument::from_value(document.document.clone())
                .and_then(|doc| doc.to_policy())
            {
                Ok(policy) => upserts.push(policy),
                Err(e) => errors.push(format!("{}: {e}", document.key())),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(Candidate {
            upserts,
            deletions: deletions.iter().cloned().collect(),
        })
    }

    /// `in_force` with this candidate applied. A deletion of a policy that
    /// is not in force is an error (a typo would otherwise preview
    /// nothing).
    pub fn apply(&self, in_force: &[Policy]) -> Result<Vec<Policy>, String> {
        let keys: BTreeSet<String> = in_force.iter().map(|p| policy_key(&p.id)).collect();
        if let Some(missing) = self.deletions.iter().find(|k| !keys.contains(*k)) {
            return Err(format!(
                "{missing}: no such policy in force (names are Kind/namespace/name, as `weir policy get` shows them)"
            ));
        }
        let replaced: BTreeSet<String> = self.upserts.iter().map(|p| policy_key(&p.id)).collect();
        let mut policies: Vec<Policy> = in_force
            .iter()
            .filter(|p| {
                let key = policy_key(&p.id);
                !self.deletions.contains(&key) && !replaced.contains(&key)
            })
            .cloned()
            .collect();
        policies.extend(self.upserts.iter().cloned());
        Ok(policies)
    }
}

/// One side of a recorded connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Pod(NamespacedName),
    /// Not a pod: its address and the identity it was recorded with.
    Address {
        ip: IpAddr,
        identity: u32,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod(pod) => write!(f, "{pod}"),
            Peer::Address { ip, .. } => write!(f, "{ip}"),
        }
    }
}

/// What a group of recorded connections shares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionKey {
    pub source: Peer,
    pub destination: Peer,
    pub protocol: Protocol,
    pub port: u16,
}

/// The recorded connections of `flows` by group, with how many
/// connections (distinct 5-tuples) each has.
pub fn connections<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> BTreeMap<ConnectionKey, u64> {
    recorded::groups(flows)
        .into_iter()
        .map(|(group, count)| (ConnectionKey::from(group), count))
        .collect()
}

impl From<recorded::Peer> for Peer {
    fn from(peer: recorded::Peer) -> Peer {
        match peer {
            recorded::Peer::Pod { namespace, name } => {
                Peer::Pod(NamespacedName::new(&namespace, &name))
            }
            recorded::Peer::Address { ip, identity } => Peer::Address { ip, identity },
        }
    }
}

impl From<recorded::Group> for ConnectionKey {
    fn from(group: recorded::Group) -> ConnectionKey {
        ConnectionKey {
            source: group.source.into(),
            destination: group.destination.into(),
            protocol: match group.transport {
                recorded::Transport::Tcp => Protocol::Tcp,
                recorded::Transport::Udp => Protocol::Udp,
                recorded::Transport::Sctp => Protocol::Sctp,
            },
            port: group.port,
        }
    }
}

/// A group whose verdict the candidate changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub connection: ConnectionKey,
    pub count: u64,
    pub before: Verdict,
    pub after: Verdict,
    /// The candidate's trace of the group: the rules that decide it.
    pub decided_by: String,
}

/// What the preview found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub changes: Vec<Change>,
    /// Groups traced (changed or not).
    pub groups: usize,
    /// Groups left out: a pod this agent no longer knows.
    pub unknown: Vec<ConnectionKey>,
}

/// Traces every group under the policies in force and under the
/// candidate, and keeps those whose verdict differs.
pub fn preview(
    snapshot: &PolicySnapshot,
    candidate: &Candidate,
    groups: &BTreeMap<ConnectionKey, u64>,
) -> Result<Preview, String> {
    let candidate_policies = candidate.apply(&snapshot.policies)?;
    // Pods on other nodes are compiled here as endpoints of their own
    // (ids above the 16-bit endpoint range), from the same inputs their
    // agent compiles from: both sides of a connection are judged.
    let mut view = snapshot.view.clone();
    let mut sides: BTreeMap<NamespacedName, u32> = BTreeMap::new();
    let mut next_synthetic = 0x1_0000u32;
    for key in groups.keys() {
        for peer in [&key.source, &key.destination] {
            let Peer::Pod(pod) = peer else { continue };
            if sides.contains_key(pod) {
                continue;
            }
            if let Some(local) = snapshot.local.get(pod) {
                sides.insert(pod.clone(), local.endpoint);
            } else if let Some(known) = snapshot.pods.get(pod) {
                view.add_endpoint(weir_policy::Endpoint {
                    id: next_synthetic,
                    identity: known.identity,
                    named_ports: known.named_ports.clone(),
                });
                sides.insert(pod.clone(), next_synthetic);
                next_synthetic += 1;
            }
        }
    }
    let before = compile(&view, &snapshot.policies, &mut snapshot.cidrs.clone());
    let after = compile(&view, &candidate_policies, &mut snapshot.cidrs.clone());
    let mut out = Preview::default();
    for (key, count) in groups {
        let side = |peer: &Peer, compiled: &Compiled| -> Option<(FlowSide, Option<IpAddr>)> {
            match peer {
                Peer::Pod(pod) => {
                    let address = snapshot.pods.get(pod).and_then(|p| p.address);
                    sides.get(pod).map(|id| (FlowSide::Endpoint(*id), address))
                }
                Peer::Address { ip, identity } => Some(address_side(*ip, *identity, compiled)),
            }
        };
        let trace = |compiled: &Compiled, policies: &[Policy]| {
            let src = side(&key.source, compiled)?;
            let dst = side(&key.destination, compiled)?;
            trace_flow_at(compiled, policies, src, dst, key.protocol, key.port)
        };
        let (Some(was), Some(will)) = (
            trace(&before, &snapshot.policies),
            trace(&after, &candidate_policies),
        ) else {
            out.unknown.push(key.clone());
            continue;
        };
        out.groups += 1;
        if was.verdict() != will.verdict() {
            out.changes.push(Change {
                connection: key.clone(),
                count: *count,
                before: was.verdict(),
                after: will.verdict(),
                decided_by: will.to_string().trim_end().replace('\n', "; "),
            });
        }
    }
    Ok(out)
}

/// How the datapath would classify a peer that is not a pod: an address
/// recorded as world or as a policy CIDR gets the CIDR identity of the
/// most specific prefix `compiled` names (world when none); any other
/// (a node: host, remote-node) keeps its identity, and its address for
/// the `ipBlock`s that cover cluster addresses.
fn address_side(ip: IpAddr, recorded: u32, compiled: &Compiled) -> (FlowSide, Option<IpAddr>) {
    let world_like = recorded == 0
        || recorded == identity::WORLD
        || recorded == identity::WORLD_IPV4
        || recorded == identity::WORLD_IPV6
        || identity::is_local(recorded);
    if world_like {
        let id = most_specific(&compiled.cidrs, ip).map_or(identity::WORLD, |(_, id)| id);
        (FlowSide::Identity(id), None)
    } else {
        (FlowSide::Identity(recorded), Some(ip))
    }
}

#[cfg(test)]
mod tests;
