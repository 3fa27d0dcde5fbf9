//! Weir's benchmarks (the `weir-bench` binary runs them; `cargo xtask bench`
//! builds and runs that in release mode), and the kube-proxy iptables
//! emulator the services benchmark measures Weir against.

pub mod datapath;
pub mod flows;
pub mod idle;
pub mod kubeproxy;
pub mod lab;
pub mod pod_to_pod;
pub mod policy_scale;
pub mod propagation;
pub mod reliability;
pub mod services;
