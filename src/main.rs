//! The `loopchat` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loopchat::{Server, ServerConfig, bench, client, tls};

/// A chat server on one event loop, its line client and its load harness.
#[derive(Parser)]
#[command(name = "loopchat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the chat server.
    Server(ServerConfig),
    /// Connect to a server and chat from standard input.
    Client(client::ClientArgs),
    /// Load-test a chat server and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Write a self-signed TLS certificate and key, for testing.
    Cert(tls::CertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Server(mut config) => {
            config.handle_signals = true;
            match Server::bind(config).and_then(Server::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("server failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(args) => client::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cert(args) => match tls::write_self_signed(&args) {
            Ok(()) => {
                println!(
                    "wrote {} and {} for {}",
                    args.cert.display(),
                    args.key.display(),
                    args.names.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loopchat cert: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
