//! Policy propagation: from `lab apply` of a policy to its enforcement
//! flags being in the datapath of every node (and back on delete).

use std::time::Instant;

use anyhow::{Context, Result};
use weir_lab::manifest;
use weir_lab::testing::TestLab;

/// Endpoints on `node` whose ingress is enforced, read from the node's
/// pinned `weir_endpoints` map (what the datapath itself reads).
fn ingress_enforced_on(lab: &TestLab, node: &str) -> Result<usize> {
    use aya::maps::{HashMap, Map, MapData};
    use weir_abi::{EndpointInfo, EndpointKey};
    let dir = &lab.state().node(node).context("node")?.bpffs_dir;
    let data = MapData::from_pin(dir.join(weir_abi::map_names::ENDPOINTS))?;
    let map: HashMap<MapData, EndpointKey, EndpointInfo> = HashMap::try_from(Map::HashMap(data))?;
    let mut enforced = 0;
    for entry in map.iter() {
        if entry?.1.ingress_enforced() {
            enforced += 1;
        }
    }
    Ok(enforced)
}

fn wait_for(lab: &TestLab, want: &[(&str, usize)]) -> Result<std::time::Duration> {
    let start = Instant::now();
    loop {
        let mut done = true;
        for (node, count) in want {
            done &= ingress_enforced_on(lab, node)? == *count;
        }
        if done {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no convergence in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Applies and deletes a deny-all ingress policy `runs` times, timing each
/// until every node's datapath shows it.
pub fn run(runs: usize) -> Result<()> {
    weir_tests::require_root();
    let mut lab = TestLab::up(2)?;
    lab.apply(&manifest::parse(&weir_lab::testing::netpol_cluster_yaml())?)?;
    let policy = manifest::parse(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )?;
    // x/a and x/c run on n1, x/b on n2.
    let enforced = [("n1", 2), ("n2", 1)];
    let cleared = [("n1", 0), ("n2", 0)];
    wait_for(&lab, &cleared)?;
    let (mut apply_ms, mut delete_ms) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let start = Instant::now();
        lab.apply(&policy)?;
        wait_for(&lab, &enforced)?;
        apply_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        lab.delete(&policy)?;
        wait_for(&lab, &cleared)?;
        delete_ms.push(start.elapsed().as_secs_f64() * 1e3);
        println!(
            "run {run}: enforced on both nodes after {:.1} ms, lifted after {:.1} ms",
            apply_ms[run - 1],
            delete_ms[run - 1]
        );
    }
    let summary = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        format!(
            "{:.1} ms ({:.1}-{:.1})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    println!(
        "policy propagation (lab apply -> datapath of every node), median: {}",
        summary(apply_ms)
    );
    println!(
        "policy removal (lab delete -> datapath of every node), median: {}",
        summary(delete_ms)
    );
    Ok(())
}
