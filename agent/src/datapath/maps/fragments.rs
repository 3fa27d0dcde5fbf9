//! `weir_fragments`: the first fragment's ports of IPv4 datagrams in
//! flight. The datapath alone writes it (on each first fragment) and reads
//! it (on each later one); an LRU, so it needs no garbage collection. Read
//! here for inspection and the tests.

use aya::Ebpf;
use weir_abi::{map_names, Frag4Key, Frag4Ports};

use super::{hash, map_err, TableError};

/// Every datagram the datapath holds ports for.
pub fn fragments(ebpf: &mut Ebpf) -> Result<Vec<(Frag4Key, Frag4Ports)>, TableError> {
    hash::<Frag4Key, Frag4Ports>(ebpf, map_names::FRAGMENTS)?
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(map_names::FRAGMENTS))
}
