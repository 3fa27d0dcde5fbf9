//! weir-agent: the per-node daemon that programs Weir's datapath.
//!
//! This crate holds the datapath loader (load the embedded kernel programs,
//! pin their maps, attach them to interfaces, read their maps).

pub mod datapath;
