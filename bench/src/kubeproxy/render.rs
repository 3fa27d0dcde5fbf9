//! The `iptables-restore` input of a kube-proxy full sync.
//!
//! The shape follows kube-proxy's `syncProxyRules` for ClusterIP services
//! with Cluster traffic policy and default flags: a masquerade bit of 14
//! (mark 0x4000), `--random-fully`, localhost NodePorts allowed (so
//! kubelet's KUBE-FIREWALL rule is written and the NodePort tail matches
//! every local address), conntrack not liberal (the INVALID drop in
//! KUBE-FORWARD), no nfacct counters, and a cluster CIDR for the
//! "masquerade traffic from outside the cluster" rule. Above 1,000
//! endpoints kube-proxy's large-cluster mode leaves the comments off the
//! per-endpoint rules, and so does this.
//!
//! kube-proxy walks its service map in Go's random map order; here services
//! are written in the order given, so "the first" and "the last" service of
//! a set are well defined for latency measurements.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::ops::Range;

use super::chains::{
    self, EXTERNAL_SERVICES, FORWARD, KUBELET_FIREWALL, MARK_MASQ, NODEPORTS, POSTROUTING,
    PROXY_FIREWALL, SERVICES,
};
use super::{protocol_name, BenchService};

/// kube-proxy's default masquerade mark (`--iptables-masquerade-bit=14`).
pub const MASQUERADE_MARK: &str = "0x4000";

/// kube-proxy's `largeClusterEndpointsThreshold`.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Settings that change kube-proxy's output.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// `--cluster-cidr`: traffic to a cluster IP from outside it is marked
    /// for masquerade. `None` is kube-proxy without a local-traffic
    /// detector (no such rule).
    pub cluster_cidr: Option<String>,
}

impl Default for RenderOptions {
    /// The lab's pod CIDR.
    fn default() -> RenderOptions {
        RenderOptions {
            cluster_cidr: Some(weir_lab::CLUSTER_CIDR.to_string()),
        }
    }
}

/// A rendered `iptables-restore` input and what it holds.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// The input itself: `*filter ... COMMIT` then `*nat ... COMMIT`.
    pub text: String,
    /// Chain declarations (`:CHAIN - [0:0]`) and rules (`-A`, `-X`) per table.
    pub filter_chains: usize,
    pub filter_rules: usize,
    pub nat_chains: usize,
    pub nat_rules: usize,
    /// Whether kube-proxy's large-cluster mode (no per-endpoint comments) applied.
    pub large_cluster: bool,
    /// Every per-service NAT chain the full set uses, written or not.
    pub active_nat_chains: BTreeSet<String>,
}

/// The input of a full sync of `services`.
pub fn render(services: &[BenchService], options: &RenderOptions) -> Rendered {
    render_sync(services, 0..services.len(), &[], options)
}

/// The input of a sync of `services` in which only the services at indexes
/// `rewrite` get their KUBE-SVC/KUBE-SEP chains written (a full sync
/// rewrites all of them; a partial one only those that changed). The
/// top-level chains, KUBE-SERVICES included, and the whole filter table are
/// always written. Chains in `existing_nat_chains` (as iptables-save lists
/// them) that look like kube-proxy's and are no longer used are flushed and
/// deleted, as kube-proxy does after reading them back.
pub fn render_sync(
    services: &[BenchService],
    rewrite: Range<usize>,
    existing_nat_chains: &[String],
    options: &RenderOptions,
) -> Rendered {
    let endpoints: usize = services.iter().map(|s| s.backends.len()).sum();
    let mut out = Lines {
        large_cluster: endpoints > LARGE_CLUSTER_ENDPOINTS,
        ..Lines::default()
    };
    out.write_top_level();
    for (index, svc) in services.iter().enumerate() {
        out.write_service(svc, rewrite.contains(&index), options);
    }
    for chain in existing_nat_chains {
        if chains::is_service_chain(chain) && !out.active_nat_chains.contains(chain) {
            out.nat_chain(chain);
            out.nat_rule(format_args!("-X {chain}"));
        }
    }
    out.write_tail();
    out.finish()
}

/// kube-proxy's four line buffers.
#[derive(Default)]
struct Lines {
    filter_chains: String,
    filter_rules: String,
    nat_chains: String,
    nat_rules: String,
    counts: [usize; 4],
    large_cluster: bool,
    active_nat_chains: BTreeSet<String>,
}

impl Lines {
    fn filter_chain(&mut self, chain: &str) {
        let _ = writeln!(self.filter_chains, ":{chain} - [0:0]");
        self.counts[0] += 1;
    }

    fn filter_rule(&mut self, rule: std::fmt::Arguments) {
        let _ = writeln!(self.filter_rules, "{rule}");
        self.counts[1] += 1;
    }

    fn nat_chain(&mut self, chain: &str) {
        let _ = writeln!(self.nat_chains, ":{chain} - [0:0]");
        self.counts[2] += 1;
    }

    fn nat_rule(&mut self, rule: std::fmt::Arguments) {
        let _ = writeln!(self.nat_rules, "{rule}");
        self.counts[3] += 1;
    }

    /// ` -m comment --comment <c>` unless in large-cluster mode (kube-proxy's
    /// `appendServiceCommentLocked`, used for the per-endpoint rules only).
    fn endpoint_comment(&self, comment: &str) -> String {
        if self.large_cluster {
            String::new()
        } else {
            format!(" -m comment --comment {comment}")
        }
    }

    fn write_top_level(&mut self) {
        for chain in [
            SERVICES,
            EXTERNAL_SERVICES,
            FORWARD,
            NODEPORTS,
            PROXY_FIREWALL,
        ] {
            self.filter_chain(chain);
        }
        for chain in [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ] {
            self.nat_chain(chain);
        }
        let mark = MASQUERADE_MARK;
        self.nat_rule(format_args!(
            "-A {POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN"
        ));
        self.nat_rule(format_args!("-A {POSTROUTING} -j MARK --xor-mark {mark}"));
        self.nat_rule(format_args!(
            "-A {POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" \
             -j MASQUERADE --random-fully"
        ));
        self.nat_rule(format_args!("-A {MARK_MASQ} -j MARK --or-mark {mark}"));
        self.filter_chain(KUBELET_FIREWALL);
        self.filter_rule(format_args!(
            "-A {KUBELET_FIREWALL} -m comment --comment \"block incoming localnet connections\" \
             -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        ));
    }

    fn write_service(&mut self, svc: &BenchService, rewrite: bool, options: &RenderOptions) {
        let name = svc.port_name();
        let proto = protocol_name(svc.protocol);
        let matches = format!(
            "-m {proto} -p {proto} -d {} --dport {}",
            svc.cluster_ip, svc.port
        );
        let svc_chain = chains::service(svc);
        if svc.backends.is_empty() {
            // No endpoints: no NAT chains at all, a REJECT in filter.
            self.filter_rule(format_args!(
                "-A {SERVICES} -m comment --comment \"{name} has no endpoints\" {matches} -j REJECT"
            ));
            return;
        }
        self.nat_rule(format_args!(
            "-A {SERVICES} -m comment --comment \"{name} cluster IP\" {matches} -j {svc_chain}"
        ));
        let endpoints: Vec<(String, String)> = svc
            .backends
            .iter()
            .map(|(ip, port)| {
                let ep = format!("{ip}:{port}");
                (chains::endpoint(svc, &ep), ep)
            })
            .collect();
        self.active_nat_chains.insert(svc_chain.clone());
        for (chain, _) in &endpoints {
            self.active_nat_chains.insert(chain.clone());
        }
        if !rewrite {
            return;
        }
        if let Some(cidr) = &options.cluster_cidr {
            self.nat_rule(format_args!(
                "-A {svc_chain} -m comment --comment \"{name} cluster IP\" {matches} \
                 ! -s {cidr} -j {MARK_MASQ}"
            ));
        }
        self.nat_chain(&svc_chain);
        let count = endpoints.len();
        for (i, (chain, ep)) in endpoints.iter().enumerate() {
            let comment = self.endpoint_comment(&format!("\"{name} -> {ep}\""));
            let statistic = if i + 1 < count {
                format!(
                    " -m statistic --mode random --probability {}",
                    chains::probability(count - i)
                )
            } else {
                String::new()
            };
            self.nat_rule(format_args!(
                "-A {svc_chain}{comment}{statistic} -j {chain}"
            ));
        }
        let comment = self.endpoint_comment(&name);
        for ((ip, _), (chain, ep)) in svc.backends.iter().zip(&endpoints) {
            self.nat_chain(chain);
            self.nat_rule(format_args!("-A {chain}{comment} -s {ip} -j {MARK_MASQ}"));
            self.nat_rule(format_args!(
                "-A {chain}{comment} -m {proto} -p {proto} -j DNAT --to-destination {ep}"
            ));
        }
    }

    fn write_tail(&mut self) {
        self.nat_rule(format_args!(
            "-A {SERVICES} -m comment --comment \"kubernetes service nodeports; NOTE: this must be \
             the last rule in this chain\" -m addrtype --dst-type LOCAL -j {NODEPORTS}"
        ));
        self.filter_rule(format_args!(
            "-A {FORWARD} -m conntrack --ctstate INVALID -j DROP"
        ));
        let mark = MASQUERADE_MARK;
        self.filter_rule(format_args!(
            "-A {FORWARD} -m comment --comment \"kubernetes forwarding rules\" \
             -m mark --mark {mark}/{mark} -j ACCEPT"
        ));
        self.filter_rule(format_args!(
            "-A {FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" \
             -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        ));
    }

    fn finish(self) -> Rendered {
        let mut text = String::with_capacity(
            self.filter_chains.len()
                + self.filter_rules.len()
                + self.nat_chains.len()
                + self.nat_rules.len()
                + 32,
        );
        text.push_str("*filter\n");
        text.push_str(&self.filter_chains);
        text.push_str(&self.filter_rules);
        text.push_str("COMMIT\n*nat\n");
        text.push_str(&self.nat_chains);
        text.push_str(&self.nat_rules);
        text.push_str("COMMIT\n");
        let [filter_chains, filter_rules, nat_chains, nat_rules] = self.counts;
        Rendered {
            text,
            filter_chains,
            filter_rules,
            nat_chains,
            nat_rules,
            large_cluster: self.large_cluster,
            active_nat_chains: self.active_nat_chains,
        }
    }
}
