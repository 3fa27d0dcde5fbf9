//! LB IPAM: addresses for `type: LoadBalancer` Services from a configured
//! pool (`--lb-ipam-pool`), written to `status.loadBalancer.ingress`, so
//! LoadBalancer Services work without a cloud (Cilium's LB-IPAM). The
//! agents already balance a Service's ingress addresses.
//!
//! [`AddressPool`] is the bookkeeping; [`controller`] follows the Services.

pub mod controller;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("LB IPAM pool {pool} is exhausted: all {size} addresses are assigned")]
    Exhausted { pool: Ipv4Network, size: u64 },
    #[error("{address} is not in LB IPAM pool {pool}")]
    NotInPool {
        address: Ipv4Addr,
        pool: Ipv4Network,
    },
    #[error("{address} is already assigned to {owner}")]
    Taken { address: Ipv4Addr, owner: String },
}

/// The pool's addresses and the Service (`namespace/name`) holding each.
/// Below /31 the network and broadcast addresses are not handed out.
#[derive(Debug, Clone)]
pub struct AddressPool {
    pool: Ipv4Network,
    assigned: BTreeMap<Ipv4Addr, String>,
    pub(crate) by_owner: BTreeMap<String, Ipv4Addr>,
}

impl AddressPool {
    pub fn new(pool: Ipv4Network) -> AddressPool {
        let pool = Ipv4Network::new(pool.network(), pool.prefix()).unwrap_or(pool);
        AddressPool {
            pool,
            assigned: BTreeMap::new(),
            by_owner: BTreeMap::new(),
        }
    }

    fn first_last(&self) -> (u32, u32) {
        let first = u32::from(self.pool.network());
        let last = u32::from(self.pool.broadcast());
        if self.pool.prefix() < 31 {
            (first + 1, last - 1)
        } else {
            (first, last)
        }
    }

    pub fn size(&self) -> u64 {
        let (first, last) = self.first_last();
        u64::from(last - first) + 1
    }

    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    pub fn of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.by_owner.get(owner).copied()
    }

    fn usable(&self, address: Ipv4Addr) -> bool {
        let (first, last) = self.first_last();
        (first..=last).contains(&u32::from(address))
    }

    /// Records an address found in a Service's status.
    pub fn restore(&mut self, owner: &str, address: Ipv4Addr) -> Result<(), PoolError> {
        if !self.usable(address) {
            return Err(PoolError::NotInPool {
                address,
                pool: self.pool,
            });
        }
        match self.assigned.get(&address) {
            Some(holder) if holder == owner => return Ok(()),
            Some(holder) => {
                return Err(PoolError::Taken {
                    address,
                    owner: holder.clone(),
                })
            }
            None => {}
        }
        self.release(owner);
        self.assigned.insert(address, owner.to_string());
        self.by_owner.insert(owner.to_string(), address);
        Ok(())
    }

    /// The owner's address: the one it holds, the one it asks for (when
    /// free and in the pool), else the lowest free one.
    pub fn allocate(
        &mut self,
        owner: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, PoolError> {
        if let Some(address) = self.of(owner) {
            return Ok(address);
        }
        if let Some(wanted) = wanted {
            self.restore(owner, wanted)?;
            return Ok(wanted);
        }
        let (first, last) = self.first_last();
        let free = (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| !self.assigned.contains_key(a))
            .ok_or(PoolError::Exhausted {
                pool: self.pool,
                size: self.size(),
            })?;
        self.assigned.insert(free, owner.to_string());
        self.by_owner.insert(owner.to_string(), free);
        Ok(free)
    }

    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let address = self.by_owner.remove(owner)?;
        self.assigned.remove(&address);
        Some(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> AddressPool {
        AddressPool::new(cidr.parse().expect("cidr"))
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_without_network_and_broadcast() {
        let mut p = pool("198.51.100.0/30");
        assert_eq!(p.size(), 2);
        assert_eq!(p.allocate("a/x", None), Ok(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(p.allocate("a/y", None), Ok(Ipv4Addr::new(198, 51, 100, 2)));
        assert!(matches!(
            p.allocate("a/z", None),
            Err(PoolError::Exhausted { size: 2, .. })
        ));
        assert_eq!(p.release("a/x"), Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(p.allocate("a/z", None), Ok(Ipv4Addr::new(198, 51, 100, 1)));
        // A /32 pool is its one address.
        assert_eq!(pool("203.0.113.7/32").size(), 1);
    }

    #[test]
    fn an_asked_for_address_is_given_when_free_and_refused_otherwise() {
        let mut p = pool("198.51.100.0/24");
        let wanted = Ipv4Addr::new(198, 51, 100, 50);
        assert_eq!(p.allocate("a/x", Some(wanted)), Ok(wanted));
        assert!(matches!(
            p.allocate("a/y", Some(wanted)),
            Err(PoolError::Taken { .. })
        ));
        assert!(matches!(
            p.allocate("a/y", Some(Ipv4Addr::new(198, 51, 100, 255))),
            Err(PoolError::NotInPool { .. })
        ));
        assert_eq!(p.allocate("a/x", None), Ok(wanted));
    }
}
