//! The server's settings: one struct, built from the command line by `clap` and from a
//! TOML file by `serde`, with every default documented where it is declared.
//!
//! Every flag of `loopchat server` is a key of the configuration file by the same name
//! (`max-output = "1MiB"`, `rate = 5`, `admin = ["alice"]`), because both are derived
//! from the one struct below: a new field is a new flag and a new key at once. The file
//! and its precedence below the command line are in [`file`]; the spellings of
//! durations and sizes in [`units`]. This module owns no behaviour: the server reads
//! these values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::Cidr;

mod file;
mod units;

pub use file::{CommandLine, ConfigError};
pub use units::{MAX_DURATION, format_duration, format_size, parse_duration, parse_size};

/// Everything `loopchat server` can be told. `ServerConfig::default()` gives the same
/// values as running the binary with no flags.
///
/// Serialized, each field is the key its flag is named by (kebab case); the fields
/// that are not settings (`config_file`, `overrides`, `handle_signals`) are skipped.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Read settings from this TOML file first: each key is a flag's name without the
    /// dashes (`max-output = "1MiB"`); flags given on the command line override it.
    /// Re-read on SIGHUP.
    #[arg(long = "config", value_name = "FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// The settings given on the command line, kept to override the file again at
    /// every reload. Empty without a file.
    #[arg(skip)]
    #[serde(skip)]
    pub overrides: CommandLine,

    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Also accept TLS connections on this address (needs `--tls-cert` and `--tls-key`).
    /// The protocol and text mode are the same inside the TLS stream.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<SocketAddr>,

    /// The TLS certificate chain, PEM, leaf first. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Serve TLS only: the plain listener (ADDR) is not opened.
    #[arg(long)]
    pub no_plain: bool,

    /// Accept browsers on this address: the built-in web page at `GET /` and WebSocket
    /// at `GET /ws` (one protocol line per text message).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_listen: Option<SocketAddr>,

    /// The same over TLS (needs `--tls-cert` and `--tls-key`).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wss_listen: Option<SocketAddr>,

    /// An origin allowed to open WebSockets besides the server's own host, e.g.
    /// `https://chat.example.org` (repeatable).
    #[arg(long = "ws-origin", value_name = "ORIGIN")]
    #[serde(rename = "ws-origin")]
    pub ws_origins: Vec<String>,

    /// Serve Prometheus metrics at `GET /metrics` on this address (HTTP, same loop).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,

    /// Join a cluster of servers sharing rooms, names and bans through this Redis
    /// (`redis://HOST:PORT[/DB]`). History and accounts then live in Redis too, and
    /// `--db` is not used.
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,

    /// This server's name in the cluster (letters, digits, `-`, `_`, `.`; at most 32).
    /// Default: generated from the host name and the process id.
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,

    /// How long a node that stopped answering keeps its names (and is counted in
    /// `WHO:`/`ROOMS:`): its heartbeat renews them every third of this.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub cluster_ttl: Duration,

    /// Open the listeners with `SO_REUSEPORT`, so several processes (one per core) share
    /// one port and the kernel spreads connections over them.
    #[arg(long)]
    pub reuse_port: bool,

    /// The history database (SQLite): a file path, or `none` to keep history in memory
    /// only (lost at exit).
    #[arg(long, default_value = "loopchat.db", value_name = "PATH")]
    pub db: String,

    /// Most time between two commits of room messages to the database (group commit):
    /// what a crash (SIGKILL, power loss) may lose at most.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub db_flush: Duration,

    /// Messages of a room replayed to a member entering it (0 = no replay).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub history_replay: usize,

    /// How long room messages are kept; older ones are deleted in the background.
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub history_retain: Duration,

    /// A server password: every connection must first send `PASS:<password>`. The
    /// file's content without its trailing newline; re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,

    /// An account that, logged in, is an operator (`KICK:`, `BAN:`). Repeatable.
    #[arg(long = "admin", value_name = "NAME")]
    #[serde(rename = "admin")]
    pub admins: Vec<String>,

    /// Threads that hash and check passwords (Argon2id, 19 MiB each). 0 = one less
    /// than the cores, at least one, so the loop keeps a core.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub auth_threads: usize,

    /// Longest accepted line in bytes, not counting its line end. Longer lines get
    /// `ERROR:line too long` and are discarded through their newline.
    #[arg(long, default_value = "4KiB", value_parser = parse_size, value_name = "SIZE")]
    #[serde(with = "units::size")]
    pub max_line: usize,

    /// Cap on one connection's pending output in bytes. A client that stops reading is
    /// closed (evicted) when its queue would grow past this; nobody else waits for it.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    #[serde(with = "units::size")]
    pub max_output: usize,

    /// Soft cap on one connection's pending output in bytes: a queue that stays above
    /// it for `--slow-grace` is evicted. A burst that a reader drains at normal speed
    /// passes above it without harm.
    #[arg(long, default_value = "256KiB", value_parser = parse_size, value_name = "SIZE")]
    #[serde(with = "units::size")]
    pub max_output_soft: usize,

    /// How long a queue may stay above `--max-output-soft` before its connection is
    /// evicted as not reading.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub slow_grace: Duration,

    /// Budget for all connections' pending output together, in bytes: past it the
    /// largest queues are evicted first, so many slow readers cannot exhaust memory.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    #[serde(with = "units::size")]
    pub max_output_total: usize,

    /// Kernel send buffer per connection (SO_SNDBUF) in bytes. Chat lines are small;
    /// 64 KiB holds hundreds of them and bounds what a reader that stops pins in the
    /// kernel (autotuning lets it pin about 4 MiB on loopback). 0 = kernel autotuning.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
    #[serde(with = "units::size")]
    pub send_buffer: usize,

    /// Maximum number of clients. 0 derives it from the open-files limit, which the
    /// server first raises as far as the hard limit allows (keeping a reserve).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_clients: usize,

    /// A connection that sends no complete line within this window is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub register_timeout: Duration,

    /// Close connections silent for this long (0 = never).
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,

    /// Rooms with more members than this do not announce joins and leaves (presence
    /// would otherwise cost N-1 deliveries per join: quadratic in the room size).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub announce_limit: usize,

    /// Listen backlog: how many completed connects the kernel queues before `accept`
    /// (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 65535, value_name = "N")]
    pub backlog: i32,

    /// How often to log the one-line summary at `info` (0 = never).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub summary_interval: Duration,

    /// Write output at most once per this interval under sustained load, so each write
    /// carries more messages (fewer system calls, a little more latency). The first
    /// output after a quiet spell is never delayed. 0 = write every loop turn.
    #[arg(long, default_value = "5ms", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub coalesce: Duration,

    /// On shutdown (or LEAVE), how long to keep flushing output before closing anyway.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub linger: Duration,

    /// Messages per second each connection may send (token bucket refill; 0 = unlimited).
    #[arg(long, default_value_t = 5.0, value_name = "PER_SEC")]
    pub rate: f64,

    /// Messages a connection may send in a burst (token bucket size).
    #[arg(long, default_value_t = 10.0, value_name = "N")]
    pub burst: f64,

    /// Private messages per second one connection may receive, from all senders
    /// together (token bucket refill; 0 = unlimited). Over it the sender is told the
    /// recipient is receiving too fast; the recipient is never evicted for PMs.
    #[arg(long, default_value_t = 10.0, value_name = "PER_SEC")]
    pub msg_in_rate: f64,

    /// Private messages one connection may receive in a burst.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub msg_in_burst: f64,

    /// Messages per second one IP (IPv6: one /64) may send across all its connections
    /// (0 = unlimited), so many connections cannot do what one may not.
    #[arg(long, default_value_t = 20.0, value_name = "PER_SEC")]
    pub ip_rate: f64,

    /// Messages one IP may send in a burst across all its connections.
    #[arg(long, default_value_t = 40.0, value_name = "N")]
    pub ip_burst: f64,

    /// Strikes that get an IP banned (0 = never ban). A strike is earned by a message
    /// over the rate limit or a connection over the per-IP limits.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_strikes: u32,

    /// Seconds of good behaviour that wear off one strike.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub strike_decay: Duration,

    /// How long an IP ban lasts.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(with = "units::duration")]
    pub ban_time: Duration,

    /// Most bans held at once; at the cap the ban nearest to expiry is dropped to make
    /// room, so memory stays bounded under a flood of distinct addresses.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_bans: usize,

    /// Connections allowed at once from one IP (IPv6: one /64). 0 = unlimited.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_conns_per_ip: usize,

    /// New connections per second allowed from one IP (0 = unlimited).
    #[arg(long, default_value_t = 10.0, value_name = "PER_SEC")]
    pub connect_rate: f64,

    /// New connections one IP may open in a burst.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub connect_burst: f64,

    /// Exempt addresses from rate limits, per-IP caps and bans (repeatable), e.g.
    /// `127.0.0.0/8` for a load test from loopback.
    #[arg(long, value_name = "CIDR")]
    #[serde(with = "units::cidrs")]
    pub exempt: Vec<Cidr>,

    /// Never write an IP address to the log, at any level.
    #[arg(long)]
    pub redact_ips: bool,

    /// Install SIGINT/SIGTERM handlers (the binary does; in-process tests do not).
    #[arg(skip)]
    #[serde(skip)]
    pub handle_signals: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServerConfig,
        }
        // Parsing an empty command line cannot fail: every field has a default.
        match Wrapper::try_parse_from(["loopchat"]) {
            Ok(w) => w.config,
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_matches_documented_defaults() {
        let c = ServerConfig::default();
        assert_eq!(c.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.max_line, 4096);
        assert_eq!(c.max_output, 1 << 20);
        assert_eq!(c.max_output_soft, 256 << 10);
        assert_eq!(c.max_output_total, 256 << 20);
        assert_eq!(c.send_buffer, 64 << 10);
        assert_eq!(c.register_timeout, Duration::from_secs(60));
        assert_eq!(c.announce_limit, 1000);
        assert_eq!(c.max_strikes, 5);
        assert_eq!(c.ban_time, Duration::from_secs(600));
        assert_eq!(c.config_file, None);
    }
}
