//! Reliability under an agent kill: the lab's agent-kill fault
//! (`weir_lab::agent_kill`, also the `fault_agent_kill` suite) at a higher
//! rate of new connections and with several kills, printing what each kill
//! cost: established connections kept or broken, new connections failed in
//! each gap, and the time to converge after each restart.

use std::time::Duration;

use anyhow::Result;
use weir_lab::agent_kill::{self, Options};
use weir_lab::testing::TestLab;

pub fn run(options: &Options) -> Result<()> {
    weir_tests::require_root();
    let mut lab = TestLab::up(2)?;
    let report = agent_kill::run(&mut lab, options, &|line| eprintln!("{line}"))?;
    for line in report.kill_lines() {
        println!("{line}");
    }
    println!(
        "long-lived connections: {} kept, {} broken; {} round trips, longest wait for an echo {} ms",
        report.connections - report.broken.len(),
        report.broken.len(),
        report.round_trips,
        report.longest_wait.as_millis()
    );
    for broken in &report.broken {
        println!("  broken: {broken}");
    }
    println!(
        "new connections: {} at {}/s, {} failed ({} during the gaps)",
        report.new_connections,
        options.rate,
        report.new_failed,
        report.failed_in_gaps()
    );
    for failure in &report.new_failures {
        println!("  failed: {failure}");
    }
    let mut converged: Vec<Duration> = report.kills.iter().map(|k| k.converged).collect();
    converged.sort();
    if let (Some(first), Some(last)) = (converged.first(), converged.last()) {
        println!(
            "convergence after the restart (the agent's start included): median {} ms ({}-{} ms) over {} kills",
            converged[converged.len() / 2].as_millis(),
            first.as_millis(),
            last.as_millis(),
            converged.len()
        );
    }
    println!("{}", report.summary());
    Ok(())
}
