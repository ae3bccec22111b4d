//! The result of a run: one plain struct ([`Report`]) that tests assert on, printed as a
//! table for people ([`Report`]'s `Display`) and as JSON for machines
//! ([`Report::to_json`], through the small writer and reader in [`json`]), and its
//! latency distribution in HdrHistogram's text format ([`hgrm`]).
//!
//! The JSON carries, besides every field of the struct, the latency at fixed
//! percentiles ([`percentiles`], what `loopchat bench plot` draws) and the headline
//! [`figures`](crate::bench::repeat::FIGURES) under their keys (what `loopchat bench
//! compare` compares).

pub mod hgrm;
pub mod json;

use std::fmt;

use hdrhistogram::Histogram;
use json::Json;

/// Ten steps of 1/(1-p) per decade, in hundredths: about evenly spaced on a log axis
/// (the R10 series), each with a percentile that is a short exact decimal (6.4 gives
/// 84.375 %).
const STEPS: [u64; 10] = [100, 125, 160, 200, 250, 320, 400, 500, 640, 800];

/// The percentiles (in percent) at which the JSON report gives the latency: 48 from
/// 50 % to 99.999 %, evenly spaced on the plot's log axis of 1/(1-p), and among them
/// 50, 90, 95, 98, 99, 99.5, 99.9 … 99.999.
pub fn percentiles() -> Vec<f64> {
    let mut out = Vec::with_capacity(48);
    for decade in 0..5 {
        for step in STEPS {
            // Whole numbers divided once: x is exact, and so is 100 / x.
            let x = (step * 10u64.pow(decade)) as f64 / 100.0;
            if x >= 2.0 {
                out.push(100.0 - 100.0 / x);
            }
        }
    }
    out.push(99.999);
    out
}

/// The latency at each of [`percentiles`] in milliseconds, from a histogram of
/// microseconds; empty if it is empty.
pub fn percentiles_ms(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    percentiles()
        .into_iter()
        .map(|p| (p, hist.value_at_quantile(p / 100.0) as f64 / 1000.0))
        .collect()
}

/// Latency percentiles in microseconds, from an HdrHistogram (3 significant digits):
/// of delivered messages, or of TLS handshakes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Deliveries (or handshakes) measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of a histogram in microseconds; `None` if it is empty.
    pub fn of(hist: &Histogram<u64>) -> Option<Latency> {
        if hist.is_empty() {
            return None;
        }
        Some(Latency {
            count: hist.len(),
            mean_us: hist.mean(),
            p50_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
        })
    }
}

/// What `/proc` said about the server process (or processes, added up: a cluster's
/// nodes, or several `--server-pid`s).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStats {
    /// Their process ids (at least one).
    pub pids: Vec<u32>,
    /// Resident memory before the first connect, bytes.
    pub rss_before: Option<u64>,
    /// Resident memory with every client joined (after the idle phase, if any), bytes.
    pub rss_joined: Option<u64>,
    /// Resident memory after the load and drain, bytes.
    pub rss_after: Option<u64>,
    /// (rss_joined - rss_before) / joined connections, bytes.
    pub rss_per_conn: Option<f64>,
    /// CPU seconds (user + system) over the whole run.
    pub cpu_secs: Option<f64>,
    /// CPU seconds during the steady and drain phases.
    pub cpu_load_secs: Option<f64>,
    /// Whether the process still ran at the end.
    pub alive_at_end: bool,
    /// Write syscalls per delivery, from a spawned loopchat's summary log lines.
    pub writes_per_delivery: Option<f64>,
}

/// What `/proc` said about a cluster's Redis (`--spawn-cluster` or `--redis-pid`).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStats {
    /// Its process id.
    pub pid: u32,
    /// Resident memory after the load and drain, bytes.
    pub rss_after: Option<u64>,
    /// CPU seconds (user + system) over the whole run.
    pub cpu_secs: Option<f64>,
    /// CPU seconds during the steady and drain phases.
    pub cpu_load_secs: Option<f64>,
    /// CPU microseconds during the load per message sent.
    pub cpu_us_per_sent: Option<f64>,
    /// CPU microseconds during the load per delivery received.
    pub cpu_us_per_delivery: Option<f64>,
    /// Whether the process still ran at the end.
    pub alive_at_end: bool,
}

impl RedisStats {
    /// The per-message figures from the CPU during the load and the counts.
    pub fn per_message(&mut self, sent: u64, received: u64) {
        let per = |n: u64| {
            self.cpu_load_secs
                .filter(|_| n > 0)
                .map(|s| s * 1e6 / n as f64)
        };
        self.cpu_us_per_sent = per(sent);
        self.cpu_us_per_delivery = per(received);
    }
}

/// Everything a run measured. Counts cover the measured clients; `--stalled` clients
/// appear only in `stalled` and `stalled_evicted`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Server address (several: comma-separated).
    pub addr: String,
    /// Each server address with the connections it was given (round-robin).
    pub addrs: Vec<(String, usize)>,
    /// The server's name for legends and comparisons (`--label`; the address unless the
    /// command line knows better).
    pub label: String,
    /// `frames` or `lines`.
    pub dialect: &'static str,
    /// Measured clients asked for.
    pub clients: usize,
    /// Non-reading clients asked for.
    pub stalled: usize,
    /// Rooms.
    pub rooms: usize,
    /// Senders.
    pub senders: usize,
    /// Messages per second per sender.
    pub rate_per_sender: f64,
    /// Message text bytes.
    pub payload: usize,
    /// Harness threads.
    pub threads: usize,
    /// Source addresses used (0: the kernel's choice).
    pub source_ips: usize,
    /// Whether the clients spoke TLS.
    pub tls: bool,
    /// Whether the clients spoke WebSocket (`--ws`).
    pub ws: bool,

    /// Connections established (stalled ones included).
    pub established: u64,
    /// Connections that failed or timed out.
    pub connect_failed: u64,
    /// Connections that joined (stalled ones included).
    pub joined: u64,
    /// Connections that could not join.
    pub join_failed: u64,
    /// Measured connections the server closed after they joined.
    pub closed_by_server: u64,
    /// Why connections failed or closed, with counts, most frequent first.
    pub failures: Vec<(String, u64)>,
    /// `ERROR:` lines received.
    pub server_errors: u64,
    /// The first few distinct `ERROR:` lines.
    pub server_error_samples: Vec<String>,

    /// TLS handshakes and/or WebSocket upgrades completed (a connection that does
    /// both counts once).
    pub handshakes: u64,
    /// Handshakes completed per second of the connect phase (which, over TLS or
    /// WebSocket, ends when the last handshake does).
    pub handshakes_per_sec: f64,
    /// Time from a connect's start to the end of its TLS handshake and WebSocket
    /// upgrade (None without either).
    pub handshake_latency: Option<Latency>,

    /// Connect phase, seconds.
    pub connect_secs: f64,
    /// Join phase, seconds.
    pub join_secs: f64,
    /// Idle phase, seconds.
    pub idle_secs: f64,
    /// Steady phase, seconds.
    pub steady_secs: f64,
    /// Drain phase, seconds.
    pub drain_secs: f64,

    /// Messages sent.
    pub sent: u64,
    /// Messages not sent because the sender's connection was gone or its output backed up.
    pub send_skipped: u64,
    /// Deliveries expected: for each message, its room's joined members minus the sender.
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    /// expected - received.
    pub lost: u64,
    /// Copies of a delivery already received.
    pub duplicated: u64,
    /// Deliveries that arrived after a later one from the same sender.
    pub out_of_order: u64,
    /// Deliveries to a client outside the sender's room.
    pub misrouted: u64,
    /// A sender's own messages sent back to it.
    pub echoes: u64,
    /// Distinct deliveries per second, from the start of the load to the last delivery.
    pub deliveries_per_sec: f64,
    /// Latency of distinct deliveries (None if there were none).
    pub latency: Option<Latency>,
    /// The latency histogram itself, microseconds (None if nothing was delivered).
    pub histogram: Option<Histogram<u64>>,

    /// Non-reading clients that the server closed.
    pub stalled_evicted: u64,
    /// The server process, when its pid was known.
    pub server: Option<ServerStats>,
    /// The cluster's Redis, when its pid was known.
    pub redis: Option<RedisStats>,
    /// CPU seconds the harness itself used.
    pub harness_cpu_secs: f64,
    /// Why the run is not clean; empty means exit status 0.
    pub problems: Vec<String>,
}

impl Report {
    /// Whether the run was clean: everyone connected and joined, nothing lost,
    /// duplicated, reordered or misrouted, and no phase was cut short.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// What was run against whom, in one line: the table's heading.
    pub fn scenario(&self) -> String {
        let who = if self.label.is_empty() || self.label == self.addr {
            self.addr.clone()
        } else {
            format!("{} at {}", self.label, self.addr)
        };
        format!(
            "{who} ({}{}), {} clients{} in {} room(s), {}, {} thread(s), {} source address(es)",
            self.dialect,
            self.transport(),
            self.clients,
            if self.stalled > 0 {
                format!(" + {} stalled", self.stalled)
            } else {
                String::new()
            },
            self.rooms,
            if self.senders > 0 && self.steady_secs > 0.0 {
                format!(
                    "{} sender(s) x {:.1} msg/s, {}-byte texts",
                    self.senders, self.rate_per_sender, self.payload
                )
            } else {
                "no message load".to_string()
            },
            self.threads,
            self.source_ips,
        )
    }

    /// What the lines travel in, as words after the dialect: empty for plain TCP.
    pub fn transport(&self) -> &'static str {
        match (self.ws, self.tls) {
            (false, false) => "",
            (false, true) => " over TLS",
            (true, false) => " over WebSocket",
            (true, true) => " over WebSocket over TLS",
        }
    }

    /// What a handshake is in this run, for the table.
    fn handshake_kind(&self) -> &'static str {
        match (self.ws, self.tls) {
            (true, true) => "TLS handshakes + WebSocket upgrades",
            (true, false) => "WebSocket upgrades",
            _ => "TLS handshakes",
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let mut j = Json::default();
        j.open();
        j.str("addr", &self.addr);
        j.key("addrs");
        let shown: Vec<String> = self.addrs.iter().map(|(a, _)| a.clone()).collect();
        j.list(&shown);
        j.key("addr_connections");
        let counts: Vec<f64> = self.addrs.iter().map(|&(_, n)| n as f64).collect();
        j.numbers(&counts);
        j.num("servers", self.addrs.len().max(1) as f64);
        j.str("label", &self.label);
        j.str("dialect", self.dialect);
        j.num("clients", self.clients as f64);
        j.num("stalled", self.stalled as f64);
        j.num("rooms", self.rooms as f64);
        j.num("senders", self.senders as f64);
        j.num("rate_per_sender", self.rate_per_sender);
        j.num("payload", self.payload as f64);
        j.num("threads", self.threads as f64);
        j.num("source_ips", self.source_ips as f64);
        j.key("tls");
        j.raw(if self.tls { "true" } else { "false" });
        j.key("ws");
        j.raw(if self.ws { "true" } else { "false" });
        j.num("established", self.established as f64);
        j.num("connect_failed", self.connect_failed as f64);
        j.num("joined", self.joined as f64);
        j.num("join_failed", self.join_failed as f64);
        j.num("closed_by_server", self.closed_by_server as f64);
        j.key("failures");
        j.open();
        for (reason, n) in &self.failures {
            j.num(reason, *n as f64);
        }
        j.close();
        j.num("server_errors", self.server_errors as f64);
        j.key("server_error_samples");
        j.list(&self.server_error_samples);
        j.num("handshakes", self.handshakes as f64);
        j.num("handshakes_per_sec", self.handshakes_per_sec);
        j.key("handshake_us");
        j.latency(self.handshake_latency.as_ref());
        j.num("connect_secs", self.connect_secs);
        j.num("join_secs", self.join_secs);
        j.num("idle_secs", self.idle_secs);
        j.num("steady_secs", self.steady_secs);
        j.num("drain_secs", self.drain_secs);
        j.num("sent", self.sent as f64);
        j.num("send_skipped", self.send_skipped as f64);
        j.num("expected", self.expected as f64);
        j.num("received", self.received as f64);
        j.num("lost", self.lost as f64);
        j.num("duplicated", self.duplicated as f64);
        j.num("out_of_order", self.out_of_order as f64);
        j.num("misrouted", self.misrouted as f64);
        j.num("echoes", self.echoes as f64);
        j.num("deliveries_per_sec", self.deliveries_per_sec);
        j.key("latency_us");
        j.latency(self.latency.as_ref());
        j.key("percentiles");
        let percentiles = self.histogram.as_ref().map(percentiles_ms);
        j.pairs(percentiles.as_deref().unwrap_or_default());
        j.key("figures");
        j.open();
        for f in &crate::bench::repeat::FIGURES {
            if let Some(v) = (f.get)(self) {
                j.num(f.key, v);
            }
        }
        j.close();
        j.num("stalled_evicted", self.stalled_evicted as f64);
        j.key("server");
        match &self.server {
            Some(s) => {
                j.open();
                j.num("pid", s.pids.first().map_or(0.0, |&p| f64::from(p)));
                j.key("pids");
                let pids: Vec<f64> = s.pids.iter().map(|&p| f64::from(p)).collect();
                j.numbers(&pids);
                j.opt("rss_before", s.rss_before.map(|v| v as f64));
                j.opt("rss_joined", s.rss_joined.map(|v| v as f64));
                j.opt("rss_after", s.rss_after.map(|v| v as f64));
                j.opt("rss_per_conn", s.rss_per_conn);
                j.opt("cpu_secs", s.cpu_secs);
                j.opt("cpu_load_secs", s.cpu_load_secs);
                j.opt("writes_per_delivery", s.writes_per_delivery);
                j.key("alive_at_end");
                j.raw(if s.alive_at_end { "true" } else { "false" });
                j.close();
            }
            None => j.null(),
        }
        j.key("redis");
        match &self.redis {
            Some(r) => {
                j.open();
                j.num("pid", f64::from(r.pid));
                j.opt("rss_after", r.rss_after.map(|v| v as f64));
                j.opt("cpu_secs", r.cpu_secs);
                j.opt("cpu_load_secs", r.cpu_load_secs);
                j.opt("cpu_us_per_sent", r.cpu_us_per_sent);
                j.opt("cpu_us_per_delivery", r.cpu_us_per_delivery);
                j.key("alive_at_end");
                j.raw(if r.alive_at_end { "true" } else { "false" });
                j.close();
            }
            None => j.null(),
        }
        j.num("harness_cpu_secs", self.harness_cpu_secs);
        j.key("ok");
        j.raw(if self.ok() { "true" } else { "false" });
        j.key("problems");
        j.list(&self.problems);
        j.close();
        j.out.push('\n');
        j.out
    }
}

/// Formats a byte count as KiB/MiB/GiB.
fn bytes(v: f64) -> String {
    let a = v.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", v / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

/// Formats microseconds as milliseconds.
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn opt_bytes(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| bytes(v as f64))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<14}{v}");
        writeln!(f, "loopchat bench: {}", self.scenario())?;
        if self.addrs.len() > 1 {
            let each: Vec<String> = self
                .addrs
                .iter()
                .map(|(a, n)| format!("{a} ({n})"))
                .collect();
            row(
                f,
                "servers",
                format!(
                    "{} addresses, connections round-robin: {}",
                    self.addrs.len(),
                    each.join(", ")
                ),
            )?;
        }
        let total = self.clients + self.stalled;
        row(
            f,
            "connections",
            format!(
                "{}/{total} established, {} failed; {} joined, {} failed to join; {} closed by server",
                self.established,
                self.connect_failed,
                self.joined,
                self.join_failed,
                self.closed_by_server
            ),
        )?;
        row(
            f,
            "phases",
            format!(
                "connect {:.3} s, join {:.3} s (total {:.3} s), idle {:.1} s, load {:.2} s, drain {:.3} s",
                self.connect_secs,
                self.join_secs,
                self.connect_secs + self.join_secs,
                self.idle_secs,
                self.steady_secs,
                self.drain_secs
            ),
        )?;
        if self.tls || self.ws {
            let percentiles = match &self.handshake_latency {
                Some(l) => format!(
                    "; ms p50 {}  p99 {}  max {}",
                    ms(l.p50_us),
                    ms(l.p99_us),
                    ms(l.max_us)
                ),
                None => String::new(),
            };
            row(
                f,
                "handshakes",
                format!(
                    "{} {}, {:.0}/s{percentiles}",
                    self.handshakes,
                    self.handshake_kind(),
                    self.handshakes_per_sec
                ),
            )?;
        }
        let send_rate = if self.steady_secs > 0.0 {
            self.sent as f64 / self.steady_secs
        } else {
            0.0
        };
        row(
            f,
            "messages",
            format!(
                "{} sent ({send_rate:.0}/s), {} skipped",
                self.sent, self.send_skipped
            ),
        )?;
        row(
            f,
            "deliveries",
            format!(
                "{} expected, {} received, {} lost, {} duplicated, {} out of order, {} misrouted{}",
                self.expected,
                self.received,
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.misrouted,
                if self.echoes > 0 {
                    format!(", {} echoes", self.echoes)
                } else {
                    String::new()
                }
            ),
        )?;
        row(
            f,
            "throughput",
            format!("{:.0} deliveries/s", self.deliveries_per_sec),
        )?;
        match &self.latency {
            Some(l) => row(
                f,
                "latency ms",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.3})",
                    ms(l.p50_us),
                    ms(l.p90_us),
                    ms(l.p99_us),
                    ms(l.p999_us),
                    ms(l.max_us),
                    l.mean_us / 1000.0
                ),
            )?,
            None => row(f, "latency ms", "no deliveries".into())?,
        }
        if self.stalled > 0 {
            row(
                f,
                "stalled",
                format!(
                    "{} of {} non-reading clients evicted by the server",
                    self.stalled_evicted, self.stalled
                ),
            )?;
        }
        if let Some(s) = &self.server {
            let pids: Vec<String> = s.pids.iter().map(ToString::to_string).collect();
            let who = match pids.len() {
                1 => format!("pid {}", pids[0]),
                _ => format!("pids {} (added up)", pids.join(", ")),
            };
            row(
                f,
                "server RSS",
                format!(
                    "{who}: {} before, {} joined, {} after; {} per connection",
                    opt_bytes(s.rss_before),
                    opt_bytes(s.rss_joined),
                    opt_bytes(s.rss_after),
                    s.rss_per_conn.map_or_else(|| "?".into(), bytes),
                ),
            )?;
            let cpu = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.2}"));
            let load = match s.cpu_load_secs {
                Some(v) => format!(", {v:.2} during load+drain"),
                None => String::new(),
            };
            let exited = if s.alive_at_end {
                ""
            } else {
                " (server exited)"
            };
            row(
                f,
                "server CPU s",
                format!("{} total{load}{exited}", cpu(s.cpu_secs)),
            )?;
            if let Some(w) = s.writes_per_delivery {
                row(
                    f,
                    "server writes",
                    format!("{w:.3} write syscalls per delivery"),
                )?;
            }
        }
        if let Some(r) = &self.redis {
            let cpu = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.2}"));
            let us = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.1}"));
            row(
                f,
                "Redis CPU s",
                format!(
                    "pid {}: {} total, {} during load+drain: {} µs per message sent, {} µs \
                     per delivery; RSS {}{}",
                    r.pid,
                    cpu(r.cpu_secs),
                    cpu(r.cpu_load_secs),
                    us(r.cpu_us_per_sent),
                    us(r.cpu_us_per_delivery),
                    opt_bytes(r.rss_after),
                    if r.alive_at_end {
                        ""
                    } else {
                        " (Redis exited)"
                    }
                ),
            )?;
        }
        row(f, "harness CPU s", format!("{:.2}", self.harness_cpu_secs))?;
        if self.server_errors > 0 {
            row(
                f,
                "server errors",
                format!(
                    "{} error lines, e.g. {}",
                    self.server_errors,
                    self.server_error_samples.join(" | ")
                ),
            )?;
        }
        for (reason, n) in &self.failures {
            row(f, "failure", format!("{n} x {reason}"))?;
        }
        if self.problems.is_empty() {
            row(f, "result", "ok".into())?;
        } else {
            for p in &self.problems {
                row(f, "PROBLEM", p.clone())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_run_from_50_to_99_999_and_hold_the_usual_ones() {
        let p = percentiles();
        assert_eq!(p.len(), 48);
        assert_eq!((p[0], p[47]), (50.0, 99.999));
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        for usual in [84.375, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 99.99] {
            assert!(p.iter().any(|&q| (q - usual).abs() < 1e-9), "{usual}");
        }
    }
}
