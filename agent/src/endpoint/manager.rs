//! The endpoint manager: address allocation, endpoint creation and
//! deletion, garbage collection. Transport-free (the gRPC adapter is
//! `api::endpoints`) and datapath-agnostic through [`EndpointDatapath`], so it is
//! unit-tested without a kernel.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use ipnetwork::{Ipv4Network, Ipv6Network};
use weir_abi::endpoint::NetnsOwner;
use weir_abi::EndpointInfo;
use weir_types::NamespacedName;

use crate::datapath::{maps, Datapath, DatapathError, Hook, SharedDatapath};
use crate::endpoint::ipam::{AttachmentKey, IpamError};
use crate::endpoint::registry::{Endpoint, EndpointError, PortMapping};
use crate::endpoint::state::{NodeState, StateError, StateStore};

/// What the endpoint logic needs from the datapath.
pub trait EndpointDatapath: Send {
    /// Writes the endpoint's first entry (`entry`), then attaches the pod
    /// programs to its host-side interface. An endpoint the map already
    /// holds (a repeated ADD, a restart: same id and address) keeps its
    /// entry, which the endpoints reconciler owns.
    fn attach_pod(&mut self, endpoint: &Endpoint, entry: EndpointInfo)
        -> Result<(), DatapathError>;
    /// Detaches them and removes the endpoint's entry; succeeds when
    /// nothing is attached.
    fn detach_pod(&mut self, endpoint: &Endpoint) -> Result<(), DatapathError>;
    /// Removes what is left of attachments whose interface is gone (e.g.
    /// made by an agent killed before it recorded the endpoint); returns
    /// how many.
    fn remove_orphans(&mut self) -> Result<usize, DatapathError>;
    /// Removes every connection the datapath tracks for `address` (a
    /// released pod address), so the next pod given it inherits none.
    fn forget_address(&mut self, address: IpAddr) -> Result<(), DatapathError>;
    /// Removes the pod entries of `weir_netns_owners` whose namespace is
    /// none of `cookies` (pods deleted while no agent ran); returns how
    /// many.
    fn retain_netns_owners(&mut self, cookies: &BTreeSet<u64>) -> Result<usize, DatapathError>;
}

impl EndpointDatapath for Datapath {
    fn attach_pod(
        &mut self,
        endpoint: &Endpoint,
        entry: EndpointInfo,
    ) -> Result<(), DatapathError> {
        maps::set_new_endpoint(self.ebpf_mut(), endpoint.host_ifindex, entry)?;
        if endpoint.netns_cookie != 0 {
            maps::set_netns_owner(
                self.ebpf_mut(),
                endpoint.netns_cookie,
                NetnsOwner::pod(endpoint.host_ifindex),
            )?;
        }
        self.attach(&endpoint.host_ifname, Hook::Pod)
    }

    fn detach_pod(&mut self, endpoint: &Endpoint) -> Result<(), DatapathError> {
        self.detach(&endpoint.host_ifname, Hook::Pod)?;
        // The ifindex may come back on another pod's interface (or already
        // has: its entry stays).
        maps::remove_endpoint_of(
            self.ebpf_mut(),
            endpoint.host_ifindex,
            endpoint.id,
            endpoint.ipv4.octets(),
        )?;
        // Cookies are never reused: the entry is this endpoint's.
        if endpoint.netns_cookie != 0 {
            maps::remove_netns_owner(self.ebpf_mut(), endpoint.netns_cookie)?;
        }
        Ok(())
    }

    fn remove_orphans(&mut self) -> Result<usize, DatapathError> {
        self.remove_orphaned_pins()
    }

    fn forget_address(&mut self, address: IpAddr) -> Result<(), DatapathError> {
        let forgotten = maps::forget_address(self.ebpf_mut(), address)?;
        if forgotten != maps::Forgotten::default() {
            tracing::debug!(%address, ?forgotten, "released address: its connections forgotten");
        }
        Ok(())
    }

    fn retain_netns_owners(&mut self, cookies: &BTreeSet<u64>) -> Result<usize, DatapathError> {
        let stale: Vec<u64> = maps::netns_owner_entries(self.ebpf_mut())?
            .into_iter()
            .filter(|(cookie, owner)| {
                owner.ifindex != NetnsOwner::NODE && !cookies.contains(cookie)
            })
            .map(|(cookie, _)| cookie)
            .collect();
        for cookie in &stale {
            maps::remove_netns_owner(self.ebpf_mut(), *cookie)?;
        }
        Ok(stale.len())
    }
}

impl EndpointDatapath for SharedDatapath {
    fn attach_pod(
        &mut self,
        endpoint: &Endpoint,
        entry: EndpointInfo,
    ) -> Result<(), DatapathError> {
        self.lock().attach_pod(endpoint, entry)
    }

    fn detach_pod(&mut self, endpoint: &Endpoint) -> Result<(), DatapathError> {
        self.lock().detach_pod(endpoint)
    }

    fn remove_orphans(&mut self) -> Result<usize, DatapathError> {
        self.lock().remove_orphans()
    }

    fn forget_address(&mut self, address: IpAddr) -> Result<(), DatapathError> {
        self.lock().forget_address(address)
    }

    fn retain_netns_owners(&mut self, cookies: &BTreeSet<u64>) -> Result<usize, DatapathError> {
        self.lock().retain_netns_owners(cookies)
    }
}

/// What a pod may do between its interface's attachment and its first
/// regeneration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BeforePolicy {
    /// Nothing passes ([`EndpointInfo::not_ready`]) until the reconciler
    /// writes the endpoint's identity and policy: the agent enforces policy.
    Closed,
    /// Everything passes (ready, unenforced): an agent without a reconcile
    /// loop does pod networking only and has no policy to wait for.
    Open,
}

impl BeforePolicy {
    fn entry(self, endpoint: &Endpoint) -> EndpointInfo {
        let closed = endpoint.closed_entry();
        match self {
            BeforePolicy::Closed => closed,
            BeforePolicy::Open => EndpointInfo { flags: 0, ..closed },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no endpoint for container {container_id} interface {ifname}")]
    NotFound {
        container_id: String,
        ifname: String,
    },
}

/// An address allocation as the CNI plugin needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub pod_cidr: Ipv4Network,
    /// The IPv6 address of a dual-stack node's pod.
    pub ipv6: Option<Allocation6>,
    pub mtu: u32,
}

/// The IPv6 half of a dual-stack [`Allocation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation6 {
    pub address: Ipv6Addr,
    pub gateway: Ipv6Addr,
    pub pod_cidr: Ipv6Network,
}

/// A new endpoint as the CNI plugin describes it.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    pub attachment: AttachmentKey,
    pub pod: NamespacedName,
    pub netns: String,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: String,
    pub netns_cookie: u64,
    pub port_mappings: Vec<PortMapping>,
}

/// Address and room summary for STATUS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_name: String,
    pub pod_cidr: Ipv4Network,
    pub addresses_total: u64,
    pub addresses_free: u64,
    pub endpoints: usize,
}

/// The node agent's endpoint state, behind one lock: every operation is
/// applied to a copy, persisted, and only then made current, so a failure
/// (full CIDR, disk error, attach error) leaves memory and disk unchanged.
pub struct EndpointManager<D: EndpointDatapath> {
    node_name: String,
    mtu: u32,
    store: StateStore,
    before_policy: BeforePolicy,
    inner: Mutex<Inner<D>>,
}

struct Inner<D> {
    state: NodeState,
    datapath: D,
}

impl<D: EndpointDatapath> EndpointManager<D> {
    pub fn new(
        node_name: String,
        mtu: u32,
        store: StateStore,
        state: NodeState,
        datapath: D,
    ) -> Self {
        EndpointManager {
            node_name,
            mtu,
            store,
            before_policy: BeforePolicy::Closed,
            inner: Mutex::new(Inner { state, datapath }),
        }
    }

    /// Sets what a new endpoint may do before its first regeneration
    /// ([`BeforePolicy::Closed`] unless set).
    pub fn with_before_policy(mut self, before_policy: BeforePolicy) -> Self {
        self.before_policy = before_policy;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<D>> {
        // A panic while holding the lock cannot leave state half-changed
        // (changes are made on a copy), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-attaches the datapath to every known endpoint whose interface
    /// still exists (agent restart). Returns the endpoints it could not
    /// attach, with the reason; they stay registered for DEL or GC.
    pub fn restore(&self) -> Vec<(Endpoint, DatapathError)> {
        let mut inner = self.lock();
        if let Err(error) = inner.datapath.remove_orphans() {
            tracing::warn!(%error, "cannot remove orphaned attachments");
        }
        let endpoints: Vec<Endpoint> = inner.state.endpoints.iter().cloned().collect();
        let cookies = endpoints.iter().map(|e| e.netns_cookie).collect();
        if let Err(error) = inner.datapath.retain_netns_owners(&cookies) {
            tracing::warn!(%error, "cannot remove the namespaces of deleted pods");
        }
        let mut failed = Vec::new();
        for endpoint in endpoints {
            let entry = self.before_policy.entry(&endpoint);
            if let Err(e) = inner.datapath.attach_pod(&endpoint, entry) {
                failed.push((endpoint, e));
            }
        }
        failed
    }

    pub fn allocate(&self, attachment: &AttachmentKey) -> Result<Allocation, ManagerError> {
        validate(attachment)?;
        let mut inner = self.lock();
        let mut next = inner.state.clone();
        let address = next.ipam.allocate(attachment)?;
        let ipv6 = match &mut next.ipam6 {
            Some(pool) => Some(Allocation6 {
                address: pool.allocate(attachment)?,
                gateway: pool.gateway(),
                pod_cidr: pool.cidr(),
            }),
            None => None,
        };
        if next != inner.state {
            self.store.save(&next)?;
            inner.state = next;
        }
        Ok(Allocation {
            address,
            gateway: inner.state.ipam.gateway(),
            pod_cidr: inner.state.ipam.cidr(),
            ipv6,
            mtu: self.mtu,
        })
    }

    pub fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, ManagerError> {
        validate(&new.attachment)?;
        let mut inner = self.lock();
        match inner.state.ipam.address_of(&new.attachment) {
            Some(address) if address == new.ipv4 => {}
            Some(address) => {
                return Err(ManagerError::Invalid(format!(
                    "address {} differs from the one allocated to this attachment ({address})",
                    new.ipv4
                )))
            }
            None => {
                return Err(ManagerError::Invalid(
                    "no address is allocated to this attachment: call Allocate first".into(),
                ))
            }
        }
        let allocated6 = inner
            .state
            .ipam6
            .as_ref()
            .and_then(|pool| pool.address_of(&new.attachment));
        if new.ipv6 != allocated6 {
            let show = |a: Option<Ipv6Addr>| a.map_or("none".to_string(), |a| a.to_string());
            return Err(ManagerError::Invalid(format!(
                "IPv6 address {} differs from the one allocated to this attachment ({})",
                show(new.ipv6),
                show(allocated6)
            )));
        }
        let mut next = inner.state.clone();
        let endpoint = next
            .endpoints
            .upsert(Endpoint {
                id: 0,
                attachment: new.attachment,
                pod: new.pod,
                netns: new.netns,
                host_ifname: new.host_ifname,
                host_ifindex: new.host_ifindex,
                ipv4: new.ipv4,
                ipv6: new.ipv6,
                mac: new.mac,
                netns_cookie: new.netns_cookie,
                port_mappings: new.port_mappings,
            })?
            .clone();
        let entry = self.before_policy.entry(&endpoint);
        inner.datapath.attach_pod(&endpoint, entry)?;
        if let Err(e) = self.store.save(&next) {
            let _ = inner.datapath.detach_pod(&endpoint);
            return Err(e.into());
        }
        inner.state = next;
        Ok(endpoint)
    }

    /// Removes the endpoint and releases the address of `attachment`.
    /// Returns whether anything existed.
    pub fn delete_endpoint(&self, attachment: &AttachmentKey) -> Result<bool, ManagerError> {
        let mut inner = self.lock();
        let mut next = inner.state.clone();
        let endpoint = next.endpoints.remove(attachment);
        let address = next.ipam.release(attachment);
        let address6 = next
            .ipam6
            .as_mut()
            .and_then(|pool| pool.release(attachment));
        // An ADD that died with an earlier agent may have left an
        // attachment this agent never recorded; its interface is gone now.
        if let Err(error) = inner.datapath.remove_orphans() {
            tracing::warn!(%error, "cannot remove orphaned attachments");
        }
        if endpoint.is_none() && address.is_none() && address6.is_none() {
            return Ok(false);
        }
        if let Some(endpoint) = &endpoint {
            inner.datapath.detach_pod(endpoint)?;
        }
        // Before the addresses can be handed out again.
        let released = address.map(IpAddr::V4).into_iter();
        for address in released.chain(address6.map(IpAddr::V6)) {
            inner.datapath.forget_address(address)?;
        }
        self.store.save(&next)?;
        inner.state = next;
        Ok(true)
    }

    pub fn endpoint(&self, attachment: &AttachmentKey) -> Result<Endpoint, ManagerError> {
        self.lock()
            .state
            .endpoints
            .by_attachment(attachment)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound {
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
            })
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.lock().state.endpoints.iter().cloned().collect()
    }

    /// Releases every allocation and endpoint whose attachment is not in
    /// `valid`; returns what was released.
    pub fn garbage_collect(
        &self,
        valid: &[AttachmentKey],
    ) -> Result<Vec<AttachmentKey>, ManagerError> {
        let valid: BTreeSet<&AttachmentKey> = valid.iter().collect();
        let stale: BTreeSet<AttachmentKey> = {
            let inner = self.lock();
            let from_ipam = inner.state.ipam.allocations().map(|(_, k)| k.clone());
            let from_ipam6 = inner
                .state
                .ipam6
                .iter()
                .flat_map(|pool| pool.allocations().map(|(_, k)| k.clone()));
            let from_endpoints = inner.state.endpoints.iter().map(|e| e.attachment.clone());
            from_ipam
                .chain(from_ipam6)
                .chain(from_endpoints)
                .filter(|k| !valid.contains(k))
                .collect()
        };
        for attachment in &stale {
            self.delete_endpoint(attachment)?;
        }
        Ok(stale.into_iter().collect())
    }

    pub fn status(&self) -> Status {
        let inner = self.lock();
        Status {
            node_name: self.node_name.clone(),
            pod_cidr: inner.state.ipam.cidr(),
            addresses_total: inner.state.ipam.capacity(),
            addresses_free: inner.state.ipam.free(),
            endpoints: inner.state.endpoints.len(),
        }
    }
}

fn validate(attachment: &AttachmentKey) -> Result<(), ManagerError> {
    if attachment.container_id.is_empty() || attachment.ifname.is_empty() {
        return Err(ManagerError::Invalid(
            "container id and interface name are required".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
