fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // The services API's messages print as JSON in `weir -o json`.
        .type_attribute(".weir.services.v1", "#[derive(serde::Serialize)]")
        .compile_protos(
            &[
                "proto/weir/agent/v1/types.proto",
                "proto/weir/agent/v1/endpoints.proto",
                "proto/weir/agent/v1/policy.proto",
                "proto/weir/agent/v1/inspect.proto",
                "proto/weir/agent/v1/monitor.proto",
                "proto/weir/agent/v1/services.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
