//! `loopchat client`: the client of the single binary, with two faces.
//!
//! On a terminal it is full-screen ([`tui`]: scrollback, member list, status line, an
//! editable input line, reconnecting when the server goes away). With standard input or
//! output piped, or `--no-tui`, it is the line client this module runs: the life of one
//! connection, read from standard input and printed to standard output: connect, chat,
//! leave cleanly, pick an exit status. What a typed line sends and how a server line is
//! shown belong to [`text`], shared by both faces; the protocol itself belongs to
//! [`crate::codec`]; nothing here knows how the server works inside.
//!
//! The line client is one connection, so it uses a few threads rather than one event
//! loop for everything:
//!
//! - the *input* thread reads standard input a line at a time (a terminal or a pipe)
//!   and queues frames on a bounded channel, so a fast pipe waits for a slow server;
//! - the *connection* thread ([`link`]) owns the connection, plain or TLS, in a small
//!   mio loop: it sends the queued frames in order (a `LEAVE:` frame is the last) and
//!   prints each line from the server as soon as it arrives, even while the person is
//!   typing;
//! - a *signal* thread turns SIGINT and SIGTERM into a leave;
//! - the calling thread connects (and, with `--tls`, completes the handshake, so a
//!   certificate that does not verify ends the client before it starts), then waits
//!   for whatever ends the session ([`Ending`]) and decides the message and the exit
//!   status.
//!
//! After a `LEAVE:` (from `/quit`, end of input or Ctrl-C) the client waits, bounded by
//! `--leave-timeout`, for the server to send what it still owes and close. Over TLS it
//! sends `close_notify` right after the `LEAVE:`.
//!
//! [`transport`] is the connection as a non-blocking byte stream (plain or TLS) and the
//! TLS handshake; the bench harness drives its TLS clients through it too.

mod link;
mod text;
pub mod transport;
mod tui;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::codec::{self, LineReader};
use crate::config::parse_duration;
use link::{Link, Outbox, Printer};
use text::{Input, parse_name, translate};
use transport::{TlsSetup, Transport};

/// Flags of `loopchat client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server address (`host:port`).
    #[arg(default_value = "127.0.0.1:8080")]
    pub addr: String,

    /// Name to take on connect (sends `JOIN:<name>` first). 1-32 of `A-Z a-z 0-9 _ - .`.
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,

    /// Give up connecting after this long (`500ms`, `5s`, ...); with --tls, the
    /// handshake gets as long again.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// After sending `LEAVE:`, wait this long for the server to close the connection.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub leave_timeout: Duration,

    /// Connect over TLS, verifying the server's certificate for the host part of ADDR
    /// against the system's root certificates (or --ca).
    #[arg(long)]
    pub tls: bool,

    /// With --tls: trust the certificates in this PEM file (a private CA, or the
    /// server's own self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,

    /// With --tls: do not verify the server's certificate at all. For testing only:
    /// anyone between you and the server can read and change the chat.
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    pub insecure: bool,

    /// Full-screen interface even if standard input or output is not a terminal.
    #[arg(long, conflicts_with = "no_tui")]
    pub tui: bool,

    /// Line mode (read standard input, print lines) even on a terminal.
    #[arg(long)]
    pub no_tui: bool,

    /// The server's --announce-limit. Full-screen only: in a room with more members the
    /// server sends no joins and leaves, so the member list says it is not kept live.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub announce_limit: usize,
}

impl ClientArgs {
    /// Whether to run full-screen: `--tui`, `--no-tui`, else whether both standard
    /// input and output are terminals (so scripts and pipes keep the line mode).
    pub fn full_screen(&self) -> bool {
        use std::io::IsTerminal;
        if self.tui || self.no_tui {
            return self.tui;
        }
        io::stdin().is_terminal() && io::stdout().is_terminal()
    }
}

/// Longest line read from standard input or from the server, in bytes. Far above the
/// server's default `--max-line` (4096); it only keeps memory bounded when a pipe or a
/// hostile server sends a line that never ends.
const MAX_LINE: usize = 1 << 20;

/// Frames queued between the input and connection threads. Small: it only smooths bursts
/// from a pipe; past it the input thread waits for the socket (backpressure).
const QUEUE: usize = 256;

/// Exit status after a second Ctrl-C cut the leave short (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: u8 = 130;

/// Something that may end the session, reported to the calling thread.
#[derive(Debug)]
enum Ending {
    /// The input thread is about to queue `LEAVE:` (`/quit`, a `LEAVE:` frame, or end
    /// of input); the text says which, for the final message. Sent before the frame, so
    /// the server's close that answers it can never arrive first.
    Leaving(&'static str),
    /// SIGINT or SIGTERM.
    Signal,
    /// Standard output is gone (e.g. `loopchat client | head`): nobody is listening.
    OutputClosed,
    /// Writing to the server failed.
    WriteFailed(io::Error),
    /// The server closed the connection (`Ok`) or it broke (`Err`). `last_error` is the
    /// text of an `ERROR:` line if that was the last thing the server said.
    Closed {
        result: io::Result<()>,
        last_error: Option<String>,
    },
}

/// Runs the client until it ends; returns the process exit status.
///
/// 0: the session ended normally (left, or the server closed the connection). 1: could
/// not connect, the connection broke, or the server closed it right after an `ERROR:`.
/// 130: a second Ctrl-C while leaving.
pub fn run(args: ClientArgs) -> ExitCode {
    if args.full_screen() {
        return tui::run(&args);
    }
    match start(&args) {
        Ok(session) => session.wait(&args),
        Err(message) => {
            eprintln!("loopchat: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A connected client with its threads running.
struct Session {
    /// The server's address as resolved, for messages.
    peer: SocketAddr,
    /// Everything that may end the session arrives here.
    endings: Receiver<Ending>,
    /// The connection thread's queue, for the `LEAVE:` a signal asks for.
    frames: Outbox,
}

/// Connects (and completes the TLS handshake with `--tls`), then starts the threads;
/// the connection thread sends `JOIN:<name>` first if asked.
fn start(args: &ClientArgs) -> Result<Session, String> {
    // Before connecting, so a Ctrl-C from the start is a clean leave, not a kill.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    let tls = tls_setup(args)?;
    let (transport, peer) = dial(&args.addr, tls.as_ref(), args.connect_timeout)?;
    let poll = Poll::new().map_err(|e| format!("cannot create an event loop: {e}"))?;
    let waker = Waker::new(poll.registry(), link::WAKE)
        .map_err(|e| format!("cannot create an event-loop waker: {e}"))?;
    let (endings_tx, endings) = mpsc::channel();
    let (frames_tx, frames_rx) = mpsc::sync_channel(QUEUE);
    let frames = Outbox::new(frames_tx, Arc::new(waker));
    let about = transport.describe();
    let verified = match &tls {
        Some(_) if args.insecure => ", certificate NOT verified",
        Some(_) => ", certificate verified",
        None => "",
    };
    let join = args.name.as_ref().map(|name| format!("JOIN:{name}"));
    let printer = Printer::new(endings_tx.clone());
    let link = Link::new(poll, transport, frames_rx, printer, join)
        .map_err(|e| format!("cannot watch the connection: {e}"))?;

    // Before the threads start, so it comes before anything they print.
    eprintln!(
        "loopchat: connected to {peer}{about}{verified} (/help for commands, /quit or Ctrl-D \
         to leave)"
    );

    spawn("connection", move || link.run())?;
    spawn("input", {
        let endings = endings_tx.clone();
        let frames = frames.clone();
        move || read_input(&frames, &endings)
    })?;
    spawn("signals", move || {
        for _ in signals.forever() {
            if endings_tx.send(Ending::Signal).is_err() {
                break;
            }
        }
    })?;
    Ok(Session {
        peer,
        endings,
        frames,
    })
}

/// With `--tls`: whom to trust and the name to verify, from the flags and the host part
/// of the address. `--insecure` is announced on standard error.
fn tls_setup(args: &ClientArgs) -> Result<Option<TlsSetup>, String> {
    if !args.tls {
        return Ok(None);
    }
    if args.insecure {
        eprintln!(
            "loopchat: WARNING: --insecure: the server's certificate is not verified; \
             anyone between you and the server can read and change this chat"
        );
    }
    let config =
        crate::tls::client_config(args.ca.as_deref(), args.insecure).map_err(|e| e.to_string())?;
    let name = crate::tls::server_name(transport::host_of(&args.addr))
        .map_err(|e| format!("bad address {:?}: {e}", args.addr))?;
    Ok(Some(TlsSetup { config, name }))
}

/// Connects to `addr` (and completes the TLS handshake with `tls`); returns the
/// non-blocking transport and the address it reached. The error is a sentence for the
/// person.
fn dial(
    addr: &str,
    tls: Option<&TlsSetup>,
    timeout: Duration,
) -> Result<(Transport, SocketAddr), String> {
    let stream = connect(addr, timeout)?;
    let peer = stream.peer_addr().map_err(|e| lost(&addr, &e))?;
    // Chat lines are small and interactive: do not hold them back to fill a segment.
    let _ = stream.set_nodelay(true);
    let transport = match tls {
        Some(setup) => transport::handshake(stream, setup, addr, timeout)?,
        None => {
            stream.set_nonblocking(true).map_err(|e| lost(&addr, &e))?;
            Transport::Plain(mio::net::TcpStream::from_std(stream))
        }
    };
    Ok((transport, peer))
}

/// Resolves `addr` and connects to the first address that answers.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => format!("bad address {addr:?}: expected host:port"),
            _ => format!("bad address {addr:?}: cannot resolve it: {e}"),
        })?
        .collect();
    let mut last_error = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => format!("cannot connect to {addr}: {e}"),
        None => format!("bad address {addr:?}: it resolves to no address"),
    })
}

/// The message for a connection that broke.
fn lost(addr: &dyn std::fmt::Display, e: &io::Error) -> String {
    format!("connection to {addr} lost: {e}")
}

/// Starts a named thread; failing to is an error for the person, not a panic.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    thread::Builder::new()
        .name(format!("client-{name}"))
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("cannot start the {name} thread: {e}"))
}

impl Session {
    /// Waits for the end of the session; prints the one-line reason on stderr.
    fn wait(self, args: &ClientArgs) -> ExitCode {
        let peer = self.peer;
        // Set once LEAVE is queued: until when to wait for the server's close, and why.
        let mut leaving: Option<(Instant, &'static str)> = None;
        loop {
            let ending = match leaving {
                None => self
                    .endings
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some((deadline, _)) => self
                    .endings
                    .recv_timeout(deadline.saturating_duration_since(Instant::now())),
            };
            let ending = match ending {
                Ok(ending) => ending,
                Err(RecvTimeoutError::Timeout) => {
                    let why = leaving.map_or("", |(_, why)| why);
                    eprintln!(
                        "loopchat: left {peer} ({why}); the server did not close the \
                         connection within {:?}",
                        args.leave_timeout
                    );
                    return ExitCode::SUCCESS;
                }
                // Cannot happen while the reader thread lives; treat as a close.
                Err(RecvTimeoutError::Disconnected) => Ending::Closed {
                    result: Ok(()),
                    last_error: None,
                },
            };
            match ending {
                Ending::Leaving(why) => {
                    leaving.get_or_insert((Instant::now() + args.leave_timeout, why));
                }
                Ending::Signal | Ending::OutputClosed if leaving.is_none() => {
                    // If the queue is full the server is not reading; the timeout ends it.
                    self.frames.try_send("LEAVE:".to_owned());
                    let why = match ending {
                        Ending::Signal => "interrupted",
                        _ => "output closed",
                    };
                    leaving = Some((Instant::now() + args.leave_timeout, why));
                }
                Ending::Signal => {
                    eprintln!("loopchat: interrupted again; closing now");
                    return ExitCode::from(EXIT_INTERRUPTED);
                }
                Ending::OutputClosed => {}
                // After LEAVE the server may close before we are done writing; the
                // reader reports the close.
                Ending::WriteFailed(_) if leaving.is_some() => {}
                Ending::WriteFailed(e) => {
                    eprintln!("loopchat: {}", lost(&peer, &e));
                    return ExitCode::FAILURE;
                }
                Ending::Closed { .. } if leaving.is_some() => {
                    let why = leaving.map_or("", |(_, why)| why);
                    eprintln!("loopchat: left {peer} ({why})");
                    return ExitCode::SUCCESS;
                }
                Ending::Closed { result: Err(e), .. } => {
                    eprintln!("loopchat: {}", lost(&peer, &e));
                    return ExitCode::FAILURE;
                }
                Ending::Closed {
                    last_error: Some(error),
                    ..
                } => {
                    eprintln!("loopchat: server {peer} closed the connection: {error}");
                    return ExitCode::FAILURE;
                }
                Ending::Closed { .. } => {
                    eprintln!("loopchat: server {peer} closed the connection");
                    return ExitCode::SUCCESS;
                }
            }
        }
    }
}

/// The input thread: reads standard input a line at a time until `/quit` or its end.
fn read_input(frames: &Outbox, endings: &Sender<Ending>) {
    let mut stdin = io::stdin().lock();
    let mut lines = LineReader::default();
    let mut buf = vec![0; 16 * 1024];
    // Set once the session is over for this thread (left, or the writer is gone).
    let mut done = false;
    while !done {
        let (input, at_end): (&[u8], bool) = match stdin.read(&mut buf) {
            Ok(0) => (b"\n", true),
            Ok(n) => (&buf[..n], false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("loopchat: cannot read standard input: {e}");
                (b"\n", true)
            }
        };
        // The `\n` fed at the end finishes a last line that had none (and is an empty
        // line, which sends nothing, if there was none).
        lines.feed(input, MAX_LINE, |line| {
            if done {
                return;
            }
            let line = match line {
                Ok(line) => line,
                Err(codec::LineError::TooLong) => {
                    eprintln!("loopchat: line over {MAX_LINE} bytes; not sent");
                    return;
                }
            };
            match translate(line) {
                Input::Send(frame) => done = !frames.send(frame),
                Input::Leave(frame) => {
                    done = true;
                    // Announce first: the server's close may follow the frame at once.
                    let _ = endings.send(Ending::Leaving("quit"));
                    frames.send(frame);
                }
                Input::Local(message) => eprintln!("loopchat: {message}"),
                Input::Nothing => {}
            }
        });
        if at_end && !done {
            done = true;
            let _ = endings.send(Ending::Leaving("end of input"));
            frames.send("LEAVE:".to_owned());
        }
    }
}
