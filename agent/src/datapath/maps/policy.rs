//! `weir_policy`: one LPM trie of every local endpoint's policy entries,
//! keyed by (endpoint, direction, peer identity, protocol, port prefix).
//!
//! The policy engine says what the map holds ([`weir_policy::MapState`]);
//! this module only encodes its keys and entries into the kernel's layout
//! (`weir_abi::policy`) and decodes them back:
//!
//! ```text
//! L4Prefix::Any                                  prefix 64       protocol 0, port 0
//! L4Prefix::Protocol { number, ports: ANY }      prefix 80       protocol number, port 0
//! L4Prefix::Protocol { number, ports: p/bits }   prefix 80+bits  protocol number, port p (network order)
//! PeerKey::Any / Identity(id)                    identity IDENTITY_ANY (0) / id
//! ```

use std::collections::BTreeMap;

use aya::maps::lpm_trie::Key;
use aya::Ebpf;
use weir_abi::events::{MATCH_ALL, MATCH_L3_L4, MATCH_L3_ONLY, MATCH_L4_ONLY};
use weir_abi::policy::{
    IDENTITY_ANY, POLICY_ALLOW, POLICY_DENY, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTOCOL,
    POLICY_PREFIX_FULL, PROTOCOL_ANY,
};
use weir_abi::{map_names, PolicyEntry, PolicyKey, TrafficDirection};
use weir_policy::{
    Direction, L4Prefix, MapEntry, MapKey, MapState, MatchKind, PeerKey, PortPrefix, Verdict,
};

use super::{lpm, map_err, removed, updated, TableError};

/// One policy map key: LPM prefix length and data.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LpmKey {
    pub prefix_len: u32,
    pub key: PolicyKey,
}

/// A key or entry that has no counterpart on the other side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("endpoint id {0} does not fit the policy map's 16 bits")]
    EndpointId(u32),
    #[error("prefix length {0} is none the agent writes")]
    PrefixLen(u32),
    #[error(
        "bits past the prefix are set (prefix {prefix_len}, protocol {protocol}, port {port})"
    )]
    HostBits {
        prefix_len: u32,
        protocol: u8,
        port: u16,
    },
    #[error("unknown direction code {0}")]
    Direction(u8),
    #[error("unknown verdict code {0}")]
    Verdict(u8),
    #[error("unknown match type {0}")]
    MatchType(u8),
}

/// The kernel key of `key`.
pub fn encode_key(key: &MapKey) -> Result<LpmKey, CodecError> {
    let endpoint_id =
        u16::try_from(key.endpoint).map_err(|_| CodecError::EndpointId(key.endpoint))?;
    let direction = match key.direction {
        Direction::Ingress => TrafficDirection::Ingress,
        Direction::Egress => TrafficDirection::Egress,
    };
    let (prefix_len, protocol, port) = match key.l4 {
        L4Prefix::Any => (POLICY_PREFIX_ANY_PROTOCOL, PROTOCOL_ANY, 0),
        L4Prefix::Protocol { number, ports } => (
            POLICY_PREFIX_ANY_PORT + u32::from(ports.bits()),
            number,
            ports.port(),
        ),
    };
    Ok(LpmKey {
        prefix_len,
        key: PolicyKey {
            endpoint_id,
            direction: direction as u8,
            pad0: 0,
            // `Identity(0)` would read back as `Any`; the engine never makes it.
            identity: key.peer.identity(),
            protocol,
            pad1: 0,
            port: port.to_be_bytes(),
        },
    })
}

/// The kernel value of `entry`.
pub fn encode_entry(entry: &MapEntry) -> PolicyEntry {
    PolicyEntry {
        verdict: match entry.verdict {
            Verdict::Allow => POLICY_ALLOW,
            Verdict::Deny => POLICY_DENY,
        },
        match_type: match entry.match_kind {
            MatchKind::L3Only => MATCH_L3_ONLY,
            MatchKind::L3L4 => MATCH_L3_L4,
            MatchKind::L4Only => MATCH_L4_ONLY,
            MatchKind::All => MATCH_ALL,
        },
        pad: [0; 2],
        rule: 0,
    }
}

/// The entries to write for `state`. Endpoints the map cannot key (ids
/// above 16 bits; the agent's are all 16-bit) are left out.
pub fn encode_state(state: &MapState) -> BTreeMap<LpmKey, PolicyEntry> {
    state
        .iter()
        .filter_map(|(key, entry)| Some((encode_key(key).ok()?, encode_entry(entry))))
        .collect()
}

/// The typed key of a kernel key.
pub fn decode_key(lpm: &LpmKey) -> Result<MapKey, CodecError> {
    let key = &lpm.key;
    let direction = match key.direction {
        d if d == TrafficDirection::Ingress as u8 => Direction::Ingress,
        d if d == TrafficDirection::Egress as u8 => Direction::Egress,
        other => return Err(CodecError::Direction(other)),
    };
    let port = u16::from_be_bytes(key.port);
    let host_bits = CodecError::HostBits {
        prefix_len: lpm.prefix_len,
        protocol: key.protocol,
        port,
    };
    let l4 = match lpm.prefix_len {
        POLICY_PREFIX_ANY_PROTOCOL if key.protocol == PROTOCOL_ANY && port == 0 => L4Prefix::Any,
        POLICY_PREFIX_ANY_PROTOCOL => return Err(host_bits),
        len @ POLICY_PREFIX_ANY_PORT..=POLICY_PREFIX_FULL => {
            // `len` is 80..=96, so the port bits are 0..=16.
            let bits = (len - POLICY_PREFIX_ANY_PORT) as u8;
            L4Prefix::Protocol {
                number: key.protocol,
                ports: PortPrefix::new(port, bits).ok_or(host_bits)?,
            }
        }
        other => return Err(CodecError::PrefixLen(other)),
    };
    Ok(MapKey {
        endpoint: u32::from(key.endpoint_id),
        direction,
        peer: match key.identity {
            IDENTITY_ANY => PeerKey::Any,
            id => PeerKey::Identity(id),
        },
        l4,
    })
}

/// The typed entry of a kernel value.
pub fn decode_entry(entry: &PolicyEntry) -> Result<MapEntry, CodecError> {
    Ok(MapEntry {
        verdict: match entry.verdict {
            POLICY_ALLOW => Verdict::Allow,
            POLICY_DENY => Verdict::Deny,
            other => return Err(CodecError::Verdict(other)),
        },
        match_kind: match entry.match_type {
            MATCH_L3_ONLY => MatchKind::L3Only,
            MATCH_L3_L4 => MatchKind::L3L4,
            MATCH_L4_ONLY => MatchKind::L4Only,
            MATCH_ALL => MatchKind::All,
            other => return Err(CodecError::MatchType(other)),
        },
    })
}

pub fn set_policy(
    ebpf: &mut Ebpf,
    prefix_len: u32,
    key: PolicyKey,
    entry: PolicyEntry,
) -> Result<(), TableError> {
    let mut map = lpm::<PolicyKey, PolicyEntry>(ebpf, map_names::POLICY)?;
    updated(
        map_names::POLICY,
        map.insert(&Key::new(prefix_len, key), entry, 0),
    )
}

pub fn remove_policy(ebpf: &mut Ebpf, prefix_len: u32, key: PolicyKey) -> Result<(), TableError> {
    let mut map = lpm::<PolicyKey, PolicyEntry>(ebpf, map_names::POLICY)?;
    removed(map_names::POLICY, map.remove(&Key::new(prefix_len, key)))
}

/// Every policy map entry.
pub fn policy_entries(ebpf: &mut Ebpf) -> Result<Vec<(LpmKey, PolicyEntry)>, TableError> {
    let map = lpm::<PolicyKey, PolicyEntry>(ebpf, map_names::POLICY)?;
    let mut entries = Vec::new();
    for item in map.iter() {
        let (key, entry) = item.map_err(map_err(map_names::POLICY))?;
        let key = LpmKey {
            prefix_len: key.prefix_len(),
            key: key.data(),
        };
        entries.push((key, entry));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
