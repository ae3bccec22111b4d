//! TLS through real sockets: an in-process server with a TLS listener and a certificate
//! made by the test, and blocking rustls clients. Exact bytes inside the stream, the
//! same room for TLS and plain clients, both protocol versions, what the TLS port does
//! with plaintext, `--no-plain`, reloading the certificate, eviction of a slow TLS
//! reader, and `close_notify` on every clean close.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loopchat::{Server, ServerConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use util::{Client, GREETING, TIMEOUT, TestServer, show};

/// A directory with a self-signed certificate and key for `localhost`/127.0.0.1.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new(tag: &str) -> Certs {
        let dir =
            std::env::temp_dir().join(format!("loopchat-tls-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        certs.renew();
        certs
    }

    /// Writes a new pair over the files.
    fn renew(&self) {
        let pair = loopchat::tls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(&self.cert, pair.cert_pem).unwrap();
        std::fs::write(&self.key, pair.key_pem).unwrap();
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&self.cert).unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test defaults of `util::config` plus a TLS listener on a free port.
fn tls_config(certs: &Certs) -> ServerConfig {
    ServerConfig {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(certs.cert.clone()),
        tls_key: Some(certs.key.clone()),
        ..util::config()
    }
}

/// A running server and its TLS address.
fn start_tls(config: ServerConfig) -> (TestServer, SocketAddr) {
    util::init_logging();
    let server = Server::bind(config).expect("bind the TLS test server");
    let tls = server.tls_addr().expect("a TLS listener");
    (util::start_bound(server), tls)
}

/// A client configuration that trusts exactly `ca`, for the given protocol versions.
fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(loopchat::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A blocking TLS client with a line buffer.
struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    #[track_caller]
    fn connect_with(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.set_write_timeout(Some(TIMEOUT)).unwrap();
        let conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        TlsClient {
            stream: StreamOwned::new(conn, socket),
            buf: Vec::new(),
        }
    }

    /// Connects trusting `ca` (TLS 1.3 or 1.2) and asserts the greeting.
    #[track_caller]
    fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> TlsClient {
        let mut c = TlsClient::connect_with(addr, client_config(ca, rustls::ALL_VERSIONS));
        c.expect_line(GREETING);
        c
    }

    #[track_caller]
    fn connect_named(addr: SocketAddr, ca: &CertificateDer<'static>, name: &str) -> TlsClient {
        let mut c = TlsClient::connect(addr, ca);
        c.send(format!("JOIN:{name}\n").as_bytes());
        c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
        c
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads until a complete line is buffered, or the stream ends (`false`).
    fn fill_line(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        while !self.buf.contains(&b'\n') {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    #[track_caller]
    fn read_line(&mut self) -> String {
        match self.fill_line() {
            Ok(true) => {}
            Ok(false) => panic!("end of stream; partial: {:?}", show(&self.buf)),
            Err(e) => panic!("read failed ({e}); partial: {:?}", show(&self.buf)),
        }
        let i = self.buf.iter().position(|&b| b == b'\n').unwrap();
        String::from_utf8(self.buf.drain(..=i).collect()).unwrap()
    }

    #[track_caller]
    fn expect_line(&mut self, expected: &str) {
        assert_eq!(self.read_line(), expected);
    }

    /// Asserts that the server ends the stream with a `close_notify` (rustls reports a
    /// close without one as `UnexpectedEof`).
    #[track_caller]
    fn expect_close_notify(&mut self) {
        match self.fill_line() {
            Ok(false) => assert!(self.buf.is_empty(), "left over: {:?}", show(&self.buf)),
            Ok(true) => panic!("expected the end, got {:?}", show(&self.buf)),
            Err(e) => panic!("expected a close_notify, got {e}"),
        }
    }

    fn peer_certificate(&self) -> CertificateDer<'static> {
        self.stream.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }
}

#[test]
fn tls_and_plain_clients_share_a_room_byte_for_byte() {
    let certs = Certs::new("room");
    let (server, tls) = start_tls(tls_config(&certs));
    let ca = certs.der();
    let mut alice = TlsClient::connect_named(tls, &ca, "alice");
    let mut bob = Client::connect_named(server.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    alice.send(b"SAY::hello over TLS\n");
    bob.expect_line("SAY:alice:hello over TLS\n");
    bob.send_line("MSG:alice:psst");
    alice.expect_line("MSG:bob:psst\n");
    alice.send(b"WHO:\n");
    alice.expect_line("SERVER:#lobby (2): alice bob\n");
}

#[test]
fn text_mode_works_inside_tls() {
    let certs = Certs::new("text");
    let (server, tls) = start_tls(tls_config(&certs));
    let ca = certs.der();
    let mut bob = Client::connect_named(server.addr, "bob");
    let mut carol = TlsClient::connect(tls, &ca);
    carol.send(b"/nick carol\r\n");
    carol.expect_line("[server] you are carol in #lobby\r\n");
    bob.expect_line("JOIN:carol\n");
    carol.send(b"hi from a terminal\r\n");
    bob.expect_line("SAY:carol:hi from a terminal\n");
    bob.send_line("SAY::welcome");
    carol.expect_line("<bob> welcome\r\n");
}

#[test]
fn both_tls_versions_are_served() {
    let certs = Certs::new("versions");
    let (_server, tls) = start_tls(tls_config(&certs));
    let ca = certs.der();
    for (version, expected) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let mut c = TlsClient::connect_with(tls, client_config(&ca, &[version]));
        c.expect_line(GREETING);
        assert_eq!(c.version(), Some(expected));
        c.send(b"JOIN:v\n");
        c.expect_line("SERVER:you are v in #lobby\n");
        c.send(b"LEAVE:done\n");
        c.expect_line("SERVER:goodbye\n");
        c.expect_close_notify();
    }
}

#[test]
fn plaintext_on_the_tls_port_is_closed_without_a_reply() {
    let certs = Certs::new("plaintext");
    let (server, tls) = start_tls(tls_config(&certs));
    let mut confused = Client::connect_raw(tls);
    confused.send(b"JOIN:alice\n");
    let rest = confused.read_to_close();
    assert!(
        !rest.windows(7).any(|w| w == b"SERVER:"),
        "the TLS port must not speak plaintext: {:?}",
        show(&rest)
    );
    // The plain port is unaffected.
    let _ok = Client::connect_named(server.addr, "alice");
}

#[test]
fn no_plain_serves_tls_only() {
    let certs = Certs::new("noplain");
    let (server, tls) = start_tls(ServerConfig {
        no_plain: true,
        ..tls_config(&certs)
    });
    assert_eq!(
        server.addr, tls,
        "with --no-plain the only address is the TLS one"
    );
    let mut alice = TlsClient::connect_named(tls, &certs.der(), "alice");
    alice.send(b"WHO:\n");
    alice.expect_line("SERVER:#lobby (1): alice\n");
}

#[test]
fn tls_flags_that_do_not_go_together_are_refused() {
    let certs = Certs::new("flags");
    let no_key = ServerConfig {
        tls_key: None,
        ..tls_config(&certs)
    };
    let err = Server::bind(no_key).err().expect("refused");
    assert!(err.to_string().contains("go together"), "{err}");
    let no_tls = ServerConfig {
        no_plain: true,
        ..util::config()
    };
    let err = Server::bind(no_tls).err().expect("refused");
    assert!(err.to_string().contains("--no-plain"), "{err}");
    std::fs::write(&certs.key, "garbage").unwrap();
    let err = Server::bind(tls_config(&certs)).err().expect("refused");
    assert!(err.to_string().contains("key.pem"), "{err}");
}

#[test]
fn reload_gives_new_connections_the_new_certificate_and_keeps_the_old_ones() {
    let certs = Certs::new("reload");
    let (server, tls) = start_tls(tls_config(&certs));
    let first = certs.der();
    let mut alice = TlsClient::connect_named(tls, &first, "alice");
    assert_eq!(alice.peer_certificate(), first);

    certs.renew();
    let second = certs.der();
    server.handle.reload();
    // The reload is handled in order with connections: a barrier on the plain port
    // proves the loop has seen it.
    Client::connect(server.addr).barrier();
    let mut bob = TlsClient::connect_named(tls, &second, "bob");
    assert_eq!(bob.peer_certificate(), second);
    alice.expect_line("JOIN:bob\n");
    alice.send(b"SAY::still here\n");
    bob.expect_line("SAY:alice:still here\n");

    // A broken key: the reload is refused and the second pair stays.
    std::fs::write(
        &certs.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    server.handle.reload();
    Client::connect(server.addr).barrier();
    let mut carol = TlsClient::connect_named(tls, &second, "carol");
    assert_eq!(carol.peer_certificate(), second);
    carol.send(b"SAY::hi\n");
    alice.expect_line("JOIN:carol\n");
    alice.expect_line("SAY:carol:hi\n");
}

#[test]
fn a_slow_tls_reader_is_evicted_while_a_reading_one_gets_everything() {
    let certs = Certs::new("slow");
    let (server, tls) = start_tls(ServerConfig {
        max_output: 64 * 1024,
        max_output_soft: 32 * 1024,
        slow_grace: Duration::from_millis(200),
        send_buffer: 8 * 1024,
        ..tls_config(&certs)
    });
    let ca = certs.der();
    let mut reader = TlsClient::connect_named(tls, &ca, "reader");
    // The stalled client's socket gets a small receive buffer and is never read.
    let stalled = {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&tls.into()).unwrap();
        let socket: TcpStream = socket.into();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let conn = ClientConnection::new(
            client_config(&ca, rustls::ALL_VERSIONS),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut s = StreamOwned::new(conn, socket);
        let mut c = [0u8; 512];
        let n = s.read(&mut c).unwrap();
        assert!(c[..n].starts_with(b"SERVER:welcome"));
        s.write_all(b"JOIN:stalled\n").unwrap();
        s
    };
    reader.expect_line("JOIN:stalled\n");
    let mut sender = Client::connect_named(server.addr, "sender");
    reader.expect_line("JOIN:sender\n");
    let pad = "x".repeat(1000);
    let mut left = false;
    for i in 0..300 {
        sender.send_line(&format!("SAY::{i} {pad}"));
        // The stalled client falls behind by far more than the caps and goes, at some
        // point in the stream; the reading client gets every line, in order.
        let mut line = reader.read_line();
        if line == "LEAVE:stalled\n" {
            assert!(!left, "left twice");
            left = true;
            line = reader.read_line();
        }
        assert_eq!(line, format!("SAY:sender:{i} {pad}\n"));
    }
    if !left {
        reader.expect_line("LEAVE:stalled\n");
    }
    sender.expect_line("LEAVE:stalled\n");
    drop(stalled);
}

#[test]
fn leave_and_shutdown_end_tls_with_close_notify() {
    let certs = Certs::new("close");
    let (server, tls) = start_tls(tls_config(&certs));
    let ca = certs.der();
    let mut leaver = TlsClient::connect_named(tls, &ca, "leaver");
    leaver.send(b"LEAVE:bye\n");
    leaver.expect_line("SERVER:goodbye\n");
    leaver.expect_close_notify();

    let mut stayer = TlsClient::connect_named(tls, &ca, "stayer");
    server.handle.shutdown();
    stayer.expect_line("SERVER:server shutting down\n");
    stayer.expect_close_notify();
}

#[test]
fn a_silent_tls_connection_is_closed_at_the_registration_deadline() {
    let certs = Certs::new("silent");
    let (_server, tls) = start_tls(ServerConfig {
        register_timeout: Duration::from_millis(300),
        ..tls_config(&certs)
    });
    // Connects and never starts a handshake.
    let mut silent = Client::connect_raw(tls);
    let rest = silent.read_to_close();
    assert!(rest.is_empty(), "nothing but the close: {:?}", show(&rest));
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let certs = Certs::new("sighup");
    let cert = certs.cert.to_str().unwrap().to_string();
    let key = certs.key.to_str().unwrap().to_string();
    let bin = util::Binary::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    // Each barrier is a round trip through the loop, so the signal is seen between two.
    let reloaded = |needle: &str| {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut probe = Client::connect(bin.addr);
        while !bin.logged(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}"
            );
            probe.barrier();
        }
    };
    certs.renew();
    bin.signal(libc::SIGHUP);
    reloaded("reload: TLS certificate");
    std::fs::write(&certs.key, "not a key").unwrap();
    bin.signal(libc::SIGHUP);
    reloaded("keeping the certificate in use");
    // Still serving.
    let _alice = Client::connect_named(bin.addr, "alice");
}
