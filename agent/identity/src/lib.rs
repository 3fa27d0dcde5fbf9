//! Security identities and the cluster-wide runtime state Weir agents share.
//!
//! - The label set an identity stands for is `weir_types::LabelSet`
//!   (shared with the policy engine, which selects on it).
//! - Reserved identities and the numeric ranges are `weir_abi::identity`
//!   (one table for the datapath, this crate and the policy engine).
//! - [`local`]: labels of node-local CIDR identities (never shared; the
//!   policy engine allocates them).
//! - [`store`]: the [`SharedStore`] trait: identities, endpoints, nodes.
//! - [`crd`]: the trait on the Kubernetes API (CRD mode: `WeirIdentity`,
//!   `WeirEndpoint`, `WeirNode` objects).
//! - [`etcd`]: the trait on etcd (kvstore mode); [`lazy`]: the same,
//!   connected in the background and failing fast while etcd does not
//!   answer ([`connection`] is that state); [`memory`]: in-process, for
//!   other crates' unit tests.
//! - [`testing`]: a throwaway etcd server for tests and the lab.

#![forbid(unsafe_code)]

pub mod connection;
pub mod crd;
pub mod error;
pub mod etcd;
pub mod lazy;
pub mod local;
pub mod memory;
pub mod store;
pub mod testing;

pub use connection::Connection;
pub use crd::{CrdConfig, CrdStore};
pub use error::{Result, StoreError};
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use lazy::{LazyEtcdStore, LazyOptions};
pub use local::cidr_labels;
pub use memory::MemoryStore;
pub use store::{
    EndpointEvent, EndpointRecord, EventStream, IdentityEvent, NodeEvent, NodeRecord, SharedStore,
    StoreEvent,
};
pub use weir_types::{LabelSet, LabelsError};
