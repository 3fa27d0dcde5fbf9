//! kube-proxy's chain names: the first 16 characters of the base32
//! (RFC 4648, Go's `base32.StdEncoding`) of a SHA-256, behind a prefix,
//! because iptables chain names are limited to 28 characters.

use sha2::{Digest, Sha256};

use super::{protocol_name, BenchService};

pub const SERVICES: &str = "KUBE-SERVICES";
pub const EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const NODEPORTS: &str = "KUBE-NODEPORTS";
pub const POSTROUTING: &str = "KUBE-POSTROUTING";
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const FORWARD: &str = "KUBE-FORWARD";
pub const PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// kubelet's anti-martian chain, which kube-proxy duplicates.
pub const KUBELET_FIREWALL: &str = "KUBE-FIREWALL";

/// Prefixes of the per-service and per-endpoint chains kube-proxy owns
/// (KUBE-SVC, KUBE-SVL, KUBE-EXT, KUBE-FW, KUBE-SEP).
pub const SERVICE_CHAIN_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first 16 base32 characters of sha256(`input`): 16 symbols of 5 bits
/// are exactly the first 10 bytes of the digest, so no padding is involved.
pub fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut out = String::with_capacity(16);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in &digest[..10] {
        // At most 4 bits are left over from the previous byte.
        acc = ((acc << 8) | u32::from(byte)) & 0xfff;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    out
}

/// `KUBE-SVC-<hash of port name + protocol>`.
pub fn service(svc: &BenchService) -> String {
    format!(
        "KUBE-SVC-{}",
        hash16(&format!(
            "{}{}",
            svc.port_name(),
            protocol_name(svc.protocol)
        ))
    )
}

/// `KUBE-SEP-<hash of port name + protocol + "ip:port">`.
pub fn endpoint(svc: &BenchService, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!(
            "{}{}{endpoint}",
            svc.port_name(),
            protocol_name(svc.protocol)
        ))
    )
}

/// Whether `chain` is one of the per-service chains kube-proxy deletes when
/// stale.
pub fn is_service_chain(chain: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// kube-proxy's `--probability` value for the i-th of n endpoints: 1/(n-i)
/// with ten decimals (Go's `%0.10f`).
pub fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}
