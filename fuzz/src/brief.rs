//! The brief run the test suite makes of every target, on stable and
//! without instrumentation: each committed seed, then seeded mutations of
//! the seeds (bit flips, interesting bytes, insertions, deletions,
//! duplicated ranges, dictionary words, splices of two seeds) until the
//! time is up. No coverage guides it (that is libFuzzer's part, `cargo
//! xtask fuzz`); it keeps the corpus passing and shakes the neighbourhood
//! of every seed on each run of the suite.
//!
//! The sequence of inputs depends only on the seed corpus, the dictionary
//! and the random seed, so a finding replays with the same seed (printed
//! with it); the number of executions depends on the time given.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Target;

/// Inputs longer than this are cut: every front end's interesting inputs
/// are far smaller, and long ones only slow the run.
pub const MAX_INPUT_LEN: usize = 4096;

/// What a brief run did.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    /// Committed seeds run.
    pub seeds: usize,
    /// Inputs run, seeds included.
    pub executions: u64,
    pub elapsed: Duration,
    /// The first input that broke a property, if any (the run stops there).
    pub finding: Option<Finding>,
}

#[derive(Debug)]
pub struct Finding {
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
    /// Where the input was written (`target/fuzz/findings/<target>/`).
    pub saved: Option<PathBuf>,
    /// The seed file it is, or was mutated from.
    pub from_seed: String,
}

/// Runs `target` on its committed corpus, then on mutations of it for
/// `budget`, with the random `seed`.
pub fn run(target: &Target, budget: Duration, seed: u64) -> Report {
    let started = Instant::now();
    let seeds = read_corpus(&crate::corpus_dir(target.name));
    let dictionary = read_dictionary(&crate::dictionary_file(target.name));
    let mut report = Report {
        target: target.name,
        seeds: seeds.len(),
        executions: 0,
        elapsed: Duration::ZERO,
        finding: None,
    };
    for (name, input) in &seeds {
        report.executions += 1;
        if let Err(message) = execute(target, input) {
            report.finding = Some(finding(target, input.clone(), message, name));
            report.elapsed = started.elapsed();
            return report;
        }
    }
    if seeds.is_empty() {
        report.elapsed = started.elapsed();
        return report;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    while started.elapsed() < budget {
        let (name, base) = &seeds[rng.usize(..seeds.len())];
        let mut input = base.clone();
        for _ in 0..rng.usize(1..=4) {
            mutate(&mut rng, &mut input, &dictionary, &seeds);
        }
        report.executions += 1;
        if let Err(message) = execute(target, &input) {
            report.finding = Some(finding(target, input, message, name));
            break;
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Runs one input; the panic message when a property broke.
pub fn execute(target: &Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

fn finding(target: &Target, input: Vec<u8>, message: String, from_seed: &str) -> Finding {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fuzz/findings")
        .join(target.name);
    let file = dir.join(format!("crash-{:016x}", fnv1a(&input)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, &input))
        .ok()
        .map(|()| file);
    Finding {
        input,
        message,
        saved,
        from_seed: from_seed.to_string(),
    }
}

/// The files of a corpus directory (name, content), sorted by name.
pub fn read_corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let content = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), content))
        })
        .collect();
    files.sort();
    files
}

/// The words of a libFuzzer dictionary: one `"word"` (or `name="word"`)
/// per line, with `\\`, `\"` and `\xNN` escapes; `#` starts a comment.
pub fn read_dictionary(path: &Path) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let start = line.find('"')?;
            let quoted = line[start + 1..].strip_suffix('"')?;
            unescape(quoted)
        })
        .collect()
}

fn unescape(quoted: &str) -> Option<Vec<u8>> {
    let bytes = quoted.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'x' => {
                let hex = quoted.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            other => {
                out.push(*other);
                i += 2;
            }
        }
    }
    Some(out)
}

/// One random change to `input`.
fn mutate(
    rng: &mut fastrand::Rng,
    input: &mut Vec<u8>,
    dictionary: &[Vec<u8>],
    seeds: &[(String, Vec<u8>)],
) {
    const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\n', b'*', b':', b'-'];
    let len = input.len();
    match rng.u8(0..9) {
        0 if len > 0 => {
            let at = rng.usize(..len);
            input[at] ^= 1 << rng.u8(0..8);
        }
        1 if len > 0 => {
            let at = rng.usize(..len);
            input[at] = INTERESTING[rng.usize(..INTERESTING.len())];
        }
        2 => {
            let at = rng.usize(..=len);
            let n = rng.usize(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            input.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.usize(..len);
            let end = (at + rng.usize(1..=16)).min(len);
            input.drain(at..end);
        }
        4 if len > 0 => {
            let from = rng.usize(..len);
            let end = (from + rng.usize(1..=32)).min(len);
            let chunk = input[from..end].to_vec();
            let at = rng.usize(..=len);
            input.splice(at..at, chunk);
        }
        5 | 6 if !dictionary.is_empty() => {
            let word = &dictionary[rng.usize(..dictionary.len())];
            let at = rng.usize(..=len);
            if rng.bool() || len == 0 {
                input.splice(at..at, word.iter().copied());
            } else {
                let end = (at + word.len()).min(len);
                input.splice(at..end, word.iter().copied());
            }
        }
        7 if !seeds.is_empty() => {
            // Splice: the head of this input and the tail of another seed.
            let other = &seeds[rng.usize(..seeds.len())].1;
            let cut = rng.usize(..=len);
            let from = rng.usize(..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ if len > 0 => {
            input.truncate(rng.usize(..len));
        }
        _ => input.push(rng.u8(..)),
    }
    input.truncate(MAX_INPUT_LEN);
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_words_unescape() {
        assert_eq!(unescape(r#"a\"b\\c\x41"#), Some(b"a\"b\\cA".to_vec()));
        assert_eq!(unescape(r"\x4"), None);
    }

    #[test]
    fn mutations_stay_within_the_length_limit_and_replay() {
        let seeds = vec![("a".to_string(), vec![7u8; MAX_INPUT_LEN])];
        let dictionary = vec![b"apiVersion".to_vec()];
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut input = seeds[0].1.clone();
            for _ in 0..200 {
                mutate(&mut rng, &mut input, &dictionary, &seeds);
                assert!(input.len() <= MAX_INPUT_LEN);
            }
            input
        };
        assert_eq!(run(5), run(5));
    }
}
