use std::net::Ipv4Addr;

use weir_observer::proto::flow::{agent_event::Notification, AgentEventType};
use weir_observer::AgentEventQuery;

use super::*;
use crate::endpoint::ipam::AttachmentKey;

fn endpoint(id: u16, pod: &str, last_octet: u8) -> Endpoint {
    Endpoint {
        id,
        attachment: AttachmentKey {
            container_id: pod.into(),
            ifname: "eth0".into(),
        },
        pod: NamespacedName::new("x", pod),
        netns: String::new(),
        host_ifname: format!("lxc{pod}"),
        host_ifindex: 7,
        ipv4: Ipv4Addr::new(10, 244, 1, last_octet),
        ipv6: None,
        mac: String::new(),
        netns_cookie: 0,
        port_mappings: Vec::new(),
    }
}

fn policy(kind: &str, namespace: Option<&str>, name: &str, yaml: &str) -> PolicyDocument {
    PolicyDocument {
        api_version: "v1".into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
        document: serde_yaml_ng::from_str(yaml).unwrap(),
    }
}

/// Every event in the ring, as (type, notification).
fn drain(ring: &AgentEventRing) -> Vec<(AgentEventType, Notification)> {
    ring.query(AgentEventQuery::default())
        .0
        .iter()
        .map(|r| {
            let e = r.agent_event.clone().unwrap();
            (
                AgentEventType::try_from(e.r#type).unwrap(),
                e.notification.unwrap(),
            )
        })
        .collect()
}

#[test]
fn policy_labels_are_ciliums() {
    let p = policy(
        "NetworkPolicy",
        Some("x"),
        "allow-a",
        "metadata: {uid: 1234-abcd}",
    );
    assert_eq!(
        policy_labels(&p),
        [
            "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
            "k8s:io.cilium.k8s.policy.name=allow-a",
            "k8s:io.cilium.k8s.policy.namespace=x",
            "k8s:io.cilium.k8s.policy.uid=1234-abcd",
        ]
    );
    let c = policy("WeirClusterwideNetworkPolicy", None, "c", "specs: [{}, {}]");
    assert_eq!(
        policy_labels(&c),
        [
            "k8s:io.cilium.k8s.policy.derived-from=WeirClusterwideNetworkPolicy",
            "k8s:io.cilium.k8s.policy.name=c",
        ]
    );
    assert_eq!(policy_rules(&c), 2);
    assert_eq!(policy_rules(&p), 1);
}

#[test]
fn policy_changes_are_announced_once_with_a_moving_revision() {
    let ring = Arc::new(AgentEventRing::new(100, "n1"));
    let mut events = AgentEvents::new(ring.clone(), &[]);
    let a = policy("NetworkPolicy", Some("x"), "a", "spec: {}");
    let b = policy("NetworkPolicy", Some("x"), "b", "spec: {}");
    let b2 = policy("NetworkPolicy", Some("x"), "b", "spec: {podSelector: {}}");
    let map = |ps: &[&PolicyDocument]| -> BTreeMap<String, PolicyDocument> {
        ps.iter().map(|p| (p.key(), (*p).clone())).collect()
    };
    events.policies(&BTreeMap::new(), &map(&[&a, &b]));
    // Unchanged: nothing.
    events.policies(&map(&[&a, &b]), &map(&[&a, &b]));
    // b changed, a deleted.
    events.policies(&map(&[&a, &b]), &map(&[&b2]));
    let got: Vec<(AgentEventType, u64, String)> = drain(&ring)
        .into_iter()
        .map(|(t, n)| match n {
            Notification::PolicyUpdate(u) => (t, u.revision, u.labels[1].clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let name = |n: &str| format!("k8s:io.cilium.k8s.policy.name={n}");
    assert_eq!(
        got,
        [
            (AgentEventType::PolicyUpdated, 1, name("a")),
            (AgentEventType::PolicyUpdated, 2, name("b")),
            (AgentEventType::PolicyUpdated, 3, name("b")),
            (AgentEventType::PolicyDeleted, 4, name("a")),
        ]
    );
    assert_eq!(events.revision(), 4);
}

#[test]
fn endpoints_created_and_deleted_with_pod_and_identity_labels() {
    let ring = Arc::new(AgentEventRing::new(100, "n1"));
    // Restored endpoint 1 is not announced as created.
    let restored = endpoint(1, "old", 2);
    let mut events = AgentEvents::new(ring.clone(), std::slice::from_ref(&restored));
    let new = endpoint(2, "a", 3);
    let labels = LabelSet::from_k8s([("app", "web")]).with("k8s:io.kubernetes.pod.namespace", "x");
    let labels_of = |e: &Endpoint| (e.id == 2).then(|| labels.clone());
    events.endpoints(&[restored.clone(), new.clone()], labels_of);
    events.endpoints(&[restored.clone(), new.clone()], labels_of);
    events.endpoints(std::slice::from_ref(&new), labels_of);
    events.endpoints(&[], labels_of);
    let got: Vec<(AgentEventType, u64, String, Vec<String>)> = drain(&ring)
        .into_iter()
        .map(|(t, n)| match n {
            Notification::EndpointUpdate(u) => {
                (t, u.id, format!("{}/{}", u.namespace, u.pod_name), u.labels)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let web = vec![
        "k8s:app=web".to_string(),
        "k8s:io.kubernetes.pod.namespace=x".to_string(),
    ];
    assert_eq!(
        got,
        [
            (
                AgentEventType::EndpointCreated,
                2,
                "x/a".into(),
                web.clone()
            ),
            (AgentEventType::EndpointDeleted, 1, "x/old".into(), vec![]),
            (AgentEventType::EndpointDeleted, 2, "x/a".into(), web),
        ]
    );
}

#[test]
fn regeneration_success_and_failure() {
    let ring = Arc::new(AgentEventRing::new(100, "n1"));
    let events = AgentEvents::new(ring.clone(), &[]);
    let eps = [endpoint(1, "a", 2), endpoint(2, "b", 3)];
    let ids: BTreeSet<u16> = [2].into();
    events.regenerated(&ids, &eps, |_| None, None);
    events.regenerated(&ids, &eps, |_| None, Some("map weir_policy is full"));
    let got: Vec<(AgentEventType, u64, String)> = drain(&ring)
        .into_iter()
        .map(|(t, n)| match n {
            Notification::EndpointRegenerate(r) => (t, r.id, r.error),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (AgentEventType::EndpointRegenerateSuccess, 2, String::new()),
            (
                AgentEventType::EndpointRegenerateFailure,
                2,
                "map weir_policy is full".into()
            ),
        ]
    );
}

#[test]
fn ipcache_writes_carry_old_identity_host_and_local_pod() {
    let ring = Arc::new(AgentEventRing::new(100, "n1"));
    let events = AgentEvents::new(ring.clone(), &[]);
    let value = |identity, node: [u8; 4]| IpcacheValue {
        identity,
        node_ipv4: node,
        address_identity: 0,
    };
    let eps = [endpoint(1, "a", 2)];
    events.ipcache(
        &[
            IpcacheWrite {
                prefix: "10.244.1.2/32".parse().unwrap(),
                old: Some(value(300, [0; 4])),
                new: Some(value(301, [0; 4])),
            },
            IpcacheWrite {
                prefix: "10.244.2.9/32".parse().unwrap(),
                old: None,
                new: Some(value(400, [10, 77, 0, 12])),
            },
            IpcacheWrite {
                prefix: "192.0.2.0/24".parse().unwrap(),
                old: Some(value(16777217, [0; 4])),
                new: None,
            },
        ],
        &eps,
    );
    let got: Vec<_> = drain(&ring)
        .into_iter()
        .map(|(t, n)| match n {
            Notification::IpcacheUpdate(u) => (t, u),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got[0].0, AgentEventType::IpcacheUpserted);
    assert_eq!(got[0].1.cidr, "10.244.1.2/32");
    assert_eq!((got[0].1.identity, got[0].1.old_identity), (301, Some(300)));
    assert_eq!(
        (got[0].1.namespace.as_str(), got[0].1.pod_name.as_str()),
        ("x", "a")
    );
    assert_eq!(got[1].1.host_ip, "10.77.0.12");
    assert_eq!(got[1].1.old_identity, None);
    assert_eq!(got[1].1.pod_name, "");
    assert_eq!(got[2].0, AgentEventType::IpcacheDeleted);
    assert_eq!(got[2].1.identity, 16777217);
}

#[test]
fn service_upserts_in_ciliums_words() {
    use weir_lb::{Algorithm, Backend, BackendState, FrontendKind, Protocol, Scope};
    let frontend = weir_lb::Frontend {
        service: NamespacedName::new("x", "web"),
        port_name: None,
        address: Ipv4Addr::new(10, 96, 0, 10),
        port: 80,
        protocol: Protocol::Tcp,
        kind: FrontendKind::ClusterIp,
        scope: Scope::Internal,
        backends: vec![
            Backend {
                address: Ipv4Addr::new(10, 244, 1, 2),
                port: 8080,
                state: BackendState::Active,
                node: None,
                pod: None,
            },
            Backend {
                address: Ipv4Addr::new(10, 244, 1, 3),
                port: 8080,
                state: BackendState::Terminating,
                node: None,
                pod: None,
            },
        ],
        algorithm: Algorithm::Random,
        affinity_timeout: None,
    };
    let s = service_upsert(7, &frontend, None);
    assert_eq!(s.id, 7);
    assert_eq!(s.kind, "ClusterIP");
    assert_eq!(s.frontend, ("10.96.0.10".to_string(), 80));
    assert_eq!(s.backends, [("10.244.1.2".to_string(), 8080)]);
    assert_eq!((s.namespace.as_str(), s.name.as_str()), ("x", "web"));
}
