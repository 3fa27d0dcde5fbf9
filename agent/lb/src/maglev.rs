//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4), as Cilium
//! uses it for `--bpf-lb-algorithm=maglev`.
//!
//! Each backend gets a permutation of the table's slots from two hashes of
//! its stable key, the text `address:port`: `offset = h1 mod M`,
//! `skip = h2 mod (M - 1) + 1`, slot `j` of the permutation is
//! `(offset + j * skip) mod M` (a permutation because M is prime). Backends
//! then take turns, in the order of their keys, each claiming the next
//! still-free slot of its permutation, until the table is full. The hashes
//! are MurmurHash3 x64 128 (`hash.rs`) with a fixed seed, and the turn
//! order is the sorted keys, so every node builds the same table from the
//! same backends whatever order it learned them in.
//!
//! Properties (tested): every slot is filled; each backend holds
//! `floor(M/N)` or `ceil(M/N)` slots (one slot per turn); removing or adding
//! one backend of N moves little more than `1/N` of the slots. Weights are
//! not supported.

use std::fmt;
use std::net::IpAddr;
#[cfg(test)]
use std::net::Ipv4Addr; // the tests' backends (`use super::*`)

use serde::Serialize;

use crate::error::MaglevError;
use crate::hash::murmur3_x64_128;

/// The table sizes Cilium allows (primes, each a little under a power of
/// two); any other size is rejected.
pub const TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// The seed of the backend hashes. Changing it reshuffles every table.
pub const HASH_SEED: u32 = 0x5745_4952; // "WEIR"

/// A backend's stable identity for Maglev: the same on every node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendKey {
    /// An IPv4 backend keys as before IPv6 existed (`a.b.c.d:port`), so
    /// its tables do not change.
    pub address: IpAddr,
    pub port: u16,
}

impl BackendKey {
    pub fn new(address: impl Into<IpAddr>, port: u16) -> Self {
        Self {
            address: address.into(),
            port,
        }
    }

    /// `(offset, skip)` of this backend's permutation of `size` slots.
    fn offset_and_skip(&self, size: u32) -> (u64, u64) {
        let (h1, h2) = murmur3_x64_128(self.to_string().as_bytes(), HASH_SEED);
        let m = u64::from(size);
        (h1 % m, h2 % (m - 1) + 1)
    }
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.address, self.port)
    }
}

/// Rejects any size not in [`TABLE_SIZES`].
pub fn check_size(size: u32) -> Result<(), MaglevError> {
    if TABLE_SIZES.contains(&size) {
        Ok(())
    } else {
        Err(MaglevError::SizeNotAllowed(size))
    }
}

pub(crate) fn allowed_sizes_text() -> String {
    let sizes: Vec<String> = TABLE_SIZES.iter().map(u32::to_string).collect();
    sizes.join(", ")
}

/// A Maglev lookup table: each slot holds the index of a backend in the
/// slice given to [`Table::build`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    slots: Vec<u32>,
}

impl Table {
    /// Builds the table of `size` slots (one of [`TABLE_SIZES`]) for
    /// `backends` (at least one, no duplicates). The slots name indexes into
    /// `backends`, but which backend holds which slot does not depend on the
    /// order of `backends`.
    pub fn build(backends: &[BackendKey], size: u32) -> Result<Table, MaglevError> {
        check_size(size)?;
        if backends.is_empty() {
            return Err(MaglevError::NoBackends);
        }
        // Turn order: by key, so the table depends only on the set.
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by_key(|&i| backends[i]);
        if let Some(pair) = order.windows(2).find(|w| backends[w[0]] == backends[w[1]]) {
            return Err(MaglevError::DuplicateBackend(backends[pair[0]].to_string()));
        }
        let permutations: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| backends[i].offset_and_skip(size))
            .collect();

        const EMPTY: u32 = u32::MAX;
        let m = u64::from(size);
        let mut slots = vec![EMPTY; size as usize];
        let mut next = vec![0u64; order.len()];
        let mut filled = 0usize;
        'fill: loop {
            for (turn, &(offset, skip)) in permutations.iter().enumerate() {
                // A permutation of all slots (M prime, 1 <= skip < M), so a
                // free slot is always found while the table is not full.
                loop {
                    let slot = ((offset + next[turn] * skip) % m) as usize;
                    next[turn] += 1;
                    if slots[slot] == EMPTY {
                        slots[slot] = order[turn] as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == slots.len() {
                    break 'fill;
                }
            }
        }
        Ok(Table { slots })
    }

    pub(crate) fn from_slots(slots: Vec<u32>) -> Table {
        Table { slots }
    }

    /// The slots, each an index into the backends the table was built from.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The backend index for a flow hash (the datapath's `LUT[hash % M]`).
    pub fn lookup(&self, flow_hash: u32) -> u32 {
        self.slots[flow_hash as usize % self.slots.len()]
    }
}

#[cfg(test)]
mod tests;
