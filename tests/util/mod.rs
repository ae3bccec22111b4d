//! Shared helpers for the integration tests: start an in-process server on
//! `127.0.0.1:0`, talk to it through real sockets, and assert on exact bytes.
//!
//! Every read has a timeout, so a test that waits for something the server never sends
//! fails with a message saying what it waited for, instead of hanging. The helpers are
//! `#[track_caller]`, so a failure points at the test line, not at this file.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use loopchat::{Server, ServerConfig, ServerHandle};

pub mod cluster;
pub mod redis;

/// How long any single read waits before the test fails: generous, because a slow CI
/// machine must not fail a correct server, yet short enough that a hang is reported.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The line every new connection gets first.
pub const GREETING: &str = "SERVER:welcome to loopchat; send JOIN:<name> to pick a name, or just type (/help for commands)\n";

static LOGGER: Once = Once::new();

/// Sends the server's log to the test harness (shown only for failing tests).
pub fn init_logging() {
    LOGGER.call_once(|| {
        let _ = env_logger::builder().is_test(true).try_init();
    });
}

/// A configuration for tests: an ephemeral port and every abuse limit off, so rate
/// limits, per-IP caps and bans (tested elsewhere) never interfere. Tests override the
/// limits they exercise.
pub fn config() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        rate: 0.0,
        connect_rate: 0.0,
        max_conns_per_ip: 0,
        max_strikes: 0,
        ip_rate: 0.0,
        msg_in_rate: 0.0,
        // History lives in memory and is not replayed on joining, so the exact bytes
        // other tests expect after a join stay the same; tests/history.rs turns it on.
        db: "none".into(),
        history_replay: 0,
        // Keeps a test's teardown short when a client stops reading.
        linger: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

/// A server running on its own thread; shut down (gracefully) when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shutdown handle.
    pub handle: ServerHandle,
    done: Receiver<io::Result<()>>,
}

/// Starts a server with `config` on a thread of its own.
#[track_caller]
pub fn start(config: ServerConfig) -> TestServer {
    init_logging();
    start_bound(Server::bind(config).expect("bind the test server"))
}

/// Runs an already bound server on a thread of its own.
#[track_caller]
pub fn start_bound(server: Server) -> TestServer {
    let addr = server.local_addr();
    let handle = server.handle();
    let (tx, done) = mpsc::channel();
    thread::Builder::new()
        .name("loopchat-server".into())
        .spawn(move || {
            let _ = tx.send(server.run());
        })
        .expect("spawn the server thread");
    TestServer { addr, handle, done }
}

/// Starts a server with the test defaults of [`config`].
#[track_caller]
pub fn start_default() -> TestServer {
    start(config())
}

impl TestServer {
    /// Asks for a graceful shutdown and asserts that `run` returns `Ok` within `within`.
    #[track_caller]
    pub fn shutdown_and_wait(&self, within: Duration) {
        self.handle.shutdown();
        self.wait_exit(within);
    }

    /// Asserts that the server's `run` returns `Ok` within `within`.
    #[track_caller]
    pub fn wait_exit(&self, within: Duration) {
        match self.done.recv_timeout(within) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("server run() failed: {e}"),
            Err(RecvTimeoutError::Timeout) => panic!("server did not exit within {within:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("server thread panicked"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        // Wait a little so servers do not pile up, but never hang or panic in drop.
        let _ = self.done.recv_timeout(Duration::from_secs(3));
    }
}

/// Makes `bytes` readable in assertion messages.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    if bytes.len() > MAX {
        format!("{}… ({} bytes)", bytes[..MAX].escape_ascii(), bytes.len())
    } else {
        bytes.escape_ascii().to_string()
    }
}

/// One client connection with a read buffer and a read timeout.
pub struct Client {
    stream: TcpStream,
    /// Bytes read from the socket and not yet consumed by a test.
    buf: Vec<u8>,
}

impl Client {
    /// Connects and asserts the greeting.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        c.expect_line(GREETING);
        c
    }

    /// Connects without reading anything.
    #[track_caller]
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        Client::from_stream(stream)
    }

    /// Connects with a small receive buffer (set before connecting, which also stops the
    /// kernel from growing it), so that a client that does not read fills up quickly.
    #[track_caller]
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).expect("connect to the server");
        Client::from_stream(socket.into())
    }

    /// Connects from the local address `from` (another loopback address plays another
    /// IP) without reading anything. A server on an IPv4-mapped IPv6 address is reached
    /// over IPv4.
    #[track_caller]
    pub fn connect_raw_from(addr: SocketAddr, from: IpAddr) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .expect("create a client socket");
        if let Err(e) = socket.bind(&SocketAddr::new(from, 0).into()) {
            panic!("bind a client socket to {from}: {e}");
        }
        if let Err(e) = socket.connect(&addr.into()) {
            panic!("connect from {from} to {addr}: {e}");
        }
        Client::from_stream(socket.into())
    }

    /// [`Client::connect_raw_from`], then asserts the greeting.
    #[track_caller]
    pub fn connect_from(addr: SocketAddr, from: IpAddr) -> Client {
        let mut c = Client::connect_raw_from(addr, from);
        c.expect_line(GREETING);
        c
    }

    /// [`Client::connect_from`], then takes `name` and asserts the reply.
    #[track_caller]
    pub fn connect_named_from(addr: SocketAddr, from: IpAddr, name: &str) -> Client {
        let mut c = Client::connect_from(addr, from);
        c.send_line(&format!("JOIN:{name}"));
        c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
        c
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects, takes `name` and asserts the greeting and the reply.
    #[track_caller]
    pub fn connect_named(addr: SocketAddr, name: &str) -> Client {
        let mut c = Client::connect(addr);
        c.send_line(&format!("JOIN:{name}"));
        c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
        c
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all of `bytes`.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("write of {} failed: {e}", show(bytes));
        }
    }

    /// Writes `line` followed by `\n`.
    #[track_caller]
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next complete line, including its line end.
    #[track_caller]
    pub fn read_line_bytes(&mut self) -> Vec<u8> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                return self.buf.drain(..searched + i + 1).collect();
            }
            searched = self.buf.len();
            match self.fill() {
                Ok(0) => panic!(
                    "end of stream while waiting for a line; partial: {:?}",
                    show(&self.buf)
                ),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => panic!(
                    "no complete line within {TIMEOUT:?}; partial: {:?}",
                    show(&self.buf)
                ),
                Err(e) => panic!(
                    "read failed ({e}) while waiting for a line; partial: {:?}",
                    show(&self.buf)
                ),
            }
        }
    }

    /// Reads the next complete line if one arrives within `wait`, else `None` (a partial
    /// line stays buffered).
    #[track_caller]
    pub fn read_line_within(&mut self, wait: Duration) -> Option<String> {
        if !self.buf.contains(&b'\n') {
            self.stream.set_read_timeout(Some(wait)).unwrap();
            let result = self.fill();
            self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            match result {
                Err(e) if is_timeout(&e) => return None,
                Ok(0) => panic!("end of stream; partial: {:?}", show(&self.buf)),
                Ok(_) => {}
                Err(e) => panic!("read failed: {e}"),
            }
            if !self.buf.contains(&b'\n') {
                return None;
            }
        }
        Some(self.read_line())
    }

    /// Reads the next complete line as text, including its line end.
    #[track_caller]
    pub fn read_line(&mut self) -> String {
        let line = self.read_line_bytes();
        match String::from_utf8(line) {
            Ok(s) => s,
            Err(e) => panic!("server sent invalid UTF-8: {:?}", show(e.as_bytes())),
        }
    }

    /// Asserts that the next line is exactly `expected` (line end included).
    #[track_caller]
    pub fn expect_line(&mut self, expected: &str) {
        let got = self.read_line_bytes();
        assert!(
            got == expected.as_bytes(),
            "expected line {:?}\n       got line {:?}",
            show(expected.as_bytes()),
            show(&got)
        );
    }

    /// Asserts the next lines, in order.
    #[track_caller]
    pub fn expect_lines(&mut self, expected: &[&str]) {
        for line in expected {
            self.expect_line(line);
        }
    }

    /// Asserts that the next line starts with `prefix` and returns it.
    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix),
            "expected a line starting {prefix:?}\n                    got {line:?}"
        );
        line
    }

    /// Asserts that the server closes the connection cleanly with nothing more to say.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "expected end of stream, have unread {:?}",
            show(&self.buf)
        );
        match self.fill() {
            Ok(0) => {}
            Ok(_) => panic!("expected end of stream, got {:?}", show(&self.buf)),
            Err(e) if is_timeout(&e) => panic!("connection still open after {TIMEOUT:?}"),
            Err(e) => panic!("expected a clean end of stream, got error {e}"),
        }
    }

    /// Reads until the connection ends (cleanly or by reset) and returns what arrived.
    #[track_caller]
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) if is_timeout(&e) => panic!(
                    "connection still open after {TIMEOUT:?}; read {} bytes",
                    self.buf.len()
                ),
                Err(e) => panic!("read failed: {e}"),
            }
            assert!(Instant::now() < deadline, "connection still open");
        }
        std::mem::take(&mut self.buf)
    }

    /// Asserts that nothing arrives for `wait`. Costs `wait` of wall time, so tests use
    /// it sparingly; a [`Client::barrier`] proves the same without waiting.
    #[track_caller]
    pub fn expect_silence(&mut self, wait: Duration) {
        assert!(
            self.buf.is_empty(),
            "expected silence, have unread {:?}",
            show(&self.buf)
        );
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let result = self.fill();
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        match result {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(_) => panic!("expected silence, got {:?}", show(&self.buf)),
            Err(e) => panic!("expected silence, got error {e}"),
        }
    }

    /// Proves that nothing was queued for this (frame-mode) client before this point: the
    /// server answers `ROOMS:` in order, so the reply must be the very next line.
    #[track_caller]
    pub fn barrier(&mut self) {
        self.send(b"ROOMS:\n");
        self.expect_prefix("SERVER:rooms (");
    }

    /// The same as [`Client::barrier`] for a text-mode client.
    #[track_caller]
    pub fn text_barrier(&mut self) {
        self.send(b"/rooms\r\n");
        self.expect_prefix("[server] rooms (");
    }

    /// Closes the connection with a TCP reset (`SO_LINGER` 0) instead of a FIN.
    pub fn reset(self) {
        let sock = socket2::SockRef::from(&self.stream);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(self);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects once the server has room: a slot freed by a close is free only once the
/// server has noticed the close, so `ERROR:server full` is retried for a while.
#[track_caller]
pub fn connect_when_free(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut c = Client::connect_raw(addr);
        let line = c.read_line();
        if line == GREETING {
            return c;
        }
        assert_eq!(line, "ERROR:server full\n", "unexpected first line");
        assert!(Instant::now() < deadline, "no slot freed within 2 s");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Connects clients named `names`, in order, each taking its name in `#lobby`, and
/// consumes the `JOIN:` notices the earlier ones get, so every client starts with
/// nothing unread.
#[track_caller]
pub fn connect_all(addr: SocketAddr, names: &[&str]) -> Vec<Client> {
    let mut clients: Vec<Client> = Vec::new();
    for name in names {
        let c = Client::connect_named(addr, name);
        for earlier in &mut clients {
            earlier.expect_line(&format!("JOIN:{name}\n"));
        }
        clients.push(c);
    }
    clients
}

/// [`connect_all`] for a fixed number of clients, to destructure in one line.
#[track_caller]
pub fn named<const N: usize>(addr: SocketAddr, names: [&str; N]) -> [Client; N] {
    match connect_all(addr, &names).try_into() {
        Ok(clients) => clients,
        Err(_) => unreachable!("connect_all returns one client per name"),
    }
}

/// On loopback, Linux grows a socket's send buffer to `net.ipv4.tcp_wmem`'s maximum
/// (4 MiB by default) even when the peer's receive window is tiny, so a client that
/// never reads absorbs about this much before the server has to queue anything.
pub const KERNEL_ABSORBS: usize = 4 << 20;

/// `count` chat lines `SAY::<i> <pad>` with a 5-digit sequence number and `pad_len`
/// bytes of padding, in one buffer to send in one write.
pub fn says(range: std::ops::Range<usize>, pad_len: usize) -> Vec<u8> {
    let pad = "p".repeat(pad_len);
    let mut out = Vec::new();
    for i in range {
        out.extend_from_slice(format!("SAY::{i:05} {pad}\n").as_bytes());
    }
    out
}

/// The line a member receives for line `i` of [`says`] sent by `from`.
pub fn said(from: &str, i: usize, pad_len: usize) -> String {
    format!("SAY:{from}:{i:05} {}\n", "p".repeat(pad_len))
}

/// The real binary, killed when the test ends however it ends.
pub struct Binary {
    /// The server process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server's log, shown when a test fails.
    log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts `loopchat server 127.0.0.1:0 <args>` and waits for its listening address.
    #[track_caller]
    pub fn start(args: &[&str]) -> Binary {
        Binary::start_with_nofile(args, None)
    }

    /// [`Binary::start`] logging at `debug`.
    #[track_caller]
    pub fn start_debug(args: &[&str]) -> Binary {
        Binary::start_with(args, None, "debug")
    }

    /// [`Binary::start`] with the open-files limit (soft and hard) set to `nofile`.
    #[track_caller]
    pub fn start_with_nofile(args: &[&str], nofile: Option<u64>) -> Binary {
        Binary::start_with(args, nofile, "info")
    }

    /// [`Binary::start`] listening on `addr` instead of an ephemeral port.
    #[track_caller]
    pub fn start_at(addr: &str, args: &[&str]) -> Binary {
        Binary::start_on(addr, args, None, "info")
    }

    #[track_caller]
    fn start_with(args: &[&str], nofile: Option<u64>, level: &str) -> Binary {
        Binary::start_on("127.0.0.1:0", args, nofile, level)
    }

    #[track_caller]
    fn start_on(addr: &str, args: &[&str], nofile: Option<u64>, level: &str) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopchat"));
        cmd.arg("server").arg(addr);
        // Never a database in the working directory, and no replay unless asked for.
        for (flag, value) in [("--db", "none"), ("--history-replay", "0")] {
            if !args.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args(args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: runs in the forked child before exec and only calls setrlimit,
            // which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start the loopchat binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        // Drain stderr for the child's whole life so logging never blocks it.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push(line.clone());
                if let Some(at) = line.find("listening on ") {
                    let rest = &line[at + "listening on ".len()..];
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr.trim_end_matches([':', '.']).to_string());
                }
            }
        });
        let mut bin = Binary {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no `listening on` line in the server's log");
        bin.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("cannot parse listening address {addr:?}"));
        bin
    }

    /// Whether the server has logged a line containing `needle` so far.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Sends `sig` to the server process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sends a signal to the child we started; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits up to `within` for the process to exit.
    #[track_caller]
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {within:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- server log ---");
            for line in self.log.lock().unwrap().iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// The longest a [`Blaster`] writes, whatever happens: bounded loops stop by themselves.
pub const BLAST_LIMIT: Duration = Duration::from_secs(10);

/// Writes to a connection from a thread of its own, as fast as the socket takes it, so
/// a test can read replies (this client's and others') while the blast goes on. Stops
/// when asked, when a write fails (the server closed the connection), or after
/// [`BLAST_LIMIT`]; dropping it stops it too.
pub struct Blaster {
    stop: Arc<std::sync::atomic::AtomicBool>,
    written: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Blaster {
    /// Starts writing `first` once, then `chunk` over and over, on a second handle to
    /// `client`'s socket (the client can still read).
    #[track_caller]
    pub fn start(client: &Client, first: &[u8], chunk: &[u8]) -> Blaster {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut stream = client
            .stream()
            .try_clone()
            .expect("clone the client socket");
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (first, chunk) = (first.to_vec(), chunk.to_vec());
        let (stop2, written2) = (Arc::clone(&stop), Arc::clone(&written));
        let thread = thread::Builder::new()
            .name("blaster".into())
            .spawn(move || {
                if stream.write_all(&first).is_err() {
                    return;
                }
                written2.fetch_add(first.len() as u64, Ordering::Relaxed);
                let end = Instant::now() + BLAST_LIMIT;
                while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                    written2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            })
            .expect("spawn a blaster");
        Blaster {
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Bytes the socket has taken so far.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the blast is still going (not stopped, failed or over its time).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits until the socket has taken `more` bytes beyond what it had at the call,
    /// and asserts the blast is still going then: the server is still reading it.
    /// Fails if the blast ends first or after [`TIMEOUT`].
    #[track_caller]
    pub fn expect_progress(&self, more: u64) {
        let goal = self.written() + more;
        let deadline = Instant::now() + TIMEOUT;
        while self.written() < goal {
            assert!(
                self.is_running(),
                "the blast ended after {} bytes, before {goal}",
                self.written()
            );
            assert!(
                Instant::now() < deadline,
                "the blast took only {} bytes in {TIMEOUT:?}, not {goal}",
                self.written()
            );
            thread::sleep(Duration::from_millis(1));
        }
        assert!(self.is_running(), "the blast ended");
    }

    /// Stops the blast and returns the bytes written.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.written()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Blaster {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Reads `client`'s raw input until it ends with `last` (a whole line), without
/// splitting lines: for a reader that must keep up with a flood. Returns the number of
/// lines read, `last` included. Fails on end of stream or after [`TIMEOUT`] of silence.
#[track_caller]
pub fn drain_until(client: &Client, last: &str) -> usize {
    let mut stream = client.stream();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    let mut lines = 0;
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => panic!("end of stream while draining for {last:?}"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read failed while draining for {last:?}: {e}"),
        };
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count();
        tail.extend_from_slice(&chunk[..n]);
        if tail.ends_with(last.as_bytes()) {
            let before = tail.len() - last.len();
            if before == 0 || tail[before - 1] == b'\n' {
                return lines;
            }
        }
        let keep = last.len() + 1;
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
}

/// Opens a WebSocket on `/ws` by hand (the RFC's sample key) and returns the socket
/// after the answer's head, with that head.
#[track_caller]
pub fn ws_upgrade(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the browser port");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write the upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("the upgrade answer's head");
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}
