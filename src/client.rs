//! `loopchat client`: the line client. (Being written.)

use std::process::ExitCode;

/// Flags of `loopchat client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Name to take on connect.
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs the client until it ends; returns the process exit status.
pub fn run(_args: ClientArgs) -> ExitCode {
    ExitCode::FAILURE
}
