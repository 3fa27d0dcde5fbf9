//! Node-local identities for CIDRs (`1 << 24 | n`): their labels.
//!
//! These never leave the node: they are not stored in the shared store and
//! are never put on the wire, so each agent numbers its CIDRs on its own,
//! with the policy engine's allocator (`weir_policy::LocalIdentities`, which
//! frees the id of a CIDR no policy names any more).

use ipnetwork::IpNetwork;
use weir_abi::identity::WORLD;
use weir_types::labels::SOURCE_CIDR;
use weir_types::LabelSet;

/// The labels of a CIDR identity, as Cilium writes them (REFERENCE §3.3):
/// `cidr:<prefix>` (IPv6 ':' as '-') and `reserved:world`. Host bits of
/// `cidr` are ignored.
pub fn cidr_labels(cidr: IpNetwork) -> LabelSet {
    let network = IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
    let prefix = format!("{}/{}", network.network(), network.prefix()).replace(':', "-");
    let world = LabelSet::reserved(WORLD).unwrap_or_default();
    world.with(format!("{SOURCE_CIDR}:{prefix}"), "")
}

#[cfg(test)]
mod tests;
