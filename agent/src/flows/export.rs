//! Flow export (Hubble's exporter): every flow the allow/deny filters pass,
//! as one line of JSON (a `GetFlowsResponse` in protobuf's JSON mapping with
//! the protos' field names: what `hubble observe -o json` prints), appended
//! to a file that is rotated by size, for log shippers and SIEM pipelines.
//!
//! The event reader never waits for the disk: flows go through a bounded
//! queue to a writer thread, and a flow that finds the queue full is
//! dropped and counted (`weir_flow_export_total{outcome="dropped"}`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use prometheus::{IntCounterVec, Opts, Registry};
use tracing::warn;
use weir_observer::proto::flow::{Flow, FlowFilter};
use weir_observer::proto::observer::{get_flows_response::ResponseTypes, GetFlowsResponse};
use weir_observer::{FilterError, FlowFilters};

use crate::registry::registered;

/// Where and how much to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub path: PathBuf,
    /// The file is rotated before a line would take it past this size.
    pub max_size_bytes: u64,
    /// Rotated files kept (`<path>.1` the newest); 0 keeps none.
    pub max_backups: usize,
    /// Flows waiting for the writer; beyond it flows are dropped.
    pub queue: usize,
    pub allow: Vec<FlowFilter>,
    pub deny: Vec<FlowFilter>,
}

/// A list of FlowFilters as Hubble's `--hubble-export-allowlist` takes it:
/// JSON objects, separated by commas or white space (empty: none).
pub fn parse_filter_list(text: &str) -> Result<Vec<FlowFilter>, String> {
    let mut filters = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return Ok(filters);
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<FlowFilter>();
        match stream.next() {
            Some(Ok(filter)) => filters.push(filter),
            Some(Err(error)) => return Err(format!("a FlowFilter in JSON: {error}")),
            None => return Ok(filters),
        }
        rest = &rest[stream.byte_offset()..];
    }
}

/// Counts by outcome: `written`, `dropped` (queue full), `failed` (the
/// write or the rotation failed), `filtered` (not passed by the lists).
#[derive(Clone)]
pub struct ExportMetrics(IntCounterVec);

impl ExportMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self(registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weir_flow_export_total",
                    "Flows offered to the flow exporter",
                ),
                &["outcome"],
            ),
        ))
    }

    fn count(&self, outcome: &str) {
        self.add(outcome, 1);
    }

    fn add(&self, outcome: &str, n: u64) {
        self.0.with_label_values(&[outcome]).inc_by(n);
    }
}

/// The reader's end: filters, then hands over without waiting.
pub struct Exporter {
    filters: FlowFilters,
    queue: SyncSender<Flow>,
    metrics: ExportMetrics,
}

impl Exporter {
    /// Opens the file (creating its directory) and starts the writer.
    pub fn start(
        config: ExportConfig,
        node_name: String,
        metrics: ExportMetrics,
    ) -> Result<Self, ExportError> {
        let filters = FlowFilters::new(&config.allow, &config.deny)?;
        let file = RotatingFile::open(&config)?;
        Ok(Self::with_sink(
            filters,
            file,
            config.queue,
            node_name,
            metrics,
        ))
    }

    fn with_sink(
        filters: FlowFilters,
        sink: impl Sink,
        queue: usize,
        node_name: String,
        metrics: ExportMetrics,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || write_all(rx, sink, &node_name, &writer_metrics))
            .expect("spawning the flow exporter's writer");
        Exporter {
            filters,
            queue: tx,
            metrics,
        }
    }

    /// Exports `flow` if the filters pass it and the queue has room.
    pub fn offer(&self, flow: &Flow) {
        if !self.filters.matches(flow) {
            self.metrics.count("filtered");
            return;
        }
        match self.queue.try_send(flow.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.count("dropped"),
            Err(TrySendError::Disconnected(_)) => self.metrics.count("failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("flow export filters: {0}")]
    Filter(#[from] FilterError),
    #[error("flow export file {path}: {source}")]
    File { path: String, source: io::Error },
}

/// Where the writer puts lines (the rotating file; tests put others).
trait Sink: Send + 'static {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// One export line: the flow as a `GetFlowsResponse`, as Hubble's exporter
/// and `hubble observe -o json` write it.
pub fn json_line(flow: Flow, node_name: &str) -> Vec<u8> {
    let response = GetFlowsResponse {
        node_name: node_name.to_string(),
        time: flow.time,
        response_types: Some(ResponseTypes::Flow(flow)),
    };
    let mut line = serde_json::to_vec(&response).expect("a flow always serialises");
    line.push(b'\n');
    line
}

fn write_all(queue: Receiver<Flow>, mut sink: impl Sink, node_name: &str, metrics: &ExportMetrics) {
    let mut failing = false;
    // Block for the next flow, write what else is queued, then flush once;
    // a flow counts as written once it is flushed.
    while let Ok(first) = queue.recv() {
        let mut batch = 0;
        for flow in std::iter::once(first).chain(queue.try_iter()) {
            match sink.write_line(&json_line(flow, node_name)) {
                Ok(()) => batch += 1,
                Err(error) => {
                    metrics.count("failed");
                    if !failing {
                        warn!(%error, "flow export: writing a flow");
                    }
                    failing = true;
                }
            }
        }
        match sink.flush() {
            Ok(()) => {
                metrics.add("written", batch);
                failing = false;
            }
            Err(error) => {
                metrics.add("failed", batch);
                if !failing {
                    warn!(%error, "flow export: flushing");
                }
                failing = true;
            }
        }
    }
}

/// The export file, rotated as logrotate numbers its files: the current
/// file is `<path>`, the newest rotated one `<path>.1`, up to
/// `<path>.<max_backups>`.
struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_backups: usize,
    file: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    fn open(config: &ExportConfig) -> Result<Self, ExportError> {
        let err = |source| ExportError::File {
            path: config.path.display().to_string(),
            source,
        };
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = append(&config.path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(RotatingFile {
            path: config.path.clone(),
            max_size: config.max_size_bytes.max(1),
            max_backups: config.max_backups,
            file: BufWriter::new(file),
            size,
        })
    }

    fn backup(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_backups == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.max_backups).rev() {
                match std::fs::rename(self.backup(n), self.backup(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.backup(1))?;
        }
        self.file = BufWriter::new(append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Flows name pods and addresses: readable by root only.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Sink for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests;
