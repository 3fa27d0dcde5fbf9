//! The upstream Kubernetes e2e suite (`e2e.test` of v1.20.2, built by
//! `cargo xtask setup` from the same tree as the control plane) against a
//! lab with real nodes: run from the lab's underlay namespace (where the
//! API server is) as the lab's admin, with the `skeleton` provider, the
//! specs chosen by ginkgo focus and skip expressions; the outcome of each
//! spec read from its JUnit report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Lab;
use weir_tests::netns;

/// How one spec ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// With the failure's message.
    Failed(String),
    Skipped,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// What a run did: every spec of the report, and how long it took.
#[derive(Debug)]
pub struct Report {
    pub specs: Vec<Spec>,
    pub took: Duration,
    pub log: PathBuf,
}

impl Report {
    pub fn count(&self, wanted: fn(&Outcome) -> bool) -> usize {
        self.specs.iter().filter(|s| wanted(&s.outcome)).count()
    }

    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Passed)
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| *o == Outcome::Skipped)
    }

    /// One line per spec that ran, then the totals.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .specs
            .iter()
            .filter_map(|spec| {
                let verdict = match &spec.outcome {
                    Outcome::Passed => "passed",
                    Outcome::Failed(_) => "FAILED",
                    Outcome::Skipped => return None,
                };
                Some(format!("{verdict:7} {:6.1} s  {}", spec.seconds, spec.name))
            })
            .collect();
        lines.push(format!(
            "e2e: {} passed, {} failed, {} skipped in {:.0} s",
            self.passed(),
            self.failed(),
            self.skipped(),
            self.took.as_secs_f64()
        ));
        lines
    }
}

impl Lab {
    /// Runs `e2e_test` against this lab (its nodes must be real) with the
    /// given ginkgo focus and skip, the report and log in `report_dir`;
    /// `progress` gets the suite's output line by line.
    pub fn run_e2e(
        &self,
        e2e_test: &Path,
        focus: &str,
        skip: &str,
        report_dir: &Path,
        progress: &dyn Fn(&str),
    ) -> Result<Report> {
        if !self.state.real_nodes {
            bail!(
                "lab {} runs the lab's kubelets, not real nodes: bring it up with --real-nodes",
                self.state.name
            );
        }
        let cp = self.control_plane()?;
        std::fs::create_dir_all(report_dir)?;
        let log = report_dir.join("e2e.log");
        let mut cmd = Command::new(e2e_test);
        cmd.arg(format!("--kubeconfig={}", cp.admin_kubeconfig().display()))
            .arg("--provider=skeleton")
            // The suite execs into pods with kubectl: the lab's (1.20), not
            // whatever the machine has on PATH.
            .arg(format!("--kubectl-path={}", cp.kubectl.display()))
            .arg(format!("--num-nodes={}", self.state.nodes.len()))
            .arg(format!("--ginkgo.focus={focus}"))
            .arg(format!("--ginkgo.skip={skip}"))
            .arg("--ginkgo.noColor")
            .arg(format!("--report-dir={}", report_dir.display()))
            // The lab has no kube-system pods to wait for.
            .arg("--minStartupPods=0")
            // Its log dump is a cluster/ script of the source tree.
            .arg("--disable-log-dump")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        netns::command_in(&mut cmd, &cp.netns)?;
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", e2e_test.display()))?;
        let stdout = child.stdout.take().context("e2e.test's stdout")?;
        let mut file = std::fs::File::create(&log)?;
        use std::io::{BufRead, Write};
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            writeln!(file, "{line}")?;
            progress(&line);
        }
        // A failed spec makes e2e.test exit non-zero: the report says which.
        let _status = child.wait()?;
        let junit = std::fs::read_dir(report_dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("junit"))
            })
            .with_context(|| {
                format!(
                    "e2e.test wrote no JUnit report in {} (see {})",
                    report_dir.display(),
                    log.display()
                )
            })?;
        let specs = parse_junit(&std::fs::read_to_string(&junit)?)?;
        Ok(Report {
            specs,
            took: started.elapsed(),
            log,
        })
    }
}

/// The specs of a ginkgo JUnit report: each `testcase`, failed if it holds
/// a `failure`, skipped if a `skipped`.
pub fn parse_junit(xml: &str) -> Result<Vec<Spec>> {
    let document = roxmltree::Document::parse(xml).context("the JUnit report is not XML")?;
    let specs = document
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|case| {
            let child = |tag: &str| case.children().find(|c| c.has_tag_name(tag));
            let outcome = match (child("failure"), child("skipped")) {
                (Some(failure), _) => Outcome::Failed(
                    failure
                        .attribute("message")
                        .or(failure.text())
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                ),
                (None, Some(_)) => Outcome::Skipped,
                (None, None) => Outcome::Passed,
            };
            Spec {
                name: case.attribute("name").unwrap_or_default().to_string(),
                outcome,
                seconds: case
                    .attribute("time")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0),
            }
        })
        .collect();
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::{parse_junit, Outcome};

    #[test]
    fn a_ginkgo_report_gives_each_spec_its_outcome() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Kubernetes e2e suite" tests="3" failures="1" errors="0" time="95.2">
  <testcase name="[sig-network] NetworkPolicy should support a &#39;default-deny-ingress&#39; policy" classname="Kubernetes e2e suite" time="50.5"></testcase>
  <testcase name="[sig-network] NetworkPolicy should allow egress access to server in CIDR block" classname="Kubernetes e2e suite" time="44.7">
    <failure type="Failure">/go/src/k8s.io/kubernetes/test/e2e/network/network_policy.go:1400
Unexpected error</failure>
  </testcase>
  <testcase name="[sig-storage] something" classname="Kubernetes e2e suite" time="0">
    <skipped></skipped>
  </testcase>
</testsuite>"#;
        let specs = parse_junit(xml).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(
            specs[0].name,
            "[sig-network] NetworkPolicy should support a 'default-deny-ingress' policy"
        );
        assert_eq!(specs[0].outcome, Outcome::Passed);
        assert!((specs[0].seconds - 50.5).abs() < 1e-9);
        assert!(
            matches!(&specs[1].outcome, Outcome::Failed(m) if m.contains("network_policy.go:1400")),
            "{:?}",
            specs[1].outcome
        );
        assert_eq!(specs[2].outcome, Outcome::Skipped);
    }
}
