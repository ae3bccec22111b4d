//! The load harness (`loopchat bench`) as a library and as a command: counts against
//! the real server, loss and closes against tiny in-test relays that misbehave on
//! purpose, the `lines` dialect, `--ws` (against the server, and a relay that
//! fragments and pings), several server addresses, and argument errors; the IRC
//! dialect in `bench/irc.rs`; `--repeat`, `--hgrm`, `bench plot` and `bench compare` in
//! `bench/reports.rs`. Small N, short phases; no test asserts a speed.

// Beside this file, not in tests/ itself, so that cargo does not build them as test
// crates of their own.
#[path = "bench/irc.rs"]
mod irc;
#[path = "bench/reports.rs"]
mod reports;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use loopchat::bench::config::tls_setup;
use loopchat::bench::{BenchConfig, BenchDialect, Report, TempCert, run_bench};

/// A short run's configuration against `addr`.
fn small(addr: SocketAddr) -> BenchConfig {
    let mut c = BenchConfig::new(addr);
    c.clients = 20;
    c.rooms = 2;
    c.senders = 4;
    c.rate = 40.0;
    c.duration = Duration::from_millis(400);
    c.drain_timeout = Duration::from_secs(3);
    c.phase_timeout = Duration::from_secs(5);
    c
}

#[track_caller]
fn run(config: &BenchConfig) -> Report {
    match run_bench(config) {
        Ok(r) => r,
        Err(e) => panic!("run_bench could not start: {e}"),
    }
}

#[test]
fn against_loopchat_every_delivery_arrives_once_in_order() {
    let server = util::start(util::config());
    let mut config = small(server.addr);
    config.server_pids = vec![std::process::id()];
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!((r.established, r.joined), (20, 20));
    assert!(r.sent > 0);
    // Two rooms of ten: each message is owed to the nine other members of its room.
    assert_eq!(r.expected, r.sent * 9);
    assert_eq!(r.received, r.expected);
    assert_eq!(
        (r.lost, r.duplicated, r.out_of_order, r.misrouted),
        (0, 0, 0, 0)
    );
    assert_eq!(r.echoes, 0, "loopchat never echoes a sender");
    let lat = r.latency.expect("latency measured");
    assert_eq!(lat.count, r.received);
    assert!(lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);
    let s = r.server.as_ref().expect("server stats from /proc");
    assert!(s.rss_before.is_some() && s.alive_at_end);
    let json = r.to_json();
    assert!(json.contains("\"lost\":0"), "{json}");
    assert!(json.contains("\"ok\":true"), "{json}");
}

#[test]
fn threads_split_the_clients_and_agree_on_the_counts() {
    let server = util::start(util::config());
    let mut config = small(server.addr);
    config.threads = 2;
    config.rooms = 1;
    config.clients = 11;
    config.senders = 3;
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!(r.expected, r.sent * 10);
    assert_eq!(r.received, r.expected);
}

#[test]
fn a_stalled_client_closed_by_the_server_counts_as_evicted_not_lost() {
    // The relay closes the highest-numbered client: with one stalled client, that one.
    let relay = Relay::start(RelayMode::DropOneReceiverAfter(10));
    let mut config = small(relay.addr);
    config.stalled = 1;
    let r = run(&config);
    assert_eq!(r.stalled_evicted, 1, "{r}");
    assert_eq!((r.lost, r.closed_by_server), (0, 0), "{r}");
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
}

#[test]
fn loss_is_reported_when_the_server_drops_a_receiver() {
    let relay = Relay::start(RelayMode::DropOneReceiverAfter(10));
    let r = run(&small(relay.addr));
    assert_eq!(r.closed_by_server, 1, "{r}");
    assert!(r.lost > 0, "{r}");
    assert_eq!(r.received + r.lost, r.expected);
    assert!(!r.ok());
    assert!(
        r.problems.iter().any(|p| p.contains("lost")),
        "{:?}",
        r.problems
    );
    assert!(
        r.failures
            .iter()
            .any(|(why, _)| why.contains("closed by the server"))
    );
}

#[test]
fn a_server_that_goes_away_ends_the_run_early_with_a_partial_report() {
    let relay = Relay::start(RelayMode::CloseAllAfter(5));
    let mut config = small(relay.addr);
    config.duration = Duration::from_secs(30);
    let started = Instant::now();
    let r = run(&config);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("closed every connection")),
        "{:?}",
        r.problems
    );
    assert_eq!(r.closed_by_server, 20, "{r}");
    // Whatever was relayed before the close counts; the load phase was cut short.
    assert!(r.sent >= 5 && r.received + r.lost == r.expected, "{r}");
    assert!(r.steady_secs < 5.0, "{r}");
}

#[test]
fn a_refused_connect_is_a_clear_problem_not_a_hang() {
    // Bind and drop: nobody listens on that port now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let r = run(&small(addr));
    assert_eq!(r.established, 0);
    assert_eq!(r.connect_failed, 20);
    let text = r.to_string();
    assert!(text.contains("connection refused"), "{text}");
    assert!(
        r.problems.iter().any(|p| p.contains("no connection")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_join_without_an_answer_times_out() {
    let relay = Relay::start(RelayMode::Silent);
    let mut config = small(relay.addr);
    config.phase_timeout = Duration::from_millis(300);
    let r = run(&config);
    assert_eq!((r.established, r.joined, r.join_failed), (20, 0, 20));
    assert!(
        r.failures
            .iter()
            .any(|(why, _)| why.contains("no answer to JOIN")),
        "{r}"
    );
    assert!(!r.ok());
}

#[test]
fn lines_dialect_finds_its_marker_in_decorated_lines() {
    let relay = Relay::start(RelayMode::Lines);
    let mut config = small(relay.addr);
    config.dialect = BenchDialect::Lines;
    config.rooms = 1;
    config.clients = 6;
    config.senders = 2;
    config.hello = Some("/nick user%d".into());
    config.settle = Duration::from_millis(200);
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!(r.expected, r.sent * 5);
    assert_eq!(r.received, r.expected);
    // The relay announced every hello as `<peer N> /nick userK`.
    assert_eq!(relay.hellos.load(Ordering::SeqCst), 6);
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let cases: [&[&str]; 9] = [
        &["--clients", "0"],
        &["--senders", "50", "--clients", "10"],
        &["--rate", "5", "--total-rate", "10"],
        &["--dialect", "lines", "--rooms", "3"],
        &["--source-ips", "127.0.0.9-127.0.0.1"],
        &["--dialect", "irc", "--payload", "400"],
        &["--dialect", "irc", "--hello", "hi"],
        &["--ws", "--dialect", "lines"],
        &["--spawn-cluster", "2", "--spawn-server"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
            .arg("bench")
            .args(args)
            .output()
            .expect("run loopchat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--"), "{args:?} names no flag: {stderr}");
    }
}

#[test]
fn refused_server_exits_1_with_a_report() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["bench", "--clients", "5", "--addr", &addr.to_string()])
        .output()
        .expect("run loopchat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("connection refused"), "{stdout}");
}

// ---- TLS -----------------------------------------------------------------------------

/// An in-process server serving TLS with `cert` beside its plain port; its TLS address.
fn start_tls(cert: &TempCert) -> (util::TestServer, SocketAddr) {
    util::init_logging();
    let config = loopchat::ServerConfig {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert.cert.clone()),
        tls_key: Some(cert.key.clone()),
        ..util::config()
    };
    let server = loopchat::Server::bind(config).expect("bind the TLS test server");
    let tls = server.tls_addr().expect("a TLS listener");
    (util::start_bound(server), tls)
}

#[test]
fn over_tls_every_client_handshakes_and_every_delivery_arrives() {
    let cert = TempCert::create().unwrap();
    let (_server, tls) = start_tls(&cert);
    let mut config = small(tls);
    config.tls = Some(tls_setup("127.0.0.1", Some(&cert.cert), false).unwrap());
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert!(r.tls);
    assert_eq!((r.established, r.joined, r.handshakes), (20, 20, 20));
    assert_eq!(r.received, r.expected);
    assert!(r.handshakes_per_sec > 0.0, "{r}");
    let hs = r.handshake_latency.expect("handshake latency measured");
    assert_eq!(hs.count, 20);
    assert!(hs.p50_us > 0 && hs.p50_us <= hs.p99_us && hs.p99_us <= hs.max_us);
    assert!(r.to_string().contains("20 TLS handshakes"), "{r}");
    let json = r.to_json();
    assert!(json.contains("\"tls\":true"), "{json}");
    assert!(json.contains("\"handshakes\":20"), "{json}");
    assert!(json.contains("\"handshake_us\":{\"count\":20"), "{json}");
}

#[test]
fn over_tls_an_untrusted_certificate_fails_every_connect_with_the_reason() {
    let cert = TempCert::create().unwrap();
    let other = TempCert::create().unwrap();
    let (_server, tls) = start_tls(&cert);
    let mut config = small(tls);
    config.tls = Some(tls_setup("127.0.0.1", Some(&other.cert), false).unwrap());
    let r = run(&config);
    assert_eq!((r.established, r.connect_failed, r.handshakes), (0, 20, 0));
    assert!(
        r.failures.iter().any(|(why, n)| *n == 20
            && why.starts_with("connect: TLS handshake failed: invalid peer certificate")),
        "{r}"
    );
    assert!(!r.ok());
}

#[test]
fn tls_spawn_server_run_reports_handshakes_per_second() {
    let json = std::env::temp_dir().join(format!("loopchat-bench-tls-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["bench", "--tls", "--spawn-server", "--clients", "50"])
        .args(["--duration", "1s", "--json"])
        .arg(&json)
        .output()
        .expect("run loopchat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("(frames over TLS)"), "{stdout}");
    assert!(stdout.contains("50 TLS handshakes, "), "{stdout}");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let json = text;
    assert!(json.contains("\"handshakes\":50"), "{json}");
    assert!(json.contains("\"ok\":true"), "{json}");
}

// ---- WebSocket and several servers ---------------------------------------------------

/// An in-process server with a browser listener; its browser address.
fn start_ws() -> (util::TestServer, SocketAddr) {
    util::init_logging();
    let config = loopchat::ServerConfig {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..util::config()
    };
    let server = loopchat::Server::bind(config).expect("bind the WebSocket test server");
    let ws = server.ws_addr().expect("a browser listener");
    (util::start_bound(server), ws)
}

#[test]
fn over_websocket_every_client_upgrades_and_every_delivery_arrives() {
    let (_server, ws) = start_ws();
    let mut config = small(ws);
    config.ws = true;
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert!(r.ws && !r.tls);
    assert_eq!((r.established, r.joined, r.handshakes), (20, 20, 20));
    assert_eq!(r.expected, r.sent * 9);
    assert_eq!(r.received, r.expected);
    assert_eq!((r.duplicated, r.out_of_order, r.misrouted), (0, 0, 0));
    let text = r.to_string();
    assert!(text.contains("(frames over WebSocket)"), "{text}");
    assert!(text.contains("20 WebSocket upgrades"), "{text}");
    assert!(r.to_json().contains("\"ws\":true"));
}

#[test]
fn over_websocket_the_chat_port_is_refused_with_the_reason() {
    let server = util::start(util::config());
    let mut config = small(server.addr);
    config.ws = true;
    config.phase_timeout = Duration::from_secs(2);
    let r = run(&config);
    assert_eq!((r.established, r.connect_failed), (0, 20), "{r}");
    assert!(
        r.failures
            .iter()
            .any(|(why, n)| *n == 20 && why.contains("is the address a --ws-listen port")),
        "{r}"
    );
}

#[test]
fn fragmented_frames_and_pings_from_the_server_are_handled() {
    let relay = WsRelay::start();
    let mut config = small(relay.addr);
    config.ws = true;
    config.rooms = 1;
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!(r.received, r.expected, "{r}");
    assert_eq!(r.expected, r.sent * 19);
    // The harness says goodbye with a close frame on every connection, after every
    // pong it owed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.closes.load(Ordering::SeqCst) < 20 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(relay.closes.load(Ordering::SeqCst), 20);
    // Every text message the relay sent came with a ping inside it: all answered.
    let (pings, pongs) = (
        relay.pings.load(Ordering::SeqCst),
        relay.pongs.load(Ordering::SeqCst),
    );
    assert!(
        pings > r.received,
        "{pings} pings for {} deliveries",
        r.received
    );
    assert_eq!(pongs, pings);
}

#[test]
fn a_close_frame_from_the_server_is_a_close_with_its_code() {
    let relay = WsRelay::start();
    relay.close_after.store(10, Ordering::SeqCst);
    let mut config = small(relay.addr);
    config.ws = true;
    config.rooms = 1;
    config.duration = Duration::from_secs(30);
    let started = Instant::now();
    let r = run(&config);
    assert!(started.elapsed() < Duration::from_secs(10), "{r}");
    assert_eq!(r.closed_by_server, 20, "{r}");
    assert!(
        r.failures
            .iter()
            .any(|(why, _)| why.contains("closed by the server (WebSocket close, 1001)")),
        "{r}"
    );
}

#[test]
fn clients_spread_round_robin_over_several_addresses() {
    // One server listed twice, so every client may go to either; the counts say which
    // way each went (the spawned cluster below has servers that differ).
    let server = util::start(util::config());
    let other = server.addr;
    let mut config = small(server.addr);
    config.addrs.push(other);
    config.clients = 21;
    config.server_pids = vec![std::process::id(), std::process::id()];
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!(r.received, r.expected);
    assert_eq!(
        r.addrs,
        [(server.addr.to_string(), 11), (other.to_string(), 10)]
    );
    assert_eq!(r.addr, format!("{}, {other}", server.addr));
    let text = r.to_string();
    assert!(
        text.contains("2 addresses, connections round-robin"),
        "{text}"
    );
    assert!(text.contains("(added up)"), "{text}");
}

#[test]
fn ws_spawn_server_run_has_no_loss() {
    let json = std::env::temp_dir().join(format!("loopchat-bench-ws-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["bench", "--ws", "--spawn-server", "--clients", "8"])
        .args([
            "--senders",
            "3",
            "--rate",
            "20",
            "--duration",
            "500ms",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run loopchat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("loopchat ws at 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("(frames over WebSocket)"), "{stdout}");
    assert!(stdout.contains(" 0 lost,"), "{stdout}");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert!(text.contains("\"lost\":0"), "{text}");
    assert!(text.contains("\"ws\":true"), "{text}");
    assert!(text.contains("\"ok\":true"), "{text}");
}

#[test]
fn spawn_cluster_spreads_every_room_over_the_nodes_without_loss() {
    let json = std::env::temp_dir().join(format!(
        "loopchat-bench-cluster-{}.json",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args([
            "bench",
            "--spawn-cluster",
            "2",
            "--clients",
            "12",
            "--rooms",
            "2",
        ])
        .args([
            "--senders",
            "4",
            "--rate",
            "20",
            "--duration",
            "500ms",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run loopchat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("loopchat x2 at 127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("2 addresses, connections round-robin"),
        "{stdout}"
    );
    assert!(stdout.contains("Redis CPU s"), "{stdout}");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let report = loopchat::bench::report::json::parse(&text).expect("a JSON report");
    let num = |k: &str| report.get(k).and_then(|v| v.num());
    assert_eq!(num("lost"), Some(0.0), "{text}");
    assert!(num("received") > Some(0.0), "{text}");
    assert_eq!(num("servers"), Some(2.0), "{text}");
    let redis = report.get("redis").expect("Redis stats");
    assert!(
        redis.get("cpu_us_per_sent").and_then(|v| v.num()).is_some(),
        "{text}"
    );
    // Everything it started has stopped: no node and no Redis of this run is left.
    let pids: Vec<u32> = report
        .get("server")
        .and_then(|s| s.get("pids"))
        .and_then(|p| p.arr())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.num())
        .chain(redis.get("pid").and_then(|v| v.num()))
        .map(|p| p as u32)
        .collect();
    assert_eq!(pids.len(), 3, "{text}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs"
        );
    }
}

#[test]
fn spawn_cluster_without_redis_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["bench", "--spawn-cluster", "2", "--clients", "4"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run loopchat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`redis-server` is not installed"),
        "{stderr}"
    );
}

// ---- an in-test WebSocket relay -------------------------------------------------------

/// A thread-per-connection WebSocket chat relay with one room that speaks as awkwardly
/// as RFC 6455 allows: every line out is split into three fragments with a ping in
/// between, and it counts the pongs and closes it gets.
struct WsRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pings: Arc<AtomicU64>,
    pongs: Arc<AtomicU64>,
    closes: Arc<AtomicU64>,
    /// When non-zero: after relaying this many messages, send every client a close.
    close_after: Arc<AtomicU64>,
}

type WsMembers = Arc<Mutex<Vec<(String, TcpStream)>>>;

impl WsRelay {
    fn start() -> WsRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let relay = WsRelay {
            addr: listener.local_addr().expect("relay addr"),
            stop: Arc::new(AtomicBool::new(false)),
            pings: Arc::new(AtomicU64::new(0)),
            pongs: Arc::new(AtomicU64::new(0)),
            closes: Arc::new(AtomicU64::new(0)),
            close_after: Arc::new(AtomicU64::new(0)),
        };
        let members: WsMembers = Arc::new(Mutex::new(Vec::new()));
        let relayed = Arc::new(AtomicU64::new(0));
        let counters = (
            relay.stop.clone(),
            relay.pings.clone(),
            relay.pongs.clone(),
            relay.closes.clone(),
            relay.close_after.clone(),
        );
        thread::spawn(move || {
            let (stop, pings, pongs, closes, close_after) = counters;
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let c = (
                    members.clone(),
                    relayed.clone(),
                    pings.clone(),
                    pongs.clone(),
                    closes.clone(),
                    close_after.clone(),
                );
                thread::spawn(move || {
                    let (members, relayed, pings, pongs, closes, close_after) = c;
                    ws_serve(
                        stream,
                        &members,
                        &relayed,
                        &pings,
                        &pongs,
                        &closes,
                        &close_after,
                    );
                });
            }
        });
        relay
    }
}

impl Drop for WsRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sends `line` as three text fragments with a ping between the first two.
fn ws_send_fragmented(to: &mut TcpStream, line: &str, pings: &AtomicU64) {
    let b = line.as_bytes();
    let (one, rest) = b.split_at(b.len() / 3);
    let (two, three) = rest.split_at(rest.len() / 2);
    let mut out = Vec::new();
    for (first, part) in [(0x01u8, one), (0x00, two), (0x80, three)] {
        out.push(first);
        out.push(part.len() as u8);
        out.extend_from_slice(part);
        if first == 0x01 {
            out.extend_from_slice(&[0x89, 2, b'h', b'b']);
        }
    }
    if to.write_all(&out).is_ok() {
        pings.fetch_add(1, Ordering::SeqCst);
    }
}

fn ws_serve(
    mut stream: TcpStream,
    members: &WsMembers,
    relayed: &AtomicU64,
    pings: &AtomicU64,
    pongs: &AtomicU64,
    closes: &AtomicU64,
    close_after: &AtomicU64,
) {
    use loopchat::ws::{Decoder, Incoming, accept_key};
    // The request head, then the 101.
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&input[..head_end]).into_owned();
    input.drain(..head_end);
    let Some(key) = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
    else {
        return;
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    if stream.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let id = {
        let mut m = members.lock().unwrap();
        m.push((String::new(), write_half));
        m.len() - 1
    };
    let mut decoder = Decoder::default();
    loop {
        while let Ok(Some((what, used))) = decoder.decode(&input, 1 << 20) {
            input.drain(..used);
            match what {
                Some(Incoming::Pong) => {
                    pongs.fetch_add(1, Ordering::SeqCst);
                }
                Some(Incoming::Close(_)) => {
                    closes.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Some(Incoming::Text(line)) => {
                    let mut m = members.lock().unwrap();
                    if let Some(room) = line.strip_prefix("JOIN:#") {
                        let reply = format!("SERVER:you are now in #{room}");
                        ws_send_fragmented(&mut m[id].1, &reply, pings);
                    } else if let Some(name) = line.strip_prefix("JOIN:") {
                        m[id].0 = name.to_string();
                    } else if let Some(text) = line.strip_prefix("SAY::") {
                        // One room for everyone: the tests run with --rooms 1.
                        let out = format!("SAY:{}:{text}", m[id].0);
                        for (j, (_, s)) in m.iter_mut().enumerate() {
                            if j != id {
                                ws_send_fragmented(s, &out, pings);
                            }
                        }
                        let n = relayed.fetch_add(1, Ordering::SeqCst) + 1;
                        if n == close_after.load(Ordering::SeqCst) {
                            for (_, s) in m.iter_mut() {
                                let _ = s.write_all(&[0x88, 2, 0x03, 0xE9]);
                                let _ = s.shutdown(Shutdown::Write);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}

// ---- in-test relays ------------------------------------------------------------------

/// How a relay misbehaves.
#[derive(Clone, Copy)]
enum RelayMode {
    /// Frames; after relaying this many messages, closes one receiver that is not a
    /// sender (the harness's highest-numbered client).
    DropOneReceiverAfter(u64),
    /// Frames; after relaying this many messages, closes every connection.
    CloseAllAfter(u64),
    /// Accepts and never answers.
    Silent,
    /// Plain lines: each line goes to everyone else as `<peer N> line`.
    Lines,
}

struct Member {
    name: String,
    room: String,
    stream: TcpStream,
}

/// A thread-per-connection chat relay speaking just enough of the protocol.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    members: Arc<Mutex<Vec<Option<Member>>>>,
    hellos: Arc<AtomicU64>,
}

impl Relay {
    fn start(mode: RelayMode) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let relay = Relay {
            addr: listener.local_addr().expect("relay addr"),
            stop: Arc::new(AtomicBool::new(false)),
            members: Arc::new(Mutex::new(Vec::new())),
            hellos: Arc::new(AtomicU64::new(0)),
        };
        let (stop, members, hellos) = (
            relay.stop.clone(),
            relay.members.clone(),
            relay.hellos.clone(),
        );
        let relayed = Arc::new(AtomicU64::new(0));
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let Ok(write_half) = stream.try_clone() else {
                    continue;
                };
                let id = {
                    let mut m = members.lock().unwrap();
                    m.push(Some(Member {
                        name: String::new(),
                        room: "#lobby".into(),
                        stream: write_half,
                    }));
                    m.len() - 1
                };
                let (members, relayed, hellos) = (members.clone(), relayed.clone(), hellos.clone());
                thread::spawn(move || serve(mode, id, stream, &members, &relayed, &hellos));
            }
        });
        relay
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for m in self.members.lock().unwrap().iter().flatten() {
            let _ = m.stream.shutdown(Shutdown::Both);
        }
    }
}

fn serve(
    mode: RelayMode,
    id: usize,
    stream: TcpStream,
    members: &Mutex<Vec<Option<Member>>>,
    relayed: &AtomicU64,
    hellos: &AtomicU64,
) {
    let send = |to: usize, line: &str| {
        if let Some(Some(m)) = members.lock().unwrap().get_mut(to) {
            let _ = m.stream.write_all(line.as_bytes());
        }
    };
    if !matches!(mode, RelayMode::Lines | RelayMode::Silent) {
        send(id, "SERVER:welcome to the test relay\n");
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match mode {
            RelayMode::Silent => {}
            RelayMode::Lines => {
                if line.starts_with("/nick ") {
                    hellos.fetch_add(1, Ordering::SeqCst);
                }
                let out = format!("<peer {id}> {line}\n");
                let mut m = members.lock().unwrap();
                for (j, other) in m.iter_mut().enumerate() {
                    if let Some(other) = other
                        && j != id
                    {
                        let _ = other.stream.write_all(out.as_bytes());
                    }
                }
            }
            RelayMode::DropOneReceiverAfter(_) | RelayMode::CloseAllAfter(_) => {
                if let Some(room) = line.strip_prefix("JOIN:#") {
                    set(members, id, |m| m.room = format!("#{room}"));
                    send(id, &format!("SERVER:you are now in #{room}\n"));
                } else if let Some(name) = line.strip_prefix("JOIN:") {
                    set(members, id, |m| m.name = name.to_string());
                    send(id, &format!("SERVER:you are {name} in #lobby\n"));
                } else if let Some(text) = line.strip_prefix("SAY::") {
                    let mut m = members.lock().unwrap();
                    let Some(Some(me)) = m.get(id) else { break };
                    let (name, room) = (me.name.clone(), me.room.clone());
                    let out = format!("SAY:{name}:{text}\n");
                    for (j, other) in m.iter_mut().enumerate() {
                        if let Some(other) = other
                            && j != id
                            && other.room == room
                        {
                            let _ = other.stream.write_all(out.as_bytes());
                        }
                    }
                    let n = relayed.fetch_add(1, Ordering::SeqCst) + 1;
                    match mode {
                        RelayMode::DropOneReceiverAfter(k) if n == k => {
                            // The highest-numbered client is never a sender.
                            let victim = m
                                .iter()
                                .enumerate()
                                .filter_map(|(j, o)| o.as_ref().map(|o| (j, o)))
                                .max_by_key(|(_, o)| client_index(&o.name));
                            if let Some((j, _)) = victim
                                && let Some(v) = m[j].take()
                            {
                                let _ = v.stream.shutdown(Shutdown::Both);
                            }
                        }
                        RelayMode::CloseAllAfter(k) if n == k => {
                            for o in m.iter_mut() {
                                if let Some(o) = o.take() {
                                    let _ = o.stream.shutdown(Shutdown::Both);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

fn set(members: &Mutex<Vec<Option<Member>>>, id: usize, f: impl FnOnce(&mut Member)) {
    if let Some(Some(m)) = members.lock().unwrap().get_mut(id) {
        f(m);
    }
}

/// The harness names clients `lb<run>-<index>`.
fn client_index(name: &str) -> usize {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
