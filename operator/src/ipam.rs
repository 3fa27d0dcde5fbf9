//! Cluster-pool IPAM: one pod CIDR per node, carved from the cluster's pool
//! (`--cluster-pool-ipv4-cidr`, `--cluster-pool-ipv4-mask-size`), as
//! Cilium's cluster-pool mode does.
//!
//! [`ClusterPool`] is the bookkeeping only: which block belongs to which
//! node. The API objects are the record ([`controller`]): the pool is
//! rebuilt from the `WeirNode`s when an operator becomes leader, so an
//! assignment is stable across restarts and hand-overs.

pub mod controller;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pool {pool} cannot be split into /{mask} blocks (mask must be {min}..=30)")]
    BadMask {
        pool: Ipv4Network,
        mask: u8,
        min: u8,
    },
    #[error("pool {pool} is exhausted: all {blocks} /{mask} blocks are assigned")]
    Exhausted {
        pool: Ipv4Network,
        mask: u8,
        blocks: u64,
    },
    #[error("{cidr} is not a /{mask} block of pool {pool}")]
    NotInPool {
        cidr: Ipv4Network,
        pool: Ipv4Network,
        mask: u8,
    },
    #[error("{cidr} is already assigned to node {owner}")]
    Taken { cidr: Ipv4Network, owner: String },
}

/// The pool's blocks and who holds them.
#[derive(Debug, Clone)]
pub struct ClusterPool {
    pool: Ipv4Network,
    mask: u8,
    /// Block → node.
    assigned: BTreeMap<Ipv4Network, String>,
    /// Node → block.
    by_node: BTreeMap<String, Ipv4Network>,
}

impl ClusterPool {
    pub fn new(pool: Ipv4Network, mask: u8) -> Result<ClusterPool, PoolError> {
        if mask < pool.prefix() || mask > 30 {
            return Err(PoolError::BadMask {
                pool,
                mask,
                min: pool.prefix(),
            });
        }
        // The network address, whatever host bits the flag carried.
        let pool =
            Ipv4Network::new(pool.network(), pool.prefix()).map_err(|_| PoolError::BadMask {
                pool,
                mask,
                min: pool.prefix(),
            })?;
        Ok(ClusterPool {
            pool,
            mask,
            assigned: BTreeMap::new(),
            by_node: BTreeMap::new(),
        })
    }

    pub fn pool(&self) -> Ipv4Network {
        self.pool
    }

    /// How many blocks the pool has.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.mask - self.pool.prefix())
    }

    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    pub fn of(&self, node: &str) -> Option<Ipv4Network> {
        self.by_node.get(node).copied()
    }

    /// Whether `cidr` is one of this pool's blocks.
    pub fn contains_block(&self, cidr: Ipv4Network) -> bool {
        cidr.prefix() == self.mask
            && self.pool.contains(cidr.network())
            && cidr.ip() == cidr.network()
    }

    /// Records an assignment found in the API (a restart, a new leader).
    pub fn restore(&mut self, node: &str, cidr: Ipv4Network) -> Result<(), PoolError> {
        if !self.contains_block(cidr) {
            return Err(PoolError::NotInPool {
                cidr,
                pool: self.pool,
                mask: self.mask,
            });
        }
        match self.assigned.get(&cidr) {
            Some(owner) if owner == node => return Ok(()),
            Some(owner) => {
                return Err(PoolError::Taken {
                    cidr,
                    owner: owner.clone(),
                })
            }
            None => {}
        }
        self.release(node);
        self.assigned.insert(cidr, node.to_string());
        self.by_node.insert(node.to_string(), cidr);
        Ok(())
    }

    /// The node's block: the one it holds, or the lowest free one.
    pub fn allocate(&mut self, node: &str) -> Result<Ipv4Network, PoolError> {
        if let Some(cidr) = self.of(node) {
            return Ok(cidr);
        }
        let step = 1u64 << (32 - u32::from(self.mask));
        let base = u64::from(u32::from(self.pool.network()));
        let free = (0..self.capacity())
            .filter_map(|i| block(base + i * step, self.mask))
            .find(|cidr| !self.assigned.contains_key(cidr))
            .ok_or(PoolError::Exhausted {
                pool: self.pool,
                mask: self.mask,
                blocks: self.capacity(),
            })?;
        self.assigned.insert(free, node.to_string());
        self.by_node.insert(node.to_string(), free);
        Ok(free)
    }

    /// Frees the node's block; returns it if it had one.
    pub fn release(&mut self, node: &str) -> Option<Ipv4Network> {
        let cidr = self.by_node.remove(node)?;
        self.assigned.remove(&cidr);
        Some(cidr)
    }
}

/// The block at `address` (inside the pool, so below 2^32).
fn block(address: u64, mask: u8) -> Option<Ipv4Network> {
    let address = Ipv4Addr::from(u32::try_from(address).ok()?);
    Ipv4Network::new(address, mask).ok()
}

#[cfg(test)]
mod tests;
