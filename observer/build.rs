fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/flow/flow.proto",
            "proto/relay/relay.proto",
            "proto/observer/observer.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
