//! The `--hubble-metrics` option string, as Hubble's `--metrics` takes it:
//! handlers separated by spaces (or commas), each optionally followed by
//! `:` and `;`-separated `key=value` options, e.g.
//! `flow:sourceContext=namespace|pod;destinationContext=identity drop tcp`.
//! Parsed once at start into a typed [`MetricsConfig`]; anything unknown
//! is an error naming it.

use std::fmt;
use std::str::FromStr;

/// The families Weir offers: Hubble's L3/L4 handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Handler {
    /// `hubble_flows_processed_total{protocol,type,subtype,verdict}`
    Flow,
    /// `hubble_drop_total{reason,protocol}`
    Drop,
    /// `hubble_tcp_flags_total{flag,family}`
    Tcp,
    /// `hubble_port_distribution_total{protocol,port}`
    PortDistribution,
    /// `hubble_icmp_total{family,type}`
    Icmp,
    /// `hubble_policy_verdicts_total{direction,match,action}`
    Policy,
}

impl Handler {
    pub const ALL: [Handler; 6] = [
        Handler::Flow,
        Handler::Drop,
        Handler::Tcp,
        Handler::PortDistribution,
        Handler::Icmp,
        Handler::Policy,
    ];

    /// The name in the option string.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Flow => "flow",
            Handler::Drop => "drop",
            Handler::Tcp => "tcp",
            Handler::PortDistribution => "port-distribution",
            Handler::Icmp => "icmp",
            Handler::Policy => "policy",
        }
    }

    fn from_name(name: &str) -> Option<Handler> {
        Handler::ALL.into_iter().find(|h| h.name() == name)
    }
}

/// One way of naming a flow's source or destination in the `source` /
/// `destination` label (Hubble's context identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextKind {
    /// Every security identity label, comma-separated.
    Identity,
    Namespace,
    /// `namespace/pod`.
    Pod,
    /// The pod's name alone.
    PodName,
    /// Known DNS names, comma-separated.
    Dns,
    Ip,
    /// The first `reserved:` identity label (`reserved:kube-apiserver`
    /// before any other).
    ReservedIdentity,
    /// `namespace/workload-name`.
    Workload,
    WorkloadName,
    /// From the pod's `app.kubernetes.io/name`, `k8s-app` or `app` label.
    App,
}

impl ContextKind {
    const ALL: [ContextKind; 10] = [
        ContextKind::Identity,
        ContextKind::Namespace,
        ContextKind::Pod,
        ContextKind::PodName,
        ContextKind::Dns,
        ContextKind::Ip,
        ContextKind::ReservedIdentity,
        ContextKind::Workload,
        ContextKind::WorkloadName,
        ContextKind::App,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Identity => "identity",
            ContextKind::Namespace => "namespace",
            ContextKind::Pod => "pod",
            ContextKind::PodName => "pod-name",
            ContextKind::Dns => "dns",
            ContextKind::Ip => "ip",
            ContextKind::ReservedIdentity => "reserved-identity",
            ContextKind::Workload => "workload",
            ContextKind::WorkloadName => "workload-name",
            ContextKind::App => "app",
        }
    }

    /// Whether a value of this kind names one pod (so its series go with
    /// the pod).
    pub fn per_pod(self) -> bool {
        matches!(
            self,
            ContextKind::Pod | ContextKind::PodName | ContextKind::Ip
        )
    }
}

/// A label of `labelsContext`: a label of its own per attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelsContext {
    SourceIp,
    SourcePod,
    SourceNamespace,
    SourceWorkload,
    SourceWorkloadKind,
    SourceApp,
    DestinationIp,
    DestinationPod,
    DestinationNamespace,
    DestinationWorkload,
    DestinationWorkloadKind,
    DestinationApp,
    TrafficDirection,
}

impl LabelsContext {
    /// In the order the labels are added (the order of the enum).
    const ALL: [LabelsContext; 13] = [
        LabelsContext::SourceIp,
        LabelsContext::SourcePod,
        LabelsContext::SourceNamespace,
        LabelsContext::SourceWorkload,
        LabelsContext::SourceWorkloadKind,
        LabelsContext::SourceApp,
        LabelsContext::DestinationIp,
        LabelsContext::DestinationPod,
        LabelsContext::DestinationNamespace,
        LabelsContext::DestinationWorkload,
        LabelsContext::DestinationWorkloadKind,
        LabelsContext::DestinationApp,
        LabelsContext::TrafficDirection,
    ];

    /// The label's name.
    pub fn name(self) -> &'static str {
        match self {
            LabelsContext::SourceIp => "source_ip",
            LabelsContext::SourcePod => "source_pod",
            LabelsContext::SourceNamespace => "source_namespace",
            LabelsContext::SourceWorkload => "source_workload",
            LabelsContext::SourceWorkloadKind => "source_workload_kind",
            LabelsContext::SourceApp => "source_app",
            LabelsContext::DestinationIp => "destination_ip",
            LabelsContext::DestinationPod => "destination_pod",
            LabelsContext::DestinationNamespace => "destination_namespace",
            LabelsContext::DestinationWorkload => "destination_workload",
            LabelsContext::DestinationWorkloadKind => "destination_workload_kind",
            LabelsContext::DestinationApp => "destination_app",
            LabelsContext::TrafficDirection => "traffic_direction",
        }
    }

    /// Whether its value names one pod.
    pub fn per_pod(self) -> bool {
        matches!(
            self,
            LabelsContext::SourceIp
                | LabelsContext::SourcePod
                | LabelsContext::DestinationIp
                | LabelsContext::DestinationPod
        )
    }
}

/// The context options of one handler. An empty list is no label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextOptions {
    /// `sourceContext`: the `source` label, first non-empty value wins.
    pub source: Vec<ContextKind>,
    /// `sourceEgressContext` / `sourceIngressContext`: instead of
    /// `sourceContext` for flows of that direction.
    pub source_egress: Vec<ContextKind>,
    pub source_ingress: Vec<ContextKind>,
    /// `destinationContext` and its per-direction variants.
    pub destination: Vec<ContextKind>,
    pub destination_egress: Vec<ContextKind>,
    pub destination_ingress: Vec<ContextKind>,
    /// `labelsContext`, in [`LabelsContext`] order, each once.
    pub labels: Vec<LabelsContext>,
}

impl ContextOptions {
    /// Whether a `source` label is added.
    pub fn has_source(&self) -> bool {
        !(self.source.is_empty() && self.source_egress.is_empty() && self.source_ingress.is_empty())
    }

    /// Whether a `destination` label is added.
    pub fn has_destination(&self) -> bool {
        !(self.destination.is_empty()
            && self.destination_egress.is_empty()
            && self.destination_ingress.is_empty())
    }

    /// No context label at all.
    pub fn is_empty(&self) -> bool {
        !self.has_source() && !self.has_destination() && self.labels.is_empty()
    }
}

/// One enabled handler and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    pub handler: Handler,
    pub context: ContextOptions,
}

/// Every enabled handler, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub handlers: Vec<HandlerConfig>,
}

/// The default: the four families the agent always had, without contexts.
pub const DEFAULT: &str = "flow drop tcp policy";

impl Default for MetricsConfig {
    fn default() -> Self {
        DEFAULT.parse().expect("the default parses")
    }
}

/// What is wrong with an option string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    UnknownHandler(String),
    DuplicateHandler(&'static str),
    UnknownOption {
        handler: &'static str,
        option: String,
    },
    UnknownContext {
        handler: &'static str,
        option: String,
        value: String,
    },
    UnknownLabel {
        handler: &'static str,
        label: String,
    },
    EmptyValue {
        handler: &'static str,
        option: String,
    },
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &mut dyn Iterator<Item = &'static str>| -> String {
            names.collect::<Vec<_>>().join(", ")
        };
        match self {
            OptionsError::UnknownHandler(name) => write!(
                f,
                "unknown metric {name:?} (known: {})",
                list(&mut Handler::ALL.iter().map(|h| h.name()))
            ),
            OptionsError::DuplicateHandler(name) => write!(f, "metric {name:?} given twice"),
            OptionsError::UnknownOption { handler, option } => write!(
                f,
                "{handler}: unknown option {option:?} (known: sourceContext, \
                 sourceEgressContext, sourceIngressContext, destinationContext, \
                 destinationEgressContext, destinationIngressContext, labelsContext)"
            ),
            OptionsError::UnknownContext {
                handler,
                option,
                value,
            } => write!(
                f,
                "{handler}: {option}: unknown context {value:?} (known: {})",
                list(&mut ContextKind::ALL.iter().map(|c| c.name()))
            ),
            OptionsError::UnknownLabel { handler, label } => write!(
                f,
                "{handler}: labelsContext: unknown label {label:?} (known: {})",
                list(&mut LabelsContext::ALL.iter().map(|l| l.name()))
            ),
            OptionsError::EmptyValue { handler, option } => {
                write!(f, "{handler}: {option} needs a value")
            }
        }
    }
}

impl std::error::Error for OptionsError {}

/// Splits the string into one piece per handler: on whitespace, and on a
/// comma followed by a handler name (a comma inside `labelsContext` is
/// not a separator).
fn handler_specs(text: &str) -> Vec<String> {
    let mut specs: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let mut current: Option<String> = None;
        for piece in word.split(',') {
            let name = piece.split(':').next().unwrap_or_default();
            match current.as_mut() {
                Some(spec) if Handler::from_name(name).is_none() && !piece.is_empty() => {
                    spec.push(',');
                    spec.push_str(piece);
                }
                _ => {
                    specs.extend(current.take());
                    current = (!piece.is_empty()).then(|| piece.to_string());
                }
            }
        }
        specs.extend(current);
    }
    specs
}

fn parse_contexts(
    handler: &'static str,
    option: &str,
    value: &str,
) -> Result<Vec<ContextKind>, OptionsError> {
    value
        .split('|')
        .map(|name| {
            ContextKind::ALL
                .into_iter()
                .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| OptionsError::UnknownContext {
                    handler,
                    option: option.to_string(),
                    value: name.to_string(),
                })
        })
        .collect()
}

fn parse_labels(handler: &'static str, value: &str) -> Result<Vec<LabelsContext>, OptionsError> {
    let mut labels = Vec::new();
    for name in value.split(',') {
        let label = LabelsContext::ALL
            .into_iter()
            .find(|l| l.name() == name.trim())
            .ok_or_else(|| OptionsError::UnknownLabel {
                handler,
                label: name.to_string(),
            })?;
        labels.push(label);
    }
    labels.sort();
    labels.dedup();
    Ok(labels)
}

fn parse_handler(spec: &str) -> Result<HandlerConfig, OptionsError> {
    let (name, options) = spec.split_once(':').unwrap_or((spec, ""));
    let handler =
        Handler::from_name(name).ok_or_else(|| OptionsError::UnknownHandler(name.to_string()))?;
    let handler_name = handler.name();
    let mut context = ContextOptions::default();
    for option in options.split(';').filter(|o| !o.is_empty()) {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        let empty = || OptionsError::EmptyValue {
            handler: handler_name,
            option: key.to_string(),
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "sourcecontext" => &mut context.source,
            "sourceegresscontext" => &mut context.source_egress,
            "sourceingresscontext" => &mut context.source_ingress,
            "destinationcontext" => &mut context.destination,
            "destinationegresscontext" => &mut context.destination_egress,
            "destinationingresscontext" => &mut context.destination_ingress,
            "labelscontext" => {
                if value.is_empty() {
                    return Err(empty());
                }
                context.labels = parse_labels(handler_name, value)?;
                continue;
            }
            _ => {
                return Err(OptionsError::UnknownOption {
                    handler: handler_name,
                    option: key.to_string(),
                })
            }
        };
        if value.is_empty() {
            return Err(empty());
        }
        *slot = parse_contexts(handler_name, key, value)?;
    }
    Ok(HandlerConfig { handler, context })
}

impl FromStr for MetricsConfig {
    type Err = OptionsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut handlers: Vec<HandlerConfig> = Vec::new();
        for spec in handler_specs(text) {
            let config = parse_handler(&spec)?;
            if handlers.iter().any(|h| h.handler == config.handler) {
                return Err(OptionsError::DuplicateHandler(config.handler.name()));
            }
            handlers.push(config);
        }
        Ok(MetricsConfig { handlers })
    }
}

/// For clap's `value_parser`.
pub fn parse(text: &str) -> Result<MetricsConfig, String> {
    text.parse().map_err(|e: OptionsError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContextKind::*;

    fn handlers(text: &str) -> Vec<HandlerConfig> {
        text.parse::<MetricsConfig>()
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .handlers
    }

    #[test]
    fn the_default_is_the_four_families_without_contexts() {
        let config = MetricsConfig::default();
        let names: Vec<_> = config.handlers.iter().map(|h| h.handler.name()).collect();
        assert_eq!(names, ["flow", "drop", "tcp", "policy"]);
        assert!(config.handlers.iter().all(|h| h.context.is_empty()));
    }

    #[test]
    fn an_empty_string_enables_nothing() {
        assert!(handlers("").is_empty());
        assert!(handlers("  ").is_empty());
    }

    #[test]
    fn contexts_are_lists_in_order_of_preference() {
        let config = handlers(
            "flow:sourceContext=namespace|pod;destinationContext=identity drop \
             tcp port-distribution icmp policy:sourceContext=reserved-identity|workload-name",
        );
        assert_eq!(config.len(), 6);
        assert_eq!(config[0].handler, Handler::Flow);
        assert_eq!(config[0].context.source, [Namespace, Pod]);
        assert_eq!(config[0].context.destination, [Identity]);
        assert!(config[1].context.is_empty());
        assert_eq!(config[3].handler, Handler::PortDistribution);
        assert_eq!(config[5].context.source, [ReservedIdentity, WorkloadName]);
        assert!(!config[5].context.has_destination());
    }

    #[test]
    fn every_context_name_parses() {
        let all = ContextKind::ALL.map(ContextKind::name).join("|");
        let config = handlers(&format!("drop:destinationContext={all}"));
        assert_eq!(config[0].context.destination, ContextKind::ALL);
    }

    #[test]
    fn per_direction_contexts_and_labels_context() {
        let config = handlers(
            "flow:sourceEgressContext=pod;sourceIngressContext=namespace;\
             destinationIngressContext=pod-name;\
             labelsContext=traffic_direction,source_namespace,source_pod",
        );
        let context = &config[0].context;
        assert_eq!(context.source_egress, [Pod]);
        assert_eq!(context.source_ingress, [Namespace]);
        assert_eq!(context.destination_ingress, [PodName]);
        assert!(context.has_source() && context.has_destination());
        assert_eq!(
            context.labels,
            [
                LabelsContext::SourcePod,
                LabelsContext::SourceNamespace,
                LabelsContext::TrafficDirection
            ]
        );
    }

    #[test]
    fn handlers_may_be_separated_by_commas_as_in_ciliums_flag() {
        let config =
            handlers("drop:labelsContext=source_pod,destination_pod,flow:sourceContext=pod,tcp");
        let names: Vec<_> = config.iter().map(|h| h.handler).collect();
        assert_eq!(names, [Handler::Drop, Handler::Flow, Handler::Tcp]);
        assert_eq!(config[0].context.labels.len(), 2);
        assert_eq!(config[1].context.source, [Pod]);
    }

    #[test]
    fn unknown_names_are_errors_that_say_what_is_known() {
        let error = |text: &str| text.parse::<MetricsConfig>().unwrap_err();
        assert_eq!(
            error("flow httpV2"),
            OptionsError::UnknownHandler("httpV2".into())
        );
        assert!(error("dns").to_string().contains("known: flow, drop, tcp"));
        assert_eq!(
            error("flow:sourceContext=pod|node"),
            OptionsError::UnknownContext {
                handler: "flow",
                option: "sourceContext".into(),
                value: "node".into()
            }
        );
        assert!(error("flow:sourceContext=pod|node")
            .to_string()
            .contains("reserved-identity"));
        assert_eq!(
            error("drop:exemplars=true"),
            OptionsError::UnknownOption {
                handler: "drop",
                option: "exemplars".into()
            }
        );
        assert_eq!(
            error("tcp:labelsContext=source_pod,pod"),
            OptionsError::UnknownLabel {
                handler: "tcp",
                label: "pod".into()
            }
        );
        assert_eq!(
            error("icmp:sourceContext="),
            OptionsError::EmptyValue {
                handler: "icmp",
                option: "sourceContext".into()
            }
        );
        assert_eq!(
            error("flow drop flow:sourceContext=pod"),
            OptionsError::DuplicateHandler("flow")
        );
        assert!(parse("flow:sourceContext=pod|node").is_err());
    }
}
