//! Writes Weir's CRDs as YAML into a directory (`cargo xtask crds` runs it
//! with `deploy/crds`): one file per kind, stale generated files removed.
//! `--check` writes nothing and fails when the directory is out of date.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    args.retain(|a| a != "--check");
    let [dir] = args.as_slice() else {
        bail!("usage: weir-crds [--check] DIR");
    };
    let dir = PathBuf::from(dir);
    if check {
        let problems = weir_crds::drift(&dir)?;
        if !problems.is_empty() {
            bail!(
                "{} is out of date; run `cargo xtask crds`:\n  {}",
                dir.display(),
                problems.join("\n  ")
            );
        }
        eprintln!("{}: up to date", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = weir_crds::files()?;
    // A generated file whose kind is gone would still be applied: remove it.
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let generated = std::fs::read_to_string(entry.path())
            .is_ok_and(|t| t.starts_with(weir_crds::GENERATED_HEADER));
        if generated && !files.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            eprintln!("removed {name}");
        }
    }
    for (name, text) in &files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    eprintln!("{} CRDs in {}", files.len(), dir.display());
    Ok(())
}
