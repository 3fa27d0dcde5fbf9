//! The kernel crate is a workspace of its own (it builds for another target
//! with another toolchain), so it cannot inherit the host workspace's lints;
//! its manifest carries a copy of the tables, checked here.

use std::fs;

use crate::paths;

/// The text from `[workspace.lints.rust]` to the end of the lint tables:
/// the next table that is not a lint table, or the end of the file.
fn lint_tables(manifest: &str) -> Option<&str> {
    let start = manifest.find("[workspace.lints.rust]")?;
    let rest = &manifest[start..];
    let end = rest
        .match_indices("\n[")
        .map(|(at, _)| at)
        .find(|&at| !rest[at + 1..].starts_with("[workspace.lints."))
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end())
}

#[test]
fn kernel_crate_lints_mirror_the_workspace() {
    let read = |path: std::path::PathBuf| {
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let host = read(paths::root().join("Cargo.toml"));
    let kernel = read(paths::datapath_manifest());
    let host = lint_tables(&host).expect("the workspace has lint tables");
    let kernel = lint_tables(&kernel).expect("ebpf/datapath/Cargo.toml has lint tables");
    assert_eq!(
        kernel, host,
        "ebpf/datapath/Cargo.toml's [workspace.lints] must be a copy of the root Cargo.toml's"
    );
}

#[test]
fn lint_tables_end_at_the_next_other_table() {
    let manifest = "[a]\nx = 1\n[workspace.lints.rust]\nr = \"warn\"\n\n\
                    [workspace.lints.clippy]\nc = \"warn\"\n\n[dependencies]\nd = \"1\"\n";
    assert_eq!(
        lint_tables(manifest),
        Some("[workspace.lints.rust]\nr = \"warn\"\n\n[workspace.lints.clippy]\nc = \"warn\"")
    );
}
