//! Compiles validated policies against a cluster view into per-endpoint
//! policy state.
//!
//! Peer resolution:
//! - `Peer::Any` → the wildcard peer (identity 0).
//! - `Peer::Endpoints(sel)` → every identity of the view whose labels match.
//! - `Peer::Cidr{cidr, except}` → every CIDR identity (of all prefixes that
//!   any policy names) whose prefix lies within `cidr` and not within an
//!   `except` prefix; a `/0` prefix also covers the world identities (2, and 9
//!   or 10 for its family). The datapath's LPM ipcache maps an address to its
//!   most specific prefix, so an `except` prefix (and any other prefix nested
//!   in it) resolves to an identity this peer does not allow. As in Cilium,
//!   CIDR peers never match pod or node identities.
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

use ipnetwork::IpNetwork;

use crate::identity::{
    reserved, CidrIdentities, ClusterView, Endpoint, EndpointId, NumericIdentity,
};
use crate::labels::LabelSet;
use crate::mapstate::{EndpointPolicy, Entry, EntryKey, PeerKey, Ports, Provenance};
use crate::rule::{
    Direction, Entity, Peer, Policy, PolicyId, PolicyKind, PortMatch, PortRef, Protocol, Rule,
    Verdict,
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

/// A resolved peer set.
#[derive(Debug, Default)]
struct PeerSet {
    any: bool,
    ids: BTreeSet<NumericIdentity>,
}

impl PeerSet {
    fn keys(&self) -> Vec<PeerKey> {
        if self.any {
            vec![PeerKey::Any]
        } else {
            self.ids.iter().map(|id| PeerKey::Identity(*id)).collect()
        }
    }
}

struct Resolver<'a> {
    view: &'a ClusterView,
    cidrs: &'a BTreeMap<IpNetwork, NumericIdentity>,
}

/// Whether a set carries the label that names reserved identity `id`
/// (`reserved:remote-node` for 6, which identity 7 carries too).
fn has_reserved(labels: &LabelSet, id: NumericIdentity) -> bool {
    reserved::reserved_by_id(id).is_some_and(|r| labels.get(r.label).is_some())
}

impl Resolver<'_> {
    fn identities_where(
        &self,
        f: impl Fn(&LabelSet) -> bool,
    ) -> impl Iterator<Item = NumericIdentity> + '_ {
        self.view
            .identities
            .values()
            .filter(move |i| f(&i.labels))
            .map(|i| i.id)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn world(&self, v4: bool, v6: bool, out: &mut PeerSet) {
        out.ids.insert(reserved::WORLD);
        if v4 {
            out.ids.insert(reserved::WORLD_IPV4);
        }
        if v6 {
            out.ids.insert(reserved::WORLD_IPV6);
        }
        for (net, id) in self.cidrs {
            if (net.is_ipv4() && v4) || (net.is_ipv6() && v6) {
                out.ids.insert(*id);
            }
        }
    }

    fn resolve(&self, peers: &[Peer]) -> PeerSet {
        let mut out = PeerSet::default();
        for peer in peers {
            match peer {
                Peer::Any => out.any = true,
                Peer::Endpoints(sel) => out.ids.extend(self.identities_where(|l| sel.matches(l))),
                Peer::Cidr { cidr, except } => {
                    for (net, id) in self.cidrs {
                        if contains(cidr, net) && !except.iter().any(|e| contains(e, net)) {
                            out.ids.insert(*id);
                        }
                    }
                    if cidr.prefix() == 0 {
                        out.ids.insert(reserved::WORLD);
                        out.ids.insert(if cidr.is_ipv4() {
                            reserved::WORLD_IPV4
                        } else {
                            reserved::WORLD_IPV6
                        });
                    }
                }
                Peer::Entity(e) => self.entity(*e, &mut out),
            }
        }
        out
    }

    fn entity(&self, e: Entity, out: &mut PeerSet) {
        let reserved_named = |id| self.identities_where(move |l| has_reserved(l, id));
        match e {
            Entity::All => out.any = true,
            Entity::None => {}
            Entity::World => self.world(true, true, out),
            Entity::WorldIpv4 => self.world(true, false, out),
            Entity::WorldIpv6 => self.world(false, true, out),
            Entity::Cluster => {
                const CLUSTER_RESERVED: [NumericIdentity; 7] = [
                    reserved::HOST,
                    reserved::REMOTE_NODE,
                    reserved::KUBE_APISERVER,
                    reserved::INIT,
                    reserved::INGRESS,
                    reserved::HEALTH,
                    reserved::UNMANAGED,
                ];
                out.ids.extend(self.identities_where(|l| {
                    l.namespace().is_some()
                        || CLUSTER_RESERVED.iter().any(|id| has_reserved(l, *id))
                }));
            }
            Entity::Host => out.ids.extend(reserved_named(reserved::HOST)),
            Entity::RemoteNode => out.ids.extend(reserved_named(reserved::REMOTE_NODE)),
            Entity::KubeApiserver => out.ids.extend(reserved_named(reserved::KUBE_APISERVER)),
            Entity::Ingress => out.ids.extend(reserved_named(reserved::INGRESS)),
            Entity::Init => out.ids.extend(reserved_named(reserved::INIT)),
            Entity::Health => out.ids.extend(reserved_named(reserved::HEALTH)),
            Entity::Unmanaged => out.ids.extend(reserved_named(reserved::UNMANAGED)),
        }
    }
}

/// Collects every prefix named by the policies (CIDR peers and excepts),
/// taking one identity for each (a prefix without one is left out).
fn collect_cidrs(
    policies: &[Policy],
    cidr_ids: &mut dyn CidrIdentities,
) -> BTreeMap<IpNetwork, NumericIdentity> {
    let mut nets = BTreeSet::new();
    for p in policies {
        for rs in &p.rule_sets {
            for r in &rs.rules {
                for peer in &r.peers {
                    if let Peer::Cidr { cidr, except } = peer {
                        nets.insert(*cidr);
                        nets.extend(except.iter().copied());
                    }
                }
            }
        }
    }
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
                            peers.ids.iter().copied().collect()
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
    let resolver = Resolver {
        view,
        cidrs: &cidrs,
    };

    // Peer sets depend only on the rule, not on the endpoint: resolve once.
    let resolved: Vec<Vec<Vec<PeerSet>>> = policies
        .iter()
        .map(|p| {
            p.rule_sets
                .iter()
                .map(|rs| {
                    rs.rules
                        .iter()
                        .map(|r| resolver.resolve(&r.peers))
                        .collect()
                })
                .collect()
        })
        .collect();

    let empty = LabelSet::new();
    let mut endpoints = BTreeMap::new();
    for ep in view.endpoints.values() {
        let labels = view.labels_of(ep.identity).unwrap_or(&empty);
        let mut state = EndpointPolicy {
            identity: ep.identity,
            ..Default::default()
        };
        let mut entries = Vec::new();
        for (pi, policy) in policies.iter().enumerate() {
            for (si, rs) in policy.rule_sets.iter().enumerate() {
                if !rs.subject.matches(labels) {
                    continue;
                }
                for d in Direction::BOTH {
                    if rs.enforces(d) {
                        state.direction_mut(d).enforced = true;
                    }
                }
                for (ri, rule) in rs.rules.iter().enumerate() {
                    let provenance = Provenance {
                        policy: policy.id.clone(),
                        rule: rule.path.clone(),
                    };
                    rule_entries(
                        view,
                        ep,
                        rule,
                        &resolved[pi][si][ri],
                        &provenance,
                        &mut entries,
                    );
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
        endpoints.insert(ep.id, state);
    }
    Compiled { endpoints, cidrs }
}

#[cfg(test)]
mod tests;
