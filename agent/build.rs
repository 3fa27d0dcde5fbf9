//! Embeds the kernel programs into the agent so an agent binary always
//! carries the datapath it was built with (the map layouts of both come from
//! the same weir-abi source).
//!
//! The object is produced by `cargo xtask build` (nightly, bpfel). Set
//! `WEIR_DATAPATH_OBJECT` to embed an object from elsewhere.
//!
//! Without the object (a fresh clone, before `cargo xtask build`) the agent
//! still compiles, so that `cargo check`, clippy and rust-analyzer work: it is
//! built with `--cfg weir_no_datapath`, embeds nothing, and loading the
//! datapath fails at run time saying how to build it. xtask sets
//! `WEIR_REQUIRE_DATAPATH=1`, which makes a missing object an error instead,
//! so the real builds can never ship an agent without its datapath.

use std::path::PathBuf;
use std::process::ExitCode;

const STUB_CFG: &str = "weir_no_datapath";

fn main() -> ExitCode {
    println!("cargo::rustc-check-cfg=cfg({STUB_CFG})");
    println!("cargo::rerun-if-env-changed=WEIR_DATAPATH_OBJECT");
    let object = match std::env::var_os("WEIR_DATAPATH_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ebpf/bpfel-unknown-none/release/weir-datapath"),
    };
    // A path that does not exist makes cargo rerun this script on every
    // build, so the object is picked up as soon as it has been built, and
    // WEIR_REQUIRE_DATAPATH is always read while it is missing (it is not a
    // rerun trigger: flipping it must not rebuild an agent that has one).
    println!("cargo::rerun-if-changed={}", object.display());

    if !object.is_file() {
        let missing = format!(
            "the datapath object {} does not exist: build the kernel programs with \
             `cargo xtask build` (or point WEIR_DATAPATH_OBJECT at one)",
            object.display()
        );
        if std::env::var_os("WEIR_REQUIRE_DATAPATH").is_some_and(|v| v == "1") {
            eprintln!("error: {missing}");
            return ExitCode::FAILURE;
        }
        println!("cargo::warning={missing}; this agent embeds no datapath and cannot load one");
        println!("cargo::rustc-cfg={STUB_CFG}");
        return ExitCode::SUCCESS;
    }

    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        eprintln!("error: cargo did not set OUT_DIR");
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::copy(&object, out.join("weir-datapath.o")) {
        eprintln!("error: copying {}: {e}", object.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
