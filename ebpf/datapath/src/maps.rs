//! The maps the pod programs read (written by the agent) and conntrack.
//! Sizes are defaults; the agent may override them at load time.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, LruHashMap};
use weir_abi::endpoint::NetnsOwner;
use weir_abi::{CtEntry, CtKey, EndpointInfo, EndpointKey, IpcacheKey, IpcacheValue};
use weir_abi::{PolicyEntry, PolicyKey};

#[map(name = "weir_endpoints")]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(65_535, 0);

/// Pods (and the node) by netns cookie, for the cgroup hooks.
#[map(name = "weir_netns_owners")]
pub static NETNS_OWNERS: HashMap<u64, NetnsOwner> = HashMap::pinned(65_535, 0);

#[map(name = "weir_ipcache")]
pub static IPCACHE: LpmTrie<IpcacheKey, IpcacheValue> = LpmTrie::pinned(65_536, 0);

#[map(name = "weir_policy")]
pub static POLICY: LpmTrie<PolicyKey, PolicyEntry> = LpmTrie::pinned(65_536, 0);

/// TCP connections. Other protocols have their own map
/// ([`CONNTRACK_ANY`]), as in Cilium: a UDP or ICMP flood cannot evict TCP
/// connections.
#[map(name = "weir_conntrack")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(65_536, 0);

/// Flows of every protocol but TCP.
#[map(name = "weir_conntrack_any")]
pub static CONNTRACK_ANY: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(65_536, 0);

/// Index 0: the policy revision, moved by the agent after every change of
/// what decides a verdict. Conntrack entries carry the revision their
/// verdict was taken at (see `pod::handle`).
#[map(name = "weir_policy_revision")]
pub static POLICY_REVISION: Array<u64> = Array::pinned(1, 0);
