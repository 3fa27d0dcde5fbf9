//! Writing kube-proxy's rules into a network namespace the way kube-proxy
//! does, and timing it.
//!
//! A full sync ([`KubeProxyIptables::program_all`]) first ensures the jumps
//! from the built-in chains (PREROUTING, OUTPUT, POSTROUTING, INPUT,
//! FORWARD) to kube-proxy's chains, one `iptables` call per check and per
//! insert as kube-proxy's `EnsureChain`/`EnsureRule` do, then reads the NAT
//! table back (`iptables-save -t nat`) to find stale service chains, then
//! runs `iptables-restore --noflush --counters` on the rendered input.
//! A partial sync ([`KubeProxyIptables::add_one`]) skips the jumps, and in
//! large-cluster mode also skips the read-back unless the last one is older
//! than kube-proxy's sync period (30 s). kube-proxy always restores with
//! `--noflush`; the difference between the two syncs is what they write.
//!
//! Commands run inside the namespace through `setns` between fork and exec
//! (the test kit's [`netns::command_in`]), not `ip netns exec`, so the timing
//! holds no extra process.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::chains::*;
use super::incremental::render_incremental_with;
use super::jumps::{Jump, JUMPS};
use super::render::{render_sync, RenderOptions, Rendered};
use super::BenchService;
use weir_tests::netns;

/// kube-proxy's default `--iptables-sync-period`: in large-cluster mode
/// stale chains are looked for at most this often.
const SYNC_PERIOD: Duration = Duration::from_secs(30);

/// Which iptables binaries to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// `iptables`, `iptables-restore`, `iptables-save` as installed: on
    /// Debian bookworm the alternatives point at the nf_tables variants.
    #[default]
    Default,
    /// `iptables-nft*`.
    Nft,
    /// `iptables-legacy*` (the x_tables kernel interface).
    Legacy,
}

impl Backend {
    fn binary(self, tool: &str) -> String {
        match self {
            Backend::Default => tool.to_string(),
            Backend::Nft => tool.replacen("iptables", "iptables-nft", 1),
            Backend::Legacy => tool.replacen("iptables", "iptables-legacy", 1),
        }
    }
}

/// Where the time of one sync went.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncTiming {
    /// Everything below, end to end.
    pub total: Duration,
    /// Ensuring the jumps from the built-in chains (full syncs only).
    pub ensure_jumps: Duration,
    /// Reading the NAT table back to find stale chains (zero when skipped).
    pub save: Duration,
    /// Building the restore input.
    pub render: Duration,
    /// The `iptables-restore` run.
    pub restore: Duration,
    /// Size of the restore input.
    pub input_lines: usize,
    pub input_bytes: usize,
}

/// kube-proxy's iptables mode, programming the namespace `netns`.
pub struct KubeProxyIptables {
    pub netns: String,
    pub backend: Backend,
    pub options: RenderOptions,
    last_cleanup: Option<Instant>,
    last: Option<SyncTiming>,
}

impl KubeProxyIptables {
    /// The default iptables backend and render options (the lab's cluster CIDR).
    pub fn new(netns: &str) -> KubeProxyIptables {
        KubeProxyIptables {
            netns: netns.to_string(),
            backend: Backend::Default,
            options: RenderOptions::default(),
            last_cleanup: None,
            last: None,
        }
    }

    pub fn with_backend(mut self, backend: Backend) -> KubeProxyIptables {
        self.backend = backend;
        self
    }

    pub fn with_options(mut self, options: RenderOptions) -> KubeProxyIptables {
        self.options = options;
        self
    }

    /// `iptables --version` of the backend in use, e.g.
    /// `iptables v1.8.9 (nf_tables)`.
    pub fn version(&self) -> Result<String> {
        let out = netns::run(Command::new(self.backend.binary("iptables")).arg("--version"))?;
        Ok(out.trim().to_string())
    }

    /// Where the time of the last sync went.
    pub fn last_timing(&self) -> Option<SyncTiming> {
        self.last
    }

    /// A full sync of `services` (the table then holds exactly them);
    /// returns its wall-clock time.
    pub fn program_all(&mut self, services: &[BenchService]) -> Result<Duration> {
        let start = Instant::now();
        for jump in JUMPS {
            self.ensure_jump(jump)
                .with_context(|| format!("ensure {} -> {}", jump.from, jump.to))?;
        }
        let ensure_jumps = start.elapsed();
        let endpoints: usize = services.iter().map(|s| s.backends.len()).sum();
        let (existing, save) = self.read_back(endpoints)?;
        let options = self.options.clone();
        self.sync(start, ensure_jumps, save, || {
            render_sync(services, 0..services.len(), &existing, &options)
        })
    }

    /// The partial sync after `new` was added to `existing`, which must be
    /// what the last sync programmed; returns its wall-clock time.
    pub fn add_one(&mut self, existing: &[BenchService], new: &BenchService) -> Result<Duration> {
        let start = Instant::now();
        let endpoints: usize =
            existing.iter().map(|s| s.backends.len()).sum::<usize>() + new.backends.len();
        let (stale, save) = self.read_back(endpoints)?;
        let options = self.options.clone();
        self.sync(start, Duration::ZERO, save, || {
            render_incremental_with(existing, new, &stale, &options)
        })
    }

    /// Removes every rule and chain the syncs added (kube-proxy's
    /// `CleanupLeftovers`, plus the KUBE-FIREWALL chain kubelet would
    /// otherwise own); returns its wall-clock time.
    pub fn flush(&mut self) -> Result<Duration> {
        let start = Instant::now();
        for jump in JUMPS {
            // Absent is fine: flush also cleans up after a failed sync.
            let _ = self.iptables(jump, "-D");
        }
        // Flush every chain of ours in one transaction per table, then
        // delete them (nothing references them once all are flushed).
        let mut input = String::new();
        for (table, top) in [
            ("nat", &[SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ][..]),
            (
                "filter",
                &[
                    SERVICES,
                    EXTERNAL_SERVICES,
                    FORWARD,
                    NODEPORTS,
                    PROXY_FIREWALL,
                    KUBELET_FIREWALL,
                ][..],
            ),
        ] {
            let ours: Vec<String> = self
                .chains(table)?
                .into_iter()
                .filter(|c| top.contains(&c.as_str()) || is_service_chain(c))
                .collect();
            input.push_str(&format!("*{table}\n"));
            for chain in &ours {
                input.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for chain in &ours {
                input.push_str(&format!("-X {chain}\n"));
            }
            input.push_str("COMMIT\n");
        }
        self.restore(&input)?;
        self.last_cleanup = None;
        Ok(start.elapsed())
    }

    /// `iptables-save -t <table>` inside the namespace.
    pub fn save(&self, table: &str) -> Result<String> {
        let mut cmd = Command::new(self.backend.binary("iptables-save"));
        cmd.args(["-t", table]);
        netns::command_in(&mut cmd, &self.netns)?;
        netns::run(&mut cmd)
    }

    /// The user-defined chains of `table`, as iptables-save lists them.
    pub fn chains(&self, table: &str) -> Result<Vec<String>> {
        Ok(chain_names(&self.save(table)?))
    }

    fn sync(
        &mut self,
        start: Instant,
        ensure_jumps: Duration,
        save: Duration,
        render: impl FnOnce() -> Rendered,
    ) -> Result<Duration> {
        let render_start = Instant::now();
        let rendered = render();
        let render = render_start.elapsed();
        let restore_start = Instant::now();
        self.restore(&rendered.text)?;
        let restore = restore_start.elapsed();
        let total = start.elapsed();
        self.last = Some(SyncTiming {
            total,
            ensure_jumps,
            save,
            render,
            restore,
            input_lines: rendered.text.lines().count(),
            input_bytes: rendered.text.len(),
        });
        Ok(total)
    }

    /// kube-proxy reads the NAT table back to delete stale chains on every
    /// sync, except in large-cluster mode where it does so once per sync
    /// period. Returns the chains read (empty when skipped) and the time.
    fn read_back(&mut self, endpoints: usize) -> Result<(Vec<String>, Duration)> {
        let large = endpoints > super::render::LARGE_CLUSTER_ENDPOINTS;
        if large && self.last_cleanup.is_some_and(|t| t.elapsed() < SYNC_PERIOD) {
            return Ok((Vec::new(), Duration::ZERO));
        }
        let start = Instant::now();
        let chains = self.chains("nat")?;
        self.last_cleanup = Some(Instant::now());
        Ok((chains, start.elapsed()))
    }

    /// `EnsureChain` then `EnsureRule(Prepend, ...)`: create the target
    /// chain unless it exists, check for the jump, insert it at the top
    /// if missing.
    fn ensure_jump(&self, jump: &Jump) -> Result<()> {
        let mut create = Command::new(self.backend.binary("iptables"));
        create.args(["-w", "5", "-t", jump.table, "-N", jump.to]);
        netns::command_in(&mut create, &self.netns)?;
        let status = create.output().context("spawn iptables -N")?;
        // Exit status 1 is "chain already exists".
        if !status.status.success() && status.status.code() != Some(1) {
            bail!(
                "iptables -t {} -N {}: {}",
                jump.table,
                jump.to,
                String::from_utf8_lossy(&status.stderr).trim()
            );
        }
        if self.iptables(jump, "-C").is_err() {
            self.iptables(jump, "-I")?;
        }
        Ok(())
    }

    /// `iptables -t <table> <op> <from> <match...> -j <to>`.
    fn iptables(&self, jump: &Jump, op: &str) -> Result<()> {
        let mut cmd = Command::new(self.backend.binary("iptables"));
        cmd.args(["-w", "5", "-t", jump.table, op, jump.from])
            .args(jump.args())
            .args(["-j", jump.to]);
        netns::command_in(&mut cmd, &self.netns)?;
        netns::run(&mut cmd).map(drop)
    }

    /// `iptables-restore -w 5 --noflush --counters` with `input` on stdin.
    fn restore(&self, input: &str) -> Result<()> {
        let mut cmd = Command::new(self.backend.binary("iptables-restore"));
        cmd.args(["-w", "5", "--noflush", "--counters"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        netns::command_in(&mut cmd, &self.netns)?;
        let mut child = cmd.spawn().context("spawn iptables-restore")?;
        let mut stdin = child.stdin.take().context("iptables-restore stdin")?;
        // A failing restore may stop reading early; its stderr says why.
        let written = stdin.write_all(input.as_bytes());
        drop(stdin);
        let out = child
            .wait_with_output()
            .context("wait for iptables-restore")?;
        if !out.status.success() {
            bail!(
                "iptables-restore in {} failed ({}): {}",
                self.netns,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        written.context("write to iptables-restore")
    }
}

/// The chain names declared in iptables-save output (`:NAME POLICY [p:b]`).
pub fn chain_names(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
