fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/weir/agent/v1/endpoints.proto",
            "proto/weir/agent/v1/policy.proto",
            "proto/weir/agent/v1/inspect.proto",
            "proto/weir/agent/v1/monitor.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
