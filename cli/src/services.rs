//! `weir service list` and `weir bpf lb list`. Their `-o json` is the
//! services API's own messages (serde-derived in `weir-agent-api`).

use std::path::Path;

use anyhow::Result;
use weir_agent_api::services as api;

use crate::{agent, output};

pub async fn list(socket: &Path, json: bool) -> Result<()> {
    let r = agent::services(socket)
        .await?
        .list_services(api::ListServicesRequest {})
        .await?
        .into_inner();
    if json {
        return output::json_document(&r);
    }
    println!(
        "{:<24} {:<12} {:<22} {:<5} {:<9} {:<10} BACKENDS",
        "SERVICE", "KIND", "FRONTEND", "PROTO", "SCOPE", "ALGO"
    );
    for f in &r.frontends {
        let backends: Vec<String> = f
            .backends
            .iter()
            .map(|b| {
                let state = if b.state == "active" {
                    ""
                } else {
                    " (terminating)"
                };
                format!("{}{state}", b.address)
            })
            .collect();
        let backends = if backends.is_empty() {
            "(none: connections refused)".to_string()
        } else {
            backends.join(", ")
        };
        let algorithm = if f.affinity_timeout_seconds > 0 {
            format!("{}+aff", f.algorithm)
        } else {
            f.algorithm.clone()
        };
        println!(
            "{:<24} {:<12} {:<22} {:<5} {:<9} {:<10} {backends}",
            f.service, f.kind, f.address, f.protocol, f.scope, algorithm
        );
        if !f.note.is_empty() {
            println!("    note: {}", f.note);
        }
    }
    for problem in &r.problems {
        println!("problem: {problem}");
    }
    if r.write_failures > 0 {
        println!(
            "map writes failed {} times; last: {}",
            r.write_failures, r.last_error
        );
    }
    Ok(())
}

pub async fn lb_maps(socket: &Path, json: bool, maglev: bool, nat: bool) -> Result<()> {
    let r = agent::services(socket)
        .await?
        .list_lb_maps(api::ListLbMapsRequest { maglev, nat })
        .await?
        .into_inner();
    if json {
        return output::json_document(&r);
    }
    println!("weir_lb4_services:");
    for s in &r.services {
        if s.slot == 0 {
            println!(
                "  {:<22} {:<4} {:<8} count={:<4} rev_nat={:<5} [{}]{}",
                s.frontend,
                s.protocol,
                s.scope,
                s.count,
                s.rev_nat_id,
                s.flags.join(","),
                if s.flags.iter().any(|f| f == "maglev") {
                    format!(" maglev_table={}", s.maglev_table)
                } else {
                    String::new()
                }
            );
        } else {
            println!(
                "  {:<22} {:<4} {:<8} slot {:<3} -> backend {}",
                s.frontend, s.protocol, s.scope, s.slot, s.backend_id
            );
        }
    }
    println!("weir_lb4_backends:");
    for b in &r.backends {
        println!(
            "  {:<6} {:<22} {:<4} {:<12}{}",
            b.id,
            b.address,
            b.protocol,
            b.state,
            if b.local { " local" } else { "" }
        );
    }
    println!("weir_lb4_revnat:");
    for n in &r.rev_nat {
        println!("  {:<6} {}", n.id, n.address);
    }
    if nat {
        println!("weir_lb4_nat:");
        for n in &r.nat {
            println!(
                "  {:<7} {:<4} {} -> {}  =>  {} -> {}{}",
                n.direction,
                n.protocol,
                n.source,
                n.destination,
                n.new_source,
                n.new_destination,
                if n.snat { " (snat)" } else { "" }
            );
        }
    }
    for t in &r.maglev {
        println!("weir_lb4_maglev table {}: {:?}", t.table, t.slots);
    }
    Ok(())
}
