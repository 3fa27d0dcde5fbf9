//! Which package a test suite belongs to. cargo's `Running` lines name a
//! test binary and its source relative to its package (`tests/x.rs`), not
//! the package, so the summary asks cargo: `cargo test --no-run` with JSON
//! messages lists every test binary with its package's manifest.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;

use crate::{cmd, paths};

/// Package directories (relative to the workspace root, e.g. `bench` or
/// `agent/api`) by test binary file name (`kubeproxy_iptables-b5ac...`) and
/// by library name for doc tests (`doc:weir_lab`).
pub struct Packages(HashMap<String, String>);

impl Packages {
    /// Builds every test binary of the workspace (as `cargo test` would,
    /// so the run that follows compiles nothing) and records their packages.
    /// Empty if that fails: the test run then reports the failure, and the
    /// summary names suites without their packages.
    pub fn of_workspace() -> Packages {
        let mut cargo = cmd::cargo(None);
        cargo.args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ]);
        eprintln!("    $ {}", cmd::display(&cargo));
        let Ok(output) = cargo.stderr(Stdio::inherit()).output() else {
            return Packages(HashMap::new());
        };
        Packages::from_messages(&output.stdout, &paths::root())
    }

    fn from_messages(messages: &[u8], root: &Path) -> Packages {
        let mut packages = HashMap::new();
        for line in messages.lines().map_while(Result::ok) {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let Some(manifest) = message["manifest_path"].as_str().map(Path::new) else {
                continue;
            };
            let dir = manifest.parent().unwrap_or(manifest);
            let dir = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
            if let Some(file) = message["executable"]
                .as_str()
                .and_then(|e| Path::new(e).file_name())
            {
                packages.insert(file.to_string_lossy().into_owned(), dir.clone());
            }
            let target = &message["target"];
            let is_lib = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "lib"));
            if let (true, Some(name)) = (is_lib, target["name"].as_str()) {
                packages.insert(format!("doc:{name}"), dir);
            }
        }
        Packages(packages)
    }

    /// The package directory of the suite cargo announced with `running`
    /// (`unittests src/lib.rs (target/debug/deps/weir_lab-1f2e)`) or
    /// `Doc-tests <library>`.
    pub fn of_running(&self, running: &str) -> Option<&str> {
        let binary = running.split_once(" (")?.1.trim_end_matches(')');
        let file = binary.rsplit('/').next()?;
        self.0.get(file).map(String::as_str)
    }

    pub fn of_doc_tests(&self, library: &str) -> Option<&str> {
        self.0.get(&format!("doc:{library}")).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Packages;

    #[test]
    fn names_the_package_of_test_binaries_and_doc_tests() {
        let messages = br#"{"reason":"compiler-artifact","manifest_path":"/w/bench/Cargo.toml","target":{"kind":["test"],"name":"kubeproxy_iptables"},"executable":"/w/target/debug/deps/kubeproxy_iptables-b5ac"}
{"reason":"compiler-artifact","manifest_path":"/w/agent/api/Cargo.toml","target":{"kind":["lib"],"name":"weir_agent_api"},"executable":null}
{"reason":"build-finished","success":true}
not json
"#;
        let packages = Packages::from_messages(messages, Path::new("/w"));
        assert_eq!(
            packages.of_running(
                "tests/kubeproxy_iptables.rs (target/debug/deps/kubeproxy_iptables-b5ac)"
            ),
            Some("bench")
        );
        assert_eq!(packages.of_doc_tests("weir_agent_api"), Some("agent/api"));
        assert_eq!(
            packages.of_running("tests/other.rs (target/debug/deps/other-1234)"),
            None
        );
    }
}
