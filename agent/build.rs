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

/// The most recently modified file under `dirs` (recursively), with its time.
fn newest_file(dirs: &[PathBuf]) -> Option<(PathBuf, std::time::SystemTime)> {
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    let mut pending: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else if let Ok(modified) = meta.modified() {
                if newest.as_ref().is_none_or(|(_, t)| modified > *t) {
                    newest = Some((path, modified));
                }
            }
        }
    }
    newest
}

fn main() -> ExitCode {
    println!("cargo::rustc-check-cfg=cfg({STUB_CFG})");
    println!("cargo::rerun-if-env-changed=WEIR_DATAPATH_OBJECT");
    // Read when the script runs, not baked in when it is compiled: cargo
    // gives the same unit hash to the same crate in two checkouts, so a
    // shared target directory may run one checkout's compiled script for
    // the other.
    let (Some(manifest_dir), Some(out)) = (
        std::env::var_os("CARGO_MANIFEST_DIR"),
        std::env::var_os("OUT_DIR"),
    ) else {
        eprintln!("error: cargo did not set CARGO_MANIFEST_DIR and OUT_DIR");
        return ExitCode::FAILURE;
    };
    let object = match std::env::var_os("WEIR_DATAPATH_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(&manifest_dir)
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

    // An object older than the kernel sources is another build's (a target
    // directory copied from elsewhere, sources changed without `cargo xtask
    // build`): the agent would carry programs that are not the ones in the
    // tree. Said loudly; xtask always rebuilds the object first.
    let kernel_sources = [
        PathBuf::from(&manifest_dir).join("../ebpf/datapath/src"),
        PathBuf::from(&manifest_dir).join("../ebpf/abi/src"),
    ];
    for dir in &kernel_sources {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    if let (Ok(built), Some(newest)) = (
        std::fs::metadata(&object).and_then(|m| m.modified()),
        newest_file(&kernel_sources),
    ) {
        if newest.1 > built {
            println!(
                "cargo::warning=the datapath object {} is older than {}: the agent embeds \
                 kernel programs that may not match the tree; run `cargo xtask build`",
                object.display(),
                newest.0.display()
            );
        }
    }

    if let Err(e) = std::fs::copy(&object, PathBuf::from(out).join("weir-datapath.o")) {
        eprintln!("error: copying {}: {e}", object.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
