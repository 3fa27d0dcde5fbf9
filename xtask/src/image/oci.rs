//! An OCI image archive (image-spec 1.1 layout in a tar) of one layer,
//! written without a container engine: the layer is a deterministic tar
//! (sorted, owner root, mtime 0) compressed with gzip; config, manifest and
//! index are JSON blobs named by their SHA-256. `ctr image import` and
//! podman load such archives.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// One file of the image's filesystem.
pub enum Entry {
    /// A file copied from the host, with its mode.
    File {
        path: String,
        source: PathBuf,
        mode: u32,
    },
    /// A symbolic link.
    Link { path: String, target: String },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Link { path, .. } => path,
        }
    }
}

/// What to build.
pub struct Image {
    /// `localhost/weir-agent:0.1.0`.
    pub name: String,
    pub entrypoint: Vec<String>,
    /// The default arguments (`CMD`), after the entrypoint.
    pub cmd: Vec<String>,
    pub entries: Vec<Entry>,
}

/// The archive and what it is made of.
pub struct Built {
    pub archive: Vec<u8>,
    pub layer_compressed: usize,
    pub layer_uncompressed: usize,
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> Result<tar::Header> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(kind);
    Ok(header)
}

/// The layer: parent directories first, then every entry, sorted by path.
fn layer(entries: &mut [Entry]) -> Result<Vec<u8>> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut directories: Vec<String> = Vec::new();
    for entry in entries.iter() {
        let mut parent = std::path::Path::new(entry.path()).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            directories.push(format!("{}/", dir.display()));
            parent = dir.parent();
        }
    }
    directories.sort();
    directories.dedup();
    let mut builder = tar::Builder::new(Vec::new());
    for dir in &directories {
        let mut h = header(dir, 0, 0o755, tar::EntryType::Directory)?;
        h.set_cksum();
        builder.append(&h, std::io::empty())?;
    }
    for entry in entries.iter() {
        match entry {
            Entry::File { path, source, mode } => {
                let data =
                    std::fs::read(source).with_context(|| format!("read {}", source.display()))?;
                let mut h = header(path, data.len() as u64, *mode, tar::EntryType::Regular)?;
                h.set_cksum();
                builder.append(&h, data.as_slice())?;
            }
            Entry::Link { path, target } => {
                let mut h = header(path, 0, 0o777, tar::EntryType::Symlink)?;
                h.set_link_name(target)?;
                h.set_cksum();
                builder.append(&h, std::io::empty())?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

/// Builds the archive of `image`.
pub fn build(mut image: Image, architecture: &str) -> Result<Built> {
    let layer = layer(&mut image.entries)?;
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&layer)?;
    let compressed = gz.finish()?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Cmd": image.cmd,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        "history": [{"created_by": "cargo xtask image"}],
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest(&compressed),
            "size": compressed.len(),
        }],
    }))?;
    let tag = image
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| -> Result<()> {
        let mut h = header(&path, data.len() as u64, 0o644, tar::EntryType::Regular)?;
        h.set_cksum();
        archive.append(&h, data)?;
        Ok(())
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&config, &manifest, &compressed] {
        let name = digest(blob).replace(':', "/");
        add(format!("blobs/{name}"), blob)?;
    }
    Ok(Built {
        archive: archive.into_inner()?,
        layer_compressed: compressed.len(),
        layer_uncompressed: layer.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_archive(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(bytes);
        let mut files = std::collections::BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            files.insert(path, data);
        }
        files
    }

    #[test]
    fn the_archive_is_an_oci_layout_whose_blobs_match_their_digests() {
        let source = std::env::temp_dir().join(format!("xtask-oci-{}", std::process::id()));
        std::fs::write(&source, b"#!/bin/sh\necho hi\n").expect("write");
        let image = Image {
            name: "localhost/t:1".into(),
            entrypoint: vec!["/usr/local/bin/t".into()],
            cmd: vec!["pause".into()],
            entries: vec![
                Entry::File {
                    path: "usr/local/bin/t".into(),
                    source: source.clone(),
                    mode: 0o755,
                },
                Entry::Link {
                    path: "bin/sh".into(),
                    target: "busybox".into(),
                },
            ],
        };
        let built = build(image, "amd64").expect("build");
        let _ = std::fs::remove_file(&source);
        let files = read_archive(&built.archive);
        assert!(files.contains_key("oci-layout"));
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
        let manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest");
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "localhost/t:1"
        );
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(digest(data), format!("sha256:{hex}"), "{path}");
            }
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&files[&format!("blobs/{}", manifest_digest.replace(':', "/"))])
                .expect("manifest");
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("layer");
        let layer_gz = &files[&format!("blobs/{}", layer_digest.replace(':', "/"))];
        let layer = read_archive(&{
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(layer_gz.as_slice()),
                &mut out,
            )
            .expect("gunzip");
            out
        });
        let paths: Vec<&str> = layer.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "bin/",
                "bin/sh",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/t"
            ]
        );
        assert_eq!(layer["usr/local/bin/t"], b"#!/bin/sh\necho hi\n");
    }
}
