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
