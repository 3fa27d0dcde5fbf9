//! Generated Hubble-compatible protobuf types.

/// `package flow`: the Flow message, its enums and FlowFilter.
#[allow(clippy::all, missing_docs)]
pub mod flow {
    tonic::include_proto!("flow");
}

/// `package observer`: the Observer service.
#[allow(clippy::all, missing_docs)]
pub mod observer {
    tonic::include_proto!("observer");
}

/// `package relay`: node states a relay reports.
#[allow(clippy::all, missing_docs)]
pub mod relay {
    tonic::include_proto!("relay");
}
