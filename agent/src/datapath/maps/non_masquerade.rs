//! `weir_nonmasq`: the destinations masquerading leaves alone
//! (`--non-masquerade-cidr`, ip-masq-agent's `nonMasqueradeCIDRs`; the pod
//! CIDRs and the cluster's nodes are left alone by the program itself).
//! Written once at start: the map is made equal to the configured set.

use std::collections::BTreeSet;

use aya::Ebpf;
use ipnetwork::Ipv4Network;
use weir_abi::{map_names, PodCidrKey};

use super::pod_cidrs::{decode_key, encode_key};
use super::{lpm, map_err, removed, updated, TableError};

/// Makes the map hold exactly `cidrs`.
pub fn set_non_masquerade(ebpf: &mut Ebpf, cidrs: &[Ipv4Network]) -> Result<(), TableError> {
    let desired: BTreeSet<Ipv4Network> = cidrs.iter().copied().collect();
    let mut map = lpm::<PodCidrKey, u8>(ebpf, map_names::NON_MASQUERADE)?;
    let mut present = BTreeSet::new();
    for item in map.iter() {
        let (key, _) = item.map_err(map_err(map_names::NON_MASQUERADE))?;
        if let Some(cidr) = decode_key(&key) {
            present.insert(cidr);
        }
    }
    for stale in present.difference(&desired) {
        removed(map_names::NON_MASQUERADE, map.remove(&encode_key(*stale)))?;
    }
    for cidr in desired.difference(&present) {
        updated(
            map_names::NON_MASQUERADE,
            map.insert(&encode_key(*cidr), 1, 0),
        )?;
    }
    Ok(())
}
