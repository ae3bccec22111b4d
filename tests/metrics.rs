//! The metrics endpoint through real sockets: Prometheus text exposition that parses
//! strictly, counters that move by exactly the traffic a test sends, 404 and 405, and
//! a hostile scraper that cannot hurt chat.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use loopchat::{Server, ServerConfig};
use util::{Client, TIMEOUT, TestServer, named};

fn start_with_metrics() -> (TestServer, SocketAddr) {
    util::init_logging();
    let server = Server::bind(ServerConfig {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..util::config()
    })
    .unwrap();
    let metrics = server.metrics_addr().expect("a metrics listener");
    (util::start_bound(server), metrics)
}

/// Sends `request` and reads the whole answer (the server closes after it).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    String::from_utf8(answer).unwrap()
}

/// Scrapes and parses the exposition strictly: every sample line is
/// `name{labels} value` with a `# TYPE` seen for its family.
#[track_caller]
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    let mut typed = Vec::new();
    let mut samples = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "a metric name: {name:?}"
        );
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "{name} has no # TYPE before it"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn counters_move_by_exactly_the_traffic_sent() {
    let (server, metrics) = start_with_metrics();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    let before = scrape(metrics);
    assert_eq!(before["loopchat_connections"], 2.0);
    for i in 0..3 {
        alice.send_line(&format!("SAY::{i}"));
        bob.expect_line(&format!("SAY:alice:{i}\n"));
    }
    let after = scrape(metrics);
    let moved = |name: &str| after[name] - before[name];
    assert_eq!(moved("loopchat_lines_in_total"), 3.0);
    assert_eq!(moved("loopchat_deliveries_total"), 3.0);
    assert_eq!(
        moved("loopchat_bytes_in_total"),
        3.0 * "SAY::0\n".len() as f64
    );
    assert_eq!(
        moved("loopchat_bytes_out_total"),
        3.0 * "SAY:alice:0\n".len() as f64
    );
    assert_eq!(after["loopchat_rooms"], 1.0);
    assert!(after["loopchat_loop_turn_seconds_count"] > before["loopchat_loop_turn_seconds_count"]);
    assert_eq!(
        after["loopchat_loop_turn_seconds_bucket{le=\"+Inf\"}"],
        after["loopchat_loop_turn_seconds_count"]
    );
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let (_server, metrics) = start_with_metrics();
    let answer = exchange(metrics, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    let answer = exchange(metrics, b"POST /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Allow: GET\r\n"), "{answer}");
}

#[test]
fn an_oversized_request_is_closed_and_chat_goes_on() {
    let (server, metrics) = start_with_metrics();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut s = TcpStream::connect(metrics).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n",
        "x".repeat(20_000)
    );
    // The server may close before reading it all; that is the point.
    let _ = s.write_all(huge.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(answer.is_empty(), "no answer to an oversized request");
    alice.send_line("WHO:");
    alice.expect_line("SERVER:#lobby (1): alice\n");
    assert_eq!(scrape(metrics)["loopchat_connections"], 1.0);
}
