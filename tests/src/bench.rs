//! Benchmarks too large for the weir-bench binary itself.

pub mod services;
