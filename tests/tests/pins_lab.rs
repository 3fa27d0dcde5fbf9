//! The real agent restarted over pins of an older ABI version, in the lab:
//! it replaces every pinned map, reports it (`weir_datapath_pins_replaced`),
//! attaches its programs once the new maps are filled
//! (`weir_datapath_attach_deferred` back to 0), records the version, and
//! the node keeps enforcing: an allowed port stays open and a denied one
//! stays closed.

use std::time::{Duration, Instant};

use weir_abi::ABI_VERSION;
use weir_lab::probe::{probe_with_timeout, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Port 80 into x/b from anywhere; 81 is denied by default.
const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: b80, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  \
ingress:\n  - ports: [{port: 80, protocol: TCP}]\n---\n";

/// Whether x/a reaches x/b on TCP 80 and 81.
fn reach(lab: &TestLab) -> (bool, bool) {
    let (a, b) = (lab.pod("x/a").unwrap(), lab.pod("x/b").unwrap());
    let open = |port| probe_with_timeout(a, b, Target::Tcp(port), PROBE_TIMEOUT).connected;
    (open(80), open(81))
}

/// Waits (bounded) until `done` holds; false if it never did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// The value of the metric line starting with `series` in `n1`'s scrape.
fn metric(lab: &TestLab, series: &str) -> Option<String> {
    let scrape = lab.scrape_metrics("n1").ok()?;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

#[test]
fn an_agent_restarted_over_pins_of_an_older_abi_replaces_them_and_keeps_enforcing() {
    let mut lab = TestLab::up(1).unwrap();
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80, 81]));
    yaml.push_str(&pod_yaml("x", "b", "n1", &[80, 81]));
    yaml.push_str(POLICY);
    lab.apply_yaml(&yaml).unwrap();
    assert!(
        eventually(|| reach(&lab) == (true, false)),
        "x/b admits 80 only: {:?}",
        reach(&lab)
    );

    let pins = lab.state().node("n1").unwrap().bpffs_dir.clone();
    let link = pins.join(weir_agent::datapath::pins::ABI_LINK);
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_string_lossy(),
        format!("v{ABI_VERSION}")
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(format!("v{}", ABI_VERSION - 1), &link).unwrap();
    let restarted = Instant::now();
    lab.restart_agent("n1").unwrap();

    assert_eq!(
        metric(&lab, "weir_datapath_pins_replaced{map=\"weir_policy\"}").as_deref(),
        Some("1")
    );
    assert!(
        eventually(|| metric(&lab, "weir_datapath_attach_deferred").as_deref() == Some("0")),
        "the programs are attached once the new maps are filled"
    );
    let attached = restarted.elapsed();
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_string_lossy(),
        format!("v{ABI_VERSION}")
    );
    assert_eq!(
        reach(&lab),
        (true, false),
        "after the swap x/b still admits 80 only"
    );
    weir_tests::figure!(
        "pins lab: ABI v{} -> v{ABI_VERSION}, every map replaced, new programs attached {} ms \
         after the restart began; 80 open, 81 denied",
        ABI_VERSION - 1,
        attached.as_millis()
    );
}
