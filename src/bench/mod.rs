//! `loopchat bench`: the load harness. (Being written.)

use std::process::ExitCode;

/// Flags of `loopchat bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
}

/// Runs the benchmark; returns the process exit status.
pub fn run(_args: BenchArgs) -> ExitCode {
    ExitCode::FAILURE
}
