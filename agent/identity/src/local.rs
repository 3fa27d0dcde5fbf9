//! Node-local identities for CIDRs (`1 << 24 | n`): their labels.
//!
//! These never leave the node: they are not stored in the shared store and
//! are never put on the wire, so each agent numbers its CIDRs on its own,
//! with the policy engine's allocator (`weir_policy::LocalIdentities`, which
//! frees the id of a CIDR no policy names any more).

use ipnetwork::IpNetwork;

use crate::labels::SecurityLabels;

/// The labels of a CIDR identity, as Cilium writes them (REFERENCE §3.3):
/// `cidr:<prefix>` (IPv6 ':' as '-') and `reserved:world`. Host bits of
/// `cidr` are ignored.
pub fn cidr_labels(cidr: IpNetwork) -> SecurityLabels {
    let network = IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
    let prefix = format!("{}/{}", network.network(), network.prefix()).replace(':', "-");
    SecurityLabels::new()
        .with(format!("cidr:{prefix}"), "")
        .with("reserved:world", "")
}

#[cfg(test)]
mod tests;
