//! Propagation: from `lab apply` of a policy to its enforcement flags
//! being in the datapath of every node (and back on delete), and from
//! `lab apply` of a new pod to its identity being in every node's ipcache
//! and its policy in force. Only `lab apply`/`delete` and the pinned maps
//! are used, so it measures whichever mode the lab runs the agents in.

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

/// The identity `node`'s ipcache gives `ip` (as a /32), if any.
fn ipcache_identity(lab: &TestLab, node: &str, ip: std::net::Ipv4Addr) -> Result<Option<u32>> {
    use aya::maps::lpm_trie::{Key, LpmTrie};
    use aya::maps::{Map, MapData};
    use weir_abi::{IpcacheKey, IpcacheValue};
    let dir = &lab.state().node(node).context("node")?.bpffs_dir;
    let data = MapData::from_pin(dir.join(weir_abi::map_names::IPCACHE))?;
    let map: LpmTrie<MapData, IpcacheKey, IpcacheValue> = LpmTrie::try_from(Map::LpmTrie(data))?;
    let key = Key::new(IpcacheKey::prefix_len(32), IpcacheKey::ipv4(ip.octets()));
    match map.get(&key, 0) {
        Ok(value) => Ok(Some(value.identity)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// A cluster (pod) identity: not reserved, not node-local (CIDR).
fn is_pod_identity(id: u32) -> bool {
    (weir_abi::identity::CLUSTER_MIN..=weir_abi::identity::CLUSTER_MAX).contains(&id)
}

fn wait_for(lab: &TestLab, want: &[(&str, usize)]) -> Result<std::time::Duration> {
    wait_until(|| {
        let mut done = true;
        for (node, count) in want {
            done &= ingress_enforced_on(lab, node)? == *count;
        }
        Ok(done)
    })
}

/// Polls `done` every millisecond; how long until it held.
fn wait_until(mut done: impl FnMut() -> Result<bool>) -> Result<std::time::Duration> {
    let start = Instant::now();
    loop {
        if done()? {
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
    println!(
        "policy propagation (lab apply -> datapath of every node), {}",
        summary(apply_ms)
    );
    println!(
        "policy removal (lab delete -> datapath of every node), {}",
        summary(delete_ms)
    );
    new_pods(&mut lab, &policy, runs)
}

/// p50, p99 and range of `samples` (milliseconds).
fn summary(mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    let at =
        |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms (range {:.1}-{:.1}, {} runs)",
        at(0.50),
        at(0.99),
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    )
}

/// Creates a pod on n1 under the namespace's deny policy `runs` times:
/// from `lab apply` until the pod's endpoint on n1 is enforced and n2's
/// ipcache knows its address with the identity n1 gave it.
fn new_pods(lab: &mut TestLab, deny: &[manifest::Object], runs: usize) -> Result<()> {
    lab.apply(deny)?;
    // x/a and x/c on n1 enforced, x/b on n2.
    wait_for(lab, &[("n1", 2), ("n2", 1)])?;
    let (mut total_ms, mut after_cni_ms) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let pod = manifest::parse(&weir_lab::testing::pod_yaml(
            "x",
            &format!("p{run}"),
            "n1",
            &[80],
        ))?;
        let start = Instant::now();
        lab.apply(&pod)?;
        let cni = start.elapsed();
        let ip = lab
            .state()
            .pod(&format!("x/p{run}"))
            .context("the new pod")?
            .ip;
        // The lookup is longest-prefix: a covering prefix answers until the
        // pod's own entry is there, so wait for the same pod identity on
        // both nodes.
        let mut identity = None;
        wait_until(|| {
            let (here, there) = (
                ipcache_identity(lab, "n1", ip)?,
                ipcache_identity(lab, "n2", ip)?,
            );
            identity = here.filter(|id| is_pod_identity(*id));
            Ok(identity.is_some() && here == there && ingress_enforced_on(lab, "n1")? == 3)
        })?;
        let total = start.elapsed();
        total_ms.push(total.as_secs_f64() * 1e3);
        after_cni_ms.push((total - cni).as_secs_f64() * 1e3);
        println!(
            "pod {run}: identity and policy in force on both nodes after {:.1} ms ({:.1} ms after CNI ADD returned)",
            total_ms[run - 1],
            after_cni_ms[run - 1]
        );
        lab.delete(&pod)?;
        wait_until(|| {
            Ok(
                ipcache_identity(lab, "n2", ip)? != identity
                    && ingress_enforced_on(lab, "n1")? == 2,
            )
        })?;
    }
    println!(
        "new pod (lab apply -> identity in every ipcache, policy in force), {}",
        summary(total_ms)
    );
    println!(
        "new pod, from CNI ADD returned (the pod's node done) -> every node, {}",
        summary(after_cni_ms)
    );
    Ok(())
}
