//! Rendering shared by the commands: JSON documents and lines, `key: value`
//! details, and the small words several commands print the same way.
//!
//! The `-o json` output of every command is a `#[derive(Serialize)]` type
//! next to the command. Their fields are declared in sorted key order: that
//! is the order this output has always had (it was built as `serde_json`
//! maps, which sort their keys), and scripts may compare it byte for byte.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use weir_abi::ip_proto;
use weir_agent_api::v1;

/// One JSON document, indented.
pub fn json_document(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// One JSON object per line.
pub fn json_lines<T: Serialize>(values: impl IntoIterator<Item = T>) -> Result<()> {
    for value in values {
        println!("{}", serde_json::to_string(&value)?);
    }
    Ok(())
}

/// Writes one line of a stream and flushes it; false when the reader went
/// away (`| head`), which ends a stream quietly.
pub fn stream_line(out: &mut impl Write, line: &str) -> bool {
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// `key:` and its value, values aligned.
pub fn field(key: &str, value: impl std::fmt::Display) {
    list(key, &[value.to_string()]);
}

/// `key:` then the first value, further values aligned under it.
pub fn list(key: &str, values: &[String]) {
    let label = format!("{key}:");
    match values.split_first() {
        None => println!("{label}"),
        Some((first, rest)) => {
            println!("{label:<17}{first}");
            for value in rest {
                println!("{:<17}{value}", "");
            }
        }
    }
}

/// `ingress` or `egress`; empty when the agent sent none.
pub fn direction(direction: v1::TrafficDirection) -> &'static str {
    match direction {
        v1::TrafficDirection::Unspecified => "",
        v1::TrafficDirection::Ingress => "ingress",
        v1::TrafficDirection::Egress => "egress",
    }
}

/// `allow`, `deny` or `audit` (denied, not dropped: audit mode); empty
/// when the agent sent none.
pub fn verdict(verdict: v1::PolicyVerdict) -> &'static str {
    match verdict {
        v1::PolicyVerdict::Unspecified => "",
        v1::PolicyVerdict::Allow => "allow",
        v1::PolicyVerdict::Deny => "deny",
        v1::PolicyVerdict::Audit => "audit",
    }
}

/// An `L4Protocol` value: `any` (0), or the IP protocol's name (`TCP`), or
/// its number when it has no name.
pub fn l4_protocol(value: i32) -> String {
    match u8::try_from(value) {
        Ok(0) => "any".into(),
        Ok(number) => ip_proto::Named(number).to_string(),
        Err(_) => value.to_string(),
    }
}

/// Whether policy is enforced in one direction of an endpoint.
pub fn enforcement(enforced: bool) -> &'static str {
    if enforced {
        "enforced"
    } else {
        "allow-all"
    }
}

/// [`enforcement`] of an endpoint that may be in policy audit mode: a
/// direction policy selects is `audit` there (its drops are reported, not
/// made).
pub fn enforcement_or_audit(enforced: bool, audit: bool) -> &'static str {
    if enforced && audit {
        "audit"
    } else {
        enforcement(enforced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_words() {
        assert_eq!(direction(v1::TrafficDirection::Ingress), "ingress");
        assert_eq!(direction(v1::TrafficDirection::Egress), "egress");
        assert_eq!(direction(v1::TrafficDirection::Unspecified), "");
        assert_eq!(verdict(v1::PolicyVerdict::Allow), "allow");
        assert_eq!(verdict(v1::PolicyVerdict::Deny), "deny");
        assert_eq!(verdict(v1::PolicyVerdict::Unspecified), "");
        let protocols = [
            v1::L4Protocol::Any as i32,
            v1::L4Protocol::Tcp as i32,
            v1::L4Protocol::Udp as i32,
            v1::L4Protocol::Sctp as i32,
            1,
            99,
            -1,
        ];
        assert_eq!(
            protocols.map(l4_protocol),
            ["any", "TCP", "UDP", "SCTP", "ICMP", "99", "-1"]
        );
    }
}
