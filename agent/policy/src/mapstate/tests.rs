use super::*;
use crate::rule::PolicyKind;

fn prov(name: &str, rule: &str) -> Provenance {
    Provenance {
        policy: PolicyId {
            kind: PolicyKind::WeirNetworkPolicy,
            namespace: Some("x".into()),
            name: name.into(),
        },
        rule: rule.into(),
    }
}

fn entry(
    peer: PeerKey,
    protocol: impl Into<Option<Protocol>>,
    ports: Ports,
    verdict: Verdict,
    name: &str,
) -> Entry {
    Entry {
        key: EntryKey {
            peer,
            protocol: protocol.into(),
            ports,
        },
        verdict,
        provenance: prov(name, "spec.ingress[0]"),
    }
}

#[test]
fn not_enforced_allows() {
    let d = DirectionPolicy::default();
    let v = d.verdict(5000, Protocol::Tcp, 80);
    assert_eq!(v.verdict, Verdict::Allow);
    assert_eq!(v.reason, Reason::NotEnforced);
    assert_eq!(v.to_string(), "allowed: no policy selects this direction");
}

#[test]
fn enforced_without_entries_denies_by_default() {
    let d = DirectionPolicy {
        enforced: true,
        entries: BTreeSet::new(),
    };
    let v = d.verdict(5000, Protocol::Tcp, 80);
    assert_eq!((v.verdict, v.reason), (Verdict::Deny, Reason::DefaultDeny));
    assert_eq!(v.to_string(), "denied: default deny, no rule allows");
}

#[test]
fn deny_beats_allow_regardless_of_specificity() {
    let entries: BTreeSet<Entry> = [
        entry(
            PeerKey::Identity(5000),
            Protocol::Tcp,
            Ports::Range(80, 80),
            Verdict::Allow,
            "exact-allow",
        ),
        entry(PeerKey::Any, None, Ports::Any, Verdict::Allow, "allow-all"),
        entry(
            PeerKey::Any,
            Protocol::Tcp,
            Ports::Range(80, 90),
            Verdict::Deny,
            "deny-range",
        ),
    ]
    .into_iter()
    .collect();
    let d = DirectionPolicy {
        enforced: true,
        entries,
    };
    let v = d.verdict(5000, Protocol::Tcp, 80);
    assert_eq!((v.verdict, v.reason), (Verdict::Deny, Reason::Denied));
    assert_eq!(v.matched, vec![prov("deny-range", "spec.ingress[0]")]);
    assert_eq!(
        v.to_string(),
        "denied by WeirNetworkPolicy x/deny-range (spec.ingress[0])"
    );

    let v = d.verdict(5000, Protocol::Tcp, 91);
    assert_eq!((v.verdict, v.reason), (Verdict::Allow, Reason::Allowed));
    assert_eq!(v.matched, vec![prov("allow-all", "spec.ingress[0]")]);
    let v = d.verdict(5000, Protocol::Udp, 80);
    assert_eq!(v.verdict, Verdict::Allow);
}

#[test]
fn matching_is_by_peer_protocol_and_port() {
    let entries: BTreeSet<Entry> = [entry(
        PeerKey::Identity(7),
        Protocol::Udp,
        Ports::Range(53, 53),
        Verdict::Allow,
        "dns",
    )]
    .into_iter()
    .collect();
    let d = DirectionPolicy {
        enforced: true,
        entries,
    };
    assert_eq!(d.verdict(7, Protocol::Udp, 53).verdict, Verdict::Allow);
    assert_eq!(d.verdict(8, Protocol::Udp, 53).verdict, Verdict::Deny);
    assert_eq!(d.verdict(7, Protocol::Tcp, 53).verdict, Verdict::Deny);
    assert_eq!(d.verdict(7, Protocol::Udp, 54).verdict, Verdict::Deny);
}

#[test]
fn effective_collapses_provenance_with_deny_winning() {
    let key = EntryKey {
        peer: PeerKey::Identity(1),
        protocol: Some(Protocol::Tcp),
        ports: Ports::Range(80, 80),
    };
    let entries: BTreeSet<Entry> = [
        Entry {
            key,
            verdict: Verdict::Allow,
            provenance: prov("a", "r"),
        },
        Entry {
            key,
            verdict: Verdict::Deny,
            provenance: prov("b", "r"),
        },
        Entry {
            key,
            verdict: Verdict::Allow,
            provenance: prov("c", "r"),
        },
    ]
    .into_iter()
    .collect();
    let d = DirectionPolicy {
        enforced: true,
        entries,
    };
    let eff = d.effective();
    assert_eq!(eff.len(), 1);
    assert_eq!(eff[&key], Verdict::Deny);
}

#[test]
fn peer_key_identity_zero_is_any() {
    assert_eq!(PeerKey::Any.identity(), 0);
    assert_eq!(PeerKey::Identity(9).identity(), 9);
    assert!(PeerKey::Any.covers(12345));
    assert_eq!(Ports::Range(80, 90).to_string(), "80-90");
    assert_eq!(Ports::Range(80, 80).to_string(), "80");
}
