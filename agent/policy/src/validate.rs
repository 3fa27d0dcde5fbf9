//! Field checks shared by the NetworkPolicy and Weir CRD front ends:
//! CIDRs, `except` prefixes, port numbers, ranges and named ports.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use weir_types::IntOrString;

use crate::error::{FieldErrors, Path};
use crate::rule::{CidrScope, Peer, PortRef};

/// Parses a CIDR; with `allow_bare_ip` a plain address means a host prefix
/// (Cilium's `fromCIDR: 10.0.0.1`). Host bits are cleared (`10.0.0.1/8` →
/// `10.0.0.0/8`).
pub fn parse_cidr(
    s: &str,
    allow_bare_ip: bool,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<IpNetwork> {
    let parsed = if s.contains('/') {
        s.parse::<IpNetwork>().ok()
    } else if allow_bare_ip {
        s.parse::<IpAddr>().ok().map(IpNetwork::from)
    } else {
        None
    };
    match parsed {
        Some(net) => IpNetwork::new(net.network(), net.prefix()).ok(),
        None => {
            let want = if allow_bare_ip {
                "an IP address or CIDR"
            } else {
                "a CIDR"
            };
            errors.push(
                path.clone(),
                format!("invalid CIDR {s:?}: must be {want} such as 10.0.0.0/8 or fd00::/64"),
            );
            None
        }
    }
}

/// Whether `inner` lies within `outer` (same family, at least as long a prefix).
pub fn contains(outer: &IpNetwork, inner: &IpNetwork) -> bool {
    match (outer, inner) {
        (IpNetwork::V4(o), IpNetwork::V4(i)) => o.prefix() <= i.prefix() && o.contains(i.network()),
        (IpNetwork::V6(o), IpNetwork::V6(i)) => o.prefix() <= i.prefix() && o.contains(i.network()),
        _ => false,
    }
}

/// Parses a CIDR with its `except` list; each except must be a strict subnet
/// of the CIDR.
pub fn parse_cidr_peer(
    cidr: &str,
    except: &[String],
    allow_bare_ip: bool,
    scope: CidrScope,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<Peer> {
    let before = errors.len();
    let net = parse_cidr(cidr, allow_bare_ip, &path.field("cidr"), errors);
    let mut excepts = Vec::new();
    for (i, e) in except.iter().enumerate() {
        let p = path.field("except").index(i);
        if let Some(ex) = parse_cidr(e, allow_bare_ip, &p, errors) {
            if let Some(net) = net {
                if !contains(&net, &ex) || ex.prefix() == net.prefix() {
                    errors.push(p, format!("{e} is not a strict subnet of cidr {net}"));
                    continue;
                }
            }
            excepts.push(ex);
        }
    }
    if errors.len() != before {
        return None;
    }
    excepts.sort();
    excepts.dedup();
    net.map(|cidr| Peer::Cidr {
        cidr,
        except: excepts,
        scope,
    })
}

/// An IANA service name as Kubernetes validates named ports: at most 15
/// characters, lowercase letters, digits and `-`, at least one letter, no
/// `-` at either end and no `--`.
pub fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn check_port_number(n: i64, what: &str, path: &Path, errors: &mut FieldErrors) -> Option<u16> {
    if (1..=65535).contains(&n) {
        Some(n as u16)
    } else {
        errors.push(path.clone(), format!("{what} {n} is out of range 1-65535"));
        None
    }
}

/// How a front end treats a missing or zero port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStyle {
    /// NetworkPolicy: numbers 1-65535; strings must be port names.
    Kubernetes,
    /// Weir CRDs (Cilium): the port is a string; `"0"` and `""` mean all
    /// ports; a decimal string is a number.
    Weir,
}

/// Validates `port` + `endPort` into a [`PortRef`]. `path` is the path of the
/// ports entry (the errors name `.port` and `.endPort` under it).
pub fn parse_port(
    port: Option<&IntOrString>,
    end_port: Option<i64>,
    style: PortStyle,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<PortRef> {
    let before = errors.len();
    let port_path = path.field("port");
    // Normalize to a number, a name, or "any".
    enum P {
        Any,
        Num(i64),
        Name(String),
    }
    let p = match port {
        None => P::Any,
        Some(IntOrString::Int(n)) if style == PortStyle::Weir && *n == 0 => P::Any,
        Some(IntOrString::Int(n)) => P::Num(*n),
        Some(IntOrString::String(s)) => {
            if style == PortStyle::Weir && s.chars().all(|c| c.is_ascii_digit()) {
                match s.parse::<i64>() {
                    _ if s.is_empty() => P::Any,
                    Ok(0) => P::Any,
                    Ok(n) => P::Num(n),
                    Err(_) => {
                        errors.push(
                            port_path.clone(),
                            format!("port {s} is out of range 1-65535"),
                        );
                        return None;
                    }
                }
            } else if valid_port_name(s) {
                P::Name(s.clone())
            } else {
                errors.push(
                    port_path.clone(),
                    format!(
                        "invalid port {s:?}: must be a number 1-65535 or a port name (at most 15 lowercase letters, digits and '-', with at least one letter)"
                    ),
                );
                return None;
            }
        }
    };
    let result = match (p, end_port) {
        (P::Any, None) => Some(PortRef::Any),
        (P::Any, Some(_)) => {
            errors.push(path.field("endPort"), "endPort requires a numeric port");
            None
        }
        (P::Name(n), None) => Some(PortRef::Named(n)),
        (P::Name(n), Some(_)) => {
            errors.push(
                path.field("endPort"),
                format!("endPort cannot be used with named port {n:?}"),
            );
            None
        }
        (P::Num(n), end) => {
            let lo = check_port_number(n, "port", &port_path, errors);
            let hi = match end {
                None => lo,
                Some(e) => {
                    let hi = check_port_number(e, "endPort", &path.field("endPort"), errors);
                    match (lo, hi) {
                        (Some(lo), Some(hi)) if hi < lo => {
                            errors.push(path.field("endPort"), format!("{hi} is below port {lo}"));
                            None
                        }
                        _ => hi,
                    }
                }
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) => Some(PortRef::Range(lo, hi)),
                _ => None,
            }
        }
    };
    if errors.len() != before {
        return None;
    }
    result
}

#[cfg(test)]
mod tests;
