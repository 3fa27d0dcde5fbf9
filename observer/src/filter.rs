//! Hubble `FlowFilter` semantics.
//!
//! Within one filter every set field must match (AND); the values of one
//! field are alternatives (OR). A request's whitelist matches when any of
//! its filters does (an empty whitelist matches everything) and the
//! blacklist removes every flow any of its filters matches.
//!
//! Filters are compiled once per request so bad input (an unparsable CIDR,
//! port or label selector) is an `InvalidArgument` up front.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::proto::flow::{layer4, Endpoint, Flow, FlowFilter, TcpFlags, Workload};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("invalid IP or CIDR {0:?}")]
    Ip(String),
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("invalid label selector {0:?}: {1}")]
    Label(String, &'static str),
    #[error("unknown protocol {0:?}")]
    Protocol(String),
    #[error("{0} is not supported by Weir's observer")]
    Unsupported(&'static str),
    #[error("too many filters: {0} (at most {MAX_FILTERS} in each list)")]
    TooManyFilters(usize),
    #[error("a filter of {0} bytes (at most {MAX_FILTER_BYTES})")]
    FilterTooLarge(usize),
}

/// Filters per list (whitelist, blacklist) of one request.
pub const MAX_FILTERS: usize = 64;
/// Encoded size of one filter: every string and list in it together.
pub const MAX_FILTER_BYTES: usize = 16 * 1024;

/// A request's compiled whitelist and blacklist.
#[derive(Debug, Clone, Default)]
pub struct FlowFilters {
    whitelist: Vec<Compiled>,
    blacklist: Vec<Compiled>,
}

impl FlowFilters {
    /// Compiles a request's filters; refuses more than [`MAX_FILTERS`] per
    /// list or one larger than [`MAX_FILTER_BYTES`] (requests come from
    /// the network: the work one can ask for is bounded).
    pub fn new(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<Self, FilterError> {
        for list in [whitelist, blacklist] {
            if list.len() > MAX_FILTERS {
                return Err(FilterError::TooManyFilters(list.len()));
            }
            for filter in list {
                let size = prost::Message::encoded_len(filter);
                if size > MAX_FILTER_BYTES {
                    return Err(FilterError::FilterTooLarge(size));
                }
            }
        }
        Ok(Self {
            whitelist: whitelist
                .iter()
                .map(Compiled::new)
                .collect::<Result<_, _>>()?,
            blacklist: blacklist
                .iter()
                .map(Compiled::new)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }
}

/// One FlowFilter with its string fields parsed.
#[derive(Debug, Clone)]
struct Compiled {
    raw: FlowFilter,
    source_ip: Vec<IpNetwork>,
    source_ip_xlated: Vec<IpNetwork>,
    destination_ip: Vec<IpNetwork>,
    source_pod: Vec<NamePattern>,
    destination_pod: Vec<NamePattern>,
    source_service: Vec<NamePattern>,
    destination_service: Vec<NamePattern>,
    source_label: Vec<Selector>,
    destination_label: Vec<Selector>,
    source_port: Vec<u16>,
    destination_port: Vec<u16>,
    protocol: Vec<Protocol>,
    node_labels: Vec<Selector>,
    /// Criteria on what Weir's flows never carry (L7 fields, trace
    /// contexts, IP trace ids): no flow satisfies them, as in Hubble when
    /// the field is absent.
    needs_absent_fields: bool,
}

impl Compiled {
    fn new(f: &FlowFilter) -> Result<Self, FilterError> {
        if f.experimental
            .as_ref()
            .is_some_and(|e| !e.cel_expression.is_empty())
        {
            return Err(FilterError::Unsupported(
                "experimental.cel_expression (CEL filters)",
            ));
        }
        Ok(Self {
            source_ip: parse_all(&f.source_ip, parse_cidr)?,
            source_ip_xlated: parse_all(&f.source_ip_xlated, parse_cidr)?,
            destination_ip: parse_all(&f.destination_ip, parse_cidr)?,
            source_pod: f.source_pod.iter().map(|p| NamePattern::new(p)).collect(),
            destination_pod: f
                .destination_pod
                .iter()
                .map(|p| NamePattern::new(p))
                .collect(),
            source_service: f
                .source_service
                .iter()
                .map(|p| NamePattern::new(p))
                .collect(),
            destination_service: f
                .destination_service
                .iter()
                .map(|p| NamePattern::new(p))
                .collect(),
            source_label: parse_all(&f.source_label, Selector::parse)?,
            destination_label: parse_all(&f.destination_label, Selector::parse)?,
            source_port: parse_all(&f.source_port, parse_port)?,
            destination_port: parse_all(&f.destination_port, parse_port)?,
            protocol: parse_all(&f.protocol, Protocol::parse)?,
            node_labels: parse_all(&f.node_labels, Selector::parse)?,
            needs_absent_fields: !f.http_status_code.is_empty()
                || !f.http_method.is_empty()
                || !f.http_path.is_empty()
                || !f.http_url.is_empty()
                || !f.http_header.is_empty()
                || !f.dns_query.is_empty()
                || !f.trace_id.is_empty()
                || !f.ip_trace_id.is_empty(),
            raw: f.clone(),
        })
    }

    fn matches(&self, flow: &Flow) -> bool {
        let f = &self.raw;
        let default_ep = Endpoint::default();
        let src = flow.source.as_ref().unwrap_or(&default_ep);
        let dst = flow.destination.as_ref().unwrap_or(&default_ep);
        let ip = flow.ip.as_ref();
        let src_ip = ip.and_then(|i| i.source.parse::<IpAddr>().ok());
        let dst_ip = ip.and_then(|i| i.destination.parse::<IpAddr>().ok());
        let (src_port, dst_port) = ports(flow);

        let src_xlated = ip.and_then(|i| i.source_xlated.parse::<IpAddr>().ok());

        !self.needs_absent_fields
            && any_or_empty(&f.uuid, |u| *u == flow.uuid)
            && any_or_empty(&self.source_ip, |n| src_ip.is_some_and(|a| n.contains(a)))
            && any_or_empty(&self.source_ip_xlated, |n| {
                src_xlated.is_some_and(|a| n.contains(a))
            })
            && any_or_empty(&self.destination_ip, |n| {
                dst_ip.is_some_and(|a| n.contains(a))
            })
            && any_or_empty(&self.source_pod, |p| {
                p.matches(&src.namespace, &src.pod_name)
            })
            && any_or_empty(&self.destination_pod, |p| {
                p.matches(&dst.namespace, &dst.pod_name)
            })
            && any_or_empty(&self.source_service, |p| {
                flow.source_service
                    .as_ref()
                    .is_some_and(|s| p.matches(&s.namespace, &s.name))
            })
            && any_or_empty(&self.destination_service, |p| {
                flow.destination_service
                    .as_ref()
                    .is_some_and(|s| p.matches(&s.namespace, &s.name))
            })
            && any_or_empty(&f.source_fqdn, |n| flow.source_names.contains(n))
            && any_or_empty(&f.destination_fqdn, |n| flow.destination_names.contains(n))
            && any_or_empty(&self.source_label, |s| s.matches(&src.labels))
            && any_or_empty(&self.destination_label, |s| s.matches(&dst.labels))
            && any_or_empty(&f.source_workload, |w| workload_matches(w, &src.workloads))
            && any_or_empty(&f.destination_workload, |w| {
                workload_matches(w, &dst.workloads)
            })
            && any_or_empty(&f.source_identity, |i| *i == src.identity)
            && any_or_empty(&f.destination_identity, |i| *i == dst.identity)
            && any_or_empty(&f.traffic_direction, |d| *d == flow.traffic_direction)
            && any_or_empty(&f.verdict, |v| *v == flow.verdict)
            && any_or_empty(&f.drop_reason_desc, |r| *r == flow.drop_reason_desc)
            && any_or_empty(&f.event_type, |e| {
                flow.event_type.as_ref().is_some_and(|t| {
                    t.r#type == e.r#type && (!e.match_sub_type || t.sub_type == e.sub_type)
                })
            })
            && any_or_empty(&self.protocol, |p| p.matches(flow))
            && any_or_empty(&self.source_port, |p| src_port == Some(*p))
            && any_or_empty(&self.destination_port, |p| dst_port == Some(*p))
            && any_or_empty(&f.reply, |r| flow.is_reply == Some(*r))
            && any_or_empty(&f.tcp_flags, |want| tcp_flags_match(want, flow))
            && any_or_empty(&f.node_name, |p| glob(p, &flow.node_name))
            && any_or_empty(&f.ip_version, |v| ip.is_some_and(|i| i.ip_version == *v))
            && any_or_empty(&f.source_cluster_name, |c| *c == src.cluster_name)
            && any_or_empty(&f.destination_cluster_name, |c| *c == dst.cluster_name)
            && any_or_empty(&f.interface, |want| {
                flow.interface.as_ref().is_some_and(|i| {
                    (want.index == 0 || want.index == i.index)
                        && (want.name.is_empty() || want.name == i.name)
                })
            })
            && any_or_empty(&self.node_labels, |s| s.matches(&flow.node_labels))
            && any_or_empty(&f.encrypted, |e| ip.is_some_and(|i| i.encrypted == *e))
    }
}

fn any_or_empty<T>(values: &[T], pred: impl FnMut(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(pred)
}

fn parse_all<T>(
    values: &[String],
    parse: impl Fn(&str) -> Result<T, FilterError>,
) -> Result<Vec<T>, FilterError> {
    values.iter().map(|v| parse(v)).collect()
}

fn parse_cidr(s: &str) -> Result<IpNetwork, FilterError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNetwork::from(ip));
    }
    s.parse().map_err(|_| FilterError::Ip(s.to_string()))
}

fn parse_port(s: &str) -> Result<u16, FilterError> {
    s.parse().map_err(|_| FilterError::Port(s.to_string()))
}

fn ports(flow: &Flow) -> (Option<u16>, Option<u16>) {
    let pair = |s: u32, d: u32| (u16::try_from(s).ok(), u16::try_from(d).ok());
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => pair(t.source_port, t.destination_port),
        Some(layer4::Protocol::Udp(u)) => pair(u.source_port, u.destination_port),
        Some(layer4::Protocol::Sctp(s)) => pair(s.source_port, s.destination_port),
        _ => (None, None),
    }
}

/// Every flag set in the filter must be set on the flow's TCP header.
fn tcp_flags_match(want: &TcpFlags, flow: &Flow) -> bool {
    let Some(layer4::Protocol::Tcp(tcp)) = flow.l4.as_ref().and_then(|l| l.protocol.as_ref())
    else {
        return false;
    };
    let have = tcp.flags.unwrap_or_default();
    let pairs = [
        (want.fin, have.fin),
        (want.syn, have.syn),
        (want.rst, have.rst),
        (want.psh, have.psh),
        (want.ack, have.ack),
        (want.urg, have.urg),
        (want.ece, have.ece),
        (want.cwr, have.cwr),
        (want.ns, have.ns),
    ];
    pairs.iter().all(|(w, h)| !w || *h)
}

fn workload_matches(want: &Workload, have: &[Workload]) -> bool {
    have.iter().any(|w| {
        (want.name.is_empty() || want.name == w.name)
            && (want.kind.is_empty() || want.kind == w.kind)
    })
}

/// `*` matches any run of characters; everything else is literal.
///
/// Linear in the lengths of both: the first piece must start `s`, the last
/// must end it, and each piece between is taken at its first occurrence
/// after the previous one (taking it later can only leave less room for the
/// rest), so nothing is ever retried. A client's pattern cannot make a
/// node burn CPU or stack.
fn glob(pattern: &str, s: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let Some(last) = pattern.rsplit_once('*').map(|(_, last)| last) else {
        // No star: the whole pattern is literal.
        return rest.is_empty();
    };
    let middle: Vec<&str> = pieces.collect();
    // `middle` ends with `last`; the pieces strictly between are the others.
    for piece in &middle[..middle.len().saturating_sub(1)] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `name-prefix`, `namespace/name-prefix` or `namespace/` (whole namespace).
#[derive(Debug, Clone)]
struct NamePattern {
    namespace: Option<String>,
    prefix: String,
}

impl NamePattern {
    fn new(s: &str) -> Self {
        match s.split_once('/') {
            Some((ns, prefix)) => Self {
                namespace: Some(ns.to_string()),
                prefix: prefix.to_string(),
            },
            None => Self {
                namespace: None,
                prefix: s.to_string(),
            },
        }
    }

    fn matches(&self, namespace: &str, name: &str) -> bool {
        // An endpoint without a name (world, host) never matches a pod filter.
        !name.is_empty()
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && name.starts_with(&self.prefix)
    }
}

/// A Kubernetes equality-based label selector: comma-separated
/// `key`, `!key`, `key=value`, `key==value`, `key!=value`. Keys may carry a
/// Cilium source (`k8s:app`); without one they match any source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
}

impl Selector {
    fn parse(s: &str) -> Result<Self, FilterError> {
        let err = |why| FilterError::Label(s.to_string(), why);
        if s.contains('(') {
            return Err(err("set-based selectors are not supported"));
        }
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(err("empty requirement"));
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let key = match &req {
                Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _) => k,
            };
            if key.is_empty() {
                return Err(err("empty key"));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    fn matches(&self, labels: &[String]) -> bool {
        let parsed: Vec<Label<'_>> = labels.iter().map(|l| Label::parse(l)).collect();
        let value_of = |key: &str| parsed.iter().find(|l| l.key_matches(key)).map(|l| l.value);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => value_of(k).is_some(),
            Requirement::NotExists(k) => value_of(k).is_none(),
            Requirement::Equals(k, v) => value_of(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => value_of(k) != Some(v.as_str()),
        })
    }
}

/// A flow label `source:key=value` split into its parts.
struct Label<'a> {
    source: &'a str,
    key: &'a str,
    value: &'a str,
}

impl<'a> Label<'a> {
    fn parse(s: &'a str) -> Self {
        let (kv_source, value) = s.split_once('=').unwrap_or((s, ""));
        let (source, key) = kv_source.split_once(':').unwrap_or(("", kv_source));
        Self { source, key, value }
    }

    fn key_matches(&self, selector_key: &str) -> bool {
        match selector_key.split_once(':') {
            Some((source, key)) => source == self.source && key == self.key,
            None => selector_key == self.key,
        }
    }
}

/// A word of Hubble's `protocol` filter. Not the Kubernetes protocol of
/// manifests and policies (`weir_types::Protocol`): it matches a flow's
/// layer-4 variant, includes ICMP and accepts L7 names, as Hubble does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv4,
    Icmpv6,
    /// L7 protocol names: valid input, but no L3/L4 flow carries them.
    L7,
}

impl Protocol {
    fn parse(s: &str) -> Result<Self, FilterError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "sctp" => Self::Sctp,
            "icmp" => Self::Icmp,
            "icmpv4" => Self::Icmpv4,
            "icmpv6" => Self::Icmpv6,
            "http" | "dns" | "kafka" => Self::L7,
            _ => return Err(FilterError::Protocol(s.to_string())),
        })
    }

    fn matches(&self, flow: &Flow) -> bool {
        use layer4::Protocol as P;
        let l4 = flow.l4.as_ref().and_then(|l| l.protocol.as_ref());
        matches!(
            (self, l4),
            (Self::Tcp, Some(P::Tcp(_)))
                | (Self::Udp, Some(P::Udp(_)))
                | (Self::Sctp, Some(P::Sctp(_)))
                | (Self::Icmp | Self::Icmpv4, Some(P::IcmPv4(_)))
                | (Self::Icmp | Self::Icmpv6, Some(P::IcmPv6(_)))
        )
    }
}

#[cfg(test)]
mod tests;
