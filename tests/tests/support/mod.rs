//! Helpers shared by suites. Each suite includes this module and uses a
//! part of it.
#![allow(dead_code, reason = "each suite uses a part of the helpers")]

pub mod api_server;
