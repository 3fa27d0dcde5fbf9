//! The answers of the lab's cluster DNS: Kubernetes' DNS specification for
//! Services and Pods under the cluster domain, from whatever the caller
//! knows of the cluster (pure, so the naming rules are unit tested).
//!
//! - `<service>.<namespace>.svc.<domain>`: A of the ClusterIP; of every
//!   ready endpoint address for a headless Service; a CNAME to the
//!   external name for an ExternalName Service, followed with the target's
//!   records when the target is a cluster name.
//! - `<a-b-c-d>.<namespace>.pod.<domain>`: A of the address it spells.
//! - Anything else is NXDOMAIN: the lab is sealed, there is nothing
//!   upstream to forward to. A name that exists without records of the
//!   asked type (AAAA of an IPv4 Service) is NOERROR with no answer.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The cluster domain kubelet is told (`--cluster-domain`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Short, so a changed Service is seen soon (CoreDNS defaults to 30 s).
const TTL: u32 = 5;

/// What a Service's name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceRecord {
    ClusterIp(Ipv4Addr),
    /// Headless (`clusterIP: None`): the ready endpoints' addresses.
    Headless(Vec<Ipv4Addr>),
    ExternalName(String),
}

/// The response to `request`, with `service(namespace, name)` telling
/// what a Service resolves to (None: no such Service).
pub fn answer(request: &Message, service: impl Fn(&str, &str) -> Option<ServiceRecord>) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false);
    let [query] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return response;
    };
    response.add_query(query.clone());
    if request.op_code() != OpCode::Query || request.message_type() != MessageType::Query {
        response.set_response_code(ResponseCode::NotImp);
        return response;
    }
    let mut name = query.name().clone();
    let Some(mut found) = resolve(&name.to_ascii().to_ascii_lowercase(), &service) else {
        response.set_response_code(ResponseCode::NXDomain);
        return response;
    };
    response.set_authoritative(true);
    // An alias inside the cluster is followed here, as CoreDNS does: the
    // answer holds the chain and the target's records (a bounded chain:
    // ExternalNames may point at each other).
    for _ in 0..MAX_ALIASES {
        for rdata in found.records(query.query_type()) {
            response.add_answer(Record::from_rdata(name.clone(), TTL, rdata));
        }
        let Found::Alias(target) = &found else {
            break;
        };
        let Some(next) = resolve(&target.to_ascii_lowercase(), &service) else {
            break;
        };
        let Ok(target) = Name::from_ascii(target) else {
            break;
        };
        name = target;
        found = next;
    }
    response
}

/// How many aliases one answer follows.
const MAX_ALIASES: usize = 8;

/// What a name is, when the cluster has it.
enum Found {
    Addresses(Vec<Ipv4Addr>),
    Alias(String),
}

impl Found {
    fn records(&self, wanted: RecordType) -> Vec<RData> {
        match self {
            Found::Addresses(addresses) if matches!(wanted, RecordType::A | RecordType::ANY) => {
                addresses.iter().map(|a| RData::A(A(*a))).collect()
            }
            Found::Addresses(_) => Vec::new(),
            // A CNAME answers every type; the client follows it.
            Found::Alias(target) => Name::from_ascii(target)
                .map(|mut target| {
                    target.set_fqdn(true);
                    vec![RData::CNAME(CNAME(target))]
                })
                .unwrap_or_default(),
        }
    }
}

/// `name` (lower case, with or without the final dot) in the cluster.
fn resolve(name: &str, service: &impl Fn(&str, &str) -> Option<ServiceRecord>) -> Option<Found> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let inside = name.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix('.')?;
    let labels: Vec<&str> = inside.split('.').collect();
    match labels.as_slice() {
        [service_name, namespace, "svc"] => match service(namespace, service_name)? {
            ServiceRecord::ClusterIp(address) => Some(Found::Addresses(vec![address])),
            ServiceRecord::Headless(addresses) => Some(Found::Addresses(addresses)),
            ServiceRecord::ExternalName(target) => Some(Found::Alias(target)),
        },
        [dashed, _namespace, "pod"] => {
            let address: Ipv4Addr = dashed.replace('-', ".").parse().ok()?;
            Some(Found::Addresses(vec![address]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
