//! Weir's benchmarks (the `weir-bench` binary runs them; `cargo xtask bench`
//! builds and runs that), and the kube-proxy iptables emulator the services
//! benchmark measures Weir against.

pub mod kubeproxy;
pub mod services;
