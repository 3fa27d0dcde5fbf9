//! Field checks shared by the Service and EndpointSlice readers: Kubernetes
//! name formats, label keys and values, port numbers, protocols and IPv4
//! and IPv6 addresses (with the API server's messages where it has one).

use std::collections::BTreeMap;
use std::net::IpAddr;

use weir_types::Protocol;

use crate::error::{FieldErrors, Path};
use crate::family::LbAddress;

/// `protocol` of a port; absent means TCP (Kubernetes defaulting). Weir
/// balances TCP and UDP: SCTP is valid Kubernetes but rejected as
/// unsupported, an error rather than ignored.
pub(crate) fn protocol(text: Option<&str>, path: &Path, errors: &mut FieldErrors) -> Protocol {
    match text {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => {
            errors.push(
                path.clone(),
                "SCTP is not supported by Weir yet (TCP or UDP)",
            );
            Protocol::Tcp
        }
        Some(other) => {
            errors.push(
                path.clone(),
                format!(
                    "unsupported value {other:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
                ),
            );
            Protocol::Tcp
        }
    }
}

/// A port number 1-65535.
pub(crate) fn port_number(value: i64, path: &Path, errors: &mut FieldErrors) -> Option<u16> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Some(port),
        _ => {
            errors.push(
                path.clone(),
                format!("invalid value {value}: must be between 1 and 65535, inclusive"),
            );
            None
        }
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// RFC 1123 label: lower-case alphanumerics and '-', alphanumeric at both
/// ends, at most 63 characters (namespaces, port names).
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|&c| is_alnum(c) || c == b'-')
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter (Service
/// names).
pub(crate) fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters (object
/// names such as EndpointSlices, node names).
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// IANA service name (a named `targetPort`): at most 15 characters,
/// lower-case alphanumerics and '-', at least one letter, no '-' at either
/// end or twice in a row.
pub(crate) fn is_iana_svc_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter().all(|&c| is_alnum(c) || c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|&c| inner(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// A label value: empty, or a label name.
pub(crate) fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// Checks every key and value of a label map (labels, selectors).
pub(crate) fn labels(map: &BTreeMap<String, String>, path: &Path, errors: &mut FieldErrors) {
    for (key, value) in map {
        let entry = path.key(key);
        if !is_qualified_name(key) {
            errors.push(
                entry.clone(),
                "invalid label key: must be [prefix/]name, name at most 63 alphanumerics, '-', '_' or '.'",
            );
        }
        if !is_label_value(value) {
            errors.push(
                entry,
                format!("invalid label value {value:?}: at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"),
            );
        }
    }
}

/// An IPv4 or IPv6 address (IPv4-mapped IPv6 addresses are refused: they
/// name an IPv4 address in the other family's clothes).
pub(crate) fn ip(text: &str, path: &Path, errors: &mut FieldErrors) -> Option<IpAddr> {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V6(address)) if address.to_ipv4_mapped().is_some() => {
            errors.push(
                path.clone(),
                format!("{text}: an IPv4-mapped IPv6 address: give the IPv4 address"),
            );
            None
        }
        Ok(address) => Some(address),
        Err(_) => {
            errors.push(
                path.clone(),
                format!("{text:?} is not a valid IPv4 address (nor IPv6)"),
            );
            None
        }
    }
}

/// An address of `A`'s family that may carry service or endpoint traffic:
/// not unspecified, loopback, link-local or link-local multicast (the API
/// server's `ValidateNonSpecialIP` / `ValidateEndpointIP`; see
/// [`LbAddress::special`]).
pub(crate) fn routable<A: LbAddress>(
    text: &str,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<A> {
    let Some(address) = A::parse(text) else {
        let message = if text.parse::<IpAddr>().is_ok() {
            format!("{text}: not an {} address", A::FAMILY)
        } else {
            format!("{text:?} is not a valid {} address", A::FAMILY)
        };
        errors.push(path.clone(), message);
        return None;
    };
    match address.special() {
        Some(why) => {
            errors.push(path.clone(), format!("{address} may not be {why}"));
            None
        }
        None => Some(address),
    }
}
