//! Loading the programs into the kernel, on every core.
//!
//! Each load is a `BPF_PROG_LOAD` whose verification is most of an agent's
//! start (about 1.9 s of system time against 0.3 s of user time for the
//! whole start on the lab's 2-core machines), and the loads are
//! independent of each other: they run on as many threads as there are
//! cores, the programs taken in the order given (the largest first, so the
//! last to finish is a small one).

use std::sync::Mutex;

use aya::programs::{Program, ProgramError};
use aya::Ebpf;

use super::DatapathError;

/// Loads the programs of `ebpf` named in `names`. Every program is tried;
/// the first failure (in `names`' order) is returned.
pub fn programs(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), DatapathError> {
    for name in names {
        if ebpf.program(name).is_none() {
            return Err(DatapathError::MissingProgram { name });
        }
    }
    let mut queue: Vec<(usize, &'static str, &mut Program)> = ebpf
        .programs_mut()
        .filter_map(|(name, program)| {
            let index = names.iter().position(|n| *n == name)?;
            Some((index, names[index], program))
        })
        .collect();
    // Popped from the end: the first named goes first.
    queue.sort_by_key(|(index, _, _)| std::cmp::Reverse(*index));
    let queue = Mutex::new(queue);
    let failures: Mutex<Vec<(usize, DatapathError)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(names.len())
        .max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((index, name, program)) = next else {
                    return;
                };
                if let Err(error) = load(name, program) {
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((index, error));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|(index, _)| *index);
    match failures.into_iter().next() {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

fn load(name: &'static str, program: &mut Program) -> Result<(), DatapathError> {
    let loaded = match program {
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        // The datapath has no other kinds.
        _ => Err(ProgramError::UnexpectedProgramType),
    };
    loaded.map_err(|source| DatapathError::Program { name, source })
}
