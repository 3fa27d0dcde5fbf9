//! What the agent knows of the cluster: the typed model of the objects it
//! reads ([`manifest`]), their sources ([`kubernetes`], the API server's
//! watches, and [`manifest_dir`] when there is no Kubernetes API), and the shared runtime state other nodes publish in the
//! kvstore ([`kvstore`]); [`last_known_good`] keeps an object's previous valid
//! version in force while its latest one is invalid.

pub mod kubernetes;
pub mod kvstore;
pub mod last_known_good;
pub mod manifest;
pub mod manifest_dir;
pub mod node_ipam;
