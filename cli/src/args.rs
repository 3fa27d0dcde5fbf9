//! The command line: commands and their flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use weir_types::NamespacedName;

mod values;

pub use values::{EventType, FlowProtocol, MonitorType, PortProtocol, TraceProtocol, Verdict};

#[derive(Parser)]
#[command(name = "weir", version, about = "Inspect a Weir agent")]
pub struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, default_value = weir_agent_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people (`observe`: Hubble's compact lines).
    #[value(alias = "compact")]
    Text,
    Json,
    /// Aligned columns with a header.
    Table,
}

#[derive(Subcommand)]
pub enum Command {
    /// Policy in force on this node's endpoints.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Flows seen by this node's datapath, or by every node through a
    /// relay (Hubble's `observe`).
    Observe(Box<ObserveArgs>),
    /// The datapath's raw events as they happen (like `cilium monitor`).
    Monitor(MonitorArgs),
    /// Agent health: datapath, map fill, endpoints, identities, policy, event loss.
    Status,
    /// Local endpoints.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Identities known to this agent.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Services this node balances: frontends and their backends.
    Service {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Content of the datapath maps.
    Bpf {
        #[command(subcommand)]
        command: BpfCommand,
    },
    /// The kernel programs' debug messages (conntrack state, policy
    /// lookups, service backend selection), read with `weir monitor --type
    /// debug` and in the agent's log. Switched at run time, no reload.
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Switches the messages on for the whole node, or one endpoint.
    Enable {
        #[arg(long)]
        endpoint: Option<u16>,
    },
    /// Switches them off (for the node switch: endpoints switched on one by
    /// one stay on).
    Disable {
        #[arg(long)]
        endpoint: Option<u16>,
    },
    /// What is switched on.
    Status,
}

#[derive(Subcommand)]
pub enum ListCommand {
    List,
}

#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Every local endpoint.
    List,
    /// One endpoint in full: pod, identity and labels, addresses,
    /// interface, policy enforcement, policy map entries.
    Get { id: u32 },
}

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Every identity known to this agent.
    List,
    /// One identity: its labels, scope and the local endpoints that have it.
    Get { id: u32 },
}

#[derive(clap::Args)]
pub struct MonitorArgs {
    /// Only these kinds of events (repeatable; default all): the
    /// datapath's, and `agent` for the agent's own events.
    #[arg(long = "type", value_enum)]
    pub types: Vec<MonitorType>,
    /// The node's Observer API, where agent events come from.
    #[arg(long, default_value = "unix:///var/run/weir/hubble.sock")]
    pub server: String,
}

#[derive(clap::Args)]
pub struct AgentEventsArgs {
    /// Keep streaming new events.
    #[arg(long, short = 'f', conflicts_with = "first")]
    pub follow: bool,
    /// Show the last N events (default 20 unless following).
    #[arg(long)]
    pub last: Option<u64>,
    /// Show the first N events instead.
    #[arg(long, conflicts_with = "last")]
    pub first: Option<u64>,
    /// Only events newer than this many seconds.
    #[arg(long)]
    pub since_seconds: Option<u64>,
}

#[derive(Subcommand)]
pub enum ObserveCommand {
    /// The agent's own events (Hubble's `observe agent-events`): policy,
    /// endpoint, ipcache and service changes, and its start.
    AgentEvents(AgentEventsArgs),
    /// The kernel programs' debug messages (Hubble's `observe
    /// debug-events`; switched on with `weir debug enable`).
    DebugEvents(AgentEventsArgs),
}

#[derive(Subcommand)]
pub enum BpfCommand {
    /// The ipcache: prefix -> identity.
    Ipcache {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Connection tracking entries.
    Ct {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Policy map entries of an endpoint.
    Policy {
        #[command(subcommand)]
        command: BpfPolicyCommand,
    },
    /// The load-balancing maps: services and backend slots, backends,
    /// reverse NAT (and with flags the Maglev tables and NAT mappings).
    Lb {
        #[command(subcommand)]
        command: BpfLbCommand,
    },
}

#[derive(Subcommand)]
pub enum BpfLbCommand {
    List {
        /// Also print every Maglev table.
        #[arg(long)]
        maglev: bool,
        /// Also print the per-packet NAT mappings.
        #[arg(long)]
        nat: bool,
    },
}

#[derive(Subcommand)]
pub enum BpfPolicyCommand {
    /// `weir bpf policy get ENDPOINT_ID`
    Get { endpoint: u32 },
}

/// How to reach an https:// Observer API (a node's or a relay's).
#[derive(clap::Args, Clone, Default)]
pub struct TlsArgs {
    /// For an https:// server: the CA its certificate must chain to.
    #[arg(long, global = true)]
    pub tls_ca_cert_files: Option<PathBuf>,
    /// The client certificate to present (a server that requires one)...
    #[arg(long, global = true, requires = "tls_ca_cert_files")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// ...and its key.
    #[arg(long, global = true, requires = "tls_ca_cert_files")]
    pub tls_client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (default: its host).
    #[arg(long, global = true, requires = "tls_ca_cert_files")]
    pub tls_server_name: Option<String>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ObserveArgs {
    #[command(subcommand)]
    pub command: Option<ObserveCommand>,
    /// The Observer API: a node's or a relay's unix socket (unix:///PATH or
    /// just /PATH) or TCP address (http://HOST:PORT, or https://HOST:PORT
    /// with --tls-ca-cert-files).
    #[arg(
        long,
        global = true,
        default_value = "unix:///var/run/weir/hubble.sock"
    )]
    pub server: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Add a NODE column to `-o table`.
    #[arg(long)]
    pub print_node_name: bool,
    /// Keep streaming new flows.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Show the last N flows (default 20 unless following).
    #[arg(long)]
    pub last: Option<u64>,
    /// Only flows from this pod (`NAMESPACE/POD`, or `NAMESPACE/` for all).
    #[arg(long)]
    pub from_pod: Vec<String>,
    /// Only flows to this pod.
    #[arg(long)]
    pub to_pod: Vec<String>,
    /// Only flows from or to this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only flows with this verdict (any case).
    #[arg(long, value_enum, ignore_case = true)]
    pub verdict: Vec<Verdict>,
    /// Only these kinds of events.
    #[arg(long = "type", value_enum)]
    pub event_type: Vec<EventType>,
    /// Only flows of this protocol (any case).
    #[arg(long, value_enum, ignore_case = true)]
    pub protocol: Vec<FlowProtocol>,
    /// Source or destination port.
    #[arg(long)]
    pub port: Vec<String>,
    /// Only flows newer than this many seconds.
    #[arg(long)]
    pub since_seconds: Option<u64>,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// What is in force, per endpoint, and which policies were rejected.
    Get,
    /// Would SRC reach DST on PORT/PROTO? Names the policy and rule that decide.
    Trace {
        /// NAMESPACE/POD
        #[arg(long, value_parser = values::pod_name)]
        src: NamespacedName,
        /// NAMESPACE/POD
        #[arg(long, value_parser = values::pod_name)]
        dst: NamespacedName,
        /// PORT/PROTO, e.g. 80/tcp (tcp, udp or sctp, any case)
        #[arg(long)]
        port: PortProtocol,
    },
    /// Policy impact preview: the connections this node recorded whose
    /// verdict a candidate change would flip (newly denied, newly
    /// allowed), each with the rule that decides it. Exit status 1 when
    /// anything changes.
    Diff {
        /// Policies to add or replace (multi-document YAML; `-` reads
        /// standard input).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// A policy to delete: KIND/NAMESPACE/NAME (KIND/NAME cluster-wide),
        /// as `weir policy get` names them. Repeatable.
        #[arg(long)]
        delete: Vec<String>,
        /// Only connections recorded in the last SECONDS (default: every
        /// flow the observer holds).
        #[arg(long)]
        since_seconds: Option<u64>,
        /// Replay the flows of this Observer API instead of this node's
        /// own: a relay's for every node of the cluster (unix:///PATH,
        /// http://HOST:PORT, or https://HOST:PORT with
        /// --tls-ca-cert-files). This node's agent judges them.
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["weir"], args].concat())
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn output_formats_keep_their_names() {
        for (name, output) in [
            ("text", Output::Text),
            ("compact", Output::Text),
            ("json", Output::Json),
            ("table", Output::Table),
        ] {
            assert!(parse(&["-o", name, "status"]).unwrap().output == output);
        }
    }

    #[test]
    fn event_types_keep_their_names_and_codes() {
        let Command::Monitor(args) = parse(&[
            "monitor",
            "--type",
            "drop",
            "--type",
            "trace",
            "--type",
            "policy-verdict",
            "--type",
            "debug",
            "--type",
            "agent",
        ])
        .unwrap()
        .command
        else {
            panic!("not monitor");
        };
        let kinds: Vec<_> = args.types.iter().filter_map(|t| t.monitor_kind()).collect();
        assert_eq!(kinds, ["drop", "trace", "policy-verdict", "debug"]);
        assert_eq!(args.types.last(), Some(&MonitorType::Agent));
        assert!(parse(&["monitor", "--type", "Drop"]).is_err());
        // `agent` is no flow type.
        assert!(parse(&["observe", "--type", "agent"]).is_err());
    }

    #[test]
    fn observe_agent_events_takes_the_server_as_hubble_does() {
        // `hubble observe agent-events --server ...`: the connection flags
        // after the subcommand (before it they are flow options, which it
        // refuses).
        {
            let args = &["observe", "agent-events", "--server", "/s", "--last", "3"][..];
            let Command::Observe(args) = parse(args).unwrap().command else {
                panic!("not observe");
            };
            assert_eq!(args.server, "/s");
            let Some(ObserveCommand::AgentEvents(events)) = &args.command else {
                panic!("not agent-events");
            };
            assert_eq!(events.last, Some(3));
        }
        // Flow filters are not agent-event options.
        assert!(parse(&["observe", "--verdict", "DROPPED", "agent-events"]).is_err());
        assert!(parse(&["observe", "agent-events", "--verdict", "DROPPED"]).is_err());
        assert!(parse(&["observe", "agent-events", "--first", "2", "--follow"]).is_err());
    }

    #[test]
    fn observe_takes_verdicts_and_protocols_in_any_case() {
        let Command::Observe(args) = parse(&[
            "observe",
            "--verdict",
            "DROPPED",
            "--verdict",
            "forwarded",
            "--protocol",
            "TCP",
            "--protocol",
            "icmpv6",
            "--type",
            "policy-verdict",
        ])
        .unwrap()
        .command
        else {
            panic!("not observe");
        };
        assert_eq!(args.verdict, [Verdict::Dropped, Verdict::Forwarded]);
        let protocols: Vec<_> = args.protocol.iter().map(|p| p.name()).collect();
        assert_eq!(protocols, ["tcp", "icmpv6"]);
        assert_eq!(args.event_type, [EventType::PolicyVerdict]);
        assert!(parse(&["observe", "--verdict", "MAYBE"]).is_err());
        assert!(parse(&["observe", "--protocol", "gre"]).is_err());
    }

    #[test]
    fn a_trace_names_pods_and_port_protocol() {
        let Command::Policy {
            command: PolicyCommand::Trace { src, dst, port },
        } = parse(&[
            "policy", "trace", "--src", "y/a", "--dst", "x/a", "--port", "80/TCP",
        ])
        .unwrap()
        .command
        else {
            panic!("not a trace");
        };
        assert_eq!(src.to_string(), "y/a");
        assert_eq!(dst.namespace, "x");
        assert_eq!(port.port, 80);
        assert_eq!(port.protocol, TraceProtocol::Tcp);
        assert_eq!(port.to_string(), "80/tcp");
        for bad in ["80", "x/tcp", "80/icmp"] {
            assert!(
                parse(&["policy", "trace", "--src", "a/b", "--dst", "c/d", "--port", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            parse(&["policy", "trace", "--src", "ab", "--dst", "c/d", "--port", "80/tcp"]).is_err()
        );
    }
}
