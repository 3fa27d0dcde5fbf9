//! The families as `/metrics` shows them, and the cardinality bound with
//! 1,000 pods coming and going.

use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};
use weir_observer::event::message_type;
use weir_observer::proto::flow::{
    self, layer4, CiliumEventType, Endpoint, Flow, Ip, Layer4, Tcp, TcpFlags, Verdict,
};

use super::context::PodKey;
use super::options::MetricsConfig;
use super::series::OVERFLOW;
use super::{FlowMetrics, POD_GRACE};

fn metrics(text: &str, max_contexts: usize) -> (Registry, FlowMetrics) {
    let registry = Registry::new();
    let config: MetricsConfig = text.parse().unwrap();
    let metrics = FlowMetrics::new(&registry, &config, max_contexts);
    (registry, metrics)
}

fn scrape(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Series of one family.
fn series(registry: &Registry, name: &str) -> usize {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == name)
        .map_or(0, |f| f.get_metric().len())
}

fn value(registry: &Registry, line_start: &str) -> f64 {
    let text = scrape(registry);
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn pod(namespace: &str, name: &str, identity: u32) -> Endpoint {
    Endpoint {
        identity,
        namespace: namespace.into(),
        pod_name: name.into(),
        labels: vec![
            format!("k8s:app={name}"),
            format!("k8s:io.kubernetes.pod.namespace={namespace}"),
        ],
        ..Default::default()
    }
}

fn world() -> Endpoint {
    Endpoint {
        identity: weir_abi::identity::WORLD,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    }
}

/// A TCP SYN from `source` to `destination`, `verdict` at the destination.
fn syn(source: Endpoint, destination: Endpoint, verdict: Verdict) -> Flow {
    let dropped = verdict == Verdict::Dropped;
    Flow {
        verdict: verdict as i32,
        drop_reason_desc: if dropped {
            flow::DropReason::PolicyDenied as i32
        } else {
            0
        },
        ip: Some(Ip {
            source: "10.244.1.10".into(),
            destination: "10.244.2.20".into(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(source),
        destination: Some(destination),
        event_type: Some(CiliumEventType {
            r#type: if dropped {
                message_type::DROP
            } else {
                message_type::TRACE
            },
            sub_type: 0,
        }),
        trace_observation_point: if dropped {
            0
        } else {
            flow::TraceObservationPoint::ToEndpoint as i32
        },
        traffic_direction: flow::TrafficDirection::Ingress as i32,
        is_reply: Some(false),
        ..Default::default()
    }
}

#[test]
fn the_default_families_keep_their_names_and_gain_only_hubbles_labels() {
    let (registry, metrics) = metrics(super::options::DEFAULT, 10);
    metrics.observe(&syn(
        pod("z", "b", 300),
        pod("x", "a", 100),
        Verdict::Dropped,
    ));
    metrics.observe(&syn(
        pod("y", "a", 200),
        pod("x", "a", 100),
        Verdict::Forwarded,
    ));
    let text = scrape(&registry);
    for line in [
        "hubble_drop_total{protocol=\"TCP\",reason=\"POLICY_DENIED\"} 1",
        "hubble_flows_processed_total{protocol=\"TCP\",subtype=\"\",type=\"Drop\",verdict=\"DROPPED\"} 1",
        "hubble_flows_processed_total{protocol=\"TCP\",subtype=\"to-endpoint\",type=\"Trace\",verdict=\"FORWARDED\"} 1",
        "hubble_tcp_flags_total{family=\"IPv4\",flag=\"SYN\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(!text.contains("hubble_port_distribution_total"));
    assert!(!text.contains("hubble_icmp_total"));
    // No context options: the bound's own families have no series.
    assert!(!text.contains("weir_hubble_metrics_contexts{"));
}

#[test]
fn context_labels_name_source_and_destination() {
    let (registry, metrics) = metrics(
        "flow drop:sourceContext=pod;destinationContext=pod|reserved-identity \
         port-distribution:destinationContext=workload-name|app \
         policy:labelsContext=source_namespace,destination_namespace,traffic_direction",
        10,
    );
    metrics.observe(&syn(
        pod("z", "b", 300),
        pod("x", "a", 100),
        Verdict::Dropped,
    ));
    metrics.observe(&syn(pod("z", "b", 300), world(), Verdict::Dropped));
    metrics.observe(&syn(
        pod("y", "a", 200),
        pod("x", "a", 100),
        Verdict::Forwarded,
    ));
    let mut verdict = syn(pod("z", "b", 300), pod("x", "a", 100), Verdict::Dropped);
    verdict.event_type = Some(CiliumEventType {
        r#type: message_type::POLICY_VERDICT,
        sub_type: 0,
    });
    verdict.policy_match_type = u32::from(weir_abi::events::MATCH_L3_L4);
    metrics.observe(&verdict);
    let text = scrape(&registry);
    for line in [
        "hubble_drop_total{destination=\"x/a\",protocol=\"TCP\",reason=\"POLICY_DENIED\",source=\"z/b\"} 2",
        "hubble_drop_total{destination=\"reserved:world\",protocol=\"TCP\",reason=\"POLICY_DENIED\",source=\"z/b\"} 1",
        "hubble_port_distribution_total{destination=\"a\",port=\"80\",protocol=\"TCP\"} 1",
        "hubble_policy_verdicts_total{action=\"dropped\",destination_namespace=\"x\",direction=\"ingress\",match=\"l3-l4\",source_namespace=\"z\",traffic_direction=\"ingress\"} 1",
        "weir_hubble_metrics_contexts{metric=\"hubble_drop_total\"} 2",
        "weir_hubble_metrics_context_overflow_total{metric=\"hubble_drop_total\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    // `flow` has no context: no source or destination label.
    assert!(text
        .lines()
        .filter(|l| l.starts_with("hubble_flows_processed_total{"))
        .all(|l| !l.contains("source=")));
}

fn pod_name(i: usize) -> String {
    format!("web-{i:04}")
}

/// Flows from 1,000 distinct pods (as a node sees them over a day of
/// rollouts) to one server, in every family, `source=pod` each.
fn from_1000_pods(metrics: &FlowMetrics) {
    let server = pod("shop", "server", 100);
    for i in 0..1000 {
        let client = pod("shop", &pod_name(i), 1000 + i as u32);
        metrics.observe(&syn(client.clone(), server.clone(), Verdict::Forwarded));
        metrics.observe(&syn(client, server.clone(), Verdict::Dropped));
    }
}

const EVERY_FAMILY_BY_SOURCE_POD: &str = "flow:sourceContext=pod drop:sourceContext=pod \
     tcp:sourceContext=pod port-distribution:sourceContext=pod icmp:sourceContext=pod \
     policy:sourceContext=pod";

#[test]
fn a_thousand_pods_stay_within_the_cap_and_the_rest_overflow() {
    let (registry, metrics) = metrics(EVERY_FAMILY_BY_SOURCE_POD, 100);
    from_1000_pods(&metrics);
    // flow: two rows per pod (forwarded trace, drop); tcp, port, drop: one.
    assert_eq!(series(&registry, "hubble_flows_processed_total"), 2 * 101);
    assert_eq!(series(&registry, "hubble_drop_total"), 101);
    assert_eq!(series(&registry, "hubble_tcp_flags_total"), 101);
    assert_eq!(series(&registry, "hubble_port_distribution_total"), 101);
    for family in [
        "hubble_flows_processed_total",
        "hubble_drop_total",
        "hubble_tcp_flags_total",
        "hubble_port_distribution_total",
    ] {
        assert_eq!(
            value(
                &registry,
                &format!("weir_hubble_metrics_contexts{{metric=\"{family}\"}}")
            ),
            100.0
        );
    }
    // Each family saw a new pod in 900 flows it could not admit (two each
    // for flow: the first flow of a refused pod does not admit it either).
    assert_eq!(
        value(
            &registry,
            "weir_hubble_metrics_context_overflow_total{metric=\"hubble_drop_total\"}"
        ),
        900.0
    );
    assert_eq!(
        value(
            &registry,
            "weir_hubble_metrics_context_overflow_total{metric=\"hubble_flows_processed_total\"}"
        ),
        1800.0
    );
    assert_eq!(
        value(
            &registry,
            &format!("hubble_drop_total{{protocol=\"TCP\",reason=\"POLICY_DENIED\",source=\"{OVERFLOW}\"}}")
        ),
        900.0
    );
    // Nothing is lost: admitted and overflow series add up to every flow.
    let text = scrape(&registry);
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("hubble_drop_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 1000.0);
}

#[test]
fn pod_pairs_are_bounded_like_single_pods() {
    let (registry, metrics) = metrics("drop:sourceContext=pod;destinationContext=pod", 250);
    for i in 0..1000 {
        let server = pod("shop", &format!("server-{}", i % 7), 100);
        metrics.observe(&syn(
            pod("shop", &pod_name(i), 1000 + i as u32),
            server,
            Verdict::Dropped,
        ));
    }
    assert_eq!(series(&registry, "hubble_drop_total"), 251);
}

#[test]
fn series_of_deleted_pods_go_after_the_grace_period_and_free_their_place() {
    let (registry, metrics) = metrics(EVERY_FAMILY_BY_SOURCE_POD, 1000);
    from_1000_pods(&metrics);
    assert_eq!(series(&registry, "hubble_drop_total"), 1000);
    assert_eq!(series(&registry, "hubble_flows_processed_total"), 2000);

    // Half of the pods are deleted (the even ones); the server stays.
    let live =
        |p: &PodKey| p.name == "server" || p.name[4..].parse::<usize>().is_ok_and(|i| i % 2 == 1);
    let start = Instant::now();
    assert_eq!(
        metrics.sweep(&live, start, POD_GRACE),
        0,
        "not before the grace period"
    );
    assert_eq!(
        metrics.sweep(&live, start + POD_GRACE - Duration::from_secs(1), POD_GRACE),
        0
    );
    // 500 pods x (2 flow + 1 drop + 1 tcp + 1 port) series.
    assert_eq!(metrics.sweep(&live, start + POD_GRACE, POD_GRACE), 500 * 5);
    assert_eq!(series(&registry, "hubble_drop_total"), 500);
    assert_eq!(series(&registry, "hubble_flows_processed_total"), 1000);
    assert_eq!(series(&registry, "hubble_tcp_flags_total"), 500);
    assert_eq!(series(&registry, "hubble_port_distribution_total"), 500);
    let text = scrape(&registry);
    assert!(!text.contains(&format!("source=\"shop/{}\"", pod_name(0))));
    assert!(text.contains(&format!("source=\"shop/{}\"", pod_name(1))));
    assert_eq!(
        value(
            &registry,
            "weir_hubble_metrics_contexts{metric=\"hubble_drop_total\"}"
        ),
        500.0
    );

    // Their places are free: 500 new pods are admitted, none overflows.
    let server = pod("shop", "server", 100);
    for i in 1000..1500 {
        metrics.observe(&syn(
            pod("shop", &pod_name(i), 5000 + i as u32),
            server.clone(),
            Verdict::Dropped,
        ));
    }
    assert_eq!(series(&registry, "hubble_drop_total"), 1000);
    assert_eq!(
        value(
            &registry,
            "weir_hubble_metrics_context_overflow_total{metric=\"hubble_drop_total\"}"
        ),
        0.0
    );
    // A sweep with every pod live removes nothing more.
    assert_eq!(
        metrics.sweep(&|_| true, start + 10 * POD_GRACE, POD_GRACE),
        0
    );
}

#[test]
fn a_pod_back_within_the_grace_period_keeps_its_series() {
    let (registry, metrics) = metrics("drop:sourceContext=pod", 10);
    metrics.observe(&syn(pod("z", "b", 300), world(), Verdict::Dropped));
    let start = Instant::now();
    assert_eq!(metrics.sweep(&|_| false, start, POD_GRACE), 0);
    // Seen again: the departure is forgotten.
    assert_eq!(
        metrics.sweep(&|_| true, start + Duration::from_secs(30), POD_GRACE),
        0
    );
    assert_eq!(
        metrics.sweep(&|_| false, start + POD_GRACE, POD_GRACE),
        0,
        "gone again only since now"
    );
    assert_eq!(series(&registry, "hubble_drop_total"), 1);
    assert_eq!(
        metrics.sweep(&|_| false, start + 2 * POD_GRACE, POD_GRACE),
        1
    );
    assert_eq!(series(&registry, "hubble_drop_total"), 0);
}

#[test]
fn contexts_that_name_no_pod_are_kept() {
    // Namespaces and reserved identities are not removed with pods; the
    // cap alone bounds them.
    let (registry, metrics) = metrics(
        "drop:sourceContext=namespace;destinationContext=reserved-identity",
        10,
    );
    metrics.observe(&syn(pod("z", "b", 300), world(), Verdict::Dropped));
    let start = Instant::now();
    metrics.sweep(&|_| false, start, POD_GRACE);
    assert_eq!(
        metrics.sweep(&|_| false, start + 2 * POD_GRACE, POD_GRACE),
        0
    );
    assert_eq!(
        value(
            &registry,
            "hubble_drop_total{destination=\"reserved:world\",protocol=\"TCP\",reason=\"POLICY_DENIED\",source=\"z\"}"
        ),
        1.0
    );
}

#[test]
fn the_agent_sweeps_pods_without_an_endpoint_record_once_its_view_has_synced() {
    use crate::cluster::kvstore::SharedView;
    use crate::flows::sweep_metrics;
    use std::sync::Mutex;

    let record = |namespace: &str, pod: &str| weir_identity::EndpointRecord {
        identity: 300,
        node: "n1".into(),
        node_ip: "192.0.2.1".parse().unwrap(),
        namespace: namespace.into(),
        pod: pod.into(),
    };
    let (registry, metrics) = metrics("drop:sourceContext=pod", 10);
    metrics.observe(&syn(pod("z", "b", 300), world(), Verdict::Dropped));
    metrics.observe(&syn(pod("z", "c", 301), world(), Verdict::Dropped));
    let view = Mutex::new(SharedView::default());
    view.lock()
        .unwrap()
        .endpoints
        .insert("10.244.1.2".parse().unwrap(), record("z", "c"));
    let start = Instant::now();
    // Not synced: the (empty) view says nothing about pods.
    assert_eq!(sweep_metrics(&metrics, &view, start + 2 * POD_GRACE), 0);
    {
        let mut view = view.lock().unwrap();
        view.endpoints_synced = true;
        view.nodes_synced = true;
        view.identities_synced = true;
    }
    assert_eq!(sweep_metrics(&metrics, &view, start), 0);
    assert_eq!(sweep_metrics(&metrics, &view, start + POD_GRACE), 1);
    let text = scrape(&registry);
    assert!(!text.contains("source=\"z/b\""), "{text}");
    assert!(text.contains("source=\"z/c\""), "{text}");
}
