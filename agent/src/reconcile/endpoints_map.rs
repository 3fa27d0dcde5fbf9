//! The endpoints-map reconciler: one `weir_endpoints` entry per local
//! endpoint with an identity (id, identity, enforcement flags, address),
//! keyed by its host-side ifindex; only changed entries are written.

use std::collections::{BTreeMap, BTreeSet};

use aya::Ebpf;
use weir_abi::EndpointInfo;

use crate::datapath::maps::{self, TableError};
use crate::endpoint::registry::Endpoint;

#[derive(Default)]
pub struct EndpointMapSync {
    /// What the endpoints map holds, by ifindex.
    written: BTreeMap<u32, EndpointInfo>,
}

impl EndpointMapSync {
    /// Brings the map to `endpoints` (those `identity_of` knows); returns the
    /// ids of the endpoints whose entry was written.
    pub fn sync(
        &mut self,
        ebpf: &mut Ebpf,
        endpoints: &[Endpoint],
        identity_of: impl Fn(&Endpoint) -> Option<u32>,
        flags_of: impl Fn(u16) -> u8,
    ) -> Result<BTreeSet<u16>, TableError> {
        let mut wanted = BTreeMap::new();
        for endpoint in endpoints {
            let Some(identity) = identity_of(endpoint) else {
                continue;
            };
            wanted.insert(
                endpoint.host_ifindex,
                EndpointInfo {
                    id: endpoint.id,
                    flags: flags_of(endpoint.id),
                    pad: 0,
                    identity,
                    ipv4: endpoint.ipv4.octets(),
                },
            );
        }
        let mut written = BTreeSet::new();
        for (ifindex, info) in &wanted {
            if self.written.get(ifindex) != Some(info) {
                maps::set_endpoint(ebpf, *ifindex, *info)?;
                written.insert(info.id);
            }
        }
        for ifindex in self.written.keys().filter(|i| !wanted.contains_key(i)) {
            maps::remove_endpoint(ebpf, *ifindex)?;
        }
        self.written = wanted;
        Ok(written)
    }
}
