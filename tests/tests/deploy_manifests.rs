//! The manifests under deploy/ against Kubernetes' own OpenAPI schemas
//! (kubernetes-validate, installed by `cargo xtask setup` into
//! target/tools/venv), strictly (an unknown field is an error), for an old,
//! a middle and the newest version it carries; a manifest spoiled on
//! purpose must fail, so the check itself is known to work. Every object
//! carries the `app.kubernetes.io/part-of: weir` label. The Kustomize base
//! and each overlay render (with the kustomize in Debian's kubectl) into
//! objects that validate too, with the overlay's change in them.
//!
//! A missing validator fails the suite: it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

const VERSIONS: [&str; 3] = ["1.25.0", "1.31.0", "1.37.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is one level below the root")
        .to_path_buf()
}

fn validator() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .map(|dir| dir.join("tools/venv/bin/kubernetes-validate"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no tools/venv/bin/kubernetes-validate above {}: run `cargo xtask setup`",
                exe.display()
            )
        })
}

fn manifests() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/crds"] {
        for entry in std::fs::read_dir(repo().join(dir)).expect(dir) {
            let path = entry.expect("entry").path();
            // The Kustomize base's own file is not an object.
            if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "manifests: {files:?}");
    files
}

/// Runs the validator; (passed, output).
fn validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_validates_strictly_against_old_and_new_kubernetes_schemas() {
    let files = manifests();
    for version in VERSIONS {
        let (ok, output) = validate(version, &files);
        assert!(ok, "Kubernetes {version}:\n{output}");
    }
}

#[test]
fn the_validator_refuses_a_spoiled_manifest() {
    let source = repo().join("deploy/kubernetes/31-operator.yaml");
    let text = std::fs::read_to_string(&source).expect("operator manifest");
    assert!(text.contains("hostNetwork: true"));
    let spoiled =
        std::env::temp_dir().join(format!("{}-spoiled.yaml", weir_tests::names::unique()));
    std::fs::write(
        &spoiled,
        text.replace("hostNetwork: true", "hostNetwrk: true"),
    )
    .expect("write");
    let (ok, output) = validate("1.37.0", std::slice::from_ref(&spoiled));
    let _ = std::fs::remove_file(&spoiled);
    assert!(!ok, "a misspelled field passed:\n{output}");
    assert!(output.contains("hostNetwrk"), "{output}");
}

#[test]
fn every_object_says_it_is_part_of_weir() {
    for file in manifests()
        .iter()
        .filter(|f| f.starts_with(repo().join("deploy/kubernetes")))
    {
        let text = std::fs::read_to_string(file).expect("manifest");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_yaml_ng::Value =
                serde_yaml_ng::Value::deserialize(document).expect("YAML");
            let kind = value["kind"].as_str().unwrap_or("?");
            let name = value["metadata"]["name"].as_str().unwrap_or("?");
            assert_eq!(
                value["metadata"]["labels"]["app.kubernetes.io/part-of"].as_str(),
                Some("weir"),
                "{kind}/{name} in {}",
                file.display()
            );
        }
    }
}

/// `kubectl kustomize` of a directory under deploy/, rendered into a file.
fn kustomize(dir: &str) -> PathBuf {
    let kubectl = weir_lab::KubeBinaries::locate()
        .expect("kubectl (cargo xtask setup)")
        .kubectl;
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy").join(dir))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = std::env::temp_dir().join(format!(
        "{}-{}.yaml",
        weir_tests::names::unique(),
        dir.replace('/', "-")
    ));
    std::fs::write(&rendered, &out.stdout).expect("write rendered");
    rendered
}

#[test]
fn the_kustomize_base_and_overlays_render_valid_objects_with_their_changes() {
    let base = kustomize("kubernetes");
    let registry = kustomize("overlays/registry");
    let lb_ipam = kustomize("overlays/lb-ipam");
    let text = |path: &PathBuf| std::fs::read_to_string(path).expect("rendered");
    let (base_text, registry_text, lb_text) = (text(&base), text(&registry), text(&lb_ipam));
    let rendered = [base.clone(), registry.clone(), lb_ipam.clone()];
    let result = validate("1.37.0", &rendered);
    for path in &rendered {
        let _ = std::fs::remove_file(path);
    }
    assert!(result.0, "rendered objects:\n{}", result.1);
    let objects = |t: &str| t.lines().filter(|l| l.starts_with("kind:")).count();
    assert_eq!(objects(&base_text), objects(&registry_text));
    assert!(!base_text.contains("registry.example.com"));
    assert_eq!(
        registry_text
            .matches("image: registry.example.com/weir/")
            .count(),
        4
    );
    assert!(registry_text.contains("cluster-pool-ipv4-cidr: 10.128.0.0/14"));
    assert!(!base_text.contains("--lb-ipam-pool"));
    assert!(lb_text.contains("- --lb-ipam-pool=198.51.100.0/24"));
}

/// The PodMonitors (monitoring.coreos.com, whose schemas kubernetes-validate
/// does not carry): each selects a component that exists and names a
/// container port called `metrics` in it.
#[test]
fn every_pod_monitor_scrapes_a_metrics_port_of_a_component() {
    let text = std::fs::read_to_string(repo().join("deploy/monitoring/podmonitors.yaml"))
        .expect("podmonitors");
    let workloads: String = ["21-agent.yaml", "31-operator.yaml", "40-relay.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(repo().join("deploy/kubernetes").join(f)).expect(f))
        .collect::<Vec<_>>()
        .join("\n---\n");
    let mut monitors = 0;
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let monitor: serde_yaml_ng::Value =
            serde_yaml_ng::Value::deserialize(document).expect("YAML");
        assert_eq!(monitor["kind"].as_str(), Some("PodMonitor"));
        let name = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
            .as_str()
            .expect("selector");
        let port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
            .as_str()
            .expect("port");
        let workload = serde_yaml_ng::Deserializer::from_str(&workloads)
            .map(|d| serde_yaml_ng::Value::deserialize(d).expect("YAML"))
            .find(|w| {
                matches!(w["kind"].as_str(), Some("DaemonSet" | "Deployment"))
                    && w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
                        .as_str()
                        == Some(name)
            })
            .unwrap_or_else(|| panic!("no workload labelled {name}"));
        let ports = &workload["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert!(
            ports
                .as_sequence()
                .is_some_and(|ps| ps.iter().any(|p| p["name"].as_str() == Some(port))),
            "{name} has no container port {port}"
        );
        monitors += 1;
    }
    assert_eq!(monitors, 3);
}
