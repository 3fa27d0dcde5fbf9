//! Time of `lab up` and of applying N pods, with real agents and the real
//! CNI plugin, on the control plane (the default) and on the manifest
//! directory.

use std::time::Instant;

use anyhow::Result;
use weir_lab::manifest;
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};

type Up = fn(usize) -> Result<TestLab>;

/// Times `lab up` with `nodes` nodes and the apply of `pods` pods, `runs`
/// times, in each mode.
pub fn run(nodes: usize, pods: usize, runs: usize) -> Result<()> {
    let modes: [(&str, Up); 2] = [
        ("control plane", TestLab::up),
        ("manifest directory", TestLab::up_manifest_dir),
    ];
    for (mode, up) in modes {
        println!("== {mode}");
        run_mode(up, nodes, pods, runs)?;
    }
    Ok(())
}

fn run_mode(up: Up, nodes: usize, pods: usize, runs: usize) -> Result<()> {
    weir_tests::require_root();
    let mut yaml = namespace_yaml("bench");
    for i in 0..pods {
        yaml.push_str(&pod_yaml(
            "bench",
            &format!("p{i}"),
            &format!("n{}", i % nodes + 1),
            &[80],
        ));
    }
    let objects = manifest::parse(&yaml)?;
    let mut up_ms = Vec::new();
    let mut apply_ms = Vec::new();
    for run in 1..=runs {
        let start = Instant::now();
        let mut lab = up(nodes)?;
        up_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        lab.apply(&objects)?;
        apply_ms.push(start.elapsed().as_secs_f64() * 1e3);
        println!(
            "run {run}: lab up ({nodes} nodes) {:.0} ms, apply {pods} pods {:.0} ms",
            up_ms[run - 1],
            apply_ms[run - 1]
        );
    }
    let summary = |samples: &mut Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        format!(
            "{:.0} ms ({:.0}-{:.0})",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1]
        )
    };
    println!("lab up, {nodes} nodes: median {}", summary(&mut up_ms));
    println!(
        "lab apply, {pods} pods: median {} = {:.1} ms per pod",
        summary(&mut apply_ms.clone()),
        apply_ms[apply_ms.len() / 2] / pods as f64
    );
    Ok(())
}
