//! Hostile clients on the newer surfaces (browsers, metrics, accounts), each with the
//! default abuse flags: none may crash the server, stall the loop or grow its memory
//! without bound.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use loopchat::{Server, ServerConfig};
use util::{Client, TIMEOUT, TestServer};

/// Default abuse flags, an ephemeral port, no database, and a browser listener.
fn start_web() -> (TestServer, SocketAddr) {
    util::init_logging();
    let server = Server::bind(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        db: "none".into(),
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .unwrap();
    let web = server.ws_addr().expect("a browser listener");
    (util::start_bound(server), web)
}

/// Upgrades a raw socket to a WebSocket and returns it after the 101.
fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let (s, head) = util::ws_upgrade(addr);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    s
}

/// A masked client frame (mask of zeros, so the payload is as written).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

/// The server still answers a plain client promptly.
#[track_caller]
fn still_serves(addr: SocketAddr, name: &str) -> Duration {
    let mut c = Client::connect_named(addr, name);
    let t = Instant::now();
    c.send_line("WHO:");
    while !c.read_line().starts_with("SERVER:#lobby (") {}
    t.elapsed()
}

/// Reads a WebSocket until the server closes it; returns the close code, if any came.
fn close_code(s: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut at = 0;
    while at + 2 <= got.len() {
        let opcode = got[at] & 0x0F;
        let (len, head) = match got[at + 1] & 0x7F {
            126 if at + 4 <= got.len() => (
                usize::from(u16::from_be_bytes([got[at + 2], got[at + 3]])),
                4,
            ),
            127 => return None,
            n => (usize::from(n), 2),
        };
        if opcode == 0x8 && len >= 2 && at + head + 2 <= got.len() {
            return Some(u16::from_be_bytes([got[at + head], got[at + head + 1]]));
        }
        at += head + len;
    }
    None
}

#[test]
fn a_ping_flood_is_read_within_the_budget_and_does_not_crash_the_loop() {
    let (server, web) = start_web();
    let mut s = raw_upgrade(web);
    // 256 KiB of small pings in one write, read by the server without a text message
    // in between: more than one turn's read budget.
    let ping = frame(0x89, b"p");
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 40_000)
        .collect();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    let _ = s.write_all(&flood);
    still_serves(server.addr, "alice");
}

#[test]
fn an_empty_fragment_flood_does_not_crash_the_loop() {
    let (server, web) = start_web();
    let mut s = raw_upgrade(web);
    let mut flood = frame(0x01, b"SAY::");
    let empty = frame(0x00, b"");
    for _ in 0..40_000 {
        flood.extend_from_slice(&empty);
    }
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    let _ = s.write_all(&flood);
    still_serves(server.addr, "alice");
}

#[test]
fn a_continuation_of_length_2_to_the_64_minus_1_is_refused_not_a_panic() {
    let (server, web) = start_web();
    let mut s = raw_upgrade(web);
    let mut bytes = frame(0x01, b"SAY::x");
    bytes.extend_from_slice(&[0x80, 0x80 | 127]);
    bytes.extend_from_slice(&u64::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(b"xxxxxxxxxxxxxxxx");
    s.write_all(&bytes).unwrap();
    let code = close_code(&mut s);
    assert!(matches!(code, Some(1002 | 1009)), "{code:?}");
    still_serves(server.addr, "alice");
}

#[test]
fn a_frame_length_with_the_top_bit_set_is_refused() {
    let (server, web) = start_web();
    let mut s = raw_upgrade(web);
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    s.write_all(&bytes).unwrap();
    let code = close_code(&mut s);
    assert!(matches!(code, Some(1002 | 1009)), "{code:?}");
    still_serves(server.addr, "alice");
}

/// Default abuse flags, an ephemeral port, no database, plain chat only.
fn start_plain() -> TestServer {
    util::init_logging();
    util::start(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        db: "none".into(),
        ..ServerConfig::default()
    })
}

#[test]
fn a_few_addresses_registering_cannot_fill_the_hasher_for_everyone_else() {
    hasher_hogs(false);
}

#[test]
fn hasher_hogs_that_hang_up_after_asking_still_count_against_their_address() {
    hasher_hogs(true);
}

fn hasher_hogs(hang_up: bool) {
    let server = start_plain();
    let mut victim = Client::connect(server.addr);
    // Four addresses, each within its connect burst, each connection with one
    // registration in the hasher's queue: more jobs than the queue holds.
    let mut attackers = Vec::new();
    for a in 2..6u8 {
        let from = std::net::IpAddr::from([127, 0, 0, a]);
        for i in 0..20 {
            let mut c = Client::connect_from(server.addr, from);
            c.send_line(&format!("REGISTER:bot{a}x{i}:password123"));
            if hang_up {
                c.stream().shutdown(std::net::Shutdown::Both).unwrap();
            }
            attackers.push(c);
        }
    }
    // A round trip from a fresh connection: the server has read what was sent before.
    still_serves(server.addr, "probe");
    victim.send_line("REGISTER:victim:password123");
    let answer = victim.read_line();
    assert_eq!(answer, "SERVER:logged in as victim\n");
}

#[test]
fn a_close_frame_with_a_one_byte_payload_is_a_protocol_error() {
    let (server, web) = start_web();
    let mut s = raw_upgrade(web);
    s.write_all(&frame(0x88, &[0x03])).unwrap();
    assert_eq!(close_code(&mut s), Some(1002));
    still_serves(server.addr, "alice");
}

#[test]
fn line_separators_through_a_websocket_are_refused_like_control_characters() {
    let (server, web) = start_web();
    let mut bob = Client::connect_named(server.addr, "bob");
    let mut s = raw_upgrade(web);
    s.write_all(&frame(0x81, b"JOIN:alice")).unwrap();
    while bob.read_line() != "JOIN:alice\n" {}
    for forged in [
        "SAY::a\u{2028}SAY:bob:b",
        "SAY::a\u{2029}b",
        "SAY::\u{202E}b",
    ] {
        s.write_all(&frame(0x81, forged.as_bytes())).unwrap();
    }
    s.write_all(&frame(0x81, b"SAY::plain")).unwrap();
    // The first thing bob hears from alice is the plain line: nothing forged came.
    bob.expect_line("SAY:alice:plain\n");
}

/// Default abuse flags, no database, and a metrics listener.
fn start_metrics() -> (TestServer, SocketAddr) {
    util::init_logging();
    let server = Server::bind(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        db: "none".into(),
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .unwrap();
    let metrics = server.metrics_addr().expect("a metrics listener");
    (util::start_bound(server), metrics)
}

#[test]
fn scrapers_that_never_send_a_request_do_not_lock_out_a_real_scrape() {
    let (server, metrics) = start_metrics();
    // More idle scrapers than are served at once; each is accepted in turn (a chat
    // round trip after each connect orders it before the next).
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(metrics).unwrap());
    }
    still_serves(server.addr, "alice");
    let mut s = TcpStream::connect(metrics).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        util::show(&answer[..answer.len().min(200)])
    );
}

#[test]
fn malformed_http_on_the_browser_port_gets_an_answer_and_a_close() {
    let (server, web) = start_web();
    let many_headers: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    let requests: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02 garbage\r\n\r\n".to_vec(),
        format!("GET /ws HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
        [b"GET /".as_slice(), &[b'a'; 9000], b" HTTP/1.1\r\n\r\n"].concat(),
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
        b"GET /ws HTTP/1.1\r\nOrigin: null\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
    ];
    for request in requests {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = s.write_all(&request);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"HTTP/1.1 4"),
            "{}",
            util::show(&answer[..answer.len().min(200)])
        );
    }
    still_serves(server.addr, "alice");
}
