//! What the policy reconciler publishes after every pass for the readers
//! above it (the policy and inspection APIs, metrics): the compiled state it
//! wrote, and the inputs it compiled from.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use weir_policy::trace::trace_flow_at;
use weir_policy::{
    compile, ClusterView, Compiled, FlowSide, LocalIdentities, NamedPorts, Policy, Protocol,
};
use weir_types::NamespacedName;

/// What the reconcile loop last computed.
#[derive(Clone, Default)]
pub struct PolicySnapshot {
    pub compiled: Compiled,
    pub view: ClusterView,
    pub policies: Vec<Policy>,
    pub cidrs: LocalIdentities,
    pub rejected: BTreeMap<String, Vec<String>>,
    /// Objects whose previous valid version stays in force: key → errors.
    pub stale: BTreeMap<String, Vec<String>>,
    /// The local pods with an identity.
    pub local: BTreeMap<NamespacedName, LocalPod>,
    /// Every known pod, local or not.
    pub pods: BTreeMap<NamespacedName, KnownPod>,
    pub map_entries: usize,
}

/// A pod on this node: its endpoint and identity.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub endpoint: u32,
    pub identity: u32,
}

/// A pod anywhere in the cluster, as policy sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnownPod {
    pub identity: u32,
    pub named_ports: NamedPorts,
    /// Its address (NetworkPolicy `ipBlock`s match it), when known.
    pub address: Option<IpAddr>,
}

pub type SharedSnapshot = Arc<Mutex<PolicySnapshot>>;

impl PolicySnapshot {
    /// The trace of a flow `src → dst` between two pods. A pod on
    /// another node is compiled here from the same inputs (policies,
    /// identities, its named ports) its own agent compiles from, so both
    /// sides of the flow are shown. Each pod's address is matched against
    /// the NetworkPolicy `ipBlock`s as the datapath does, and the trace
    /// names the blocks and excepts that cover it.
    pub fn trace(
        &self,
        src: &NamespacedName,
        dst: &NamespacedName,
        protocol: Protocol,
        port: u16,
    ) -> Result<weir_policy::FlowTrace, String> {
        let mut view = self.view.clone();
        let mut side = |key: &NamespacedName, synthetic: u32| -> Result<FlowSide, String> {
            if let Some(local) = self.local.get(key) {
                return Ok(FlowSide::Endpoint(local.endpoint));
            }
            let pod = self
                .pods
                .get(key)
                .ok_or_else(|| format!("pod {key} is not known to this agent"))?;
            view.add_endpoint(weir_policy::Endpoint {
                id: synthetic,
                identity: pod.identity,
                named_ports: pod.named_ports.clone(),
            });
            Ok(FlowSide::Endpoint(synthetic))
        };
        // Synthetic ids above the 16-bit endpoint range never collide with
        // local endpoints.
        let src_side = side(src, 0x1_0000)?;
        let dst_side = side(dst, 0x1_0001)?;
        let compiled = if matches!((src_side, dst_side), (FlowSide::Endpoint(a), FlowSide::Endpoint(b)) if a < 0x1_0000 && b < 0x1_0000)
        {
            self.compiled.clone()
        } else {
            compile(&view, &self.policies, &mut self.cidrs.clone())
        };
        let address = |key: &NamespacedName| self.pods.get(key).and_then(|p| p.address);
        trace_flow_at(
            &compiled,
            &self.policies,
            (src_side, address(src)),
            (dst_side, address(dst)),
            protocol,
            port,
        )
        .ok_or_else(|| "endpoint missing from the compiled state".to_string())
    }
}
