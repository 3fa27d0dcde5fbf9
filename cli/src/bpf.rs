//! `weir bpf ipcache|ct list` and `weir bpf policy get`: datapath maps as
//! the agent reads them back. (`weir bpf lb list` is in `services`.)

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;

use crate::agent::{self, rpc_error};
use crate::output;
use crate::table::Table;

/// One line of `bpf ipcache list -o json` (fields in key order, see
/// [`crate::output`]).
#[derive(Serialize)]
struct IpcacheJson<'a> {
    address_identity: u32,
    identity: u32,
    node_ip: &'a str,
    prefix: &'a str,
}

impl<'a> From<&'a v1::IpcacheEntry> for IpcacheJson<'a> {
    fn from(e: &'a v1::IpcacheEntry) -> Self {
        IpcacheJson {
            address_identity: e.address_identity,
            identity: e.identity,
            node_ip: &e.node_ip,
            prefix: &e.prefix,
        }
    }
}

/// One line of `bpf ct list -o json`.
#[derive(Serialize)]
struct ConntrackJson<'a> {
    destination: &'a str,
    expires_in_seconds: u64,
    packets_forward: u64,
    packets_reply: u64,
    protocol: &'a str,
    scope: &'static str,
    source: &'a str,
    tcp_flags: &'a str,
}

impl<'a> From<&'a v1::ConntrackEntry> for ConntrackJson<'a> {
    fn from(e: &'a v1::ConntrackEntry) -> Self {
        ConntrackJson {
            destination: &e.destination,
            expires_in_seconds: e.expires_in_seconds,
            packets_forward: e.packets_forward,
            packets_reply: e.packets_reply,
            protocol: &e.protocol,
            scope: output::direction(e.scope()),
            source: &e.source,
            tcp_flags: &e.tcp_flags,
        }
    }
}

/// One line of `bpf policy get -o json`.
#[derive(Serialize)]
struct PolicyEntryJson<'a> {
    direction: &'static str,
    identity: u32,
    ports: &'a str,
    prefix_len: u32,
    protocol: String,
    verdict: String,
}

impl<'a> From<&'a v1::PolicyMapEntry> for PolicyEntryJson<'a> {
    /// An entry that does not decode shows `?` and, as its verdict, why.
    fn from(e: &'a v1::PolicyMapEntry) -> Self {
        let invalid = !e.invalid.is_empty();
        PolicyEntryJson {
            direction: if invalid {
                "?"
            } else {
                output::direction(e.direction())
            },
            identity: e.identity,
            ports: &e.ports,
            prefix_len: e.prefix_len,
            protocol: if invalid {
                "?".into()
            } else {
                output::l4_protocol(e.protocol)
            },
            verdict: if invalid {
                format!("invalid: {}", e.invalid)
            } else {
                output::verdict(e.verdict()).into()
            },
        }
    }
}

pub async fn ipcache(socket: &Path, json: bool) -> Result<()> {
    let r = agent::inspect(socket)
        .await?
        .list_ipcache(v1::ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_lines(r.entries.iter().map(IpcacheJson::from));
    }
    let mut table = Table::new(&["PREFIX", "IDENTITY", "NODE", "IPBLOCK IDENTITY"]);
    for e in &r.entries {
        table.row(vec![
            e.prefix.clone(),
            e.identity.to_string(),
            e.node_ip.clone(),
            match e.address_identity {
                0 => String::new(),
                id => id.to_string(),
            },
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn conntrack(socket: &Path, json: bool) -> Result<()> {
    let r = agent::inspect(socket)
        .await?
        .list_conntrack(v1::ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_lines(r.entries.iter().map(ConntrackJson::from));
    }
    let mut table = Table::new(&[
        "SCOPE",
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "EXPIRES",
        "FWD",
        "REV",
        "FLAGS",
    ]);
    for e in &r.entries {
        table.row(vec![
            output::direction(e.scope()).to_string(),
            e.protocol.clone(),
            e.source.clone(),
            e.destination.clone(),
            format!("{}s", e.expires_in_seconds),
            e.packets_forward.to_string(),
            e.packets_reply.to_string(),
            e.tcp_flags.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn policy_map(socket: &Path, endpoint: u32, json: bool) -> Result<()> {
    let r = agent::inspect(socket)
        .await?
        .policy_map(v1::PolicyMapRequest {
            endpoint_id: endpoint,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_lines(r.entries.iter().map(PolicyEntryJson::from));
    }
    let mut table = Table::new(&["DIRECTION", "VERDICT", "PEER", "PROTOCOL", "PORTS"]);
    for e in r.entries.iter().map(PolicyEntryJson::from) {
        let peer = if e.identity == 0 {
            "any".to_string()
        } else {
            e.identity.to_string()
        };
        table.row(vec![
            e.direction.to_string(),
            e.verdict,
            peer,
            e.protocol,
            e.ports.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_unchanged() {
        let ipcache = v1::IpcacheEntry {
            prefix: "10.244.1.2/32".into(),
            identity: 14437,
            node_ip: "".into(),
            address_identity: 25_165_825,
        };
        assert_eq!(
            serde_json::to_string(&IpcacheJson::from(&ipcache)).unwrap(),
            include_str!("../testdata/ipcache.json")
        );
        let ct = v1::ConntrackEntry {
            scope: v1::TrafficDirection::Egress.into(),
            protocol: "TCP".into(),
            source: "10.0.0.1:5".into(),
            destination: "10.0.0.2:80".into(),
            expires_in_seconds: 20,
            packets_forward: 3,
            packets_reply: 2,
            tcp_flags: "SYN|ACK".into(),
        };
        assert_eq!(
            serde_json::to_string(&ConntrackJson::from(&ct)).unwrap(),
            include_str!("../testdata/conntrack.json")
        );
        let entry = v1::PolicyMapEntry {
            direction: v1::TrafficDirection::Ingress.into(),
            identity: 0,
            protocol: v1::L4Protocol::Tcp.into(),
            ports: "80".into(),
            verdict: v1::PolicyVerdict::Allow.into(),
            prefix_len: 40,
            invalid: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&PolicyEntryJson::from(&entry)).unwrap(),
            include_str!("../testdata/policy_map.json")
        );
    }

    #[test]
    fn an_entry_that_does_not_decode_shows_why() {
        let entry = v1::PolicyMapEntry {
            identity: 7,
            ports: "?".into(),
            prefix_len: 99,
            invalid: "bad prefix length 99".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&PolicyEntryJson::from(&entry)).unwrap(),
            r#"{"direction":"?","identity":7,"ports":"?","prefix_len":99,"protocol":"?","verdict":"invalid: bad prefix length 99"}"#
        );
    }
}
