use super::*;
use crate::document::parse_policies;
use crate::identity::{Identity, NamedPorts};
use crate::labels::{pod_security_labels, LabelFilter};
use crate::local_identities::LocalIdentities;
use crate::trace::Reason;

// Pods: x/a (2001), x/b (2002), y/a (2003). Endpoints 1, 2, 3.
fn view() -> ClusterView {
    let mut v = ClusterView::new();
    for (i, (ns, pod)) in [("x", "a"), ("x", "b"), ("y", "a")].iter().enumerate() {
        let id = 2001 + i as u32;
        let mut np = NamedPorts::new();
        // Only x/b's pods name a port "web" (8080); x/a's own container names "web" 9090.
        if *pod == "b" {
            np.entry("web".into())
                .or_default()
                .insert((Protocol::Tcp, 8080));
        }
        v.add_identity(Identity {
            id,
            labels: pod_security_labels(
                ns,
                [("ns", *ns)],
                [("pod", *pod)],
                &LabelFilter::default(),
            ),
            named_ports: np.clone(),
        });
        let mut own = np;
        if *ns == "x" && *pod == "a" {
            own.entry("web".into())
                .or_default()
                .insert((Protocol::Tcp, 9090));
        }
        v.add_endpoint(Endpoint {
            id: i as u32 + 1,
            identity: id,
            named_ports: own,
        });
    }
    v
}

fn run(yaml: &str) -> Compiled {
    run_with(yaml, CompileOptions::default())
}

fn run_with(yaml: &str, options: CompileOptions) -> Compiled {
    let policies: Vec<Policy> = parse_policies(yaml)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    compile_with(&view(), &policies, &mut LocalIdentities::default(), options)
}

fn v(c: &Compiled, ep: u32, d: Direction, peer: u32, proto: Protocol, port: u16) -> Verdict {
    c.endpoints[&ep].verdict(d, peer, proto, port).verdict
}

const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";
const WNP: &str = "apiVersion: weir.io/v1\nkind: WeirNetworkPolicy\n";
const CCNP: &str = "apiVersion: weir.io/v1\nkind: WeirClusterwideNetworkPolicy\n";

#[test]
fn ingress_empty_rule_allows_everything_and_empty_list_nothing() {
    let c = run(&format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress: [{{}}]\n"
    ));
    for peer in [reserved::WORLD, 2003, 0x0100_0005] {
        assert_eq!(
            v(&c, 1, Direction::Ingress, peer, Protocol::Udp, 9),
            Verdict::Allow
        );
    }
    let entries = &c.endpoints[&1].ingress.entries;
    assert!(entries
        .iter()
        .any(|e| e.key.peer == PeerKey::Any && e.key.protocol.is_none()));

    let c = run(&format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress: []\n"
    ));
    assert!(c.endpoints[&1].ingress.enforced);
    assert_eq!(
        v(&c, 1, Direction::Ingress, 2002, Protocol::Tcp, 80),
        Verdict::Deny
    );
    assert_eq!(
        v(
            &c,
            1,
            Direction::Ingress,
            reserved::WORLD,
            Protocol::Tcp,
            80
        ),
        Verdict::Deny
    );
    // Egress stays allow-all: no policy selects that direction.
    assert!(!c.endpoints[&1].egress.enforced);
    assert!(c.endpoints[&1].egress.entries.is_empty());
    assert_eq!(
        v(&c, 1, Direction::Egress, reserved::WORLD, Protocol::Tcp, 80),
        Verdict::Allow
    );
    // y/a is not selected by a policy of namespace x.
    assert!(!c.endpoints[&3].ingress.enforced);
}

#[test]
fn unknown_endpoint_identity_is_not_selected() {
    let mut view = view();
    view.add_endpoint(Endpoint {
        id: 9,
        identity: 77777,
        named_ports: NamedPorts::new(),
    });
    let policies: Vec<Policy> = parse_policies(&format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec: {{podSelector: {{}}}}\n"
    ))
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    let c = compile(&view, &policies, &mut LocalIdentities::default());
    assert!(!c.endpoints[&9].ingress.enforced);
}

#[test]
fn weir_deny_alone_enforces_the_direction() {
    let c = run(&format!(
        "{WNP}metadata: {{name: d, namespace: x}}\nspec:\n  endpointSelector: {{matchLabels: {{pod: a}}}}\n  ingressDeny: [{{fromEndpoints: [{{matchLabels: {{pod: b}}}}]}}]\n"
    ));
    let d = c.endpoints[&1].verdict(Direction::Ingress, 2002, Protocol::Tcp, 80);
    assert_eq!(d.reason, Reason::Denied);
    assert_eq!(
        d.matched[0].to_string(),
        "WeirNetworkPolicy x/d (spec.ingressDeny[0])"
    );
    let d = c.endpoints[&1].verdict(Direction::Ingress, 2003, Protocol::Tcp, 80);
    assert_eq!(d.reason, Reason::DefaultDeny);
}

#[test]
fn named_ports_resolve_per_destination() {
    // Ingress: against the endpoint's own ports (x/a: web=9090; x/b: web=8080).
    let c = run(&format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: web}}]}}]\n"
    ));
    assert_eq!(
        v(&c, 1, Direction::Ingress, 2003, Protocol::Tcp, 9090),
        Verdict::Allow
    );
    assert_eq!(
        v(&c, 1, Direction::Ingress, 2003, Protocol::Tcp, 8080),
        Verdict::Deny
    );
    assert_eq!(
        v(&c, 2, Direction::Ingress, 2003, Protocol::Tcp, 8080),
        Verdict::Allow
    );
    assert_eq!(
        v(&c, 2, Direction::Ingress, 2003, Protocol::Tcp, 9090),
        Verdict::Deny
    );

    // Egress: against each peer identity's ports (identity 2002 names web=8080).
    let c = run(&format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress: [{{ports: [{{port: web}}]}}]\n"
    ));
    assert_eq!(
        v(&c, 1, Direction::Egress, 2002, Protocol::Tcp, 8080),
        Verdict::Allow
    );
    assert_eq!(
        v(&c, 1, Direction::Egress, 2003, Protocol::Tcp, 8080),
        Verdict::Deny
    );
    assert_eq!(
        v(&c, 1, Direction::Egress, 2001, Protocol::Tcp, 9090),
        Verdict::Deny
    );
    let peers: Vec<PeerKey> = c.endpoints[&1]
        .egress
        .entries
        .iter()
        .map(|e| e.key.peer)
        .collect();
    assert_eq!(peers, vec![PeerKey::Identity(2002)]);
}

#[test]
fn named_port_protocol_must_match() {
    let c = run(&format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: web, protocol: UDP}}]}}]\n"
    ));
    assert!(c.endpoints[&1]
        .ingress
        .entries
        .iter()
        .all(|e| e.provenance.policy.kind == PolicyKind::Implicit));
}

#[test]
fn any_protocol_with_port_expands() {
    let c = run(&format!(
        "{WNP}metadata: {{name: p, namespace: x}}\nspec:\n  endpointSelector: {{}}\n  ingress: [{{toPorts: [{{ports: [{{port: \"53\"}}]}}]}}]\n"
    ));
    let protos: Vec<Option<Protocol>> = c.endpoints[&1]
        .ingress
        .entries
        .iter()
        .filter(|e| e.provenance.policy.kind != PolicyKind::Implicit)
        .map(|e| e.key.protocol)
        .collect();
    assert_eq!(
        protos,
        vec![
            Some(Protocol::Tcp),
            Some(Protocol::Udp),
            Some(Protocol::Sctp)
        ]
    );
    assert_eq!(
        v(
            &c,
            1,
            Direction::Ingress,
            reserved::WORLD,
            Protocol::Sctp,
            53
        ),
        Verdict::Allow
    );
}

#[test]
fn cidr_peers_cover_nested_prefixes_but_not_excepts() {
    let yaml = format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]\n---\n{WNP}metadata: {{name: q, namespace: y}}\nspec:\n  endpointSelector: {{}}\n  egress: [{{toCIDR: [10.1.2.0/24, 10.2.0.0/16, 0.0.0.0/0]}}]\n"
    );
    let c = run(&yaml);
    let id = |s: &str| c.cidrs[&s.parse::<IpNetwork>().unwrap()];
    assert_eq!(c.cidrs.len(), 5, "{:?}", c.cidrs);
    let egress = |peer| v(&c, 1, Direction::Egress, peer, Protocol::Tcp, 443);
    assert_eq!(egress(id("10.0.0.0/8")), Verdict::Allow);
    assert_eq!(egress(id("10.2.0.0/16")), Verdict::Allow);
    assert_eq!(egress(id("10.1.0.0/16")), Verdict::Deny);
    assert_eq!(egress(id("10.1.2.0/24")), Verdict::Deny);
    assert_eq!(egress(id("0.0.0.0/0")), Verdict::Deny);
    assert_eq!(egress(reserved::WORLD), Verdict::Deny);
    assert_eq!(egress(2002), Verdict::Deny, "CIDR peers never select pods");
    // y/a's /0 covers world and every IPv4 CIDR identity.
    let egress_y = |peer| v(&c, 3, Direction::Egress, peer, Protocol::Tcp, 443);
    assert_eq!(egress_y(reserved::WORLD), Verdict::Allow);
    assert_eq!(egress_y(reserved::WORLD_IPV4), Verdict::Allow);
    assert_eq!(egress_y(reserved::WORLD_IPV6), Verdict::Deny);
    assert_eq!(egress_y(id("10.1.0.0/16")), Verdict::Allow);
}

fn cidr_policy(cidrs: &str) -> Vec<Policy> {
    let yaml = format!(
        "{WNP}metadata: {{name: q, namespace: y}}\nspec:\n  endpointSelector: {{}}\n  egress: [{{toCIDR: [{cidrs}]}}]\n"
    );
    parse_policies(&yaml)
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_cidr_no_policy_names_any_more_frees_its_id() {
    let net = |s: &str| s.parse::<IpNetwork>().unwrap();
    let mut ids = LocalIdentities::default();
    let before = compile(&view(), &cidr_policy("10.0.0.0/8, 192.0.2.0/24"), &mut ids);
    let kept = before.cidrs[&net("192.0.2.0/24")];
    let dropped = before.cidrs[&net("10.0.0.0/8")];
    // The next state is compiled before the previous one lets go (as the
    // agent does), so a CIDR both name keeps its id.
    let after = compile(&view(), &cidr_policy("192.0.2.0/24"), &mut ids);
    ids.release_all(before.cidrs.keys().copied());
    assert_eq!(after.cidrs[&net("192.0.2.0/24")], kept);
    assert_eq!(ids.get(net("10.0.0.0/8")), None, "10.0.0.0/8 is freed");
    assert_eq!(ids.lookup(dropped), None);
    assert_eq!(ids.len(), 1);
    // Once nothing is in force, nothing is held.
    let none = compile(&view(), &[], &mut ids);
    ids.release_all(after.cidrs.keys().copied());
    assert!(none.cidrs.is_empty());
    assert!(ids.is_empty());
}

#[test]
fn a_cidr_without_a_free_identity_gets_no_entries() {
    let net = |s: &str| s.parse::<IpNetwork>().unwrap();
    let min = reserved::LOCAL_MIN;
    let mut ids = LocalIdentities::with_range(min, min);
    let c = compile(&view(), &cidr_policy("10.0.0.0/8, 192.0.2.0/24"), &mut ids);
    assert_eq!(c.cidrs.len(), 1, "{:?}", c.cidrs);
    assert_eq!(c.cidrs[&net("10.0.0.0/8")], min);
    let egress = |peer| v(&c, 3, Direction::Egress, peer, Protocol::Tcp, 443);
    assert_eq!(egress(min), Verdict::Allow);
    assert_eq!(egress(reserved::WORLD), Verdict::Deny);
}

#[test]
fn entities_resolve_to_reserved_and_pod_identities() {
    let yaml = format!(
        "{CCNP}metadata: {{name: e}}\nspecs:\n- endpointSelector: {{matchLabels: {{pod: a, \"k8s:io.kubernetes.pod.namespace\": x}}}}\n  egress: [{{toEntities: [cluster]}}, {{toCIDR: [192.0.2.0/24]}}]\n- endpointSelector: {{matchLabels: {{pod: b}}}}\n  egress: [{{toEntities: [world, remote-node]}}]\n- endpointSelector: {{matchLabels: {{\"io.cilium.k8s.namespace.labels.ns\": y}}}}\n  egress: [{{toEntities: [all]}}]\n"
    );
    let c = run(&yaml);
    assert!(c.endpoints[&1].egress.enforced && c.endpoints[&2].egress.enforced);
    assert!(c.endpoints[&3].egress.enforced);
    let cidr = c.cidrs[&"192.0.2.0/24".parse::<IpNetwork>().unwrap()];
    let e = |ep, peer| v(&c, ep, Direction::Egress, peer, Protocol::Tcp, 1);
    // cluster: pods and in-cluster reserved identities, not world.
    for peer in [
        2001,
        2003,
        reserved::HOST,
        reserved::REMOTE_NODE,
        reserved::KUBE_APISERVER,
        reserved::HEALTH,
        reserved::INIT,
    ] {
        assert_eq!(e(1, peer), Verdict::Allow, "cluster should include {peer}");
    }
    assert_eq!(e(1, reserved::WORLD), Verdict::Deny);
    // world: world identities and CIDR identities; remote-node includes 7.
    assert_eq!(e(2, reserved::WORLD), Verdict::Allow);
    assert_eq!(e(2, cidr), Verdict::Allow);
    assert_eq!(e(2, reserved::KUBE_APISERVER), Verdict::Allow);
    assert_eq!(e(2, reserved::HOST), Verdict::Deny);
    assert_eq!(e(2, 2003), Verdict::Deny);
    // all: the wildcard.
    assert!(c.endpoints[&3]
        .egress
        .entries
        .iter()
        .any(|en| en.key.peer == PeerKey::Any));
}

#[test]
fn clusterwide_wildcard_peer_means_pods_only() {
    let c = run(&format!(
        "{CCNP}metadata: {{name: e}}\nspec:\n  endpointSelector: {{}}\n  ingress: [{{fromEndpoints: [{{}}]}}]\n"
    ));
    let i = |peer| v(&c, 1, Direction::Ingress, peer, Protocol::Tcp, 1);
    assert_eq!(i(2003), Verdict::Allow);
    assert_eq!(i(reserved::WORLD), Verdict::Deny);
    assert_eq!(i(reserved::REMOTE_NODE), Verdict::Deny);
}

#[test]
fn allow_localhost_is_implicit_and_deny_still_wins() {
    let deny_all =
        format!("{NP}metadata: {{name: p, namespace: x}}\nspec: {{podSelector: {{}}}}\n");
    let c = run(&deny_all);
    let d = c.endpoints[&1].verdict(Direction::Ingress, reserved::HOST, Protocol::Tcp, 8080);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        d.matched[0].to_string(),
        "Implicit allow-localhost (allow-localhost)"
    );
    // Only where the direction is enforced.
    assert!(c.endpoints[&3].ingress.entries.is_empty());

    let c = run_with(
        &deny_all,
        CompileOptions {
            allow_localhost_ingress: false,
        },
    );
    assert_eq!(
        v(
            &c,
            1,
            Direction::Ingress,
            reserved::HOST,
            Protocol::Tcp,
            8080
        ),
        Verdict::Deny
    );

    let c = run(&format!(
        "{deny_all}---\n{WNP}metadata: {{name: no-host, namespace: x}}\nspec:\n  endpointSelector: {{}}\n  ingressDeny: [{{fromEntities: [host]}}]\n"
    ));
    assert_eq!(
        v(
            &c,
            1,
            Direction::Ingress,
            reserved::HOST,
            Protocol::Tcp,
            8080
        ),
        Verdict::Deny
    );
}

#[test]
fn compile_is_deterministic() {
    let yaml = format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress: [{{from: [{{namespaceSelector: {{}}}}], ports: [{{port: 80}}, {{port: 81, protocol: UDP}}]}}]\n"
    );
    assert_eq!(run(&yaml), run(&yaml));
}

#[test]
fn ip_blocks_of_network_policies_cover_address_identities_and_weir_cidrs_do_not() {
    // x/a's NetworkPolicy: egress to 0.0.0.0/0 except 10.244.2.3/32, and to
    // 10.244.1.5/32; y/a's WeirNetworkPolicy: toCIDR 10.244.0.0/16 (outside
    // the cluster only).
    let yaml = format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [10.244.2.3/32]}}}}]\n  - to: [{{ipBlock: {{cidr: 10.244.1.5/32}}}}]\n---\n{WNP}metadata: {{name: q, namespace: y}}\nspec:\n  endpointSelector: {{}}\n  egress: [{{toCIDR: [10.244.0.0/16]}}]\n"
    );
    let c = run(&yaml);
    let net = |s: &str| s.parse::<IpNetwork>().unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // Only the NetworkPolicy's prefixes have address identities, each the
    // address identity of the prefix's CIDR identity.
    assert_eq!(
        c.addresses.keys().copied().collect::<Vec<_>>(),
        [net("0.0.0.0/0"), net("10.244.1.5/32"), net("10.244.2.3/32")]
    );
    for (prefix, id) in &c.addresses {
        assert_eq!(*id, reserved::address_identity(c.cidrs[prefix]));
        assert!(reserved::is_address(*id));
    }
    // A cluster address gets the most specific prefix containing it.
    let address_of = |s: &str| c.address_identity_of(ip(s)).unwrap();
    assert_eq!(address_of("10.244.1.5"), c.addresses[&net("10.244.1.5/32")]);
    assert_eq!(address_of("10.244.2.3"), c.addresses[&net("10.244.2.3/32")]);
    assert_eq!(address_of("10.244.2.4"), c.addresses[&net("0.0.0.0/0")]);
    assert_eq!(c.address_identity_of(ip("fd00::1")), None);
    let egress = |peer| v(&c, 1, Direction::Egress, peer, Protocol::Udp, 53);
    assert_eq!(egress(address_of("10.244.2.4")), Verdict::Allow);
    assert_eq!(egress(address_of("10.244.1.5")), Verdict::Allow);
    assert_eq!(egress(address_of("10.244.2.3")), Verdict::Deny, "excepted");
    assert_eq!(
        egress(2003),
        Verdict::Deny,
        "the pod's own identity is not a CIDR"
    );
    // The Weir policy's toCIDR matches its CIDR identity (outside
    // addresses) and no address identity.
    let egress_y = |peer| v(&c, 3, Direction::Egress, peer, Protocol::Tcp, 80);
    assert_eq!(egress_y(c.cidrs[&net("10.244.0.0/16")]), Verdict::Allow);
    for id in c.addresses.values() {
        assert_eq!(egress_y(*id), Verdict::Deny);
    }
}

#[test]
fn most_specific_picks_the_longest_prefix_of_the_family() {
    let prefixes: BTreeMap<IpNetwork, NumericIdentity> = [
        ("10.0.0.0/8", 1),
        ("10.1.0.0/16", 2),
        ("10.1.2.3/32", 3),
        ("::/0", 4),
        ("fd00:1::/64", 5),
    ]
    .into_iter()
    .map(|(n, id)| (n.parse().unwrap(), id))
    .collect();
    let at = |s: &str| most_specific(&prefixes, s.parse().unwrap()).map(|(_, id)| id);
    assert_eq!(at("10.1.2.3"), Some(3));
    assert_eq!(at("10.1.2.4"), Some(2));
    assert_eq!(at("10.2.0.1"), Some(1));
    assert_eq!(at("192.0.2.1"), None);
    assert_eq!(at("fd00:1::9"), Some(5));
    assert_eq!(at("fd00:2::9"), Some(4));
}

#[test]
fn traces_match_pod_addresses_and_name_the_ip_blocks_and_excepts() {
    use crate::trace::{trace_flow_at, FlowSide};
    let yaml = format!(
        "{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [10.244.2.3/32]}}}}]\n  - to: [{{ipBlock: {{cidr: 10.244.1.5/32}}}}]\n    ports: [{{port: 80}}]\n"
    );
    let policies: Vec<Policy> = parse_policies(&yaml)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let c = compile(&view(), &policies, &mut LocalIdentities::default());
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let trace = |dst: Option<IpAddr>, port| {
        trace_flow_at(
            &c,
            &policies,
            (FlowSide::Endpoint(1), ip("10.244.9.1")),
            (FlowSide::Endpoint(3), dst),
            Protocol::Tcp,
            port,
        )
        .unwrap()
    };
    // y/a at 10.244.1.5: both blocks cover it, on 80 both rules allow.
    let t = trace(ip("10.244.1.5"), 80);
    assert_eq!(t.verdict(), Verdict::Allow);
    let text = t.to_string();
    assert!(
        text.contains(
            "allowed by NetworkPolicy x/p (spec.egress[0]), NetworkPolicy x/p (spec.egress[1])"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  ipBlock 0.0.0.0/0 of NetworkPolicy x/p (spec.egress[0]) covers 10.244.1.5"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  ipBlock 10.244.1.5/32 of NetworkPolicy x/p (spec.egress[1]) covers 10.244.1.5"
        ),
        "{text}"
    );
    // y/a at the excepted address: default deny, and the except is named.
    let t = trace(ip("10.244.2.3"), 443);
    assert_eq!(t.verdict(), Verdict::Deny);
    let text = t.to_string();
    assert!(text.contains("default deny"), "{text}");
    assert!(
        text.contains("ipBlock 0.0.0.0/0 of NetworkPolicy x/p (spec.egress[0]) contains 10.244.2.3 but its except 10.244.2.3/32 leaves it out"),
        "{text}"
    );
    // Without its address a pod is matched by identity only.
    assert_eq!(trace(None, 80).verdict(), Verdict::Deny);
}
