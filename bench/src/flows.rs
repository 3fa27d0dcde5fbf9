//! Flows per second decoded, enriched and stored on one core: the
//! observer's work for every event the datapath emits.

use std::time::Instant;

use anyhow::Result;

/// Pods by address, as the agent's enricher finds them.
struct MapEnricher(
    std::collections::HashMap<std::net::IpAddr, weir_observer::parser::EndpointInfo>,
);

impl weir_observer::parser::Enricher for MapEnricher {
    fn endpoint_by_ip(&self, ip: std::net::IpAddr) -> Option<weir_observer::parser::EndpointInfo> {
        self.0.get(&ip).cloned()
    }
}

/// Decodes, enriches and stores `count` events, three times.
pub fn run(count: usize) -> Result<()> {
    use std::sync::Arc;
    use weir_abi::events::*;
    use weir_abi::FlowEvent;
    use weir_observer::{FlowRing, Parser};

    // 256 pods, events between them: new-connection traces and drops.
    let mut pods = std::collections::HashMap::new();
    for i in 0..256u32 {
        let ip = std::net::IpAddr::from([10, 244, (i / 128) as u8 + 1, (i % 128) as u8 + 2]);
        pods.insert(
            ip,
            weir_observer::parser::EndpointInfo {
                id: i,
                identity: 1000 + i,
                namespace: format!("ns{}", i % 8),
                pod_name: format!("pod-{i}"),
                labels: vec![
                    format!("k8s:app=app{}", i % 16),
                    format!("k8s:io.kubernetes.pod.namespace=ns{}", i % 8),
                ],
                workloads: Vec::new(),
            },
        );
    }
    let addresses: Vec<std::net::IpAddr> = pods.keys().copied().collect();
    let events: Vec<FlowEvent> = (0..4096)
        .map(|i| {
            let (src, dst) = (addresses[i % 256], addresses[(i * 7 + 3) % 256]);
            let octets = |ip: std::net::IpAddr| match ip {
                std::net::IpAddr::V4(v4) => {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&v4.octets());
                    a
                }
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            FlowEvent {
                kind: if i % 4 == 0 { EVENT_DROP } else { EVENT_TRACE },
                subtype: if i % 4 == 0 { 133 } else { OBS_TO_ENDPOINT },
                endpoint_id: (i % 256) as u16,
                ifindex: 7,
                timestamp_ns: 1_000_000 + i as u64,
                len: 74,
                src_identity: 1000 + (i % 256) as u32,
                dst_identity: 1000 + ((i * 7 + 3) % 256) as u32,
                family: 4,
                protocol: weir_abi::ip_proto::TCP,
                tcp_flags: 0x02,
                flags: FlowEvent::FLAG_INGRESS,
                saddr: octets(src),
                daddr: octets(dst),
                sport: (40000 + (i % 1000) as u16).to_be_bytes(),
                dport: 80u16.to_be_bytes(),
                ..FlowEvent::default()
            }
        })
        .collect();
    let parser = Parser::new(
        "n1",
        Arc::new(MapEnricher(pods)),
        weir_agent::flows::wall_clock(),
    );
    let ring = FlowRing::new(weir_observer::DEFAULT_CAPACITY);
    let mut rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..count {
            ring.push(parser.parse(&weir_agent::flows::decode(&events[i % events.len()])));
        }
        rates.push(count as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "flows decoded, enriched and stored on one core: median {:.0}/s ({:.0}-{:.0}), {count} events per run",
        rates[1], rates[0], rates[2]
    );
    Ok(())
}
