//! `loopchat client`, the real binary with piped standard input, against a server
//! started in-process on `127.0.0.1:0` (or, for what a real server never sends, a
//! listener in the test). A raw `TcpStream` peer in the same room sees exactly which
//! frames the client sent.
//!
//! A client whose standard input ends leaves at once, so a test keeps the pipe open and
//! types into it as it goes. Every wait is a read with a timeout, never a sleep.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use util::{Client as Peer, GREETING, TIMEOUT, start_default};

/// The greeting as the client prints it.
const GREETING_SHOWN: &str = "[server] welcome to loopchat; send JOIN:<name> to pick a name, or just type (/help for commands)";

/// A running `loopchat client` process. Its output is read by threads into channels, so
/// the test can wait for a line with a timeout.
struct ChatClient {
    child: Child,
    /// `None` once the test has closed standard input.
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

/// Starts `loopchat client` with `args`, standard input a pipe the test holds open.
#[track_caller]
fn spawn_client(args: &[&str]) -> ChatClient {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loopchat client");
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    ChatClient {
        stdin: child.stdin.take(),
        child,
        stdout,
        stderr,
    }
}

/// Starts a client that takes `name` at `addr` and waits until the server confirmed it
/// (so it is connected and handles signals).
#[track_caller]
fn named_client(addr: std::net::SocketAddr, name: &str) -> ChatClient {
    let c = spawn_client(&[&addr.to_string(), "--name", name]);
    c.expect_out(GREETING_SHOWN);
    c.expect_out(&format!("[server] you are {name} in #lobby"));
    c
}

/// Sends each line of `pipe` to a channel; the channel closes at end of stream.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `rx`, or a failure naming what was awaited.
#[track_caller]
fn next_line(rx: &Receiver<String>, what: &str) -> String {
    match rx.recv_timeout(TIMEOUT) {
        Ok(line) => line,
        Err(RecvTimeoutError::Timeout) => panic!("no {what} line within {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} ended while waiting for a line"),
    }
}

impl ChatClient {
    /// Types `line` (a `\n` is added).
    #[track_caller]
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("standard input is still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the client's standard input");
    }

    /// Ends standard input, as Ctrl-D or the end of a script does.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Asserts that the next line printed on standard output is `expected`.
    #[track_caller]
    fn expect_out(&self, expected: &str) {
        let got = next_line(&self.stdout, "stdout");
        assert_eq!(got, expected, "client printed an unexpected line");
    }

    /// Waits for the process to end (its stderr closes first) and returns its status
    /// and everything it wrote on stderr that the test had not read.
    #[track_caller]
    fn wait_exit(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut stderr = Vec::new();
        loop {
            match self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => stderr.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("client still running after {TIMEOUT:?}; stderr so far: {stderr:?}")
                }
            }
        }
        let status = self.child.wait().expect("wait for the client");
        (status, stderr)
    }

    /// Asserts the exit status and that the last stderr line contains `message`.
    #[track_caller]
    fn expect_exit(&mut self, code: i32, message: &str) {
        let (status, stderr) = self.wait_exit();
        assert_eq!(status.code(), Some(code), "exit status; stderr: {stderr:?}");
        let last = stderr.last().map_or("", String::as_str);
        assert!(
            last.contains(message),
            "last stderr line {last:?} lacks {message:?}; stderr: {stderr:?}"
        );
    }
}

impl Drop for ChatClient {
    fn drop(&mut self) {
        // A failed test must not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_clients_chat_and_each_prints_the_other_rendered() {
    let server = start_default();
    let mut alice = named_client(server.addr, "alice");
    let mut bob = named_client(server.addr, "bob");
    alice.expect_out("*** bob joined");

    alice.type_line("hi bob");
    bob.expect_out("<alice> hi bob");
    bob.type_line("hello: alice");
    alice.expect_out("<bob> hello: alice");

    bob.type_line("/quit");
    bob.expect_out("[server] goodbye");
    bob.expect_exit(0, "left");
    alice.expect_out("*** bob left");
}

#[test]
fn nick_join_msg_who_and_rooms_map_to_frames() {
    let server = start_default();
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = named_client(server.addr, "alice");
    carol.expect_line("JOIN:alice\n");

    alice.type_line("/who");
    alice.expect_out("[server] #lobby (2): alice carol");
    alice.type_line("/msg carol psst: a secret");
    carol.expect_line("MSG:alice:psst: a secret\n");
    carol.send_line("MSG:alice:got it");
    alice.expect_out("*carol* got it");

    alice.type_line("/nick alicia");
    carol.expect_line("SERVER:alice is now known as alicia\n");
    alice.expect_out("[server] alice is now known as alicia");

    alice.type_line("/join #rust");
    carol.expect_line("LEAVE:alicia\n");
    alice.expect_out("[server] you are now in #rust");
    alice.type_line("/rooms");
    alice.expect_out("[server] rooms (2): #lobby (1) #rust (1)");
    carol.barrier();
}

#[test]
fn quit_sends_leave_and_exits_0_while_input_is_still_open() {
    let server = start_default();
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = named_client(server.addr, "alice");
    carol.expect_line("JOIN:alice\n");

    alice.type_line("/quit see you");
    carol.expect_line("LEAVE:alice\n");
    alice.expect_out("[server] goodbye");
    alice.expect_exit(0, "left");
}

#[test]
fn unknown_command_and_empty_line_send_nothing() {
    let server = start_default();
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = named_client(server.addr, "alice");
    carol.expect_line("JOIN:alice\n");

    alice.type_line("/dance");
    alice.type_line("");
    alice.type_line("after");
    // Lines go out in order, so this being next proves nothing went before it.
    carol.expect_line("SAY:alice:after\n");
    let err = next_line(&alice.stderr, "stderr");
    assert!(err.contains("loopchat: connected to"), "{err:?}");
    let err = next_line(&alice.stderr, "stderr");
    assert!(err.contains("unknown command /dance"), "{err:?}");
}

#[test]
fn end_of_input_sends_leave_and_exits_0_after_the_server_closes() {
    let server = start_default();
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = named_client(server.addr, "alice");
    carol.expect_line("JOIN:alice\n");

    alice.close_stdin();
    carol.expect_line("LEAVE:alice\n");
    alice.expect_out("[server] goodbye");
    alice.expect_exit(0, "(end of input)");
}

#[test]
fn piped_script_runs_to_the_end_and_leaves() {
    let server = start_default();
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut script = spawn_client(&[&server.addr.to_string()]);
    // The whole script at once, the last line without its newline.
    let stdin = script.stdin.as_mut().unwrap();
    stdin
        .write_all(b"/nick dave\nSAY::one\ntwo\nthree")
        .unwrap();
    script.close_stdin();

    carol.expect_lines(&[
        "JOIN:dave\n",
        "SAY:dave:one\n",
        "SAY:dave:two\n",
        "SAY:dave:three\n",
        "LEAVE:dave\n",
    ]);
    script.expect_out(GREETING_SHOWN);
    script.expect_out("[server] you are dave in #lobby");
    script.expect_out("[server] goodbye");
    script.expect_exit(0, "left");
}

#[test]
fn ctrl_c_sends_leave_and_exits_0() {
    let server = start_default();
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = named_client(server.addr, "alice");
    carol.expect_line("JOIN:alice\n");

    let pid = libc::pid_t::try_from(alice.child.id()).unwrap();
    // SAFETY: kill(2) with a valid signal on our own child has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    carol.expect_line("LEAVE:alice\n");
    alice.expect_out("[server] goodbye");
    alice.expect_exit(0, "(interrupted)");
}

#[test]
fn server_shutdown_ends_the_client_with_its_message() {
    let server = start_default();
    let mut alice = named_client(server.addr, "alice");
    server.handle.shutdown();
    alice.expect_out("[server] server shutting down");
    alice.expect_exit(0, "closed the connection");
}

#[test]
fn closed_port_exits_1_with_a_clear_error() {
    // A port that was just free: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = spawn_client(&[&addr.to_string()]);
    c.expect_exit(1, &format!("cannot connect to {addr}: Connection refused"));
}

#[test]
fn bad_address_exits_1_with_a_clear_error() {
    let mut c = spawn_client(&["not an address"]);
    c.expect_exit(1, "bad address \"not an address\": expected host:port");
}

#[test]
fn raw_frame_peer_and_client_interoperate() {
    let server = start_default();
    let mut alice = named_client(server.addr, "alice");
    let mut raw = Peer::connect(server.addr);
    raw.send(b"JOIN:raw\r\nSAY::hello from raw\n");
    raw.expect_line("SERVER:you are raw in #lobby\n");
    alice.expect_out("*** raw joined");
    alice.expect_out("<raw> hello from raw");

    alice.type_line("SAY:mallory:a frame passes through");
    alice.type_line("and plain text is chat");
    raw.expect_line("SAY:alice:a frame passes through\n");
    raw.expect_line("SAY:alice:and plain text is chat\n");

    raw.send_line("LEAVE:");
    raw.expect_line("SERVER:goodbye\n");
    alice.expect_out("*** raw left");
}

/// A listener in the test plays a server that says what loopchat never would.
#[track_caller]
fn fake_server(says: impl Into<Vec<u8>>) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let says = says.into();
    let server = thread::spawn(move || {
        let (mut s, _): (TcpStream, _) = listener.accept().unwrap();
        s.write_all(&says).unwrap();
    });
    (addr, server)
}

#[test]
fn hostile_server_cannot_reach_the_terminal_and_odd_lines_are_printed_raw() {
    let (addr, server) = fake_server(&b"SAY:evil:\x1b[2Jhi\x07\r\nNOTICE:odd\n\xc2\x9b31mtail"[..]);
    let mut c = spawn_client(&[&addr.to_string()]);
    c.expect_out("<evil> [2Jhi");
    c.expect_out("NOTICE:odd");
    c.expect_out("31mtail");
    c.expect_exit(0, "closed the connection");
    server.join().unwrap();
}

#[test]
fn server_closing_right_after_an_error_exits_1() {
    let (addr, server) = fake_server(format!("{GREETING}ERROR:server full\n"));
    let mut c = spawn_client(&[&addr.to_string()]);
    c.expect_out(GREETING_SHOWN);
    c.expect_out("[error] server full");
    c.expect_exit(1, "closed the connection: server full");
    server.join().unwrap();
}

// ---- TLS ------------------------------------------------------------------------------

/// A self-signed certificate and key for `names`, in a directory removed on drop.
struct Certs {
    dir: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Certs {
    fn new(tag: &str, names: &[&str]) -> Certs {
        let dir =
            std::env::temp_dir().join(format!("loopchat-client-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let pair = loopchat::tls::self_signed(&names).unwrap();
        let certs = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&certs.cert, pair.cert_pem).unwrap();
        std::fs::write(&certs.key, pair.key_pem).unwrap();
        certs
    }

    fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An in-process server with a plain listener and a TLS one serving `certs`; returns
/// the TLS address too.
fn start_tls(certs: &Certs) -> (util::TestServer, std::net::SocketAddr) {
    util::init_logging();
    let config = loopchat::ServerConfig {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(certs.cert.clone()),
        tls_key: Some(certs.key.clone()),
        ..util::config()
    };
    let server = loopchat::Server::bind(config).expect("bind the TLS test server");
    let tls = server.tls_addr().expect("a TLS listener");
    (util::start_bound(server), tls)
}

/// Starts a TLS client with `args` after the address and waits for its greeting.
#[track_caller]
fn tls_client(addr: std::net::SocketAddr, name: &str, args: &[&str]) -> ChatClient {
    let addr = addr.to_string();
    let mut all = vec![addr.as_str(), "--tls", "--name", name];
    all.extend_from_slice(args);
    let c = spawn_client(&all);
    c.expect_out(GREETING_SHOWN);
    c.expect_out(&format!("[server] you are {name} in #lobby"));
    c
}

#[test]
fn tls_with_ca_verifies_the_server_and_chats_byte_exactly() {
    let certs = Certs::new("ca", &["localhost", "127.0.0.1"]);
    let (server, tls) = start_tls(&certs);
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = tls_client(tls, "alice", &["--ca", certs.cert()]);
    carol.expect_line("JOIN:alice\n");
    let err = next_line(&alice.stderr, "stderr");
    assert!(
        err.starts_with(&format!("loopchat: connected to {tls} over TLS 1.3 (")),
        "{err:?}"
    );
    assert!(err.contains("certificate verified"), "{err:?}");

    alice.type_line("héllo: over TLS");
    carol.expect_line("SAY:alice:héllo: over TLS\n");
    alice.type_line("SAY:mallory:a frame passes through");
    carol.expect_line("SAY:alice:a frame passes through\n");
    carol.send_line("MSG:alice:psst");
    alice.expect_out("*carol* psst");

    alice.type_line("/quit");
    carol.expect_line("LEAVE:alice\n");
    alice.expect_out("[server] goodbye");
    alice.expect_exit(0, "left");
}

#[test]
fn tls_without_a_trusted_certificate_is_refused_naming_the_failure() {
    let certs = Certs::new("refused", &["localhost", "127.0.0.1"]);
    let (_server, tls) = start_tls(&certs);
    // The system's roots, made deterministic: an unrelated CA stands for them.
    let roots = certs.dir.join("roots.pem");
    std::fs::write(&roots, unrelated_ca()).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["client", &tls.to_string(), "--tls"])
        .env("SSL_CERT_FILE", &roots)
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = wait_output(&mut c);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "loopchat: TLS handshake with {tls} failed: invalid peer certificate: UnknownIssuer; \
             pass --ca FILE to trust the server's certificate (or its CA), or --insecure to \
             skip verification for testing\n"
        )
    );

    // Trusted, but for other names: the name is checked too.
    let only_localhost = Certs::new("named", &["localhost"]);
    let (_named, tls) = start_tls(&only_localhost);
    let mut c = spawn_client(&[&tls.to_string(), "--tls", "--ca", only_localhost.cert()]);
    c.expect_exit(
        1,
        &format!(
            "TLS handshake with {tls} failed: invalid peer certificate: certificate not valid \
             for name \"127.0.0.1\""
        ),
    );
}

/// A CA certificate (PEM) with a name of its own, so that it is plainly not the issuer
/// of the server's certificate.
fn unrelated_ca() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "loopchat test: an unrelated CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// Waits for a child's end; its status and standard error.
#[track_caller]
fn wait_output(child: &mut Child) -> (ExitStatus, String) {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn tls_insecure_warns_and_still_chats() {
    let certs = Certs::new("insecure", &["localhost", "127.0.0.1"]);
    let (server, tls) = start_tls(&certs);
    let mut carol = Peer::connect_named(server.addr, "carol");
    let mut alice = tls_client(tls, "alice", &["--insecure"]);
    carol.expect_line("JOIN:alice\n");
    let warning = next_line(&alice.stderr, "stderr");
    assert!(
        warning
            .starts_with("loopchat: WARNING: --insecure: the server's certificate is not verified"),
        "{warning:?}"
    );
    let connected = next_line(&alice.stderr, "stderr");
    assert!(
        connected.contains("certificate NOT verified"),
        "{connected:?}"
    );
    alice.type_line("hi");
    carol.expect_line("SAY:alice:hi\n");
    alice.close_stdin();
    carol.expect_line("LEAVE:alice\n");
    alice.expect_out("[server] goodbye");
    alice.expect_exit(0, "(end of input)");
}

#[test]
fn tls_to_a_plain_port_says_it_may_not_be_a_tls_port() {
    let server = start_default();
    let mut c = spawn_client(&[&server.addr.to_string(), "--tls", "--insecure"]);
    c.expect_exit(1, &format!("(is {} a TLS port?)", server.addr));
}

#[test]
fn tls_quit_sends_close_notify_after_leave_and_reads_what_the_server_still_owes() {
    let certs = Certs::new("notify", &["127.0.0.1"]);
    let config = loopchat::tls::server_config(&certs.cert, &certs.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A blocking rustls server that records what the client sent before its close.
    let server = thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, socket);
        tls.write_all(GREETING.as_bytes()).unwrap();
        let mut got = Vec::new();
        // Ok(0) only for a close_notify; a bare FIN would be UnexpectedEof.
        let end = tls.read_to_end(&mut got).map(drop);
        // The client still reads after its close_notify (a half-close).
        tls.write_all(b"SERVER:goodbye\n").unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        (
            String::from_utf8(got).unwrap(),
            end.map_err(|e| e.to_string()),
        )
    });
    let mut c = spawn_client(&[&addr.to_string(), "--tls", "--ca", certs.cert()]);
    c.expect_out(GREETING_SHOWN);
    c.type_line("bye now");
    c.type_line("/quit later");
    c.expect_out("[server] goodbye");
    c.expect_exit(0, "left");
    let (got, end) = server.join().unwrap();
    assert_eq!(got, "SAY::bye now\nLEAVE:later\n");
    assert_eq!(end, Ok(()), "the client's close was not a close_notify");
}

#[test]
fn tls_server_shutdown_ends_the_client_cleanly() {
    let certs = Certs::new("shutdown", &["127.0.0.1"]);
    let (server, tls) = start_tls(&certs);
    let mut alice = tls_client(tls, "alice", &["--ca", certs.cert()]);
    server.handle.shutdown();
    alice.expect_out("[server] server shutting down");
    alice.expect_exit(0, "closed the connection");
}
