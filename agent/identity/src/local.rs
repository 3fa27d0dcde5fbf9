//! Node-local identities for CIDRs (`1 << 24 | n`).
//!
//! These never leave the node: they are not stored in the shared store and
//! are never put on the wire, so each agent numbers its CIDRs on its own.
//! Each CIDR is reference counted: every [`LocalIdentities::allocate`] must be
//! paired with a [`LocalIdentities::release`], and the id is freed when the
//! last user lets go.

use std::collections::HashMap;

use ipnetwork::IpNetwork;

use weir_abi::identity::{LOCAL_MAX, LOCAL_MIN, WORLD};
use weir_types::labels::SOURCE_CIDR;
use weir_types::LabelSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocalIdentityError {
    #[error("all {0} node-local identities are in use")]
    Exhausted(u32),
}

/// Allocator of node-local CIDR identities. Not thread-safe by itself: the
/// agent keeps one behind its own lock.
#[derive(Debug)]
pub struct LocalIdentities {
    by_cidr: HashMap<IpNetwork, (u32, usize)>,
    by_id: HashMap<u32, IpNetwork>,
    /// Where the search for a free id starts: ids are handed out round-robin
    /// so a just-freed id is not reused while stale state may still name it.
    next: u32,
    min: u32,
    max: u32,
}

impl Default for LocalIdentities {
    fn default() -> Self {
        Self::with_range(LOCAL_MIN, LOCAL_MAX)
    }
}

impl LocalIdentities {
    pub fn new() -> Self {
        Self::default()
    }

    /// An allocator over a sub-range of the local scope (tests use a tiny one).
    pub fn with_range(min: u32, max: u32) -> Self {
        assert!(
            LOCAL_MIN <= min && min <= max && max <= LOCAL_MAX,
            "local identity range {min}..={max} is outside the local scope"
        );
        Self {
            by_cidr: HashMap::new(),
            by_id: HashMap::new(),
            next: min,
            min,
            max,
        }
    }

    /// The identity of `cidr`, allocating one on first use. The host bits of
    /// `cidr` are ignored: 10.0.0.1/8 and 10.0.0.0/8 are the same CIDR.
    pub fn allocate(&mut self, cidr: IpNetwork) -> Result<u32, LocalIdentityError> {
        let cidr = normalise(cidr);
        if let Some((id, refs)) = self.by_cidr.get_mut(&cidr) {
            *refs += 1;
            return Ok(*id);
        }
        let size = self.max - self.min + 1;
        if self.by_id.len() as u64 >= u64::from(size) {
            return Err(LocalIdentityError::Exhausted(size));
        }
        let mut id = self.next;
        while self.by_id.contains_key(&id) {
            id = if id == self.max { self.min } else { id + 1 };
        }
        self.next = if id == self.max { self.min } else { id + 1 };
        self.by_cidr.insert(cidr, (id, 1));
        self.by_id.insert(id, cidr);
        Ok(id)
    }

    /// Drops one reference to `cidr`. Returns the identity if this was the
    /// last reference and it is now free; `None` if still in use or unknown.
    pub fn release(&mut self, cidr: IpNetwork) -> Option<u32> {
        let cidr = normalise(cidr);
        let (id, refs) = self.by_cidr.get_mut(&cidr)?;
        *refs -= 1;
        if *refs > 0 {
            return None;
        }
        let id = *id;
        self.by_cidr.remove(&cidr);
        self.by_id.remove(&id);
        Some(id)
    }

    /// The identity of `cidr` if allocated, without taking a reference.
    pub fn get(&self, cidr: IpNetwork) -> Option<u32> {
        self.by_cidr.get(&normalise(cidr)).map(|(id, _)| *id)
    }

    /// The CIDR an identity stands for.
    pub fn lookup(&self, id: u32) -> Option<IpNetwork> {
        self.by_id.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The labels of a CIDR identity, as Cilium writes them (REFERENCE §3.3):
/// `cidr:<prefix>` (IPv6 ':' as '-') and `reserved:world`.
pub fn cidr_labels(cidr: IpNetwork) -> LabelSet {
    let cidr = normalise(cidr);
    let prefix = format!("{}/{}", cidr.network(), cidr.prefix()).replace(':', "-");
    let world = LabelSet::reserved(WORLD).unwrap_or_default();
    world.with(format!("{SOURCE_CIDR}:{prefix}"), "")
}

fn normalise(cidr: IpNetwork) -> IpNetwork {
    IpNetwork::new(cidr.network(), cidr.prefix()).expect("prefix of a valid network is valid")
}

#[cfg(test)]
mod tests;
