//! Kubernetes EndpointSlice (discovery.k8s.io/v1), read and validated from
//! one YAML document, limited to what Weir balances:
//!
//! - The label `kubernetes.io/service-name` is required: it names the
//!   Service (in the slice's namespace) the endpoints belong to.
//! - `addressType: IPv4` or `IPv6` (read by [`AnyEndpointSlice`]; an
//!   [`EndpointSlice`] of addresses `A` holds one family, as the API
//!   defines it); FQDN is rejected as unsupported.
//! - Each endpoint has 1-100 addresses (the API server's limits), all
//!   fungible: Weir, like kube-proxy, uses the first.
//! - Conditions keep their three states; [`EndpointConditions::ready`] and
//!   friends apply the API's reading of an absent value (ready and serving
//!   absent = true, terminating absent = false).
//! - A port without `port` is kept (the API allows it) but carries no
//!   traffic; a port name `""` is the unnamed port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_yaml_ng::Value;
use weir_types::{NamespacedName, Protocol};

use crate::error::{FieldErrors, Path};
use crate::family::{IpFamily, LbAddress};
use crate::service::read_namespace;
use crate::validate;
use crate::yaml::{self, field};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MAX_ENDPOINTS: usize = 1000;
pub const MAX_ADDRESSES: usize = 100;
pub const MAX_PORTS: usize = 100;

/// An EndpointSlice of `addressType` IPv4 (the default) or, with
/// `A = Ipv6Addr`, IPv6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSlice<A = Ipv4Addr> {
    pub namespace: String,
    pub name: String,
    /// The value of the `kubernetes.io/service-name` label.
    pub service_name: String,
    pub labels: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint<A>>,
    pub ports: Vec<EndpointPort>,
}

/// An EndpointSlice of either address type, as read from a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AnyEndpointSlice {
    V4(EndpointSlice),
    V6(EndpointSlice<Ipv6Addr>),
}

impl AnyEndpointSlice {
    /// Reads and validates one parsed YAML document of either address type
    /// (see [`EndpointSlice::from_document`]).
    pub fn from_document(document: &Value) -> Result<AnyEndpointSlice, FieldErrors> {
        let ipv6 = document.is_mapping()
            && field(document, "addressType").and_then(Value::as_str) == Some("IPv6");
        if ipv6 {
            read(document).map(AnyEndpointSlice::V6)
        } else {
            read(document).map(AnyEndpointSlice::V4)
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            AnyEndpointSlice::V4(s) => &s.namespace,
            AnyEndpointSlice::V6(s) => &s.namespace,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            AnyEndpointSlice::V4(s) => &s.name,
            AnyEndpointSlice::V6(s) => &s.name,
        }
    }

    pub fn family(&self) -> IpFamily {
        match self {
            AnyEndpointSlice::V4(_) => IpFamily::Ipv4,
            AnyEndpointSlice::V6(_) => IpFamily::Ipv6,
        }
    }

    /// The Service the slice belongs to.
    pub fn service(&self) -> NamespacedName {
        match self {
            AnyEndpointSlice::V4(s) => s.service(),
            AnyEndpointSlice::V6(s) => s.service(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint<A = Ipv4Addr> {
    pub addresses: Vec<A>,
    pub conditions: EndpointConditions,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectRef>,
}

/// The conditions as written: None is "unknown" and read by the methods.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    /// Ready for new traffic; absent means true.
    pub fn ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    /// Able to serve (also while terminating); absent means true.
    pub fn serving(&self) -> bool {
        self.serving.unwrap_or(true)
    }

    /// Absent means false.
    pub fn terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EndpointPort {
    /// None is the unnamed port (`""` or absent).
    pub name: Option<String>,
    pub protocol: Protocol,
    /// None: not specified (the API allows it); such a port is not balanced.
    pub port: Option<u16>,
}

impl<A> EndpointSlice<A> {
    /// The Service this slice belongs to.
    pub fn service(&self) -> NamespacedName {
        NamespacedName::new(&self.namespace, &self.service_name)
    }
}

impl EndpointSlice {
    /// Reads and validates one parsed YAML document
    /// (`apiVersion: discovery.k8s.io/v1`, `kind: EndpointSlice`) of
    /// `addressType: IPv4`; on any problem, every problem with its path.
    /// [`AnyEndpointSlice::from_document`] reads either type.
    pub fn from_document(document: &Value) -> Result<EndpointSlice, FieldErrors> {
        read(document)
    }
}

/// Reads a slice whose `addressType` is `A`'s family.
fn read<A: LbAddress>(document: &Value) -> Result<EndpointSlice<A>, FieldErrors> {
    let mut errors = FieldErrors::new();
    if !document.is_mapping() {
        errors.push(Path::default(), "must be a mapping (a Kubernetes object)");
        return Err(errors);
    }
    yaml::expect_kind(
        document,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        &mut errors,
    );
    let meta = Path::root("metadata");
    let metadata = field(document, "metadata");
    let name_path = meta.field("name");
    let name = match yaml::string(
        metadata.and_then(|m| field(m, "name")),
        &name_path,
        &mut errors,
    ) {
        None | Some("") => {
            errors.push(name_path, "required");
            String::new()
        }
        Some(name) => {
            if !validate::is_dns1123_subdomain(name) {
                errors.push(
                        name_path,
                        format!("invalid name {name:?}: a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253)"),
                    );
            }
            name.to_string()
        }
    };
    let namespace = read_namespace(metadata, &meta, &mut errors);
    let labels_path = meta.field("labels");
    let labels = yaml::string_map(
        metadata.and_then(|m| field(m, "labels")),
        &labels_path,
        &mut errors,
    );
    validate::labels(&labels, &labels_path, &mut errors);
    let service_name = match labels.get(SERVICE_NAME_LABEL) {
        Some(service) if validate::is_dns1035_label(service) => service.clone(),
        Some(service) => {
            errors.push(
                labels_path.key(SERVICE_NAME_LABEL),
                format!("{service:?} is not a valid Service name"),
            );
            String::new()
        }
        None => {
            errors.push(
                labels_path.key(SERVICE_NAME_LABEL),
                "required: the name of the Service these endpoints belong to",
            );
            String::new()
        }
    };

    let type_path = Path::root("addressType");
    match yaml::string(field(document, "addressType"), &type_path, &mut errors) {
        Some(family) if family == A::FAMILY.as_str() => {}
        Some(other @ ("IPv4" | "IPv6")) => errors.push(
            type_path,
            format!("{other} where an {} slice was expected", A::FAMILY),
        ),
        Some("FQDN") => errors.push(
            type_path,
            "FQDN is not supported by Weir's load balancer yet (IPv4 and IPv6 are)",
        ),
        Some(other) => errors.push(
            type_path,
            format!("unsupported value {other:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        ),
        None => {
            if field(document, "addressType").is_none() {
                errors.push(type_path, "required");
            }
        }
    }

    let endpoints = read_endpoints(field(document, "endpoints"), &mut errors);
    let ports = read_ports(field(document, "ports"), &mut errors);

    errors.into_result(EndpointSlice {
        namespace,
        name,
        service_name,
        labels,
        endpoints,
        ports,
    })
}

fn read_endpoints<A: LbAddress>(
    value: Option<&Value>,
    errors: &mut FieldErrors,
) -> Vec<Endpoint<A>> {
    let path = Path::root("endpoints");
    let items = yaml::sequence(value, &path, errors);
    if items.len() > MAX_ENDPOINTS {
        errors.push(
            path.clone(),
            format!("must have at most {MAX_ENDPOINTS} items"),
        );
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        if yaml::mapping(Some(item), &p, errors).is_some() {
            out.push(read_endpoint(item, &p, errors));
        }
    }
    out
}

fn read_endpoint<A: LbAddress>(item: &Value, p: &Path, errors: &mut FieldErrors) -> Endpoint<A> {
    let addresses_path = p.field("addresses");
    let items = yaml::sequence(field(item, "addresses"), &addresses_path, errors);
    if items.is_empty() {
        errors.push(addresses_path.clone(), "must contain at least 1 address");
    } else if items.len() > MAX_ADDRESSES {
        errors.push(
            addresses_path.clone(),
            format!("must have at most {MAX_ADDRESSES} items"),
        );
    }
    let mut addresses = Vec::new();
    for (j, address) in items.iter().enumerate() {
        let ap = addresses_path.index(j);
        if let Some(text) = yaml::string(Some(address), &ap, errors) {
            if let Some(ip) = validate::routable::<A>(text, &ap, errors) {
                addresses.push(ip);
            }
        }
    }

    let cp = p.field("conditions");
    let conditions_value = field(item, "conditions");
    yaml::mapping(conditions_value, &cp, errors);
    let condition = |name: &str, errors: &mut FieldErrors| {
        yaml::boolean(
            conditions_value.and_then(|c| field(c, name)),
            &cp.field(name),
            errors,
        )
    };
    let conditions = EndpointConditions {
        ready: condition("ready", errors),
        serving: condition("serving", errors),
        terminating: condition("terminating", errors),
    };

    let node_path = p.field("nodeName");
    let node_name = yaml::string(field(item, "nodeName"), &node_path, errors)
        .filter(|n| !n.is_empty())
        .map(|n| {
            if !validate::is_dns1123_subdomain(n) {
                errors.push(
                    node_path.clone(),
                    format!("invalid node name {n:?}: a DNS-1123 subdomain"),
                );
            }
            n.to_string()
        });

    let target_ref = read_target_ref(field(item, "targetRef"), &p.field("targetRef"), errors);
    Endpoint {
        addresses,
        conditions,
        node_name,
        target_ref,
    }
}

fn read_target_ref(value: Option<&Value>, p: &Path, errors: &mut FieldErrors) -> Option<ObjectRef> {
    let value = value?;
    yaml::mapping(Some(value), p, errors)?;
    let text = |name: &str, errors: &mut FieldErrors| {
        yaml::string(field(value, name), &p.field(name), errors)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let kind = text("kind", errors).unwrap_or_default();
    let namespace = text("namespace", errors);
    let name = text("name", errors);
    let name = match name {
        Some(name) => name,
        None => {
            errors.push(p.field("name"), "required");
            String::new()
        }
    };
    Some(ObjectRef {
        kind,
        namespace,
        name,
    })
}

fn read_ports(value: Option<&Value>, errors: &mut FieldErrors) -> Vec<EndpointPort> {
    let path = Path::root("ports");
    let items = yaml::sequence(value, &path, errors);
    if items.len() > MAX_PORTS {
        errors.push(path.clone(), format!("must have at most {MAX_PORTS} items"));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        if yaml::mapping(Some(item), &p, errors).is_none() {
            continue;
        }
        let name_path = p.field("name");
        let name = yaml::string(field(item, "name"), &name_path, errors).filter(|n| !n.is_empty());
        if let Some(name) = name {
            if !validate::is_dns1123_label(name) {
                errors.push(
                    name_path.clone(),
                    format!("invalid port name {name:?}: a DNS-1123 label"),
                );
            }
        }
        if !names.insert(name.unwrap_or_default().to_string()) {
            errors.push(
                name_path,
                format!("duplicate value {:?}", name.unwrap_or_default()),
            );
        }
        let protocol_path = p.field("protocol");
        let protocol_text = yaml::string(field(item, "protocol"), &protocol_path, errors);
        let protocol = validate::protocol(protocol_text, &protocol_path, errors);
        let port_path = p.field("port");
        let port = yaml::integer(field(item, "port"), &port_path, errors)
            .and_then(|n| validate::port_number(n, &port_path, errors));
        out.push(EndpointPort {
            name: name.map(str::to_string),
            protocol,
            port,
        });
    }
    out
}

#[cfg(test)]
mod tests;
