//! Browsers through real sockets: the built-in page and its Content-Security-Policy,
//! WebSocket clients (tungstenite) chatting with plain clients byte for byte, origin
//! checks, one line per message, and the close codes for oversized messages, invalid
//! UTF-8 and protocol errors.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use loopchat::{Server, ServerConfig};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};
use util::{Client, GREETING, TIMEOUT, TestServer};

fn start_web() -> (TestServer, SocketAddr) {
    util::init_logging();
    let server = Server::bind(ServerConfig {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        ws_origins: vec!["https://chat.example.org".into()],
        ..util::config()
    })
    .unwrap();
    let web = server.ws_addr().expect("a browser listener");
    (util::start_bound(server), web)
}

type Ws = WebSocket<TcpStream>;

/// Opens a WebSocket to `/ws`, with `origin` if given.
fn open(addr: SocketAddr, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    tungstenite::client(request, socket)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })
}

/// The next text message.
#[track_caller]
fn text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[track_caller]
fn say(ws: &mut Ws, line: &str) {
    ws.send(Message::text(line)).expect("send");
}

/// Expects the server to close with `code`.
#[track_caller]
fn closed_with(ws: &mut Ws, code: CloseCode) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, code);
                return;
            }
            Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected a close with {code:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_browser_and_a_plain_client_chat_byte_for_byte() {
    let (server, web) = start_web();
    let mut ws = open(web, None).unwrap();
    assert_eq!(text(&mut ws), GREETING.trim_end());
    say(&mut ws, "JOIN:alice");
    assert_eq!(text(&mut ws), "SERVER:you are alice in #lobby");
    let mut bob = Client::connect_named(server.addr, "bob");
    assert_eq!(text(&mut ws), "JOIN:bob");
    say(&mut ws, "SAY::hello from a browser");
    bob.expect_line("SAY:alice:hello from a browser\n");
    bob.send_line("MSG:alice:psst");
    assert_eq!(text(&mut ws), "MSG:bob:psst");
}

#[test]
fn a_line_end_inside_a_message_does_not_start_a_second_command() {
    let (server, web) = start_web();
    let mut ws = open(web, None).unwrap();
    text(&mut ws);
    say(&mut ws, "JOIN:alice");
    text(&mut ws);
    let mut bob = Client::connect_named(server.addr, "bob");
    text(&mut ws);
    say(&mut ws, "SAY::one\nLEAVE:bye");
    assert_eq!(text(&mut ws), "ERROR:control characters are not allowed");
    say(&mut ws, "SAY::still here");
    bob.expect_line("SAY:alice:still here\n");
}

#[test]
fn origins_must_match_the_host_or_the_list() {
    let (_server, web) = start_web();
    assert!(open(web, Some(&format!("http://{web}"))).is_ok());
    assert!(open(web, Some("https://chat.example.org")).is_ok());
    match open(web, Some("https://evil.example")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[test]
fn oversized_messages_invalid_utf8_and_protocol_errors_close_with_their_codes() {
    let (_server, web) = start_web();
    let mut ws = open(web, None).unwrap();
    text(&mut ws);
    say(&mut ws, &"x".repeat(5000));
    closed_with(&mut ws, CloseCode::Size);

    // Invalid UTF-8 in a text frame, and a binary frame, written by hand.
    for (frame, code) in [
        (vec![0x81u8, 0x82, 0, 0, 0, 0, 0xff, 0xfe], 1007u16),
        (vec![0x82u8, 0x81, 0, 0, 0, 0, b'x'], 1002),
        (vec![0x81u8, 0x01, b'x'], 1002), // not masked
    ] {
        let mut s = raw_upgrade(web);
        s.write_all(&frame).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let close = got
            .windows(4)
            .find(|w| w[0] == 0x88 && w[1] == 2)
            .unwrap_or_else(|| panic!("no close frame in {got:?}"));
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), code);
    }
}

/// Upgrades by hand and checks the 101 answer and its accept key.
fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let (s, head) = util::ws_upgrade(addr);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    s
}

#[test]
fn the_page_is_served_with_a_strict_content_security_policy() {
    let (_server, web) = start_web();
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{path}: {answer}"
        );
        assert!(answer.contains(&format!("Content-Type: {kind}")), "{path}");
        let csp = answer
            .lines()
            .find(|l| l.starts_with("Content-Security-Policy: "))
            .expect("a CSP");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
    }
    let mut s = TcpStream::connect(web).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
}

#[test]
fn leave_ends_with_a_close_frame_then_the_socket_closes() {
    let (_server, web) = start_web();
    let mut ws = open(web, None).unwrap();
    text(&mut ws);
    say(&mut ws, "LEAVE:bye");
    assert_eq!(text(&mut ws), "SERVER:goodbye");
    closed_with(&mut ws, CloseCode::Away);
}

#[test]
fn browsers_can_come_over_tls_too() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let dir = std::env::temp_dir().join(format!("loopchat-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pair = loopchat::tls::self_signed(&["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    util::init_logging();
    let server = Server::bind(ServerConfig {
        wss_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..util::config()
    })
    .unwrap();
    let wss = server.wss_addr().expect("a browser listener over TLS");
    let _server = util::start_bound(server);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(loopchat::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let socket = TcpStream::connect(wss).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let stream = rustls::StreamOwned::new(conn, socket);
    let request = format!("wss://localhost:{}/ws", wss.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tungstenite::client(request, stream).expect("a WebSocket over TLS");
    let greeting = loop {
        if let Message::Text(t) = ws.read().unwrap() {
            break t.to_string();
        }
    };
    assert_eq!(greeting, GREETING.trim_end());
    ws.send(Message::text("JOIN:secure")).unwrap();
    let reply = loop {
        if let Message::Text(t) = ws.read().unwrap() {
            break t.to_string();
        }
    };
    assert_eq!(reply, "SERVER:you are secure in #lobby");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_upgrade_gets_400_and_a_ping_gets_a_pong() {
    let (_server, web) = start_web();
    let mut s = TcpStream::connect(web).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );

    let mut ws = open(web, None).unwrap();
    text(&mut ws);
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Text(_) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

#[test]
fn a_browser_that_stops_reading_is_evicted_and_others_go_on() {
    util::init_logging();
    let server = Server::bind(ServerConfig {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        max_output: 64 * 1024,
        max_output_soft: 16 * 1024,
        slow_grace: std::time::Duration::from_millis(200),
        send_buffer: 8 * 1024,
        ..util::config()
    })
    .unwrap();
    let web = server.ws_addr().unwrap();
    let server = util::start_bound(server);
    // A browser with a small receive buffer that joins and never reads again.
    let stalled = {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&web.into()).unwrap();
        let socket: TcpStream = socket.into();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let request = format!("ws://{web}/ws").into_client_request().unwrap();
        let (mut ws, _) = tungstenite::client(request, socket).unwrap();
        text(&mut ws);
        say(&mut ws, "JOIN:stalled");
        ws
    };
    let [mut sender, mut reader] = util::named(server.addr, ["sender", "reader"]);
    let pad = "x".repeat(1000);
    let mut left = false;
    for i in 0..300 {
        sender.send_line(&format!("SAY::{i} {pad}"));
        let mut line = reader.read_line();
        if line == "LEAVE:stalled\n" {
            left = true;
            line = reader.read_line();
        }
        assert_eq!(line, format!("SAY:sender:{i} {pad}\n"));
    }
    if !left {
        reader.expect_line("LEAVE:stalled\n");
    }
    drop(stalled);
}

#[test]
fn a_line_waiting_for_a_password_check_holds_the_next_message() {
    let (_server, web) = start_web();
    let mut ws = open(web, None).unwrap();
    assert_eq!(text(&mut ws), GREETING.trim_end());
    // Two messages in one write: the server's read takes both, and the second must
    // wait until the first (hashed on another thread) is answered.
    ws.write(Message::text("REGISTER:erin:correct horse"))
        .unwrap();
    ws.write(Message::text("JOIN:#after")).unwrap();
    ws.flush().unwrap();
    assert_eq!(text(&mut ws), "SERVER:logged in as erin");
    assert_eq!(text(&mut ws), "SERVER:you are erin in #lobby");
    assert_eq!(text(&mut ws), "SERVER:you are now in #after");
}
