//! Cluster-pool IPAM: one pod CIDR per node and family, carved from the
//! cluster's pools (`--cluster-pool-ipv4-cidr`, `--cluster-pool-ipv4-mask-size`
//! and, for dual stack, `--cluster-pool-ipv6-cidr`,
//! `--cluster-pool-ipv6-mask-size`), as Cilium's cluster-pool mode does.
//!
//! [`ClusterPool`] is the bookkeeping of one family only: which block
//! belongs to which node; [`Pools`] is the pair a node takes its blocks from.
//! The API objects are the record ([`controller`]): the pools are rebuilt
//! from the `WeirNode`s when an operator becomes leader, so an assignment is
//! stable across restarts and hand-overs.

pub mod controller;

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// An address family's CIDR type, as a pool computes with it: addresses as
/// integers (a u128 holds either family's).
pub trait Family: Copy + Ord + Debug + Display + Into<IpNetwork> {
    /// The family's name in metrics' `family` label.
    const NAME: &'static str;
    const BITS: u8;
    /// The longest block mask: a block leaves room for a network address,
    /// the pods' gateway and one pod (and IPv4's broadcast address).
    const MAX_MASK: u8;
    /// The CIDR's address, host bits included, as an integer.
    fn bits(self) -> u128;
    fn prefix(self) -> u8;
    /// The CIDR of `bits` (below 2^BITS) and `prefix` (at most BITS).
    fn from_bits(bits: u128, prefix: u8) -> Self;
}

impl Family for Ipv4Network {
    const NAME: &'static str = "ipv4";
    const BITS: u8 = 32;
    const MAX_MASK: u8 = 30;
    fn bits(self) -> u128 {
        u128::from(u32::from(self.ip()))
    }
    fn prefix(self) -> u8 {
        Ipv4Network::prefix(self)
    }
    fn from_bits(bits: u128, prefix: u8) -> Self {
        // Truncation cannot happen: callers stay below 2^32.
        Ipv4Network::new(Ipv4Addr::from(bits as u32), prefix).expect("prefix is at most 32")
    }
}

impl Family for Ipv6Network {
    const NAME: &'static str = "ipv6";
    const BITS: u8 = 128;
    const MAX_MASK: u8 = 126;
    fn bits(self) -> u128 {
        u128::from(self.ip())
    }
    fn prefix(self) -> u8 {
        Ipv6Network::prefix(&self)
    }
    fn from_bits(bits: u128, prefix: u8) -> Self {
        Ipv6Network::new(Ipv6Addr::from(bits), prefix).expect("prefix is at most 128")
    }
}

/// The family name (`ipv4`, `ipv6`) of any CIDR.
pub fn family_of(cidr: IpNetwork) -> &'static str {
    match cidr {
        IpNetwork::V4(_) => Ipv4Network::NAME,
        IpNetwork::V6(_) => Ipv6Network::NAME,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError<C> {
    #[error("pool {pool} cannot be split into /{mask} blocks (mask must be {min}..={max})")]
    BadMask { pool: C, mask: u8, min: u8, max: u8 },
    #[error("pool {pool} is exhausted: all {blocks} /{mask} blocks are assigned")]
    Exhausted { pool: C, mask: u8, blocks: u64 },
    #[error("{cidr} is not a /{mask} block of pool {pool}")]
    NotInPool { cidr: C, pool: C, mask: u8 },
    #[error("{cidr} is already assigned to node {owner}")]
    Taken { cidr: C, owner: String },
}

impl<C: Into<IpNetwork>> PoolError<C> {
    /// The same error with family-neutral CIDRs, so both families' errors
    /// have one type.
    pub fn widen(self) -> PoolError<IpNetwork> {
        match self {
            PoolError::BadMask {
                pool,
                mask,
                min,
                max,
            } => PoolError::BadMask {
                pool: pool.into(),
                mask,
                min,
                max,
            },
            PoolError::Exhausted { pool, mask, blocks } => PoolError::Exhausted {
                pool: pool.into(),
                mask,
                blocks,
            },
            PoolError::NotInPool { cidr, pool, mask } => PoolError::NotInPool {
                cidr: cidr.into(),
                pool: pool.into(),
                mask,
            },
            PoolError::Taken { cidr, owner } => PoolError::Taken {
                cidr: cidr.into(),
                owner,
            },
        }
    }
}

/// One family's pool: its blocks and who holds them.
///
/// Blocks are numbered from the pool's first one. An IPv6 pool can have
/// more blocks than could ever be listed (a /56 of /112s has 2^56), so
/// nothing walks the pool's blocks: only the assigned ones.
#[derive(Debug, Clone)]
pub struct ClusterPool<C: Family> {
    pool: C,
    mask: u8,
    /// Block number → node, in order: the lowest free block is the first
    /// gap.
    assigned: BTreeMap<u128, String>,
    /// Node → block number.
    by_node: BTreeMap<String, u128>,
}

impl<C: Family> ClusterPool<C> {
    pub fn new(pool: C, mask: u8) -> Result<ClusterPool<C>, PoolError<C>> {
        if mask < pool.prefix() || mask > C::MAX_MASK {
            return Err(PoolError::BadMask {
                pool,
                mask,
                min: pool.prefix(),
                max: C::MAX_MASK,
            });
        }
        // The network address, whatever host bits the flag carried.
        let network = pool.bits() & high_bits(C::BITS - pool.prefix());
        Ok(ClusterPool {
            pool: C::from_bits(network, pool.prefix()),
            mask,
            assigned: BTreeMap::new(),
            by_node: BTreeMap::new(),
        })
    }

    pub fn pool(&self) -> C {
        self.pool
    }

    /// How many blocks the pool has (at most `u64::MAX`).
    pub fn capacity(&self) -> u64 {
        u64::try_from(self.blocks()).unwrap_or(u64::MAX)
    }

    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    pub fn of(&self, node: &str) -> Option<C> {
        self.by_node.get(node).map(|&number| self.block(number))
    }

    /// Records an assignment found in the API (a restart, a new leader).
    pub fn restore(&mut self, node: &str, cidr: C) -> Result<(), PoolError<C>> {
        let number = self.number_of(cidr).ok_or(PoolError::NotInPool {
            cidr,
            pool: self.pool,
            mask: self.mask,
        })?;
        match self.assigned.get(&number) {
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
        self.hold(node, number);
        Ok(())
    }

    /// The node's block: the one it holds, or the lowest free one.
    pub fn allocate(&mut self, node: &str) -> Result<C, PoolError<C>> {
        if let Some(cidr) = self.of(node) {
            return Ok(cidr);
        }
        let number = self.first_free().ok_or(PoolError::Exhausted {
            pool: self.pool,
            mask: self.mask,
            blocks: self.capacity(),
        })?;
        self.hold(node, number);
        Ok(self.block(number))
    }

    /// Frees the node's block; returns it if it had one.
    pub fn release(&mut self, node: &str) -> Option<C> {
        let number = self.by_node.remove(node)?;
        self.assigned.remove(&number);
        Some(self.block(number))
    }

    fn hold(&mut self, node: &str, number: u128) {
        self.assigned.insert(number, node.to_string());
        self.by_node.insert(node.to_string(), number);
    }

    /// How many blocks the pool has: at most 2^126 (an IPv6 /0 of /126s).
    fn blocks(&self) -> u128 {
        1u128 << (self.mask - self.pool.prefix())
    }

    /// Address bits below a block's mask.
    fn host_bits(&self) -> u8 {
        C::BITS - self.mask
    }

    fn block(&self, number: u128) -> C {
        // Only block 0 exists when the shift is the full 128 bits.
        let offset = number.checked_shl(self.host_bits().into()).unwrap_or(0);
        C::from_bits(self.pool.bits() + offset, self.mask)
    }

    /// The number of the block `cidr` is, if it is one of the pool's.
    fn number_of(&self, cidr: C) -> Option<u128> {
        let offset = cidr.bits().checked_sub(self.pool.bits())?;
        let number = offset.checked_shr(self.host_bits().into()).unwrap_or(0);
        let is_block = cidr.prefix() == self.mask
            && number < self.blocks()
            && self.block(number).bits() == cidr.bits();
        is_block.then_some(number)
    }

    /// The lowest block nobody holds: the first gap in the (ordered)
    /// assigned numbers, else the one after them; so the search costs at
    /// most one step per assigned block, however large the pool.
    fn first_free(&self) -> Option<u128> {
        let mut next = 0u128;
        for &number in self.assigned.keys() {
            if number != next {
                break;
            }
            next += 1;
        }
        (next < self.blocks()).then_some(next)
    }
}

/// A mask of every bit from `low` up (`low` may be 128: no bit).
fn high_bits(low: u8) -> u128 {
    u128::MAX.checked_shl(low.into()).unwrap_or(0)
}

/// The pools nodes take their blocks from: IPv4, and IPv6 on a dual-stack
/// cluster. A node has one block of each, or none at all.
#[derive(Debug, Clone)]
pub struct Pools {
    pub v4: ClusterPool<Ipv4Network>,
    pub v6: Option<ClusterPool<Ipv6Network>>,
}

impl Pools {
    /// Records the blocks a `WeirNode` carries (a restart, a new leader);
    /// returns the ones refused, with why. An IPv6 block without an IPv6
    /// pool is left alone, as before dual stack.
    pub fn restore(&mut self, node: &str, cidrs: &[IpNetwork]) -> Vec<PoolError<IpNetwork>> {
        let mut refused = Vec::new();
        for &cidr in cidrs {
            let result = match (cidr, self.v6.as_mut()) {
                (IpNetwork::V4(v4), _) => self.v4.restore(node, v4).map_err(PoolError::widen),
                (IpNetwork::V6(v6), Some(pool)) => pool.restore(node, v6).map_err(PoolError::widen),
                (IpNetwork::V6(_), None) => Ok(()),
            };
            refused.extend(result.err());
        }
        refused
    }

    /// The node's blocks, IPv4 first: those it holds, and the lowest free
    /// one of each family it lacks. All or nothing: a node refused one
    /// family's block gets no new block of the other, since an agent would
    /// start single-stack on an IPv4 block alone.
    pub fn allocate(&mut self, node: &str) -> Result<Vec<IpNetwork>, PoolError<IpNetwork>> {
        let had_v4 = self.v4.of(node).is_some();
        let v4 = self.v4.allocate(node).map_err(PoolError::widen)?;
        let Some(pool) = self.v6.as_mut() else {
            return Ok(vec![v4.into()]);
        };
        match pool.allocate(node) {
            Ok(v6) => Ok(vec![v4.into(), v6.into()]),
            Err(error) => {
                if !had_v4 {
                    self.v4.release(node);
                }
                Err(error.widen())
            }
        }
    }

    /// Frees the node's blocks; returns them, IPv4 first.
    pub fn release(&mut self, node: &str) -> Vec<IpNetwork> {
        let v4 = self.v4.release(node).map(IpNetwork::from);
        let v6 = self.v6.as_mut().and_then(|pool| pool.release(node));
        v4.into_iter().chain(v6.map(IpNetwork::from)).collect()
    }

    /// Whether the pools manage `cidr`'s family.
    pub fn manages(&self, cidr: IpNetwork) -> bool {
        matches!(cidr, IpNetwork::V4(_)) || self.v6.is_some()
    }
}

#[cfg(test)]
mod tests;
