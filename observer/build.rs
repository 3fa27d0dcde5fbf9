//! The Hubble protos: prost types and tonic services, plus serde
//! implementations (pbjson) that write protobuf's JSON mapping with the
//! protos' own field names, as Hubble's JSON output and exporter do.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("hubble-descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        // The well-known types the protos use, each named here: the
        // Timestamp is Weir's own (protobuf's JSON form, RFC 3339 in UTC
        // with `Z`, as Hubble prints it); wrappers stay plain options as
        // prost makes them (their JSON is the bare value either way).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf.Timestamp", "crate::proto::Timestamp")
        .extern_path(".google.protobuf.BoolValue", "bool")
        .extern_path(".google.protobuf.UInt32Value", "u32")
        .extern_path(".google.protobuf.Int32Value", "i32")
        .compile_protos(
            &[
                "proto/flow/flow.proto",
                "proto/relay/relay.proto",
                "proto/observer/observer.proto",
            ],
            &["proto"],
        )?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .build(&[".flow", ".relay", ".observer"])?;
    Ok(())
}
