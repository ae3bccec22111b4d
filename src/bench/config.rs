//! The harness's flags (`BenchArgs`, parsed by clap) and their checked form
//! (`BenchConfig`, what the phases read). Every rule about which combinations make sense
//! lives here, so a bad command line fails before a single socket is opened.
//!
//! Also owns the server addresses (`--addr`, repeatable: clients go round-robin over
//! them), the source-address list (`--source-ips 127.0.0.1-127.0.0.16`), the TLS set-up
//! (`--tls`, `--ca`, `--insecure`) and the capacity checks: open files and ephemeral
//! ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::client::transport::{TlsSetup, host_of};
use crate::config::parse_duration;

/// Flags of `loopchat bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    group(clap::ArgGroup::new("spawn").args(["spawn_server", "spawn_cluster"])),
    after_help = "\
Against loopchat, lift its abuse limits for a load test, e.g.
  loopchat server --rate 0 --connect-rate 0 --max-conns-per-ip 0 --max-strikes 0
or let the harness start one with those flags: loopchat bench --spawn-server ...
(or a Redis and N clustered servers: loopchat bench --spawn-cluster N ...).
Against an IRC daemon: --dialect irc, with its flood protection configured away."
)]
pub struct BenchArgs {
    /// What to do with reports instead of running a benchmark.
    #[command(subcommand)]
    pub tool: Option<super::cli::BenchTool>,

    /// Server address (host:port); with --ws, the server's --ws-listen address. Repeat
    /// it to spread the clients over several servers round-robin, every room's members
    /// over all of them (with one room, client i uses address i mod n).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub addr: Vec<String>,

    /// Connections to open (measured clients; --stalled ones come on top).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub clients: usize,

    /// Rooms the clients are spread over evenly (client i joins room i mod R).
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub rooms: usize,

    /// Clients that send during the steady phase, spread evenly over the rooms
    /// [default: 10, or --clients if fewer].
    #[arg(long, value_name = "S")]
    pub senders: Option<usize>,

    /// Messages per second per sender.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "PER_SEC",
        conflicts_with = "total_rate"
    )]
    pub rate: f64,

    /// Messages per second over all senders (instead of --rate).
    #[arg(long, value_name = "PER_SEC")]
    pub total_rate: Option<f64>,

    /// Size of each message text in bytes (at least the ~40-byte marker that carries
    /// sender, sequence number and send time).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,

    /// Length of the steady-load phase (0 skips it).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Hold the joined connections this long before the load, sampling server memory.
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub idle: Duration,

    /// Longest wait for outstanding deliveries after the last message is sent.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// Longest the connect phase, and then the join phase, may take.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub phase_timeout: Duration,

    /// Connects (with their TLS handshakes) and joins in flight at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub concurrency: usize,

    /// Local source addresses to spread connections over: `auto` (127.0.0.1-127.0.0.16
    /// when the server is on IPv4 loopback, else the kernel's choice), `none`, a range
    /// `127.0.0.1-127.0.0.16`, or a comma-separated list.
    #[arg(long, default_value = "auto", value_name = "IPS")]
    pub source_ips: String,

    /// Event-loop threads in the harness (clients are split between them).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// `frames`: JOIN:/SAY:: in, SAY:<from>:<text> out (loopchat, tcp-chat). `lines`:
    /// plain text lines both ways, for other line-based chat servers. `irc`: NICK/USER,
    /// JOIN #room, PRIVMSG #room, PING answered, for IRC daemons.
    #[arg(long, value_enum, default_value_t = BenchDialect::Frames)]
    pub dialect: BenchDialect,

    /// In `lines` mode, a first line sent on each connection; `%d` becomes the client's
    /// index (e.g. `/nick u%d`).
    #[arg(long, value_name = "TEXT")]
    pub hello: Option<String>,

    /// In `lines` mode, how long to wait after the hello lines before sending (there is
    /// no join reply to wait for).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub settle: Duration,

    /// Extra clients that join and then never read: the server should evict them at
    /// its output cap while the others go on (reported, not measured).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stalled: usize,

    /// The server's process id, to report its memory (VmRSS) and CPU time from /proc.
    /// Repeat it for several servers: their memory and CPU are added up.
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub server_pid: Vec<u32>,

    /// The Redis server's process id (a cluster's backplane), to report its CPU time
    /// per message from /proc.
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub redis_pid: Option<u32>,

    /// Start `loopchat server` (this executable) on a free loopback port with abuse
    /// limits lifted, measure it, and stop it at the end.
    #[arg(long, conflicts_with = "addr")]
    pub spawn_server: bool,

    /// Start a `redis-server` (no persistence) and N `loopchat server --cluster` nodes
    /// on free loopback ports, as --spawn-server does one; spread the clients over the
    /// nodes, report Redis's CPU per message, and stop everything at the end.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "addr",
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub spawn_cluster: Option<u16>,

    /// Extra flag for the spawned server or nodes (repeatable), e.g.
    /// `--server-arg=--max-output=65536`.
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "spawn"
    )]
    pub server_arg: Vec<String>,

    /// Where the spawned server's log goes (default: a temporary file, removed after the
    /// run; its summary lines give the write syscalls per delivery). A cluster's node K
    /// logs to FILE.nodeK and Redis to FILE.redis.
    #[arg(long, value_name = "FILE", requires = "spawn")]
    pub server_log: Option<std::path::PathBuf>,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,

    /// Also write the latency distribution in HdrHistogram's percentile format (.hgrm,
    /// milliseconds) to this file; with --repeat, of all runs' deliveries together.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<std::path::PathBuf>,

    /// Run the benchmark N times (with --spawn-server, each against a fresh server) and
    /// report every figure as median and min-max over the runs.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,

    /// The server's name in the report, the plot legend and comparisons [default:
    /// `loopchat` with --spawn-server, else the --server-pid's program name, else the
    /// address].
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,

    /// Connect over TLS (each client's handshake runs in the harness's own loop) and
    /// report handshakes per second and handshake latency. The server's certificate is
    /// verified for the host part of --addr against the system's roots or --ca. With
    /// --spawn-server, the server gets a fresh self-signed certificate on a TLS port of
    /// its own, and the harness trusts that certificate.
    #[arg(long)]
    pub tls: bool,

    /// With --tls: trust the certificates in this PEM file instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with = "spawn")]
    pub ca: Option<std::path::PathBuf>,

    /// With --tls: do not verify the server's certificate (testing only).
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    pub insecure: bool,

    /// Connect as browsers do: an HTTP upgrade to WebSocket on `GET /ws` of the
    /// server's --ws-listen address, then one masked text frame per protocol line
    /// (frames dialect). With --tls, WebSocket over TLS (--wss-listen). With
    /// --spawn-server or --spawn-cluster, the servers get a browser listener.
    #[arg(long)]
    pub ws: bool,
}

impl Default for BenchArgs {
    /// The flags as parsed from an empty command line.
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BenchArgs,
        }
        // Parsing an empty command line cannot fail: every field has a default.
        match Wrapper::try_parse_from(["loopchat"]) {
            Ok(w) => w.args,
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }
}

/// The ways the harness can talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDialect {
    /// loopchat's protocol frames.
    Frames,
    /// Plain text lines.
    Lines,
    /// IRC (RFC 2812 client commands).
    Irc,
}

impl BenchDialect {
    /// The flag value, for the report.
    pub fn as_str(self) -> &'static str {
        match self {
            BenchDialect::Frames => "frames",
            BenchDialect::Lines => "lines",
            BenchDialect::Irc => "irc",
        }
    }
}

/// A checked run description. Build it with [`BenchConfig::from_args`] or fill it in
/// directly (tests and `benches/load.rs` do).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Server addresses (at least one); see [`BenchConfig::addr_of`].
    pub addrs: Vec<SocketAddr>,
    /// Measured clients.
    pub clients: usize,
    /// Rooms (1 in `lines` mode).
    pub rooms: usize,
    /// Senders among the clients.
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: f64,
    /// Message text length in bytes.
    pub payload: usize,
    /// Steady-phase length.
    pub duration: Duration,
    /// Idle-phase length (0: none).
    pub idle: Duration,
    /// Drain bound.
    pub drain_timeout: Duration,
    /// Connect and join phase bound.
    pub phase_timeout: Duration,
    /// Connects/joins in flight.
    pub concurrency: usize,
    /// Source addresses (empty: the kernel chooses).
    pub source_ips: Vec<IpAddr>,
    /// Harness threads.
    pub threads: usize,
    /// Protocol.
    pub dialect: BenchDialect,
    /// `lines` mode first line (`%d` = client index).
    pub hello: Option<String>,
    /// `lines` mode settle time after the hello lines.
    pub settle: Duration,
    /// Clients that never read.
    pub stalled: usize,
    /// Server pids for /proc sampling (several servers' figures are added up).
    pub server_pids: Vec<u32>,
    /// The Redis backplane's pid for /proc sampling.
    pub redis_pid: Option<u32>,
    /// Show a progress line on stderr (only honoured when stderr is a terminal).
    pub progress: bool,
    /// Set (e.g. by a Ctrl-C handler) to cut the run short with a partial report.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Speak TLS: whom to trust and the name to verify (`None`: plain TCP).
    pub tls: Option<TlsSetup>,
    /// Speak WebSocket (`GET /ws`, one text frame per line) inside the stream.
    pub ws: bool,
}

impl BenchConfig {
    /// A small run against `addr` with the CLI's defaults (100 clients, 1 room, 10
    /// senders at 10 msg/s, 64-byte texts, 10 s), to adjust field by field. The values
    /// come from [`BenchArgs`]' own defaults, so the two cannot drift apart.
    pub fn new(addr: SocketAddr) -> BenchConfig {
        match BenchConfig::from_args(&BenchArgs::default(), Some(addr)) {
            Ok(c) => BenchConfig {
                progress: false,
                ..c
            },
            // The defaults are valid for any address: `auto` source addresses match it.
            Err(e) => unreachable!("the default flags must be valid: {e}"),
        }
    }

    /// Checks the flags and resolves the addresses. `addr` overrides `--addr` (used when
    /// the harness spawned the server itself).
    pub fn from_args(args: &BenchArgs, addr: Option<SocketAddr>) -> Result<BenchConfig, String> {
        let addrs = match addr {
            Some(a) => vec![a],
            None => args
                .addr
                .iter()
                .map(|a| resolve(a))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let Some(&addr) = addrs.first() else {
            return Err("--addr: at least one server address is needed".into());
        };
        let senders = args.senders.unwrap_or(args.clients.min(10));
        let rate = match args.total_rate {
            Some(total) => {
                if senders == 0 {
                    return Err("--total-rate needs at least one sender (--senders)".into());
                }
                total / senders as f64
            }
            None => args.rate,
        };
        let source_ips = parse_source_ips(&args.source_ips, addr)?;
        // A spawned server's certificate does not exist yet: `bench::run` sets it up.
        let spawned = args.spawn_server || args.spawn_cluster.is_some();
        let tls = if args.tls && !spawned {
            let host = args.addr.first().map_or("", |a| host_of(a));
            if args.addr.iter().any(|a| host_of(a) != host) {
                return Err(
                    "--tls verifies one name: give every --addr the same host (the ports may differ)"
                        .into(),
                );
            }
            Some(tls_setup(host, args.ca.as_deref(), args.insecure)?)
        } else {
            None
        };
        let config = BenchConfig {
            addrs,
            clients: args.clients,
            rooms: args.rooms,
            senders,
            rate,
            payload: args.payload,
            duration: args.duration,
            idle: args.idle,
            drain_timeout: args.drain_timeout,
            phase_timeout: args.phase_timeout,
            concurrency: args.concurrency,
            source_ips,
            threads: args.threads,
            dialect: args.dialect,
            hello: args.hello.clone(),
            settle: args.settle,
            stalled: args.stalled,
            server_pids: args.server_pid.clone(),
            redis_pid: args.redis_pid,
            progress: true,
            interrupt: None,
            tls,
            ws: args.ws,
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects combinations that cannot run; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.clients > 1_000_000 {
            return Err("--clients is limited to 1000000".into());
        }
        if self.rooms == 0 {
            return Err("--rooms must be at least 1".into());
        }
        if self.rooms > self.clients {
            return Err(format!(
                "--rooms {} is more than --clients {}: some rooms would be empty",
                self.rooms, self.clients
            ));
        }
        if self.addrs.is_empty() {
            return Err("--addr: at least one server address is needed".into());
        }
        if self.ws && self.dialect != BenchDialect::Frames {
            return Err(
                "--ws speaks loopchat's frames dialect (one line per text frame): \
                 use --dialect frames"
                    .into(),
            );
        }
        if self.dialect == BenchDialect::Lines && self.rooms != 1 {
            return Err("--dialect lines has no rooms: use --rooms 1".into());
        }
        if self.dialect != BenchDialect::Lines && self.hello.is_some() {
            return Err(
                "--hello is for --dialect lines (frames and irc join by themselves)".into(),
            );
        }
        if self.dialect == BenchDialect::Irc && self.payload > super::irc::MAX_PAYLOAD {
            return Err(format!(
                "--payload is limited to {} bytes with --dialect irc (512-byte IRC lines)",
                super::irc::MAX_PAYLOAD
            ));
        }
        if self.senders > self.clients {
            return Err(format!(
                "--senders {} is more than --clients {}",
                self.senders, self.clients
            ));
        }
        let sending = self.senders > 0 && !self.duration.is_zero();
        if sending && !(self.rate.is_finite() && self.rate > 0.0) {
            return Err("--rate (or --total-rate) must be a positive number".into());
        }
        if sending && self.rate * self.senders as f64 > 10_000_000.0 {
            return Err("total message rate is limited to 10000000 per second".into());
        }
        if self.payload == 0 || self.payload > 1 << 20 {
            return Err("--payload must be between 1 and 1048576 bytes".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.threads == 0 || self.threads > 64 {
            return Err("--threads must be between 1 and 64".into());
        }
        if self.threads > self.clients + self.stalled {
            return Err("--threads is more than the number of connections".into());
        }
        if let Some(h) = &self.hello
            && (h.contains('\n') || h.contains('\r'))
        {
            return Err("--hello must be a single line".into());
        }
        for ip in &self.source_ips {
            for addr in &self.addrs {
                if ip.is_ipv4() != addr.is_ipv4() {
                    return Err(format!(
                        "source address {ip} and server address {addr} are of different IP \
                         versions"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The server address client `id` connects to: round-robin over the addresses,
    /// room by room. Client `id` is member `id / rooms` of room `id % rooms` and takes
    /// address `(member + room) mod n`, so every room's members (and its senders) go
    /// round the servers in turn whatever the number of rooms: plain `id mod n` would
    /// put every room on one server when the rooms are a multiple of the servers. With
    /// one room it is `id mod n`.
    pub fn addr_of(&self, id: usize) -> SocketAddr {
        let rooms = self.rooms.max(1);
        self.addrs[(id / rooms + id % rooms) % self.addrs.len()]
    }

    /// Each address with the number of connections (stalled ones included) it gets.
    pub fn spread(&self) -> Vec<(SocketAddr, usize)> {
        let mut counts = vec![0; self.addrs.len()];
        let rooms = self.rooms.max(1);
        for id in 0..self.connections() {
            counts[(id / rooms + id % rooms) % self.addrs.len()] += 1;
        }
        self.addrs.iter().copied().zip(counts).collect()
    }

    /// The addresses as one text, for reports and messages.
    pub fn addrs_text(&self) -> String {
        let shown: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        shown.join(", ")
    }

    /// All connections: measured clients plus stalled ones.
    pub fn connections(&self) -> usize {
        self.clients + self.stalled
    }

    /// Open files the run needs: the sockets, one epoll and one waker per thread, and a
    /// reserve for stdio, /proc reads, the JSON file and the spawned server's pipes.
    pub fn files_needed(&self) -> u64 {
        (self.connections() + 2 * self.threads + 32) as u64
    }
}

/// `auto` for a server on IPv4 loopback: 16 source addresses give 16× the ephemeral
/// ports of one, and Linux answers on all of 127.0.0.0/8.
pub fn default_source_ips(addr: SocketAddr) -> Vec<IpAddr> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() && cfg!(target_os = "linux") => (1..=16)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The TLS set-up for a server called `host`: trust `ca` (a PEM file) or the system's
/// roots, or, with `insecure`, nothing.
pub fn tls_setup(host: &str, ca: Option<&Path>, insecure: bool) -> Result<TlsSetup, String> {
    let config = crate::tls::client_config(ca, insecure).map_err(|e| format!("--tls: {e}"))?;
    let name = crate::tls::server_name(host).map_err(|e| format!("--tls: {e}"))?;
    Ok(TlsSetup { config, name })
}

/// Resolves `host:port` to its first address.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    match addr.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("--addr {addr:?} resolves to no address")),
        Err(e) => Err(format!("--addr {addr:?}: {e} (expected host:port)")),
    }
}

/// Parses `auto`, `none`, `a.b.c.d-a.b.c.e` (IPv4 range), or a comma-separated list.
pub fn parse_source_ips(spec: &str, server: SocketAddr) -> Result<Vec<IpAddr>, String> {
    let spec = spec.trim();
    match spec {
        "auto" => return Ok(default_source_ips(server)),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    let mut ips = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            let bad = || format!("--source-ips: {part:?} is not a range like 127.0.0.1-127.0.0.16");
            let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                return Err(format!("--source-ips: range {part:?} runs backwards"));
            }
            if b - a >= 65_536 {
                return Err(format!("--source-ips: range {part:?} is too large"));
            }
            ips.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            let ip: IpAddr = part
                .parse()
                .map_err(|_| format!("--source-ips: {part:?} is not an IP address"))?;
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), or Linux's
/// default when it cannot be read.
pub fn ephemeral_ports() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Checks that the connections fit in the open-files limit (after raising it) and in
/// the source addresses' ephemeral ports; the error says what to change.
pub fn check_capacity(config: &BenchConfig, nofile: u64) -> Result<(), String> {
    let need = config.files_needed();
    if need > nofile {
        let most = nofile.saturating_sub(need - config.connections() as u64);
        return Err(format!(
            "{} connections cannot fit: they need about {need} open files and the limit is \
             {nofile} (already raised to the hard limit). Use at most {most} connections, or \
             raise the hard limit (ulimit -Hn, /etc/security/limits.conf)",
            config.connections()
        ));
    }
    let (lo, hi) = ephemeral_ports();
    let ports = u64::from(hi.saturating_sub(lo) + 1);
    let addrs = config.source_ips.len().max(1) as u64;
    if config.connections() as u64 > ports * addrs {
        return Err(format!(
            "{} connections cannot fit in {addrs} source address(es) x {ports} ephemeral \
             ports (ip_local_port_range {lo}-{hi}); spread them with e.g. --source-ips \
             127.0.0.1-127.0.0.16",
            config.connections()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn source_ip_ranges_and_lists_parse() {
        let ips = parse_source_ips("127.0.0.1-127.0.0.4", server()).unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[3], "127.0.0.4".parse::<IpAddr>().unwrap());
        let ips = parse_source_ips("127.0.0.2, 127.0.0.9", server()).unwrap();
        assert_eq!(ips.len(), 2);
        assert_eq!(parse_source_ips("auto", server()).unwrap().len(), 16);
        assert!(parse_source_ips("none", server()).unwrap().is_empty());
        assert!(parse_source_ips("127.0.0.5-127.0.0.1", server()).is_err());
        assert!(parse_source_ips("nope", server()).is_err());
    }

    #[test]
    fn new_takes_the_flags_defaults() {
        let c = BenchConfig::new(server());
        assert_eq!((c.clients, c.rooms, c.senders, c.payload), (100, 1, 10, 64));
        assert_eq!(c.rate, 10.0);
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.source_ips.len(), 16);
        assert!(!c.progress && c.interrupt.is_none());
    }

    #[test]
    fn validation_names_the_flag() {
        let mut c = BenchConfig::new(server());
        assert!(c.validate().is_ok());
        c.senders = 500;
        assert!(c.validate().unwrap_err().contains("--senders"));
        c.senders = 1;
        c.rate = 0.0;
        assert!(c.validate().unwrap_err().contains("--rate"));
        c.rate = 1.0;
        c.dialect = BenchDialect::Lines;
        c.rooms = 2;
        assert!(c.validate().unwrap_err().contains("--rooms"));
    }

    #[test]
    fn clients_go_round_robin_over_the_addresses() {
        let mut c = BenchConfig::new(server());
        let other: SocketAddr = "127.0.0.1:10".parse().unwrap();
        c.addrs.push(other);
        c.clients = 5;
        c.senders = 2;
        c.stalled = 2;
        assert_eq!(c.addr_of(0), server());
        assert_eq!(c.addr_of(1), other);
        assert_eq!(c.addr_of(6), server());
        assert_eq!(c.spread(), [(server(), 4), (other, 3)]);
        // Two rooms on two servers: each room still has members on both.
        c.rooms = 2;
        let on = |id| c.addr_of(id);
        assert_eq!([on(0), on(2), on(4)], [server(), other, server()]);
        assert_eq!([on(1), on(3), on(5)], [other, server(), other]);
        assert_eq!(c.spread(), [(server(), 3), (other, 4)]);
        assert_eq!(c.addrs_text(), "127.0.0.1:9, 127.0.0.1:10");
        c.addrs.push("[::1]:9".parse().unwrap());
        assert!(c.validate().unwrap_err().contains("IP versions"));
        c.addrs.clear();
        assert!(c.validate().unwrap_err().contains("--addr"));
    }

    #[test]
    fn repeated_flags_parse_and_ws_needs_frames() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BenchArgs,
        }
        let parse = |line: &[&str]| {
            Wrapper::try_parse_from(std::iter::once("bench").chain(line.iter().copied()))
                .map(|w| w.args)
        };
        let a = parse(&["--addr", "127.0.0.1:1", "--addr", "127.0.0.1:2"]).unwrap();
        let c = BenchConfig::from_args(&a, None).unwrap();
        assert_eq!(c.addrs.len(), 2);
        assert_eq!(parse(&[]).unwrap().addr, ["127.0.0.1:8080"]);
        let a = parse(&["--server-pid", "1", "--server-pid", "2"]).unwrap();
        assert_eq!(a.server_pid, [1, 2]);
        let a = parse(&["--ws", "--dialect", "irc"]).unwrap();
        let e = BenchConfig::from_args(&a, None).unwrap_err();
        assert!(e.contains("--ws"), "{e}");
        assert!(parse(&["--spawn-cluster", "2", "--spawn-server"]).is_err());
        assert!(parse(&["--spawn-cluster", "2", "--addr", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--spawn-cluster", "0"]).is_err());
        assert!(parse(&["--server-arg=--coalesce=0"]).is_err());
        let a = parse(&["--spawn-cluster", "3", "--server-arg=--coalesce=0"]).unwrap();
        assert_eq!(a.spawn_cluster, Some(3));
    }

    #[test]
    fn capacity_check_explains_the_open_files_limit() {
        let mut c = BenchConfig::new(server());
        c.clients = 50_000;
        let e = check_capacity(&c, 20_000).unwrap_err();
        assert!(e.contains("cannot fit"), "{e}");
        assert!(e.contains("20000"), "{e}");
        c.clients = 1000;
        assert!(check_capacity(&c, 20_000).is_ok());
    }
}
