//! The context labels of one flow: the values of `labelsContext`'s labels,
//! then `source` and `destination`, from the flow's endpoints as the
//! enrichment named them (Hubble's semantics: in a `|` list the first
//! non-empty value wins; nothing known is the empty string). Also which
//! pods those values name, so their series can go with the pods.

use weir_observer::proto::flow::{Endpoint, Flow, TrafficDirection};

use super::options::{ContextKind, ContextOptions, LabelsContext};

/// A pod, as the flow's endpoint names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

/// The context label values of one flow and the pods they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// In [`label_names`] order.
    pub values: Vec<String>,
    /// Pods named by a value of a per-pod kind (pod, pod-name, ip; the
    /// `*_pod` and `*_ip` labels), each once.
    pub pods: Vec<PodKey>,
}

/// The context label names `options` add, in the order of their values.
pub fn label_names(options: &ContextOptions) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = options.labels.iter().map(|l| l.name()).collect();
    if options.has_source() {
        names.push("source");
    }
    if options.has_destination() {
        names.push("destination");
    }
    names
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

fn endpoint(flow: &Flow, side: Side) -> Option<&Endpoint> {
    match side {
        Side::Source => flow.source.as_ref(),
        Side::Destination => flow.destination.as_ref(),
    }
}

fn pod_of(flow: &Flow, side: Side) -> Option<PodKey> {
    let e = endpoint(flow, side)?;
    (!e.pod_name.is_empty()).then(|| PodKey {
        namespace: e.namespace.clone(),
        name: e.pod_name.clone(),
    })
}

fn joined(namespace: &str, name: &str) -> String {
    match (namespace.is_empty(), name.is_empty()) {
        (_, true) => String::new(),
        (true, false) => name.to_string(),
        (false, false) => format!("{namespace}/{name}"),
    }
}

const KUBE_APISERVER: &str = "reserved:kube-apiserver";

/// The first `reserved:` label, `reserved:kube-apiserver` before others.
fn reserved_identity(labels: &[String]) -> String {
    if labels.iter().any(|l| l == KUBE_APISERVER) {
        return KUBE_APISERVER.to_string();
    }
    labels
        .iter()
        .find(|l| l.starts_with("reserved:"))
        .cloned()
        .unwrap_or_default()
}

/// The app name from the pod's labels, by Hubble's order of preference.
fn app(labels: &[String]) -> String {
    ["k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app="]
        .iter()
        .find_map(|prefix| {
            labels
                .iter()
                .find_map(|l| l.strip_prefix(prefix).filter(|v| !v.is_empty()))
        })
        .unwrap_or_default()
        .to_string()
}

fn ip(flow: &Flow, side: Side) -> String {
    flow.ip.as_ref().map_or(String::new(), |ip| match side {
        Side::Source => ip.source.clone(),
        Side::Destination => ip.destination.clone(),
    })
}

fn value(flow: &Flow, side: Side, kind: ContextKind) -> String {
    let empty = Endpoint::default();
    let e = endpoint(flow, side).unwrap_or(&empty);
    let workload = e.workloads.first();
    match kind {
        ContextKind::Identity => e.labels.join(","),
        ContextKind::Namespace => e.namespace.clone(),
        ContextKind::Pod => joined(&e.namespace, &e.pod_name),
        ContextKind::PodName => e.pod_name.clone(),
        ContextKind::Dns => match side {
            Side::Source => flow.source_names.join(","),
            Side::Destination => flow.destination_names.join(","),
        },
        ContextKind::Ip => ip(flow, side),
        ContextKind::ReservedIdentity => reserved_identity(&e.labels),
        ContextKind::Workload => workload.map_or(String::new(), |w| joined(&e.namespace, &w.name)),
        ContextKind::WorkloadName => workload.map_or(String::new(), |w| w.name.clone()),
        ContextKind::App => app(&e.labels),
    }
}

fn labels_value(flow: &Flow, label: LabelsContext) -> String {
    use LabelsContext as L;
    let (side, kind) = match label {
        L::SourceIp => (Side::Source, ContextKind::Ip),
        L::SourcePod => (Side::Source, ContextKind::PodName),
        L::SourceNamespace => (Side::Source, ContextKind::Namespace),
        L::SourceWorkload => (Side::Source, ContextKind::WorkloadName),
        L::SourceApp => (Side::Source, ContextKind::App),
        L::DestinationIp => (Side::Destination, ContextKind::Ip),
        L::DestinationPod => (Side::Destination, ContextKind::PodName),
        L::DestinationNamespace => (Side::Destination, ContextKind::Namespace),
        L::DestinationWorkload => (Side::Destination, ContextKind::WorkloadName),
        L::DestinationApp => (Side::Destination, ContextKind::App),
        L::SourceWorkloadKind | L::DestinationWorkloadKind => {
            let side = if label == L::SourceWorkloadKind {
                Side::Source
            } else {
                Side::Destination
            };
            return endpoint(flow, side)
                .and_then(|e| e.workloads.first())
                .map_or(String::new(), |w| w.kind.clone());
        }
        L::TrafficDirection => {
            return match direction(flow) {
                Some(TrafficDirection::Ingress) => "ingress",
                Some(TrafficDirection::Egress) => "egress",
                _ => "unknown",
            }
            .to_string();
        }
    };
    value(flow, side, kind)
}

fn direction(flow: &Flow) -> Option<TrafficDirection> {
    TrafficDirection::try_from(flow.traffic_direction).ok()
}

/// The first non-empty value of `kinds`, and whether it names a pod.
fn first_value(flow: &Flow, side: Side, kinds: &[ContextKind]) -> (String, bool) {
    kinds
        .iter()
        .map(|&kind| (value(flow, side, kind), kind.per_pod()))
        .find(|(v, _)| !v.is_empty())
        .unwrap_or_default()
}

/// The list that applies to this flow's direction: the per-direction one
/// if given, else the general one.
fn for_direction<'a>(
    flow: &Flow,
    general: &'a [ContextKind],
    egress: &'a [ContextKind],
    ingress: &'a [ContextKind],
) -> &'a [ContextKind] {
    match direction(flow) {
        Some(TrafficDirection::Egress) if !egress.is_empty() => egress,
        Some(TrafficDirection::Ingress) if !ingress.is_empty() => ingress,
        _ => general,
    }
}

/// The context of `flow` under `options`.
pub fn context_of(options: &ContextOptions, flow: &Flow) -> Context {
    let mut context = Context::default();
    let bind = |context: &mut Context, side: Side| {
        if let Some(pod) = pod_of(flow, side) {
            if !context.pods.contains(&pod) {
                context.pods.push(pod);
            }
        }
    };
    for &label in &options.labels {
        let value = labels_value(flow, label);
        if label.per_pod() && !value.is_empty() {
            let side = match label {
                LabelsContext::SourceIp | LabelsContext::SourcePod => Side::Source,
                _ => Side::Destination,
            };
            bind(&mut context, side);
        }
        context.values.push(value);
    }
    if options.has_source() {
        let kinds = for_direction(
            flow,
            &options.source,
            &options.source_egress,
            &options.source_ingress,
        );
        let (value, per_pod) = first_value(flow, Side::Source, kinds);
        if per_pod {
            bind(&mut context, Side::Source);
        }
        context.values.push(value);
    }
    if options.has_destination() {
        let kinds = for_direction(
            flow,
            &options.destination,
            &options.destination_egress,
            &options.destination_ingress,
        );
        let (value, per_pod) = first_value(flow, Side::Destination, kinds);
        if per_pod {
            bind(&mut context, Side::Destination);
        }
        context.values.push(value);
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::metrics::options::MetricsConfig;
    use weir_observer::proto::flow::Ip;

    fn options(text: &str) -> ContextOptions {
        let config: MetricsConfig = text.parse().unwrap();
        config.handlers[0].context.clone()
    }

    fn pod_endpoint(namespace: &str, pod: &str, labels: &[&str]) -> Endpoint {
        Endpoint {
            identity: 12345,
            namespace: namespace.into(),
            pod_name: pod.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            ..Default::default()
        }
    }

    fn flow_from_pod_to_world() -> Flow {
        Flow {
            source: Some(pod_endpoint(
                "shop",
                "cart-7d4b9",
                &["k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop"],
            )),
            destination: Some(Endpoint {
                identity: 2,
                labels: vec!["reserved:world".into()],
                ..Default::default()
            }),
            ip: Some(Ip {
                source: "10.244.1.7".into(),
                destination: "198.51.100.1".into(),
                ..Default::default()
            }),
            traffic_direction: TrafficDirection::Egress as i32,
            ..Default::default()
        }
    }

    #[test]
    fn names_are_labels_context_then_source_then_destination() {
        let o = options("flow:destinationContext=pod;labelsContext=traffic_direction,source_pod;sourceContext=namespace");
        assert_eq!(
            label_names(&o),
            ["source_pod", "traffic_direction", "source", "destination"]
        );
        assert!(label_names(&options("flow")).is_empty());
    }

    #[test]
    fn the_first_non_empty_context_wins() {
        let flow = flow_from_pod_to_world();
        let o = options(
            "flow:sourceContext=pod|reserved-identity;destinationContext=pod|reserved-identity|ip",
        );
        let context = context_of(&o, &flow);
        assert_eq!(context.values, ["shop/cart-7d4b9", "reserved:world"]);
        // Only the pod context names a pod; the world's value does not.
        assert_eq!(
            context.pods,
            [PodKey {
                namespace: "shop".into(),
                name: "cart-7d4b9".into()
            }]
        );
        let o = options("flow:destinationContext=pod|ip");
        let context = context_of(&o, &flow);
        assert_eq!(context.values, ["198.51.100.1"]);
        assert!(
            context.pods.is_empty(),
            "an address outside the cluster names no pod"
        );
    }

    #[test]
    fn every_kind_of_value() {
        let mut flow = flow_from_pod_to_world();
        flow.source.as_mut().unwrap().workloads = vec![weir_observer::proto::flow::Workload {
            name: "cart".into(),
            kind: "Deployment".into(),
        }];
        flow.destination_names = vec!["example.com".into(), "www.example.com".into()];
        let value = |kind: ContextKind, side: Side| value(&flow, side, kind);
        use ContextKind::*;
        assert_eq!(
            value(Identity, Side::Source),
            "k8s:app=cart,k8s:io.kubernetes.pod.namespace=shop"
        );
        assert_eq!(value(Namespace, Side::Source), "shop");
        assert_eq!(value(Pod, Side::Source), "shop/cart-7d4b9");
        assert_eq!(value(PodName, Side::Source), "cart-7d4b9");
        assert_eq!(value(Ip, Side::Source), "10.244.1.7");
        assert_eq!(value(Workload, Side::Source), "shop/cart");
        assert_eq!(value(WorkloadName, Side::Source), "cart");
        assert_eq!(value(App, Side::Source), "cart");
        assert_eq!(value(ReservedIdentity, Side::Source), "");
        assert_eq!(value(ReservedIdentity, Side::Destination), "reserved:world");
        assert_eq!(value(Dns, Side::Destination), "example.com,www.example.com");
        assert_eq!(value(Pod, Side::Destination), "");
        assert_eq!(value(Namespace, Side::Destination), "");
    }

    #[test]
    fn kube_apiserver_comes_before_other_reserved_labels_and_app_by_preference() {
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            reserved_identity(&labels(&["reserved:host", "reserved:kube-apiserver"])),
            "reserved:kube-apiserver"
        );
        assert_eq!(
            reserved_identity(&labels(&["k8s:a=b", "reserved:remote-node"])),
            "reserved:remote-node"
        );
        assert_eq!(
            app(&labels(&[
                "k8s:app=legacy",
                "k8s:app.kubernetes.io/name=modern"
            ])),
            "modern"
        );
        assert_eq!(app(&labels(&["k8s:k8s-app=dns", "k8s:app="])), "dns");
    }

    #[test]
    fn per_direction_contexts_take_precedence() {
        let mut flow = flow_from_pod_to_world();
        let o = options("flow:sourceContext=namespace;sourceEgressContext=pod-name");
        assert_eq!(context_of(&o, &flow).values, ["cart-7d4b9"]);
        flow.traffic_direction = TrafficDirection::Ingress as i32;
        assert_eq!(context_of(&o, &flow).values, ["shop"]);
    }

    #[test]
    fn labels_context_has_a_value_per_label_even_when_empty() {
        let flow = flow_from_pod_to_world();
        let o = options(
            "flow:labelsContext=source_ip,source_namespace,source_pod,source_workload,\
             source_workload_kind,source_app,destination_ip,destination_namespace,\
             destination_pod,traffic_direction",
        );
        let context = context_of(&o, &flow);
        assert_eq!(
            context.values,
            [
                "10.244.1.7",
                "cart-7d4b9",
                "shop",
                "",
                "",
                "cart",
                "198.51.100.1",
                "",
                "",
                "egress"
            ]
        );
        assert_eq!(context.pods.len(), 1);
    }
}
