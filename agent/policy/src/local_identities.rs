//! Node-local identities for the CIDRs policies name (`1 << 24 | n`, `n`
//! below `1 << 23`: the identities above are the address identities derived
//! from these, `weir_abi::identity::address_identity`).
//!
//! These never leave the node: they are not stored in the shared store and
//! are never put on the wire, so each agent numbers its CIDRs on its own.
//! Each CIDR is reference counted: every [`LocalIdentities::allocate`] (and
//! every [`CidrIdentities::identity_for`], which is the same) must be paired
//! with a [`LocalIdentities::release`], and the id is freed when the last
//! user lets go. The agent holds one reference per CIDR of the state in
//! force and lets the previous state's go after compiling the next, so a
//! CIDR named by both keeps its id and one no policy names any more is freed.
//!
//! Numbers survive a restart through [`LocalIdentities::prefer`]: the agent
//! passes the CIDR identities an earlier agent left in the pinned ipcache,
//! and a CIDR allocated again gets its old number (which no other CIDR
//! takes meanwhile), so the policy entries that name it stay valid and a
//! restart rewrites nothing.

use std::collections::{HashMap, HashSet};

use ipnetwork::IpNetwork;

use crate::identity::{reserved, CidrIdentities, NumericIdentity};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocalIdentityError {
    #[error("all {0} node-local identities are in use")]
    Exhausted(u32),
}

/// Allocator of node-local CIDR identities. Not thread-safe by itself: the
/// agent keeps one in its policy reconciler.
#[derive(Debug, Clone)]
pub struct LocalIdentities {
    by_cidr: HashMap<IpNetwork, (NumericIdentity, usize)>,
    by_id: HashMap<NumericIdentity, IpNetwork>,
    /// Numbers an earlier agent gave CIDRs not allocated again yet, and
    /// the set of those numbers (skipped when numbering another CIDR).
    preferred: HashMap<IpNetwork, NumericIdentity>,
    promised: HashSet<NumericIdentity>,
    /// Where the search for a free id starts: ids are handed out round-robin
    /// so a just-freed id is not reused while stale state may still name it.
    next: NumericIdentity,
    min: NumericIdentity,
    max: NumericIdentity,
}

impl Default for LocalIdentities {
    fn default() -> Self {
        Self::with_range(reserved::LOCAL_MIN, reserved::LOCAL_CIDR_MAX)
    }
}

impl LocalIdentities {
    pub fn new() -> Self {
        Self::default()
    }

    /// An allocator over a sub-range of the local scope (tests use a tiny one).
    pub fn with_range(min: NumericIdentity, max: NumericIdentity) -> Self {
        assert!(
            reserved::LOCAL_MIN <= min && min <= max && max <= reserved::LOCAL_CIDR_MAX,
            "local identity range {min}..={max} is outside the CIDR identities of the local scope"
        );
        Self {
            by_cidr: HashMap::new(),
            by_id: HashMap::new(),
            preferred: HashMap::new(),
            promised: HashSet::new(),
            next: min,
            min,
            max,
        }
    }

    /// The identity of `cidr` with one more reference, allocating one on
    /// first use. The host bits of `cidr` are ignored: 10.0.0.1/8 and
    /// 10.0.0.0/8 are the same CIDR.
    pub fn allocate(&mut self, cidr: IpNetwork) -> Result<NumericIdentity, LocalIdentityError> {
        let cidr = normalise(cidr);
        if let Some((id, refs)) = self.by_cidr.get_mut(&cidr) {
            *refs += 1;
            return Ok(*id);
        }
        let size = self.max - self.min + 1;
        if self.by_id.len() as u64 >= u64::from(size) {
            return Err(LocalIdentityError::Exhausted(size));
        }
        let preferred = self.preferred.remove(&cidr);
        if let Some(id) = preferred {
            self.promised.remove(&id);
        }
        let id = match preferred {
            Some(id) if !self.by_id.contains_key(&id) => id,
            _ => {
                let id = self.free_id();
                self.next = if id == self.max { self.min } else { id + 1 };
                id
            }
        };
        self.by_cidr.insert(cidr, (id, 1));
        self.by_id.insert(id, cidr);
        Ok(id)
    }

    /// The first free id from `next` on that no earlier agent gave another
    /// CIDR; any free id when only those are left. There is one: the caller
    /// checked that not every id is in use.
    fn free_id(&self) -> NumericIdentity {
        let size = self.max - self.min + 1;
        let candidates = (0..size).map(|i| self.min + (self.next - self.min + i) % size);
        let mut first_free = None;
        for id in candidates {
            if self.by_id.contains_key(&id) {
                continue;
            }
            if !self.promised.contains(&id) {
                return id;
            }
            first_free.get_or_insert(id);
        }
        first_free.unwrap_or(self.next)
    }

    /// Numbers to give `cidrs` when they are allocated (again): those an
    /// earlier agent used. Numbers outside this allocator's range, or
    /// already in use, are ignored.
    pub fn prefer(&mut self, cidrs: impl IntoIterator<Item = (IpNetwork, NumericIdentity)>) {
        for (cidr, id) in cidrs {
            let cidr = normalise(cidr);
            let usable = (self.min..=self.max).contains(&id)
                && !self.by_id.contains_key(&id)
                && !self.promised.contains(&id)
                && !self.by_cidr.contains_key(&cidr);
            if usable {
                self.preferred.insert(cidr, id);
                self.promised.insert(id);
            }
        }
    }

    /// Forgets the numbers of [`LocalIdentities::prefer`] not used yet
    /// (their CIDRs are named by no policy any more).
    pub fn forget_preferred(&mut self) {
        self.preferred.clear();
        self.promised.clear();
    }

    /// Drops one reference to `cidr`. Returns the identity if this was the
    /// last reference and it is now free; `None` if still in use or unknown.
    pub fn release(&mut self, cidr: IpNetwork) -> Option<NumericIdentity> {
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

    /// Drops one reference to each of `cidrs` (e.g. the CIDRs of a compiled
    /// state no longer in force).
    pub fn release_all(&mut self, cidrs: impl IntoIterator<Item = IpNetwork>) {
        for cidr in cidrs {
            self.release(cidr);
        }
    }

    /// The identity of `cidr` if allocated, without taking a reference.
    pub fn get(&self, cidr: IpNetwork) -> Option<NumericIdentity> {
        self.by_cidr.get(&normalise(cidr)).map(|(id, _)| *id)
    }

    /// The CIDR an identity stands for.
    pub fn lookup(&self, id: NumericIdentity) -> Option<IpNetwork> {
        self.by_id.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl CidrIdentities for LocalIdentities {
    /// Takes a reference, as [`LocalIdentities::allocate`]; `None` when the
    /// local scope is spent.
    fn identity_for(&mut self, cidr: IpNetwork) -> Option<NumericIdentity> {
        self.allocate(cidr).ok()
    }
}

/// `cidr` without host bits.
fn normalise(cidr: IpNetwork) -> IpNetwork {
    IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr)
}

#[cfg(test)]
mod tests;
