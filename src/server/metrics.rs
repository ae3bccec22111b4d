//! `--metrics ADDR`: Prometheus text exposition (format 0.0.4) at `GET /metrics`, served
//! by the same loop as chat.
//!
//! A scrape is a short HTTP/1.1 exchange: the request is read (at most
//! [`MAX_REQUEST`] bytes, within [`REQUEST_TIME`]) and parsed with `httparse`, the answer
//! is written with `Connection: close`, and the connection ends. Other paths get 404,
//! other methods 405. At most [`MAX_SCRAPERS`] scrapes at once; more are closed at
//! accept. A scrape costs O(number of metrics), never O(connections): every figure is a
//! counter the loop keeps anyway.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::Server;

/// Largest request taken (bytes); a longer one is closed without an answer.
pub(super) const MAX_REQUEST: usize = 8 * 1024;

/// How long a scraper has to send its request.
pub(super) const REQUEST_TIME: Duration = Duration::from_secs(5);

/// Scrapes served at once.
pub(super) const MAX_SCRAPERS: usize = 16;

/// Poll tokens of scrapes: `SCRAPE_BASE + key`, below the listeners' tokens.
pub(super) const SCRAPE_BASE: usize = usize::MAX - 2048;

/// Upper bounds (seconds) of the loop-turn histogram's buckets.
const TURN_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// How long loop turns take: a Prometheus histogram, fixed buckets.
#[derive(Debug, Default)]
pub(super) struct TurnHistogram {
    counts: [u64; TURN_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl TurnHistogram {
    /// Records one turn.
    pub(super) fn record(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = TURN_BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// One figure of the exposition.
pub(super) struct Figure {
    /// The metric family's name.
    pub(super) name: &'static str,
    /// `counter` or `gauge`.
    pub(super) kind: &'static str,
    /// What it counts (the `# HELP` text).
    pub(super) help: &'static str,
    /// Labelled values (`""` for none): `(labels, value)`.
    pub(super) values: Vec<(&'static str, f64)>,
}

/// Writes `figures` and the turn histogram as Prometheus text exposition 0.0.4.
pub(super) fn exposition(figures: &[Figure], turns: &TurnHistogram) -> String {
    let mut out = String::with_capacity(4096);
    for f in figures {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value) in &f.values {
            let _ = writeln!(out, "{}{} {}", f.name, labels, number(*value));
        }
    }
    let name = "loopchat_loop_turn_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time one turn of the event loop takes, from waking to sleeping."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in TURN_BUCKETS.iter().zip(turns.counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", turns.count);
    let _ = writeln!(out, "{name}_sum {}", number(turns.sum));
    let _ = writeln!(out, "{name}_count {}", turns.count);
    out
}

/// A value as the exposition writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// One scrape in progress.
#[derive(Debug)]
struct Scrape {
    socket: TcpStream,
    request: Vec<u8>,
    /// The answer, once there is one, and how much of it is written.
    answer: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// The scrapes in progress.
#[derive(Debug, Default)]
pub(super) struct Scrapes {
    slab: Slab<Scrape>,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    NotAllowed,
    Bad,
}

/// Parses a complete request; `None` while it is partial.
fn route(request: &[u8]) -> Option<Route> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Route::Bad),
        Ok(httparse::Status::Complete(_)) => Some(match (req.method, req.path) {
            (Some("GET"), Some("/metrics")) => Route::Metrics,
            (Some("GET"), _) => Route::NotFound,
            _ => Route::NotAllowed,
        }),
    }
}

fn response(status: &str, extra: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Scrapes {
    /// Takes a new scrape. When [`MAX_SCRAPERS`] are in progress, the oldest one still
    /// without a whole request makes room (connections that never send one must not
    /// lock a real scraper out for [`REQUEST_TIME`]); if every one is being answered,
    /// the new one is closed.
    pub(super) fn add(&mut self, mut socket: TcpStream, registry: &Registry, now: Instant) {
        if self.slab.len() >= MAX_SCRAPERS {
            let idle = self
                .slab
                .iter()
                .filter(|(_, s)| scrape_wants_read(s))
                .min_by_key(|(_, s)| s.deadline)
                .map(|(k, _)| k);
            match idle {
                Some(key) => {
                    debug!("metrics: too many scrapes at once; closing the oldest idle one");
                    self.close(key, registry);
                }
                None => {
                    debug!("metrics: too many scrapes at once; closing the new one");
                    return;
                }
            }
        }
        let entry = self.slab.vacant_entry();
        let token = Token(SCRAPE_BASE + entry.key());
        if let Err(e) = registry.register(&mut socket, token, Interest::READABLE) {
            debug!("metrics: register: {e}");
            return;
        }
        entry.insert(Scrape {
            socket,
            request: Vec::new(),
            answer: Vec::new(),
            written: 0,
            deadline: now + REQUEST_TIME,
        });
    }

    /// Serves scrape `key` after an event: reads the request, answers it with
    /// `metrics()` for `GET /metrics`, writes, and closes when done or failed.
    pub(super) fn on_event(
        &mut self,
        key: usize,
        registry: &Registry,
        metrics: impl FnOnce() -> String,
    ) {
        let Some(scrape) = self.slab.get_mut(key) else {
            return;
        };
        let done = match scrape.step(metrics) {
            Ok(done) => done,
            Err(e) => {
                debug!("metrics: {e}");
                true
            }
        };
        if done {
            self.close(key, registry);
        } else if !scrape_wants_read(&self.slab[key]) {
            let token = Token(SCRAPE_BASE + key);
            let _ = registry.reregister(&mut self.slab[key].socket, token, Interest::WRITABLE);
        }
    }

    /// Closes the scrapes that did not send a request in time; returns the earliest
    /// deadline left.
    pub(super) fn expire(&mut self, registry: &Registry, now: Instant) -> Option<Instant> {
        let late: Vec<usize> = self
            .slab
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            debug!("metrics: a scrape timed out");
            self.close(key, registry);
        }
        self.slab.iter().map(|(_, s)| s.deadline).min()
    }

    fn close(&mut self, key: usize, registry: &Registry) {
        if let Some(mut scrape) = self.slab.try_remove(key) {
            let _ = registry.deregister(&mut scrape.socket);
            let _ = scrape.socket.shutdown(std::net::Shutdown::Write);
        }
    }
}

fn scrape_wants_read(s: &Scrape) -> bool {
    s.answer.is_empty()
}

impl Scrape {
    /// Reads, answers and writes as far as the socket allows. `Ok(true)`: done.
    fn step(&mut self, metrics: impl FnOnce() -> String) -> io::Result<bool> {
        if self.answer.is_empty() {
            let mut chunk = [0u8; 2048];
            loop {
                match self.socket.read(&mut chunk) {
                    Ok(0) => return Ok(true),
                    Ok(n) => {
                        self.request.extend_from_slice(&chunk[..n]);
                        if self.request.len() > MAX_REQUEST {
                            return Err(io::Error::other("request over 8 KiB; closed"));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.answer = match route(&self.request) {
                None => return Ok(false),
                Some(Route::Metrics) => response(
                    "200 OK",
                    "",
                    "text/plain; version=0.0.4; charset=utf-8",
                    &metrics(),
                ),
                Some(Route::NotFound) => response(
                    "404 Not Found",
                    "",
                    "text/plain",
                    "not found; try /metrics\n",
                ),
                Some(Route::NotAllowed) => response(
                    "405 Method Not Allowed",
                    "Allow: GET\r\n",
                    "text/plain",
                    "only GET\n",
                ),
                Some(Route::Bad) => response("400 Bad Request", "", "text/plain", "bad request\n"),
            };
        }
        while self.written < self.answer.len() {
            match self.socket.write(&self.answer[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Server {
    /// Serves a scrape of `--metrics`.
    pub(super) fn on_scrape(&mut self, key: usize) {
        let figures = self.figures();
        let turns = &self.turns;
        self.scrapes
            .on_event(key, self.poll.registry(), || exposition(&figures, turns));
    }

    /// Every figure the metrics endpoint shows: counters the loop keeps anyway.
    fn figures(&self) -> Vec<Figure> {
        let s = &self.conns.stats;
        let store = self.history.store();
        let cluster = self.cluster.counters();
        use std::sync::atomic::Ordering::Relaxed;
        let f = |name, kind, help, value: u64| Figure {
            name,
            kind,
            help,
            values: vec![("", value as f64)],
        };
        vec![
            f(
                "loopchat_connections",
                "gauge",
                "Connections open.",
                self.conns.len() as u64,
            ),
            f(
                "loopchat_connections_accepted_total",
                "counter",
                "Connections accepted.",
                s.accepted,
            ),
            f(
                "loopchat_connections_refused_total",
                "counter",
                "Connections refused (server full, banned, per-address limits).",
                s.refused,
            ),
            Figure {
                name: "loopchat_connections_closed_total",
                kind: "counter",
                help: "Connections closed, by reason.",
                values: vec![
                    ("{reason=\"evicted\"}", s.evictions as f64),
                    (
                        "{reason=\"other\"}",
                        s.closed.saturating_sub(s.evictions) as f64,
                    ),
                ],
            },
            f(
                "loopchat_evictions_total",
                "counter",
                "Connections evicted for not reading.",
                s.evictions,
            ),
            f(
                "loopchat_lines_in_total",
                "counter",
                "Complete lines read.",
                s.lines_in,
            ),
            f(
                "loopchat_deliveries_total",
                "counter",
                "Events queued to a recipient.",
                s.deliveries,
            ),
            f(
                "loopchat_write_syscalls_total",
                "counter",
                "write calls on client sockets.",
                s.writes,
            ),
            f(
                "loopchat_bytes_in_total",
                "counter",
                "Bytes read from clients.",
                s.bytes_in,
            ),
            f(
                "loopchat_bytes_out_total",
                "counter",
                "Bytes written to clients (before TLS).",
                s.bytes_out,
            ),
            f(
                "loopchat_rate_limited_total",
                "counter",
                "Lines dropped by a rate limit.",
                s.rate_limited,
            ),
            f(
                "loopchat_bans",
                "gauge",
                "Addresses banned now.",
                self.abuse.ban_count() as u64,
            ),
            f(
                "loopchat_rooms",
                "gauge",
                "Rooms that exist.",
                self.hub.room_count() as u64,
            ),
            f(
                "loopchat_named_connections",
                "gauge",
                "Connections with a name.",
                self.hub.named() as u64,
            ),
            f(
                "loopchat_output_queued_bytes",
                "gauge",
                "Bytes queued for all connections.",
                self.conns.queued() as u64,
            ),
            f(
                "loopchat_storage_stored_total",
                "counter",
                "Room messages committed to the store.",
                store.stored(),
            ),
            f(
                "loopchat_storage_commits_total",
                "counter",
                "Store commits (batches).",
                store.commits(),
            ),
            f(
                "loopchat_storage_unsaved_total",
                "counter",
                "Room messages accepted but not stored.",
                store.unsaved(),
            ),
            f(
                "loopchat_inbox_dropped_total",
                "counter",
                "Messages from other threads dropped for a full inbox.",
                self.inbox.dropped(),
            ),
            f(
                "loopchat_cluster_up",
                "gauge",
                "1 while the cluster's Redis is reachable (0 off a cluster).",
                cluster.map_or(0, |c| c.up.load(Relaxed) as u64),
            ),
            f(
                "loopchat_cluster_dropped_total",
                "counter",
                "Requests to the cluster backplane dropped for a full queue.",
                cluster.map_or(0, |c| c.dropped.load(Relaxed)),
            ),
            f(
                "loopchat_cluster_undelivered_total",
                "counter",
                "Publications to other servers not made while Redis was unreachable.",
                cluster.map_or(0, |c| c.undelivered.load(Relaxed)),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_route_by_method_and_path() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::NotAllowed)
        );
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost"), None);
        assert_eq!(route(b"\x00\x01 nonsense\r\n\r\n"), Some(Route::Bad));
    }

    #[test]
    fn the_exposition_has_help_type_and_a_cumulative_histogram() {
        let mut turns = TurnHistogram::default();
        turns.record(Duration::from_micros(30));
        turns.record(Duration::from_millis(3));
        turns.record(Duration::from_secs(2));
        let text = exposition(
            &[Figure {
                name: "loopchat_connections_closed_total",
                kind: "counter",
                help: "Connections closed.",
                values: vec![("{reason=\"evicted\"}", 2.0), ("{reason=\"other\"}", 5.0)],
            }],
            &turns,
        );
        assert!(text.contains("# TYPE loopchat_connections_closed_total counter\n"));
        assert!(text.contains("loopchat_connections_closed_total{reason=\"evicted\"} 2\n"));
        assert!(text.contains("loopchat_loop_turn_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(text.contains("loopchat_loop_turn_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("loopchat_loop_turn_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("loopchat_loop_turn_seconds_count 3\n"));
    }
}
