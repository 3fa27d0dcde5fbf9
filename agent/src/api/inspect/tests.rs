//! How policy map entries are listed.

use super::*;

fn entry(direction: v1::TrafficDirection, protocol: i32, ports: &str) -> v1::PolicyMapEntry {
    v1::PolicyMapEntry {
        direction: direction.into(),
        identity: 7,
        protocol,
        ports: ports.into(),
        ..Default::default()
    }
}

#[test]
fn entries_keep_the_order_of_the_words_they_used_to_sort_by() {
    use v1::L4Protocol as P;
    use v1::TrafficDirection::{Egress, Ingress, Unspecified};
    let mut entries = [
        entry(Ingress, P::Tcp as i32, "80"),
        entry(Egress, P::Any as i32, "any"),
        entry(Egress, P::Udp as i32, "53"),
        entry(Egress, P::Tcp as i32, "80"),
        entry(Egress, P::Sctp as i32, "9"),
        entry(Egress, P::Tcp as i32, "443"),
        entry(Unspecified, P::Any as i32, "?"),
    ];
    entries.sort_by(|a, b| policy_map_order(a).cmp(&policy_map_order(b)));
    let listed: Vec<_> = entries
        .iter()
        .map(|e| (e.direction(), e.protocol, e.ports.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (Unspecified, 0, "?"),
            (Egress, P::Sctp as i32, "9"),
            (Egress, P::Tcp as i32, "443"),
            (Egress, P::Tcp as i32, "80"),
            (Egress, P::Udp as i32, "53"),
            (Egress, 0, "any"),
            (Ingress, P::Tcp as i32, "80"),
        ]
    );
}
