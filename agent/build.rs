//! Embeds the kernel programs into the agent so an agent binary always
//! carries the datapath it was built with (the map layouts of both come from
//! the same weir-abi source).
//!
//! The object is produced by `cargo xtask build` (nightly, bpfel). Set
//! `WEIR_DATAPATH_OBJECT` to embed an object from elsewhere.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=WEIR_DATAPATH_OBJECT");
    let object = match std::env::var_os("WEIR_DATAPATH_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ebpf/bpfel-unknown-none/release/weir-datapath"),
    };
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        panic!(
            "the datapath object {} does not exist: build the kernel programs first with \
             `cargo xtask build` (or point WEIR_DATAPATH_OBJECT at one)",
            object.display()
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy(&object, out.join("weir-datapath.o")).expect("copy the datapath object");
}
