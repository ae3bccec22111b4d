//! The server's settings: one struct, built from the command line by `clap`, with every
//! default documented where it is declared.
//!
//! This module owns parsing of durations (`500ms`, `60s`, `10m`, `2h`) and address
//! ranges used by flags. It does not own any behaviour: the server reads these values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::Cidr;

/// Everything `loopchat server` can be told. `ServerConfig::default()` gives the same
/// values as running the binary with no flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Also accept TLS connections on this address (needs `--tls-cert` and `--tls-key`).
    /// The protocol and text mode are the same inside the TLS stream.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,

    /// The TLS certificate chain, PEM, leaf first. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Serve TLS only: the plain listener (ADDR) is not opened.
    #[arg(long)]
    pub no_plain: bool,

    /// Accept browsers on this address: the built-in web page at `GET /` and WebSocket
    /// at `GET /ws` (one protocol line per text message).
    #[arg(long, value_name = "ADDR")]
    pub ws_listen: Option<SocketAddr>,

    /// The same over TLS (needs `--tls-cert` and `--tls-key`).
    #[arg(long, value_name = "ADDR")]
    pub wss_listen: Option<SocketAddr>,

    /// An origin allowed to open WebSockets besides the server's own host, e.g.
    /// `https://chat.example.org` (repeatable).
    #[arg(long = "ws-origin", value_name = "ORIGIN")]
    pub ws_origins: Vec<String>,

    /// Serve Prometheus metrics at `GET /metrics` on this address (HTTP, same loop).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// The history database (SQLite): a file path, or `none` to keep history in memory
    /// only (lost at exit).
    #[arg(long, default_value = "loopchat.db", value_name = "PATH")]
    pub db: String,

    /// Most time between two commits of room messages to the database (group commit):
    /// what a crash (SIGKILL, power loss) may lose at most.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, value_name = "DURATION")]
    pub db_flush: Duration,

    /// Messages of a room replayed to a member entering it (0 = no replay).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub history_replay: usize,

    /// How long room messages are kept; older ones are deleted in the background.
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DURATION")]
    pub history_retain: Duration,

    /// A server password: every connection must first send `PASS:<password>`. The
    /// file's content without its trailing newline; re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// An account that, logged in, is an operator (`KICK:`, `BAN:`). Repeatable.
    #[arg(long = "admin", value_name = "NAME")]
    pub admins: Vec<String>,

    /// Threads that hash and check passwords (Argon2id, 19 MiB each). 0 = one less
    /// than the cores, at least one, so the loop keeps a core.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub auth_threads: usize,

    /// Longest accepted line in bytes, not counting its line end. Longer lines get
    /// `ERROR:line too long` and are discarded through their newline.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    pub max_line: usize,

    /// Cap on one connection's pending output in bytes. A client that stops reading is
    /// closed (evicted) when its queue would grow past this; nobody else waits for it.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_output: usize,

    /// Soft cap on one connection's pending output in bytes: a queue that stays above
    /// it for `--slow-grace` is evicted. A burst that a reader drains at normal speed
    /// passes above it without harm.
    #[arg(long, default_value_t = 256 << 10, value_name = "BYTES")]
    pub max_output_soft: usize,

    /// How long a queue may stay above `--max-output-soft` before its connection is
    /// evicted as not reading.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub slow_grace: Duration,

    /// Budget for all connections' pending output together, in bytes: past it the
    /// largest queues are evicted first, so many slow readers cannot exhaust memory.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub max_output_total: usize,

    /// Kernel send buffer per connection (SO_SNDBUF) in bytes. Chat lines are small;
    /// 64 KiB holds hundreds of them and bounds what a reader that stops pins in the
    /// kernel (autotuning lets it pin about 4 MiB on loopback). 0 = kernel autotuning.
    #[arg(long, default_value_t = 64 << 10, value_name = "BYTES")]
    pub send_buffer: usize,

    /// Maximum number of clients. 0 derives it from the open-files limit, which the
    /// server first raises as far as the hard limit allows (keeping a reserve).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_clients: usize,

    /// A connection that sends no complete line within this window is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub register_timeout: Duration,

    /// Close connections silent for this long (0 = never).
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
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
    pub summary_interval: Duration,

    /// Write output at most once per this interval under sustained load, so each write
    /// carries more messages (fewer system calls, a little more latency). The first
    /// output after a quiet spell is never delayed. 0 = write every loop turn.
    #[arg(long, default_value = "5ms", value_parser = parse_duration, value_name = "DURATION")]
    pub coalesce: Duration,

    /// On shutdown (or LEAVE), how long to keep flushing output before closing anyway.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
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
    pub strike_decay: Duration,

    /// How long an IP ban lasts.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
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
    pub exempt: Vec<Cidr>,

    /// Never write an IP address to the log, at any level.
    #[arg(long)]
    pub redact_ips: bool,

    /// Install SIGINT/SIGTERM handlers (the binary does; in-process tests do not).
    #[arg(skip)]
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

/// Longest duration any flag holds: 10 years. Far beyond any useful timeout, rate
/// window or ban, and small enough that `Instant::now() + MAX_DURATION` (a deadline)
/// cannot overflow, which a value near `u64::MAX` seconds would, with a panic.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Parses `250ms`, `1.5s`, `60s`, `10m`, `2h`, `30d` or a bare number of seconds.
///
/// Longer values, up to numbers too large for an `f64`, are capped at
/// [`MAX_DURATION`] rather than refused: "practically forever" is a fair thing to ask
/// for. Negative numbers, exponents and other units are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 30s, 10m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    // Infinity (hundreds of digits) is huge, not invalid: it is capped below.
    if secs.is_nan() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    // Capped before converting: `Duration::from_secs_f64` panics past `u64::MAX` s.
    Ok(Duration::from_secs_f64(
        secs.min(MAX_DURATION.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn huge_bare_number_is_capped() {
        assert_eq!(parse_duration("10000000000000000000"), Ok(MAX_DURATION));
    }

    #[test]
    fn number_past_u64_seconds_is_capped() {
        assert_eq!(parse_duration("100000000000000000000"), Ok(MAX_DURATION));
    }

    #[test]
    fn huge_hours_are_capped() {
        assert_eq!(parse_duration("99999999999h"), Ok(MAX_DURATION));
    }

    #[test]
    fn number_too_large_for_f64_is_capped() {
        let digits = format!("1{}", "0".repeat(400));
        assert_eq!(parse_duration(&digits), Ok(MAX_DURATION));
    }

    #[test]
    fn durations_up_to_the_cap_are_kept() {
        assert_eq!(parse_duration("87600h"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("87599h"),
            Ok(MAX_DURATION - Duration::from_secs(3600))
        );
    }

    #[test]
    fn capped_duration_added_to_now_does_not_overflow() {
        let cap = parse_duration("10000000000000000000").unwrap();
        assert!(Instant::now().checked_add(cap).is_some());
        let _deadline = Instant::now() + cap;
    }

    #[test]
    fn exponent_is_refused() {
        assert!(parse_duration("1e30s").is_err());
        assert!(parse_duration("1e30").is_err());
    }

    #[test]
    fn negative_is_refused() {
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn nan_and_infinity_words_are_refused() {
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn empty_and_unit_only_are_refused() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration(".").is_err());
    }

    #[test]
    fn default_config_matches_documented_defaults() {
        let c = ServerConfig::default();
        assert_eq!(c.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.max_line, 4096);
        assert_eq!(c.max_output, 1 << 20);
        assert_eq!(c.register_timeout, Duration::from_secs(60));
        assert_eq!(c.announce_limit, 1000);
        assert_eq!(c.max_strikes, 5);
        assert_eq!(c.ban_time, Duration::from_secs(600));
    }
}
