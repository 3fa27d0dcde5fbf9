//! A datapath loaded for one test, with its own bpffs pin directory that is
//! removed on drop.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use weir_agent::datapath::{Datapath, ProgramKind};

/// The base of every test pin directory.
pub const TEST_PIN_ROOT: &str = "/sys/fs/bpf";

/// A pin directory unique to this test; removed (with everything pinned in
/// it) on drop.
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new() -> PinDir {
        PinDir {
            path: Path::new(TEST_PIN_ROOT).join(crate::names::unique()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for PinDir {
    fn default() -> Self {
        PinDir::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = weir_agent::datapath::remove_pins(&self.path);
    }
}

/// Loads the real datapath into the kernel with maps pinned under `pins`.
pub fn load(pins: &PinDir) -> Result<Datapath> {
    Datapath::load(pins.path()).context("loading the datapath")
}

/// The verdict and per-run time of one `BPF_PROG_TEST_RUN`.
#[derive(Debug)]
pub struct Run {
    pub verdict: i32,
    pub nanos_per_packet: u128,
}

/// Runs `program` on `frame` `repeat` times in the kernel.
pub fn test_run(
    datapath: &mut Datapath,
    program: ProgramKind,
    frame: &[u8],
    repeat: u32,
) -> Result<Run> {
    let program = datapath.program_mut(program)?;
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok(Run {
        verdict: result.return_value as i32,
        nanos_per_packet: result.duration.as_nanos(),
    })
}
