//! Node-local IPv4 address management over the node's pod CIDR.
//!
//! Pure logic: [`Ipam`] hands out addresses to attachments and takes them
//! back; persistence is the caller's job (see `state.rs`). The network
//! address, the gateway (the first host address, the pods' next hop) and the
//! broadcast address are never handed out. Allocation is idempotent per
//! attachment (a retried CNI ADD gets the same address) and goes round the
//! CIDR from the last address handed out, as Linux hands out pids: a
//! released address comes back last, after every other free one, so what
//! peers remember of the old pod (conntrack, caches) has the longest time to
//! expire before another pod holds it (issue 16 item 5; the agent also
//! flushes the datapath's entries of an address when it is released).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
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
    Exhausted { cidr: Ipv4Network, capacity: u64 },
    #[error("pod CIDR {0} is too small: it needs room for a gateway and at least one pod")]
    CidrTooSmall(Ipv4Network),
    #[error("address {address} is outside the pod CIDR {cidr}")]
    OutsideCidr {
        address: Ipv4Addr,
        cidr: Ipv4Network,
    },
    #[error("address {address} is allocated to {owner:?} already")]
    Taken {
        address: Ipv4Addr,
        owner: AttachmentKey,
    },
}

/// Address allocations within one pod CIDR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    cidr: Ipv4Network,
    allocations: BTreeMap<Ipv4Addr, AttachmentKey>,
    /// The last address handed out: the next search starts after it.
    /// (Absent in state written before it existed: the search starts at
    /// the first address.)
    #[serde(default)]
    last: Option<Ipv4Addr>,
}

impl Ipam {
    pub fn new(cidr: Ipv4Network) -> Result<Ipam, IpamError> {
        // Normalise 10.244.1.7/24 to 10.244.1.0/24.
        let cidr = Ipv4Network::new(cidr.network(), cidr.prefix()).expect("prefix is valid");
        if cidr.prefix() > 30 {
            return Err(IpamError::CidrTooSmall(cidr));
        }
        Ok(Ipam {
            cidr,
            allocations: BTreeMap::new(),
            last: None,
        })
    }

    pub fn cidr(&self) -> Ipv4Network {
        self.cidr
    }

    /// The pods' next hop: the first host address of the CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// How many addresses pods can get in all.
    pub fn capacity(&self) -> u64 {
        // Minus network, gateway and broadcast.
        (1u64 << (32 - self.cidr.prefix())) - 3
    }

    pub fn free(&self) -> u64 {
        self.capacity() - self.allocations.len() as u64
    }

    /// The address of `owner`, allocating the next free one after the last
    /// handed out (wrapping round) if it has none.
    pub fn allocate(&mut self, owner: &AttachmentKey) -> Result<Ipv4Addr, IpamError> {
        if let Some(address) = self.address_of(owner) {
            return Ok(address);
        }
        let first = u32::from(self.gateway()) + 1;
        let last = u32::from(self.cidr.broadcast()) - 1;
        let start = self
            .last
            .map(u32::from)
            .filter(|l| (first..last).contains(l))
            .map_or(first, |l| l + 1);
        let address = (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|a| !self.allocations.contains_key(a))
            .ok_or(IpamError::Exhausted {
                cidr: self.cidr,
                capacity: self.capacity(),
            })?;
        self.allocations.insert(address, owner.clone());
        self.last = Some(address);
        Ok(address)
    }

    /// Records an allocation made earlier (restoring state).
    pub fn restore(&mut self, address: Ipv4Addr, owner: AttachmentKey) -> Result<(), IpamError> {
        let usable = u32::from(address) > u32::from(self.gateway())
            && u32::from(address) < u32::from(self.cidr.broadcast());
        if !self.cidr.contains(address) || !usable {
            return Err(IpamError::OutsideCidr {
                address,
                cidr: self.cidr,
            });
        }
        match self.allocations.get(&address) {
            Some(existing) if *existing != owner => Err(IpamError::Taken {
                address,
                owner: existing.clone(),
            }),
            _ => {
                self.allocations.insert(address, owner);
                Ok(())
            }
        }
    }

    /// Releases the address of `owner`, returning it; None if it had none.
    pub fn release(&mut self, owner: &AttachmentKey) -> Option<Ipv4Addr> {
        let address = self.address_of(owner)?;
        self.allocations.remove(&address);
        Some(address)
    }

    pub fn address_of(&self, owner: &AttachmentKey) -> Option<Ipv4Addr> {
        self.allocations
            .iter()
            .find_map(|(address, o)| (o == owner).then_some(*address))
    }

    pub fn allocations(&self) -> impl Iterator<Item = (Ipv4Addr, &AttachmentKey)> {
        self.allocations.iter().map(|(a, o)| (*a, o))
    }
}

#[cfg(test)]
mod tests;
