//! `weir observe`'s flags as Observer flow filters.

use weir_observer::proto::flow::{self, EventTypeFilter, FlowFilter};

use crate::args::ObserveArgs;

/// The whitelist: every flag ANDed into one filter; `--namespace` makes two
/// (from or to that namespace), and `--port` doubles each (source or
/// destination port).
pub fn filters(args: &ObserveArgs) -> Vec<FlowFilter> {
    let base = FlowFilter {
        source_pod: args.from_pod.clone(),
        destination_pod: args.to_pod.clone(),
        protocol: args.protocol.iter().map(|p| p.name()).collect(),
        verdict: args
            .verdict
            .iter()
            .map(|v| flow::Verdict::from(*v) as i32)
            .collect(),
        event_type: args
            .event_type
            .iter()
            .map(|t| EventTypeFilter {
                r#type: t.code(),
                match_sub_type: false,
                sub_type: 0,
            })
            .collect(),
        ..Default::default()
    };
    let with_ports = |filter: FlowFilter| -> Vec<FlowFilter> {
        if args.port.is_empty() {
            return vec![filter];
        }
        vec![
            FlowFilter {
                source_port: args.port.clone(),
                ..filter.clone()
            },
            FlowFilter {
                destination_port: args.port.clone(),
                ..filter
            },
        ]
    };
    let mut out = Vec::new();
    match &args.namespace {
        Some(ns) => {
            let ns = format!("{}/", ns.trim_end_matches('/'));
            out.extend(with_ports(FlowFilter {
                source_pod: vec![ns.clone()],
                ..base.clone()
            }));
            out.extend(with_ports(FlowFilter {
                destination_pod: vec![ns],
                ..base
            }));
        }
        None => out.extend(with_ports(base)),
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn filters_of(args: &[&str]) -> Vec<FlowFilter> {
        let cli = Cli::try_parse_from([&["weir", "observe"], args].concat()).unwrap();
        let Command::Observe(args) = cli.command else {
            panic!("not observe");
        };
        filters(&args)
    }

    #[test]
    fn flags_become_one_filter() {
        let f = filters_of(&[
            "--verdict",
            "dropped",
            "--type",
            "policy-verdict",
            "--protocol",
            "TCP",
            "--from-pod",
            "x/a",
        ]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].verdict, [flow::Verdict::Dropped as i32]);
        assert_eq!(f[0].event_type[0].r#type, 5);
        assert_eq!(f[0].protocol, ["tcp"]);
        assert_eq!(f[0].source_pod, ["x/a"]);
    }

    #[test]
    fn namespace_and_port_are_either_side() {
        let f = filters_of(&["--namespace", "y/", "--port", "80", "--type", "drop"]);
        let sides: Vec<_> = f
            .iter()
            .map(|f| {
                (
                    f.source_pod.clone(),
                    f.destination_pod.clone(),
                    f.source_port.clone(),
                    f.destination_port.clone(),
                )
            })
            .collect();
        let (y, none, port) = (vec!["y/".to_string()], Vec::new(), vec!["80".to_string()]);
        assert_eq!(
            sides,
            [
                (y.clone(), none.clone(), port.clone(), none.clone()),
                (y.clone(), none.clone(), none.clone(), port.clone()),
                (none.clone(), y.clone(), port.clone(), none.clone()),
                (none.clone(), y, none, port),
            ]
        );
        assert!(f.iter().all(|f| f.event_type[0].r#type == 1));
    }
}
