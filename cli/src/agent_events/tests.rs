use weir_observer::agent_events::build::{self, IpcacheChange, ServiceUpsert};
use weir_observer::proto::flow::AgentEvent;

use super::*;

fn response(event: AgentEvent) -> GetAgentEventsResponse {
    GetAgentEventsResponse {
        agent_event: Some(event),
        node_name: "n1".into(),
        time: Some(weir_observer::proto::Timestamp {
            seconds: 3661,
            nanos: 5_000_000,
        }),
    }
}

fn policy() -> GetAgentEventsResponse {
    response(build::policy(
        false,
        vec![
            "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy".into(),
            "k8s:io.cilium.k8s.policy.name=only-y-a".into(),
            "k8s:io.cilium.k8s.policy.namespace=x".into(),
        ],
        3,
        1,
    ))
}

#[test]
fn lines_name_the_type_and_the_details() {
    assert_eq!(
        line(&policy()),
        "01:01:01.005 [n1] POLICY_UPDATED: labels=[k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy,\
         k8s:io.cilium.k8s.policy.name=only-y-a,k8s:io.cilium.k8s.policy.namespace=x], revision=3, rule_count=1"
    );
    assert_eq!(
        line(&response(build::endpoint(
            false,
            4,
            vec!["k8s:pod=a".into()],
            "x",
            "a"
        ))),
        "01:01:01.005 [n1] ENDPOINT_CREATED: id=4, pod=x/a, labels=[k8s:pod=a]"
    );
    assert_eq!(
        line(&response(build::ipcache(
            false,
            IpcacheChange {
                cidr: "10.244.1.2/32".into(),
                identity: 301,
                old_identity: Some(300),
                host_ip: "10.77.0.11".into(),
                namespace: "x".into(),
                pod_name: "a".into(),
                ..Default::default()
            }
        ))),
        "01:01:01.005 [n1] IPCACHE_UPSERTED: cidr=10.244.1.2/32, identity=301, old_identity=300, \
         host_ip=10.77.0.11, pod=x/a"
    );
    assert_eq!(
        line(&response(build::service_upserted(ServiceUpsert {
            id: 2,
            frontend: ("10.96.0.10".into(), 80),
            backends: vec![("10.244.1.2".into(), 80)],
            kind: "ClusterIP".into(),
            name: "web".into(),
            namespace: "x".into(),
            ..Default::default()
        }))),
        "01:01:01.005 [n1] SERVICE_UPSERTED: id=2, service=x/web, type=ClusterIP, \
         frontend=10.96.0.10:80, backends=[10.244.1.2:80]"
    );
    assert_eq!(
        line(&response(build::service_deleted(2))),
        "01:01:01.005 [n1] SERVICE_DELETED: id=2"
    );
}

#[test]
fn json_is_unchanged() {
    let json = |r: &GetAgentEventsResponse| render(r, true).unwrap();
    assert_eq!(
        json(&policy()),
        include_str!("../../testdata/agent_event_policy.json")
    );
    assert_eq!(
        json(&GetAgentEventsResponse::default()),
        include_str!("../../testdata/agent_event_empty.json")
    );
}

#[test]
fn requests_default_to_the_last_20_unless_following() {
    let args = |follow, last, first| AgentEventsArgs {
        follow,
        last,
        first,
        since_seconds: None,
    };
    let r = request(&args(false, None, None));
    assert_eq!((r.number, r.first, r.follow), (20, false, false));
    let r = request(&args(true, None, None));
    assert_eq!((r.number, r.follow), (0, true));
    let r = request(&args(false, None, Some(5)));
    assert_eq!((r.number, r.first), (5, true));
}
