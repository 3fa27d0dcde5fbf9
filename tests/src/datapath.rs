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

/// The interface `BPF_PROG_TEST_RUN` runs the programs on (loopback).
pub const TEST_RUN_IFINDEX: u32 = 1;

/// Writes a ready, unenforced endpoint (the one a pod with no policy has)
/// for the interface `ifindex` whose pod has the address `ipv4` and the
/// IPv6 address the crafted packets come from ([`crate::packets::IP6_A`]):
/// the pod programs drop everything on an interface without a ready
/// endpoint, and every source the pod does not own.
pub fn open_endpoint(datapath: &mut Datapath, ifindex: u32, ipv4: [u8; 4]) -> Result<()> {
    open_endpoint_v6(datapath, ifindex, ipv4, crate::packets::IP6_A, [0; 8])
}

/// [`open_endpoint`] with the pod's IPv6 address and the interface
/// identifier of its link-local address
/// ([`weir_abi::endpoint::eui64_interface_id`] of its MAC address).
pub fn open_endpoint_v6(
    datapath: &mut Datapath,
    ifindex: u32,
    ipv4: [u8; 4],
    ipv6: [u8; 16],
    ipv6_link_local: [u8; 8],
) -> Result<()> {
    weir_agent::datapath::maps::set_endpoint(
        datapath.ebpf_mut(),
        ifindex,
        weir_abi::EndpointInfo {
            id: 1,
            flags: 0,
            pad: 0,
            identity: weir_abi::identity::INIT,
            ipv4,
            ipv6,
            ipv6_link_local,
        },
    )
    .context("writing an open endpoint")
}

/// [`load`], with an open endpoint on the test-run interface whose pod has
/// the address the crafted IPv4 packets come from ([`crate::packets::IP4_A`]).
pub fn load_with_open_endpoint(pins: &PinDir) -> Result<Datapath> {
    let mut datapath = load(pins)?;
    open_endpoint(&mut datapath, TEST_RUN_IFINDEX, crate::packets::IP4_A)?;
    Ok(datapath)
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
    run_with(datapath, program, frame, repeat, None)
}

/// [`test_run`] once, returning the verdict and the packet as the program
/// left it (rewritten by service NAT, for instance).
pub fn test_run_out(
    datapath: &mut Datapath,
    program: ProgramKind,
    frame: &[u8],
) -> Result<(i32, Vec<u8>)> {
    let program = datapath.program_mut(program)?;
    // Room for what the programs may add (none grow a packet by more).
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value as i32, out))
}

/// Offsets in the kernel's `struct __sk_buff`.
const SKB_MARK_OFFSET: usize = 8;
const SKB_IFINDEX_OFFSET: usize = 40;

/// [`test_run`] once with the packet's mark set to `mark` (what
/// `weir_from_overlay` leaves on a packet for `weir_to_pod`).
pub fn test_run_marked(
    datapath: &mut Datapath,
    program: ProgramKind,
    frame: &[u8],
    mark: u32,
) -> Result<Run> {
    // Every field before the mark must stay zero (the kernel refuses a
    // context that sets what it does not let a test set).
    let mut ctx = [0u8; SKB_MARK_OFFSET + 4];
    ctx[SKB_MARK_OFFSET..].copy_from_slice(&mark.to_ne_bytes());
    run_with(datapath, program, frame, 1, Some(&ctx))
}

/// [`test_run`] with the packet on the interface `ifindex` of the calling
/// thread's network namespace instead of loopback (the kernel takes the
/// device from the context's `ifindex`): what route and neighbour lookups
/// of the program see.
pub fn test_run_on(
    datapath: &mut Datapath,
    program: ProgramKind,
    frame: &[u8],
    repeat: u32,
    ifindex: u32,
) -> Result<Run> {
    // Every other field of the context must stay zero (the kernel refuses
    // a context that sets what it does not let a test set).
    let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 4];
    ctx[SKB_IFINDEX_OFFSET..].copy_from_slice(&ifindex.to_ne_bytes());
    run_with(datapath, program, frame, repeat, Some(&ctx))
}

fn run_with(
    datapath: &mut Datapath,
    program: ProgramKind,
    frame: &[u8],
    repeat: u32,
    ctx_in: Option<&[u8]>,
) -> Result<Run> {
    let program = datapath.program_mut(program)?;
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in,
            repeat,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok(Run {
        verdict: result.return_value as i32,
        nanos_per_packet: result.duration.as_nanos(),
    })
}
