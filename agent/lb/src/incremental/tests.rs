use std::net::Ipv4Addr;

use super::*;
use crate::endpointslice::{Endpoint, EndpointConditions, EndpointPort};
use crate::{compile, Protocol};

fn node() -> NodeContext {
    NodeContext {
        name: "n1".into(),
        addresses: vec![Ipv4Addr::new(10, 77, 0, 11), Ipv4Addr::new(10, 77, 0, 12)],
        addresses_v6: Vec::new(),
    }
}

/// A random variant of service `a/s{i}`: few addresses and node ports, so
/// services contest frontends often.
fn random_service(rng: &mut fastrand::Rng, i: usize) -> Service {
    let kind = ["ClusterIP", "NodePort", "LoadBalancer"][rng.u64(..3) as usize];
    let cluster_ip = format!("10.96.0.{}", 1 + rng.u64(..3));
    let policy = ["Cluster", "Local"][rng.u64(..2) as usize];
    let node_port = |number: u64| match kind {
        "ClusterIP" => String::new(),
        _ => format!(", nodePort: {number}"),
    };
    let mut ports = format!(
        "  - {{name: http, port: 80, targetPort: 8080{}}}\n",
        node_port(30001 + rng.u64(..2))
    );
    if rng.u64(..100) < 40 {
        ports.push_str(&format!(
            "  - {{name: dns, port: 53, protocol: UDP{}}}\n",
            node_port(30053)
        ));
    }
    let affinity = if rng.u64(..100) < 30 {
        "ClientIP"
    } else {
        "None"
    };
    let external = if rng.u64(..100) < 30 {
        "  externalIPs: [203.0.113.7]\n"
    } else {
        ""
    };
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: a}}\nspec:\n  type: {kind}\n  clusterIP: {cluster_ip}\n  selector: {{app: x}}\n  sessionAffinity: {affinity}\n{external}  ports:\n{ports}"
    );
    if kind != "ClusterIP" {
        yaml.push_str(&format!("  externalTrafficPolicy: {policy}\n"));
    }
    if kind == "LoadBalancer" {
        yaml.push_str("status: {loadBalancer: {ingress: [{ip: 198.51.100.9}]}}\n");
    }
    Service::from_document(&serde_yaml_ng::from_str(&yaml).unwrap()).unwrap()
}

fn random_slice(rng: &mut fastrand::Rng, i: usize, part: usize) -> EndpointSlice {
    let endpoints = (0..rng.u64(..4))
        .map(|_| Endpoint {
            addresses: vec![Ipv4Addr::new(10, 200, 0, 1 + rng.u64(..5) as u8)],
            conditions: EndpointConditions {
                ready: Some(rng.u64(..100) < 70),
                serving: Some(rng.u64(..100) < 80),
                terminating: Some(rng.u64(..100) < 20),
            },
            node_name: Some(format!("n{}", 1 + rng.u64(..2))),
            target_ref: None,
        })
        .collect();
    EndpointSlice {
        namespace: "a".into(),
        name: format!("s{i}-{part}"),
        service_name: format!("s{i}"),
        labels: BTreeMap::new(),
        endpoints,
        ports: vec![
            EndpointPort {
                name: Some("http".into()),
                protocol: Protocol::Tcp,
                port: Some(8080),
            },
            EndpointPort {
                name: Some("dns".into()),
                protocol: Protocol::Udp,
                port: Some(53),
            },
        ],
    }
}

/// The frontend keys whose entry differs between two states.
fn differing(
    before: &BTreeMap<FrontendKey, Frontend>,
    after: &BTreeMap<FrontendKey, Frontend>,
) -> BTreeSet<FrontendKey> {
    before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(key) != after.get(key))
        .copied()
        .collect()
}

#[test]
fn any_sequence_of_updates_ends_where_a_fresh_compile_does() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_1234_abcd_0001);
    let mut compiler = LbCompiler::new(node(), LbOptions::default());
    let mut services: Vec<Option<Service>> = vec![None; 6];
    let mut slices: Vec<Vec<EndpointSlice>> = vec![Vec::new(); 6];
    for round in 0..400 {
        // Change one or two services or their slices a step at a time, as
        // a cluster does.
        for _ in 0..1 + rng.u64(..2) {
            let i = rng.u64(..6) as usize;
            match rng.u64(..4) {
                0 => services[i] = None,
                1 => services[i] = Some(random_service(&mut rng, i)),
                _ => {
                    slices[i] = (0..rng.u64(..3) as usize)
                        .map(|part| random_slice(&mut rng, i, part))
                        .collect()
                }
            }
        }
        let mut input: Vec<Service> = services.iter().flatten().cloned().collect();
        if round % 7 == 0 && !input.is_empty() {
            // Sometimes the same service twice, and in another order.
            let again = input[0].clone();
            input.push(again);
            input.reverse();
        }
        let all_slices: Vec<EndpointSlice> = slices.iter().flatten().cloned().collect();

        let before = compiler.frontends().clone();
        let changed = compiler.update(&input, &all_slices);
        let fresh = compile(&input, &all_slices, &node(), &LbOptions::default());
        assert_eq!(compiler.state(), fresh, "round {round}");
        assert_eq!(
            changed,
            differing(&before, compiler.frontends()),
            "round {round}: the reported changes are exactly the differences"
        );
    }
}

#[test]
fn an_unchanged_input_changes_nothing_and_one_more_service_only_its_frontends() {
    let mut rng = fastrand::Rng::with_seed(7);
    let services: Vec<Service> = (0..6).map(|i| random_service(&mut rng, i)).collect();
    let mut compiler = LbCompiler::new(node(), LbOptions::default());
    assert!(!compiler.update(&services, &[]).is_empty());
    assert!(compiler.update(&services, &[]).is_empty());

    let extra = Service::from_document(
        &serde_yaml_ng::from_str(
            "apiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: b}\nspec:\n  clusterIP: 10.96.9.9\n  ports: [{port: 443}]\n",
        )
        .unwrap(),
    )
    .unwrap();
    let mut more = services.clone();
    more.push(extra);
    let changed = compiler.update(&more, &[]);
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        vec![FrontendKey {
            address: Ipv4Addr::new(10, 96, 9, 9),
            port: 443,
            protocol: Protocol::Tcp,
            scope: Scope::Internal,
        }]
    );
    assert_eq!(compiler.services(), 7);
}

#[test]
fn a_frontend_moves_to_the_next_claimant_when_its_holder_goes() {
    let yaml = |name: &str, port: u16| {
        Service::from_document(
            &serde_yaml_ng::from_str(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: a}}\nspec:\n  clusterIP: 10.96.0.1\n  ports: [{{port: 80, targetPort: {port}}}]\n"
            ))
            .unwrap(),
        )
        .unwrap()
    };
    let (first, second) = (yaml("first", 1), yaml("second", 2));
    let mut compiler = LbCompiler::new(node(), LbOptions::default());
    compiler.update([&first, &second], []);
    let holder = |c: &LbCompiler| c.frontends().values().next().unwrap().service.name.clone();
    assert_eq!(holder(&compiler), "first");
    assert_eq!(compiler.problems().len(), 1);
    assert!(compiler.problems()[0]
        .message
        .contains("is already a/first's ClusterIp frontend"));

    let changed = compiler.update([&second], []);
    assert_eq!(changed.len(), 1);
    assert_eq!(holder(&compiler), "second");
    assert!(compiler.problems().is_empty());
}
