//! Helpers shared by suites (each suite includes the modules it uses).

pub mod api_server;
