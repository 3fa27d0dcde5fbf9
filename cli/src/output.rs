//! Rendering shared by the commands: JSON documents and lines, `key: value`
//! details, and the small words several commands print the same way.
//!
//! The `-o json` output of every command is a `#[derive(Serialize)]` type
//! next to the command. Their fields are declared in sorted key order: that
//! is the order this output has always had (it was built as `serde_json`
//! maps, which sort their keys), and scripts may compare it byte for byte.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

/// One JSON document, indented.
pub fn json_document(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// One JSON object per line.
pub fn json_lines<T: Serialize>(values: impl IntoIterator<Item = T>) -> Result<()> {
    for value in values {
        println!("{}", serde_json::to_string(&value)?);
    }
    Ok(())
}

/// Writes one line of a stream and flushes it; false when the reader went
/// away (`| head`), which ends a stream quietly.
pub fn stream_line(out: &mut impl Write, line: &str) -> bool {
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// `key:` and its value, values aligned.
pub fn field(key: &str, value: impl std::fmt::Display) {
    list(key, &[value.to_string()]);
}

/// `key:` then the first value, further values aligned under it.
pub fn list(key: &str, values: &[String]) {
    let label = format!("{key}:");
    match values.split_first() {
        None => println!("{label}"),
        Some((first, rest)) => {
            println!("{label:<17}{first}");
            for value in rest {
                println!("{:<17}{value}", "");
            }
        }
    }
}

/// `NAMESPACE/POD`.
pub fn pod(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Whether policy is enforced in one direction of an endpoint.
pub fn enforcement(enforced: bool) -> &'static str {
    if enforced {
        "enforced"
    } else {
        "allow-all"
    }
}
