//! `weir-lab` (also `cargo xtask lab ...`): a Kubernetes-like cluster of
//! network namespaces on one machine, playing kubelet for Weir.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use weir_lab::manifest::{self, Protocol};
use weir_lab::probe::{self, Target};
use weir_lab::{Binaries, Identities, KubeBinaries, Lab, Source};

#[derive(Parser)]
#[command(name = "weir-lab", about = "Weir's lab cluster on one machine")]
struct Cli {
    /// Lab name (prefix of every namespace and pin directory it makes).
    #[arg(long, global = true, default_value = "weirlab")]
    name: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create nodes (network namespaces on an underlay) with an agent each.
    Up {
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Run no Kubernetes control plane: the agents read a directory of
        /// manifests the lab writes (for what the 1.20 API server cannot
        /// carry, e.g. NetworkPolicy endPort). By default the lab runs
        /// kube-apiserver, kube-controller-manager and kube-scheduler
        /// beside its etcd, and the agents watch the API.
        #[arg(long, conflicts_with = "control_plane")]
        manifest_dir: bool,
        /// The default (kept for scripts that ask for it).
        #[arg(long, hide = true)]
        control_plane: bool,
        /// How the agents share identities on the control plane:
        /// WeirIdentity objects (crd, an installation's default) or the
        /// lab's etcd (kvstore).
        #[arg(
            long,
            value_enum,
            default_value = "crd",
            conflicts_with = "manifest_dir"
        )]
        identity_allocation_mode: Identities,
        /// Real nodes: kubelet, containerd and runc on every node, running
        /// pods through weir-cni, instead of the lab's kubelet daemons
        /// (pods then run the lab's pod-server image; `lab exec`, `probe`
        /// and `matrix` do not reach them yet).
        #[arg(long, conflicts_with = "manifest_dir")]
        real_nodes: bool,
        /// How pod traffic crosses between nodes: natively routed on the
        /// underlay, or in VXLAN through each node's `weir_vxlan` (the
        /// agents' `--routing-mode`). Default: `$WEIR_LAB_ROUTING_MODE`,
        /// else native.
        #[arg(long, value_enum)]
        routing_mode: Option<weir_lab::Routing>,
        /// Dual stack: IPv6 underlay addresses and pod CIDRs, every pod
        /// with an IPv4 and an IPv6 address. Default: on if
        /// `$WEIR_LAB_DUAL_STACK` is `on`.
        #[arg(long)]
        dual_stack: bool,
    },
    /// Print the path of the lab's admin kubeconfig (its API server is
    /// reached from the lab's underlay namespace: use `kubectl`).
    Kubeconfig,
    /// Run Debian's kubectl (1.20) as the lab's admin against its API
    /// server, e.g. `kubectl -- get nodes`.
    Kubectl {
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Remove everything of the lab (also after a crash).
    Down,
    /// Create or update Namespaces and Pods from a YAML file.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Delete the Namespaces and Pods named in a YAML file.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Nodes and pods.
    Status,
    /// Run a command inside a pod's network namespace.
    Exec {
        /// NAMESPACE/POD
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Probe DST from SRC: PORT/PROTO (e.g. 80/tcp) or icmp.
    Probe {
        src: String,
        dst: String,
        target: String,
    },
    /// Probe every pod from every pod and print truth tables.
    Matrix {
        #[arg(long, value_delimiter = ',', default_value = "80")]
        ports: Vec<u16>,
        #[arg(long, value_delimiter = ',', default_value = "tcp")]
        protocols: Vec<String>,
    },
    /// Connect to TARGET (`tcp:ADDRESS:PORT` or `udp:ADDRESS:PORT`) COUNT
    /// times from FROM: a pod (`NAMESPACE/POD`, its cgroup: socket LB
    /// applies), a node's host (`node/NAME`) or the outside world (`world`);
    /// prints who answered how often.
    Client {
        from: String,
        target: String,
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Run the upstream e2e suite (e2e.test v1.20.2) against the lab, whose
    /// nodes must be real (`up --real-nodes`); prints each spec's outcome
    /// and the totals, and fails if a spec failed.
    E2e {
        /// The specs to run (ginkgo focus, a regular expression).
        #[arg(long, default_value = r"\[sig-network\] NetworkPolicy")]
        focus: String,
        /// The specs to leave out (ginkgo skip).
        #[arg(long, default_value = r"SCTP|\[Disruptive\]")]
        skip: String,
        /// Where the JUnit report and the suite's log go.
        #[arg(long)]
        report_dir: PathBuf,
        /// The e2e.test binary (default: the one `cargo xtask setup` built).
        #[arg(long)]
        e2e_test: Option<PathBuf>,
    },
    /// Run as the kubelet daemon of NODE (the lab starts one per node on
    /// the control plane).
    #[command(hide = true)]
    Kubelet {
        #[arg(long)]
        node: String,
    },
    /// Serve the cluster's DNS names (Services, Pods) on LISTEN:53, as the
    /// client of KUBECONFIG (the lab starts one per real node).
    #[command(hide = true)]
    Dns {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[arg(long)]
        listen: std::net::Ipv4Addr,
    },
    /// Restart the agent of a node (state and pins are kept).
    RestartAgent { node: String },
    /// Run the `weir` CLI against a node's agent, e.g.
    /// `weir n1 -- policy trace --src x/a --dst y/b --port 80/tcp`.
    Weir {
        node: String,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    weir_tests::require_root();
    let json = cli.output == Output::Json;
    match cli.command {
        Command::Up {
            nodes,
            manifest_dir,
            control_plane: _,
            identity_allocation_mode,
            real_nodes,
            routing_mode,
            dual_stack,
        } => {
            if let Some(mode) = routing_mode {
                // SAFETY: single-threaded here, before anything reads it.
                unsafe { std::env::set_var(weir_lab::ROUTING_MODE_ENV, mode.flag()) };
            }
            let source = match manifest_dir {
                true => Source::ManifestDir,
                false => Source::ControlPlane {
                    kube: KubeBinaries::locate()?,
                    identities: identity_allocation_mode,
                    real_nodes,
                },
            };
            // Progress goes to stderr: stdout carries only the result, so
            // `-o json` output can be piped.
            let options = weir_lab::Options { dual_stack };
            let binaries = Binaries::locate()?;
            let lab = Lab::up_with_options(&cli.name, nodes, binaries, source, options, &|step| {
                eprintln!("==> {step}");
            })?;
            print_status(&lab, json)?;
        }
        Command::Kubeconfig => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            println!("{}", lab.control_plane()?.admin_kubeconfig().display());
        }
        Command::Kubectl { args } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let status = lab
                .control_plane()?
                .kubectl_command(&args)?
                .status()
                .context("run kubectl")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Client {
            from,
            target,
            count,
        } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let results = match from.as_str() {
                "world" => lab.world_client(&target, count)?,
                node if node.starts_with("node/") => {
                    lab.node_client(node.trim_start_matches("node/"), &target, count)?
                }
                pod => lab.pod_client(pod, &target, count)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                let mut answered = std::collections::BTreeMap::new();
                for r in &results {
                    let who = if r.ok {
                        r.reply.clone().unwrap_or_default()
                    } else {
                        format!("error: {}", r.error.clone().unwrap_or_default())
                    };
                    *answered.entry(who).or_insert(0) += 1;
                }
                println!("{from} -> {target}, {count} attempts:");
                for (who, n) in answered {
                    println!("  {n:>5}  {who}");
                }
            }
        }
        Command::Down => {
            Lab::down(&cli.name)?;
            if !json {
                println!("lab {} removed", cli.name);
            }
        }
        Command::Apply { file } => {
            let objects = read_manifests(&file)?;
            let mut lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let report = lab.apply(&objects)?;
            if json {
                let lines: Vec<String> = report.iter().map(|r| r.to_string()).collect();
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                report.iter().for_each(|r| println!("{r}"));
            }
        }
        Command::Delete { file } => {
            let objects = read_manifests(&file)?;
            let mut lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let report = lab.delete(&objects)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report.iter().for_each(|r| println!("{r}"));
            }
        }
        Command::Status => print_status(&Lab::open(&cli.name, Binaries::locate()?)?, json)?,
        Command::Exec { pod, command } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let pod = lab.pod(&pod)?;
            let mut cmd = std::process::Command::new(&command[0]);
            cmd.args(&command[1..]);
            weir_tests::netns::command_in(&mut cmd, &pod.netns)?;
            let status = cmd
                .status()
                .with_context(|| format!("run {}", command[0]))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Probe { src, dst, target } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let result = probe::probe(lab.pod(&src)?, lab.pod(&dst)?, Target::parse(&target)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                let verdict = if result.connected {
                    "connected"
                } else {
                    "blocked"
                };
                let detail = result
                    .error
                    .clone()
                    .or(result.reply.clone())
                    .unwrap_or_default();
                println!(
                    "{} -> {} {}: {verdict} ({detail})",
                    result.from,
                    result.to,
                    result.target.label()
                );
            }
            if !result.connected {
                std::process::exit(1);
            }
        }
        Command::Matrix { ports, protocols } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let mut targets = Vec::new();
            for protocol in &protocols {
                if protocol.eq_ignore_ascii_case("icmp") {
                    targets.push(Target::Icmp);
                    continue;
                }
                for port in &ports {
                    targets.push(match protocol.to_ascii_uppercase().parse::<Protocol>()? {
                        Protocol::Tcp => Target::Tcp(*port),
                        Protocol::Udp => Target::Udp(*port),
                        Protocol::Sctp => anyhow::bail!("SCTP cannot be probed (no SCTP sockets)"),
                    });
                }
            }
            let results = probe::matrix(lab.pods(), &targets);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "pods": lab.pods(),
                        "results": results,
                    }))?
                );
            } else {
                let names: Vec<String> = lab.pods().iter().map(|p| p.key()).collect();
                for target in &targets {
                    println!("{}", probe::render_table(&names, &results, *target));
                }
                let connected = results.iter().filter(|r| r.connected).count();
                println!("{connected} of {} probes connected", results.len());
            }
        }
        Command::Weir { node, args } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let record = lab
                .state()
                .node(&node)
                .with_context(|| format!("no node {node}"))?;
            let weir = Binaries::locate()?.weir();
            // `observe` talks to the node's Observer API socket.
            let mut command = std::process::Command::new(&weir);
            command.arg("--socket").arg(&record.api_socket);
            let mut args = args.clone();
            // After global options such as `-o table`, if any.
            if let Some(at) = args.iter().position(|a| a == "observe") {
                args.insert(at + 1, "--server".into());
                args.insert(
                    at + 2,
                    weir_lab::hubble_socket(record).display().to_string(),
                );
            }
            let status = command
                .args(&args)
                .status()
                .with_context(|| format!("run {}", weir.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::E2e {
            focus,
            skip,
            report_dir,
            e2e_test,
        } => {
            let lab = Lab::open(&cli.name, Binaries::locate()?)?;
            let e2e_test = match e2e_test {
                Some(path) => path,
                None => KubeBinaries::locate()?.e2e_test,
            };
            let report = lab.run_e2e(&e2e_test, &focus, &skip, &report_dir, &|line| {
                eprintln!("{line}")
            })?;
            for line in report.lines() {
                println!("{line}");
            }
            if report.failed() > 0 {
                anyhow::bail!(
                    "{} spec(s) failed (log: {})",
                    report.failed(),
                    report.log.display()
                );
            }
        }
        Command::Kubelet { node } => weir_lab::run_kubelet(&cli.name, &node)?,
        Command::Dns { kubeconfig, listen } => weir_lab::dns::run(&kubeconfig, listen)?,
        Command::RestartAgent { node } => {
            let mut lab = Lab::open(&cli.name, Binaries::locate()?)?;
            lab.restart_agent(&node)?;
            if !json {
                println!("agent on {node} restarted");
            }
        }
    }
    Ok(())
}

fn read_manifests(file: &PathBuf) -> Result<Vec<manifest::Object>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    manifest::parse(&text).with_context(|| format!("{} rejected; nothing applied", file.display()))
}

fn print_status(lab: &Lab, json: bool) -> Result<()> {
    let state = lab.state();
    if json {
        println!("{}", serde_json::to_string_pretty(state)?);
        return Ok(());
    }
    println!("lab {}", state.name);
    if let Some(cp) = &state.control_plane {
        println!(
            "control plane: https://{}:{} (kubeconfig {}; `kubectl -- ARGS`)",
            cp.address,
            weir_lab::control_plane::API_PORT,
            cp.admin_kubeconfig().display()
        );
    }
    println!(
        "{:<6} {:<14} {:<16} {:<8}",
        "NODE", "UNDERLAY IP", "POD CIDR", "AGENT"
    );
    for node in &state.nodes {
        println!(
            "{:<6} {:<14} {:<16} {:<8}",
            node.name, node.underlay_ip, node.pod_cidr, node.agent_pid
        );
        if !node.pod_cidr_v6.is_empty() {
            println!("{:<21} {}", "", node.pod_cidr_v6);
        }
    }
    if !state.pods.is_empty() {
        println!();
        println!(
            "{:<24} {:<6} {:<14} {:<30} NETNS",
            "POD", "NODE", "IP", "PORTS"
        );
        for pod in &state.pods {
            let ports: Vec<String> = pod
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol.name().to_ascii_lowercase()))
                .collect();
            println!(
                "{:<24} {:<6} {:<14} {:<30} {}",
                pod.key(),
                pod.node,
                pod.ip,
                ports.join(","),
                pod.netns
            );
            if let Some(ipv6) = pod.ipv6 {
                println!("{:<31} {ipv6}", "");
            }
        }
    }
    Ok(())
}
