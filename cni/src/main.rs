//! The `weir-cni` executable: logging to stderr, then one invocation.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// Log filter variable (e.g. `WEIR_CNI_LOG=debug`); warnings and errors otherwise.
const LOG_FILTER_VAR: &str = "WEIR_CNI_LOG";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_env(LOG_FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let status = weir_cni::run(
        &weir_cni::ProcessEnvironment,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    ExitCode::from(status)
}
