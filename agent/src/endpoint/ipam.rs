//! Node-local address management over the node's pod CIDRs: one pool for
//! IPv4 ([`Ipam`]) and, on a dual-stack node, one for IPv6 ([`Ipam6`]).
//!
//! Pure logic: a [`Pool`] hands out addresses to attachments and takes them
//! back; persistence is the caller's job (see `state.rs`). The network
//! address, the gateway (the first host address, the pods' next hop) and,
//! for IPv4, the broadcast address are never handed out. Allocation is
//! idempotent per attachment (a retried CNI ADD gets the same address) and
//! goes round the CIDR from the last address handed out, as Linux hands out
//! pids: a released address comes back last, after every other free one, so
//! what peers remember of the old pod (conntrack, caches) has the longest
//! time to expire before another pod holds it (issue 16 item 5; the agent
//! also flushes the datapath's entries of an address when it is released).

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The CNI identity of an attachment: container id plus interface name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("pod CIDR {cidr} is exhausted ({capacity} addresses, all allocated)")]
    Exhausted { cidr: IpNetwork, capacity: u64 },
    #[error("pod CIDR {0} is too small: it needs room for a gateway and at least one pod")]
    CidrTooSmall(IpNetwork),
    #[error("address {address} is outside the pod CIDR {cidr}")]
    OutsideCidr { address: IpAddr, cidr: IpNetwork },
    #[error("address {address} is allocated to {owner:?} already")]
    Taken {
        address: IpAddr,
        owner: AttachmentKey,
    },
}

/// An address family a pool hands out: its address and CIDR types, and
/// the arithmetic the pool does on them (as integers).
pub trait Family:
    Copy + Ord + Debug + Display + Into<IpAddr> + Serialize + DeserializeOwned
{
    type Cidr: Copy + Eq + Debug + Display + Into<IpNetwork> + Serialize + DeserializeOwned;
    /// The longest prefix that leaves room for one pod.
    const LONGEST_PREFIX: u8;
    /// Whether the CIDR's last address is the broadcast address (reserved).
    const HAS_BROADCAST: bool;
    const BITS: u8;
    fn to_bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
    /// `cidr` with its host bits cleared (10.244.1.7/24 is 10.244.1.0/24).
    fn normalise(cidr: Self::Cidr) -> Self::Cidr;
    fn network(cidr: Self::Cidr) -> Self;
    fn prefix(cidr: Self::Cidr) -> u8;
}

impl Family for Ipv4Addr {
    type Cidr = Ipv4Network;
    const LONGEST_PREFIX: u8 = 30;
    const HAS_BROADCAST: bool = true;
    const BITS: u8 = 32;
    fn to_bits(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
    fn normalise(cidr: Ipv4Network) -> Ipv4Network {
        Ipv4Network::new(cidr.network(), cidr.prefix()).expect("prefix is valid")
    }
    fn network(cidr: Ipv4Network) -> Self {
        cidr.network()
    }
    fn prefix(cidr: Ipv4Network) -> u8 {
        cidr.prefix()
    }
}

impl Family for Ipv6Addr {
    type Cidr = Ipv6Network;
    // Network (the subnet-router anycast address), gateway, one pod.
    const LONGEST_PREFIX: u8 = 126;
    const HAS_BROADCAST: bool = false;
    const BITS: u8 = 128;
    fn to_bits(self) -> u128 {
        u128::from(self)
    }
    fn from_bits(bits: u128) -> Self {
        Ipv6Addr::from(bits)
    }
    fn normalise(cidr: Ipv6Network) -> Ipv6Network {
        Ipv6Network::new(cidr.network(), cidr.prefix()).expect("prefix is valid")
    }
    fn network(cidr: Ipv6Network) -> Self {
        cidr.network()
    }
    fn prefix(cidr: Ipv6Network) -> u8 {
        cidr.prefix()
    }
}

/// The node's IPv4 pool.
pub type Ipam = Pool<Ipv4Addr>;
/// The node's IPv6 pool (dual stack).
pub type Ipam6 = Pool<Ipv6Addr>;

/// Address allocations within one pod CIDR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Pool<A: Family> {
    cidr: A::Cidr,
    allocations: BTreeMap<A, AttachmentKey>,
    /// The last address handed out: the next search starts after it.
    /// (Absent in state written before it existed: the search starts at
    /// the first address.)
    #[serde(default)]
    last: Option<A>,
}

impl<A: Family> Pool<A> {
    pub fn new(cidr: A::Cidr) -> Result<Pool<A>, IpamError> {
        let cidr = A::normalise(cidr);
        if A::prefix(cidr) > A::LONGEST_PREFIX {
            return Err(IpamError::CidrTooSmall(cidr.into()));
        }
        Ok(Pool {
            cidr,
            allocations: BTreeMap::new(),
            last: None,
        })
    }

    pub fn cidr(&self) -> A::Cidr {
        self.cidr
    }

    /// The pods' next hop: the first host address of the CIDR.
    pub fn gateway(&self) -> A {
        A::from_bits(A::network(self.cidr).to_bits() + 1)
    }

    /// The first and last addresses a pod can get.
    fn usable(&self) -> (u128, u128) {
        let network = A::network(self.cidr).to_bits();
        let host_bits = u32::from(A::BITS - A::prefix(self.cidr));
        let last = network | (u128::MAX >> (128 - host_bits));
        let last = if A::HAS_BROADCAST { last - 1 } else { last };
        (network + 2, last)
    }

    /// How many addresses pods can get in all (at most `u64::MAX`).
    pub fn capacity(&self) -> u64 {
        let (first, last) = self.usable();
        u64::try_from(last - first + 1).unwrap_or(u64::MAX)
    }

    pub fn free(&self) -> u64 {
        self.capacity() - self.allocations.len() as u64
    }

    /// The address of `owner`, allocating the next free one after the last
    /// handed out (wrapping round) if it has none.
    pub fn allocate(&mut self, owner: &AttachmentKey) -> Result<A, IpamError> {
        if let Some(address) = self.address_of(owner) {
            return Ok(address);
        }
        let (first, last) = self.usable();
        let start = self
            .last
            .map(A::to_bits)
            .filter(|l| (first..last).contains(l))
            .map_or(first, |l| l + 1);
        // Bounded by the allocations: at most that many taken addresses
        // are skipped before a free one, however large the CIDR.
        let address = (start..=last)
            .chain(first..start)
            .map(A::from_bits)
            .find(|a| !self.allocations.contains_key(a))
            .ok_or(IpamError::Exhausted {
                cidr: self.cidr.into(),
                capacity: self.capacity(),
            })?;
        self.allocations.insert(address, owner.clone());
        self.last = Some(address);
        Ok(address)
    }

    /// Records an allocation made earlier (restoring state).
    pub fn restore(&mut self, address: A, owner: AttachmentKey) -> Result<(), IpamError> {
        let (first, last) = self.usable();
        if !(first..=last).contains(&address.to_bits()) {
            return Err(IpamError::OutsideCidr {
                address: address.into(),
                cidr: self.cidr.into(),
            });
        }
        match self.allocations.get(&address) {
            Some(existing) if *existing != owner => Err(IpamError::Taken {
                address: address.into(),
                owner: existing.clone(),
            }),
            _ => {
                self.allocations.insert(address, owner);
                Ok(())
            }
        }
    }

    /// Releases the address of `owner`, returning it; None if it had none.
    pub fn release(&mut self, owner: &AttachmentKey) -> Option<A> {
        let address = self.address_of(owner)?;
        self.allocations.remove(&address);
        Some(address)
    }

    pub fn address_of(&self, owner: &AttachmentKey) -> Option<A> {
        self.allocations
            .iter()
            .find_map(|(address, o)| (o == owner).then_some(*address))
    }

    pub fn allocations(&self) -> impl Iterator<Item = (A, &AttachmentKey)> {
        self.allocations.iter().map(|(a, o)| (*a, o))
    }
}

#[cfg(test)]
mod tests;
