//! The `loopchat` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    Server(ServerArgs),
    /// Connect to a server and chat from standard input.
    Client(client::ClientArgs),
    /// Load-test a chat server and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Write a self-signed TLS certificate and key, for testing.
    Cert(tls::CertArgs),
}

/// `loopchat server`: the settings, and what to do with them.
#[derive(clap::Args)]
struct ServerArgs {
    #[command(flatten)]
    config: ServerConfig,

    /// Print the effective configuration (the file, the flags over it, the defaults
    /// for the rest) as a TOML file for `--config`, and exit.
    #[arg(long)]
    print_config: bool,
}

/// The exit status for a configuration that cannot be used (as for a bad flag): a
/// service manager should not restart into the same mistake.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Parsed in two steps: the server's settings need to know which flags were given.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Server(args) => {
            let settings = matches
                .subcommand_matches("server")
                .map_or(Ok(args.config), ServerConfig::from_matches);
            let mut config = match settings {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("loopchat server: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if args.print_config {
                return match config.to_toml() {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("loopchat server: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            config.handle_signals = true;
            match Server::bind(config).and_then(Server::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("server failed: {e}");
                    // Flags that do not go together, a certificate or password file
                    // that does not load: the configuration's fault, not the moment's.
                    if e.kind() == std::io::ErrorKind::InvalidInput {
                        ExitCode::from(EXIT_CONFIG)
                    } else {
                        ExitCode::FAILURE
                    }
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
