//! Compiles validated policies against a cluster view into per-endpoint
//! policy state.
//!
//! Peer resolution:
//! - `Peer::Any` → the wildcard peer (identity 0).
//! - `Peer::Endpoints(sel)` → every identity of the view whose labels match.
//! - `Peer::Cidr{cidr, except, scope}` → every CIDR identity (of all
//!   prefixes that any policy names) whose prefix lies within `cidr` and not
//!   within an `except` prefix; a `/0` prefix also covers the world
//!   identities (2, and 9 or 10 for its family). The datapath's LPM ipcache
//!   maps an address to its most specific prefix, so an `except` prefix (and
//!   any other prefix nested in it) resolves to an identity this peer does
//!   not allow. CIDR identities stand for addresses outside the cluster
//!   only: a pod's or a node's address resolves to the pod's or node's
//!   identity. With [`CidrScope::Addresses`] (NetworkPolicy `ipBlock`) the
//!   peer also covers the *address identities* of the prefixes
//!   NetworkPolicies name ([`Compiled::addresses`]) within `cidr` and not
//!   within an `except`: the ipcache gives each pod and node address the
//!   address identity of the most specific such prefix containing it, and
//!   the datapath looks that up when the peer's own identity decides
//!   nothing. Prefixes are nested or disjoint, so "the most specific prefix
//!   containing the address lies within `cidr` and not within an `except`"
//!   is exactly "the address is in `cidr` and in no `except`". With
//!   [`CidrScope::OutsideCluster`] (Weir's CRDs, as in Cilium) CIDR peers
//!   never match pods or nodes.
//! - Entities: `all` = any; `world` = identities 2, 9, 10 and every CIDR
//!   identity (`world-ipv4`/`world-ipv6`: 2 plus 9 or 10 and the CIDR
//!   identities of that family); `cluster` = every identity with a
//!   namespace label (pods) or one of the reserved labels host, remote-node,
//!   kube-apiserver, init, ingress, health, unmanaged; `host`, `remote-node`
//!   (includes kube-apiserver 7), `kube-apiserver`, `ingress`, `init`,
//!   `health`, `unmanaged` = identities carrying that `reserved:` label;
//!   `none` = nothing.
//!
//! Ports: no ports = any protocol and port; `ANY` with a port expands into
//! TCP, UDP and SCTP entries; named ports resolve for ingress against the
//! endpoint's own named ports and for egress against each peer identity's
//! named ports (a wildcard peer expands to every identity that has the name).
//! A name that does not resolve produces no entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::identity::{
    reserved, CidrIdentities, ClusterView, Endpoint, EndpointId, NumericIdentity,
};
use crate::label_index::LabelIndex;
use crate::labels::LabelSet;
use crate::mapstate::{EndpointPolicy, Entry, EntryKey, PeerKey, Ports, Provenance};
use crate::rule::{
    CidrScope, Direction, Entity, Peer, Policy, PolicyId, PolicyKind, PortMatch, PortRef, Protocol,
    Rule, Verdict,
};
use crate::validate::contains;

/// Compiler switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileOptions {
    /// Allow ingress from the local host (identity 1) on every
    /// ingress-enforced endpoint, so kubelet probes keep working (Cilium's
    /// `allow-localhost=always`, its default under Kubernetes). A deny rule
    /// naming the host still wins.
    pub allow_localhost_ingress: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            allow_localhost_ingress: true,
        }
    }
}

/// The compiled state of all local endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub endpoints: BTreeMap<EndpointId, EndpointPolicy>,
    /// Every CIDR prefix the policies name (including `except` prefixes)
    /// with its identity: the caller programs these into the ipcache. Each
    /// holds one reference of the [`CidrIdentities`] it came from, which the
    /// caller gives back once this state is no longer in force.
    pub cidrs: BTreeMap<IpNetwork, NumericIdentity>,
    /// The prefixes that NetworkPolicy `ipBlock`s name (cidr and except,
    /// [`CidrScope::Addresses`]) with their address identity
    /// (`address_identity` of their CIDR identity): the caller gives each
    /// pod and node address in the ipcache the one of the most specific
    /// prefix containing it ([`Compiled::address_identity_of`]).
    pub addresses: BTreeMap<IpNetwork, NumericIdentity>,
}

impl Compiled {
    /// The address identity of a cluster address: the one of the most
    /// specific prefix of [`Compiled::addresses`] containing `ip`, or
    /// `None`.
    pub fn address_identity_of(&self, ip: IpAddr) -> Option<NumericIdentity> {
        most_specific(&self.addresses, ip).map(|(_, id)| id)
    }
}

/// The most specific prefix of `prefixes` containing `ip`, with its value.
pub fn most_specific(
    prefixes: &BTreeMap<IpNetwork, NumericIdentity>,
    ip: IpAddr,
) -> Option<(IpNetwork, NumericIdentity)> {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    (0..=bits).rev().find_map(|len| {
        let net = IpNetwork::new(ip, len).ok()?;
        let net = IpNetwork::new(net.network(), len).ok()?;
        prefixes.get(&net).map(|id| (net, *id))
    })
}

/// The address prefixes of `cidrs`: those of `named` (the prefixes of
/// [`CidrScope::Addresses`] peers) that have a CIDR identity, with the
/// address identity derived from it.
pub(crate) fn address_prefixes(
    cidrs: &BTreeMap<IpNetwork, NumericIdentity>,
    named: impl IntoIterator<Item = IpNetwork>,
) -> BTreeMap<IpNetwork, NumericIdentity> {
    named
        .into_iter()
        .filter_map(|net| {
            cidrs
                .get(&net)
                .map(|id| (net, reserved::address_identity(*id)))
        })
        .collect()
}

/// The policy id used for entries the compiler adds itself.
pub fn allow_localhost_id() -> PolicyId {
    PolicyId {
        kind: PolicyKind::Implicit,
        namespace: None,
        name: "allow-localhost".into(),
    }
}

/// Compiles with the default [`CompileOptions`].
pub fn compile(
    view: &ClusterView,
    policies: &[Policy],
    cidr_ids: &mut dyn CidrIdentities,
) -> Compiled {
    compile_with(view, policies, cidr_ids, CompileOptions::default())
}

/// A resolved peer set: the identities a rule's peers select by their labels
/// (`selected`, what the selector cache keeps current as identities come and
/// go) and those that follow from CIDRs and world entities (`fixed`, which
/// change only with the set of CIDRs the policies name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PeerSet {
    pub(crate) any: bool,
    pub(crate) selected: BTreeSet<NumericIdentity>,
    pub(crate) fixed: BTreeSet<NumericIdentity>,
}

impl PeerSet {
    /// The label-selected and fixed parts of `peers` in `view` with `cidrs`.
    pub(crate) fn resolve(
        view: &ClusterView,
        index: &LabelIndex,
        prefixes: Prefixes<'_>,
        peers: &[Peer],
    ) -> PeerSet {
        let mut out = PeerSet {
            selected: selected(view, index, peers),
            ..PeerSet::default()
        };
        out.set_fixed(peers, prefixes);
        out
    }

    /// Recomputes the fixed part; true if it changed.
    pub(crate) fn set_fixed(&mut self, peers: &[Peer], prefixes: Prefixes<'_>) -> bool {
        let (any, fixed) = fixed_peers(peers, prefixes);
        let changed = any != self.any || fixed != self.fixed;
        self.any = any;
        self.fixed = fixed;
        changed
    }

    /// Every identity of the set (without the wildcard).
    fn ids(&self) -> BTreeSet<NumericIdentity> {
        self.selected.union(&self.fixed).copied().collect()
    }

    fn keys(&self) -> Vec<PeerKey> {
        if self.any {
            vec![PeerKey::Any]
        } else {
            self.ids().into_iter().map(PeerKey::Identity).collect()
        }
    }
}

/// The prefixes the policies name, with their CIDR identities and, for
/// those of NetworkPolicy `ipBlock`s, their address identities.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefixes<'a> {
    pub(crate) cidrs: &'a BTreeMap<IpNetwork, NumericIdentity>,
    pub(crate) addresses: &'a BTreeMap<IpNetwork, NumericIdentity>,
}

impl<'a> Prefixes<'a> {
    pub(crate) fn of(compiled: &'a Compiled) -> Self {
        Prefixes {
            cidrs: &compiled.cidrs,
            addresses: &compiled.addresses,
        }
    }
}

/// The identities of `view` that `peers` select by label (`index` is the
/// view's).
pub(crate) fn selected(
    view: &ClusterView,
    index: &LabelIndex,
    peers: &[Peer],
) -> BTreeSet<NumericIdentity> {
    let labels_of = |id: &NumericIdentity| view.identities.get(id).map(|i| &i.labels);
    match index.candidates(peers) {
        Some(candidates) => candidates
            .into_iter()
            .filter(|id| labels_of(id).is_some_and(|l| selects(peers, l)))
            .collect(),
        None => view
            .identities
            .values()
            .filter(|i| selects(peers, &i.labels))
            .map(|i| i.id)
            .collect(),
    }
}

/// Whether a set carries the label that names reserved identity `id`
/// (`reserved:remote-node` for 6, which identity 7 carries too).
fn has_reserved(labels: &LabelSet, id: NumericIdentity) -> bool {
    reserved::reserved_by_id(id).is_some_and(|r| labels.get(r.label).is_some())
}

/// Whether `peers` select an identity with `labels` by its labels
/// (selectors and label-defined entities; CIDRs and world entities are the
/// fixed part, see [`fixed_peers`]).
pub(crate) fn selects(peers: &[Peer], labels: &LabelSet) -> bool {
    peers.iter().any(|peer| match peer {
        Peer::Any | Peer::Cidr { .. } => false,
        Peer::Endpoints(sel) => sel.matches(labels),
        Peer::Entity(e) => entity_selects(*e, labels),
    })
}

fn entity_selects(e: Entity, labels: &LabelSet) -> bool {
    const CLUSTER_RESERVED: [NumericIdentity; 7] = [
        reserved::HOST,
        reserved::REMOTE_NODE,
        reserved::KUBE_APISERVER,
        reserved::INIT,
        reserved::INGRESS,
        reserved::HEALTH,
        reserved::UNMANAGED,
    ];
    match e {
        Entity::All | Entity::None | Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6 => false,
        Entity::Cluster => {
            labels.namespace().is_some()
                || CLUSTER_RESERVED.iter().any(|id| has_reserved(labels, *id))
        }
        Entity::Host => has_reserved(labels, reserved::HOST),
        Entity::RemoteNode => has_reserved(labels, reserved::REMOTE_NODE),
        Entity::KubeApiserver => has_reserved(labels, reserved::KUBE_APISERVER),
        Entity::Ingress => has_reserved(labels, reserved::INGRESS),
        Entity::Init => has_reserved(labels, reserved::INIT),
        Entity::Health => has_reserved(labels, reserved::HEALTH),
        Entity::Unmanaged => has_reserved(labels, reserved::UNMANAGED),
    }
}

/// Whether the fixed part of `peers` depends on the CIDRs the policies name.
pub(crate) fn names_cidrs(peers: &[Peer]) -> bool {
    peers.iter().any(|peer| {
        matches!(
            peer,
            Peer::Cidr { .. } | Peer::Entity(Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6)
        )
    })
}

/// The part of `peers` that labels do not decide: the wildcard, and the
/// world and CIDR identities.
fn fixed_peers(peers: &[Peer], prefixes: Prefixes<'_>) -> (bool, BTreeSet<NumericIdentity>) {
    let cidrs = prefixes.cidrs;
    let mut any = false;
    let mut ids = BTreeSet::new();
    let world = |v4: bool, v6: bool, ids: &mut BTreeSet<NumericIdentity>| {
        ids.insert(reserved::WORLD);
        if v4 {
            ids.insert(reserved::WORLD_IPV4);
        }
        if v6 {
            ids.insert(reserved::WORLD_IPV6);
        }
        for (net, id) in cidrs {
            if (net.is_ipv4() && v4) || (net.is_ipv6() && v6) {
                ids.insert(*id);
            }
        }
    };
    for peer in peers {
        match peer {
            Peer::Any | Peer::Entity(Entity::All) => any = true,
            Peer::Cidr {
                cidr,
                except,
                scope,
            } => {
                let covers = |net: &IpNetwork| {
                    contains(cidr, net) && !except.iter().any(|e| contains(e, net))
                };
                for (net, id) in cidrs {
                    if covers(net) {
                        ids.insert(*id);
                    }
                }
                if *scope == CidrScope::Addresses {
                    for (net, id) in prefixes.addresses {
                        if covers(net) {
                            ids.insert(*id);
                        }
                    }
                }
                if cidr.prefix() == 0 {
                    ids.insert(reserved::WORLD);
                    ids.insert(if cidr.is_ipv4() {
                        reserved::WORLD_IPV4
                    } else {
                        reserved::WORLD_IPV6
                    });
                }
            }
            Peer::Entity(Entity::World) => world(true, true, &mut ids),
            Peer::Entity(Entity::WorldIpv4) => world(true, false, &mut ids),
            Peer::Entity(Entity::WorldIpv6) => world(false, true, &mut ids),
            Peer::Endpoints(_) | Peer::Entity(_) => {}
        }
    }
    (any, ids)
}

/// Every prefix `policy` names (CIDR peers and their excepts).
pub(crate) fn named_cidrs(policy: &Policy) -> impl Iterator<Item = IpNetwork> + '_ {
    policy
        .rule_sets
        .iter()
        .flat_map(|rs| &rs.rules)
        .flat_map(|r| &r.peers)
        .flat_map(|peer| match peer {
            Peer::Cidr { cidr, except, .. } => std::iter::once(*cidr)
                .chain(except.iter().copied())
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
}

/// The prefixes `policy` names that match cluster addresses too
/// ([`CidrScope::Addresses`] peers and their excepts).
pub(crate) fn named_address_cidrs(policy: &Policy) -> impl Iterator<Item = IpNetwork> + '_ {
    policy
        .rule_sets
        .iter()
        .flat_map(|rs| &rs.rules)
        .flat_map(|r| &r.peers)
        .flat_map(|peer| match peer {
            Peer::Cidr {
                cidr,
                except,
                scope: CidrScope::Addresses,
            } => std::iter::once(*cidr)
                .chain(except.iter().copied())
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
}

/// Collects every prefix named by the policies (CIDR peers and excepts),
/// taking one identity for each (a prefix without one is left out).
fn collect_cidrs(
    policies: &[Policy],
    cidr_ids: &mut dyn CidrIdentities,
) -> BTreeMap<IpNetwork, NumericIdentity> {
    let nets: BTreeSet<IpNetwork> = policies.iter().flat_map(named_cidrs).collect();
    nets.into_iter()
        .filter_map(|n| cidr_ids.identity_for(n).map(|id| (n, id)))
        .collect()
}

fn concrete_protocols(p: Option<Protocol>) -> Vec<Protocol> {
    match p {
        None => Protocol::ALL.to_vec(),
        Some(p) => vec![p],
    }
}

/// Emits the entries of one rule for one endpoint.
fn rule_entries(
    view: &ClusterView,
    endpoint: &Endpoint,
    rule: &Rule,
    peers: &PeerSet,
    provenance: &Provenance,
    out: &mut Vec<(Direction, Entry)>,
) {
    let mut push = |peer: PeerKey, protocol: Option<Protocol>, ports: Ports| {
        out.push((
            rule.direction,
            Entry {
                key: EntryKey {
                    peer,
                    protocol,
                    ports,
                },
                verdict: rule.verdict,
                provenance: provenance.clone(),
            },
        ));
    };
    let peer_keys = peers.keys();
    if peer_keys.is_empty() {
        return;
    }
    if rule.ports.is_empty() {
        for pk in &peer_keys {
            push(*pk, None, Ports::Any);
        }
        return;
    }
    for PortMatch { protocol, port } in &rule.ports {
        match port {
            PortRef::Any => {
                for pk in &peer_keys {
                    push(*pk, *protocol, Ports::Any);
                }
            }
            PortRef::Range(lo, hi) => {
                for proto in concrete_protocols(*protocol) {
                    for pk in &peer_keys {
                        push(*pk, Some(proto), Ports::Range(*lo, *hi));
                    }
                }
            }
            PortRef::Named(name) => {
                let resolve = |named: &crate::identity::NamedPorts| -> Vec<(Protocol, u16)> {
                    named
                        .get(name)
                        .into_iter()
                        .flatten()
                        .filter(|(p, _)| protocol.is_none_or(|want| want == *p))
                        .copied()
                        .collect()
                };
                match rule.direction {
                    Direction::Ingress => {
                        for (proto, num) in resolve(&endpoint.named_ports) {
                            for pk in &peer_keys {
                                push(*pk, Some(proto), Ports::Range(num, num));
                            }
                        }
                    }
                    Direction::Egress => {
                        let targets: Vec<NumericIdentity> = if peers.any {
                            view.identities.keys().copied().collect()
                        } else {
                            peers.ids().into_iter().collect()
                        };
                        for id in targets {
                            let Some(identity) = view.identities.get(&id) else {
                                continue;
                            };
                            for (proto, num) in resolve(&identity.named_ports) {
                                push(PeerKey::Identity(id), Some(proto), Ports::Range(num, num));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Compiles `policies` for every endpoint of `view`.
pub fn compile_with(
    view: &ClusterView,
    policies: &[Policy],
    cidr_ids: &mut dyn CidrIdentities,
    options: CompileOptions,
) -> Compiled {
    let cidrs = collect_cidrs(policies, cidr_ids);
    let addresses = address_prefixes(&cidrs, policies.iter().flat_map(named_address_cidrs));
    let prefixes = Prefixes {
        cidrs: &cidrs,
        addresses: &addresses,
    };
    let index = LabelIndex::of(view);
    // Peer sets depend only on the rule, not on the endpoint: resolve once.
    let resolved: Vec<Vec<Vec<PeerSet>>> = policies
        .iter()
        .map(|p| {
            p.rule_sets
                .iter()
                .map(|rs| {
                    rs.rules
                        .iter()
                        .map(|r| PeerSet::resolve(view, &index, prefixes, &r.peers))
                        .collect()
                })
                .collect()
        })
        .collect();
    let endpoints = view
        .endpoints
        .values()
        .map(|ep| {
            let rules = policies.iter().zip(resolved.iter().map(Vec::as_slice));
            (ep.id, compile_endpoint(view, ep, rules, options))
        })
        .collect();
    Compiled {
        endpoints,
        cidrs,
        addresses,
    }
}

/// One endpoint's policy from every policy with its resolved peer sets
/// (per rule set, per rule).
pub(crate) fn compile_endpoint<'a>(
    view: &ClusterView,
    ep: &Endpoint,
    policies: impl Iterator<Item = (&'a Policy, &'a [Vec<PeerSet>])>,
    options: CompileOptions,
) -> EndpointPolicy {
    let empty = LabelSet::new();
    let labels = view.labels_of(ep.identity).unwrap_or(&empty);
    let mut state = EndpointPolicy {
        identity: ep.identity,
        ..Default::default()
    };
    let mut entries = Vec::new();
    for (policy, peers) in policies {
        for (rs, peers) in policy.rule_sets.iter().zip(peers) {
            if !rs.subject.matches(labels) {
                continue;
            }
            for d in Direction::BOTH {
                if rs.enforces(d) {
                    state.direction_mut(d).enforced = true;
                }
            }
            for (rule, peers) in rs.rules.iter().zip(peers) {
                let provenance = Provenance {
                    policy: policy.id.clone(),
                    rule: rule.path.clone(),
                };
                rule_entries(view, ep, rule, peers, &provenance, &mut entries);
            }
        }
    }
    if options.allow_localhost_ingress {
        entries.push((
            Direction::Ingress,
            Entry {
                key: EntryKey {
                    peer: PeerKey::Identity(reserved::HOST),
                    protocol: None,
                    ports: Ports::Any,
                },
                verdict: Verdict::Allow,
                provenance: Provenance {
                    policy: allow_localhost_id(),
                    rule: "allow-localhost".into(),
                },
            },
        ));
    }
    // Entries only matter where the direction is enforced.
    for (d, e) in entries {
        let dp = state.direction_mut(d);
        if dp.enforced {
            dp.entries.insert(e);
        }
    }
    state
}

#[cfg(test)]
mod tests;
