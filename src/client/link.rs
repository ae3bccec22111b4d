//! The client's connection thread: one small mio loop that owns the connection, plain
//! or TLS, and does all of its I/O.
//!
//! A rustls connection is one state machine for both directions, so it cannot be split
//! between a reader and a writer thread the way a `TcpStream` can. One thread owns it
//! instead, with the socket non-blocking: it hands each line from the server to its
//! [`Sink`] as soon as it arrives, and sends the frames queued for it ([`Outbox`]: a
//! bounded channel plus a [`Waker`], so a queued frame wakes the poll). It takes frames
//! only while its own output is small, so a fast pipe still waits for a slow server.
//!
//! After a `LEAVE:` frame it takes no more; once the frame is written it sends TLS's
//! `close_notify` (this end will say nothing more; the server still sends what it
//! owes) and reads on until the server closes. What ends the connection goes to the
//! sink; this module decides no exit status and draws nothing. The line client's sink
//! is [`Printer`] (standard output); the full-screen client has its own.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};

use mio::{Events, Interest, Poll, Token, Waker};

use super::transport::Transport;
use super::{Ending, MAX_LINE, text::render};
use crate::codec::{self, LineReader};
use crate::outq::{BufferPool, OutQueue};

/// The socket's token.
const SOCKET: Token = Token(0);
/// The waker's token: frames are queued.
pub(super) const WAKE: Token = Token(1);

/// Output (bytes) the thread holds before it stops taking frames from the queue; past
/// it the input thread waits (backpressure). rustls buffers up to 64 KiB more.
const OUT_HIGH: usize = 64 * 1024;

/// The sending side of the frame queue: each frame wakes the connection thread.
#[derive(Clone)]
pub(super) struct Outbox {
    frames: SyncSender<String>,
    waker: Arc<Waker>,
}

impl Outbox {
    /// A queue of `frames` whose consumer polls with `waker`.
    pub(super) fn new(frames: SyncSender<String>, waker: Arc<Waker>) -> Outbox {
        Outbox { frames, waker }
    }

    /// Queues a frame, waiting while the queue is full. `false`: the connection thread
    /// is gone.
    pub(super) fn send(&self, frame: String) -> bool {
        let sent = self.frames.send(frame).is_ok();
        let _ = self.waker.wake();
        sent
    }

    /// Queues a frame unless the queue is full (the server is not reading) or the
    /// connection thread is gone; `false` if it was not queued. Never waits, so a
    /// thread that the connection thread itself may wait for can use it.
    pub(super) fn try_send(&self, frame: String) -> bool {
        let queued = self.frames.try_send(frame).is_ok();
        if queued {
            let _ = self.waker.wake();
        }
        queued
    }
}

/// Where a connection thread's lines, and the news of its end, go.
pub(super) trait Sink {
    /// One complete line from the server, as it came (without its line end).
    fn line(&mut self, line: &[u8]);
    /// `count` lines over [`MAX_LINE`] bytes were skipped.
    fn skipped(&mut self, count: usize);
    /// The lines of one read are all in: show them.
    fn flush(&mut self);
    /// Writing to the server failed; only reading goes on.
    fn write_failed(&mut self, e: io::Error);
    /// The server closed the connection (`Ok`) or it broke (`Err`). `last_error` is
    /// the text of an `ERROR:` line if that was the last thing the server said.
    fn closed(&mut self, result: io::Result<()>, last_error: Option<String>);
}

/// The line client's sink: renders lines for people onto standard output and reports
/// the end to the calling thread as an [`Ending`].
pub(super) struct Printer {
    endings: Sender<Ending>,
    /// Rendered lines waiting for standard output.
    text: Vec<u8>,
    /// Standard output still takes what is printed.
    printing: bool,
}

impl Printer {
    /// A printer that reports to `endings`.
    pub(super) fn new(endings: Sender<Ending>) -> Printer {
        Printer {
            endings,
            text: Vec::new(),
            printing: true,
        }
    }
}

impl Sink for Printer {
    fn line(&mut self, line: &[u8]) {
        render(line, &mut self.text);
    }

    fn skipped(&mut self, count: usize) {
        eprintln!("loopchat: skipped {count} line(s) over {MAX_LINE} bytes from the server");
    }

    fn flush(&mut self) {
        if self.printing && !self.text.is_empty() {
            let mut stdout = io::stdout().lock();
            if stdout
                .write_all(&self.text)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // Keep reading: the server's close still ends the session cleanly.
                self.printing = false;
                let _ = self.endings.send(Ending::OutputClosed);
            }
        }
        self.text.clear();
    }

    fn write_failed(&mut self, e: io::Error) {
        let _ = self.endings.send(Ending::WriteFailed(e));
    }

    fn closed(&mut self, result: io::Result<()>, last_error: Option<String>) {
        let _ = self.endings.send(Ending::Closed { result, last_error });
    }
}

/// The connection thread's state.
pub(super) struct Link<S: Sink> {
    poll: Poll,
    transport: Transport,
    frames: Receiver<String>,
    sink: S,
    /// Frames taken from the queue and not yet written.
    out: OutQueue,
    pool: BufferPool,
    interest: Interest,
    /// A `LEAVE:` frame is queued: take no more.
    leaving: bool,
    /// The `close_notify` (TLS) after `LEAVE:` is queued.
    said_goodbye: bool,
    /// Writing failed (reported once); only reading goes on.
    write_failed: bool,
    // Reading.
    lines: LineReader,
    readbuf: Vec<u8>,
    /// The text of the last line if it was an `ERROR:`.
    last_error: Option<String>,
}

impl<S: Sink> Link<S> {
    /// A connection thread for `transport`, registered with `poll` (whose waker,
    /// token [`WAKE`], belongs to the frames' [`Outbox`]). `first` is sent before any
    /// frame from the queue (`JOIN:<name>`).
    pub(super) fn new(
        poll: Poll,
        mut transport: Transport,
        frames: Receiver<String>,
        sink: S,
        first: Option<String>,
    ) -> io::Result<Link<S>> {
        let interest = Interest::READABLE;
        poll.registry()
            .register(transport.socket_mut(), SOCKET, interest)?;
        let mut link = Link {
            poll,
            transport,
            frames,
            sink,
            out: OutQueue::default(),
            pool: BufferPool::default(),
            interest,
            leaving: false,
            said_goodbye: false,
            write_failed: false,
            lines: LineReader::default(),
            readbuf: vec![0; 64 * 1024],
            last_error: None,
        };
        if let Some(frame) = first {
            link.take(&frame);
        }
        Ok(link)
    }

    /// Runs until the server closes the connection or it breaks, and reports that.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(16);
        // Data may have come with the handshake, before the socket was registered: a
        // readiness edge for it will never come.
        let mut readable = true;
        let result = loop {
            if readable && let Some(result) = self.read_all() {
                break result;
            }
            self.take_frames();
            self.write();
            if let Err(e) = self.update_interest() {
                break Err(e);
            }
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
            readable = events.iter().any(|e| {
                e.token() == SOCKET && (e.is_readable() || e.is_read_closed() || e.is_error())
            });
        };
        if result.is_ok() && !self.write_failed {
            // Answer the server's close_notify with ours; nothing depends on it.
            let _ = self.transport.close_notify();
        }
        let last_error = self.last_error.take();
        self.sink.closed(result, last_error);
    }

    /// Moves frames from the queue to the output while it is small.
    fn take_frames(&mut self) {
        while !self.leaving && self.out.pending() < OUT_HIGH {
            match self.frames.try_recv() {
                Ok(frame) => self.take(&frame),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
    }

    /// Queues one frame and its line end; a `LEAVE:` is the last.
    fn take(&mut self, frame: &str) {
        if self.write_failed {
            return;
        }
        self.out.push(frame.as_bytes(), &mut self.pool);
        self.out.push(b"\n", &mut self.pool);
        if frame.starts_with("LEAVE:") {
            self.leaving = true;
        }
    }

    /// Writes what the socket takes; after the `LEAVE:` is out, says goodbye (TLS).
    fn write(&mut self) {
        if self.write_failed {
            return;
        }
        let mut result = self
            .out
            .write_to(&mut self.transport, &mut self.pool)
            .map(drop);
        if result.is_ok() && self.leaving && self.out.is_empty() && !self.said_goodbye {
            self.said_goodbye = true;
            result = self.transport.close_notify();
        }
        if result.is_ok() && self.transport.wants_write() {
            result = match self.transport.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            };
        }
        if let Err(e) = result {
            self.write_failed = true;
            self.out.clear(&mut self.pool);
            self.sink.write_failed(e);
        }
    }

    /// Asks for WRITABLE while output waits (ours or rustls's); re-registers only when
    /// that changes.
    fn update_interest(&mut self) -> io::Result<()> {
        let waiting = !self.out.is_empty() || self.transport.wants_write();
        let interest = if waiting && !self.write_failed {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if interest != self.interest {
            self.poll
                .registry()
                .reregister(self.transport.socket_mut(), SOCKET, interest)?;
            self.interest = interest;
        }
        Ok(())
    }

    /// Reads and prints until the socket would block (`None`) or the connection ends
    /// (`Some`: closed, or broken).
    fn read_all(&mut self) -> Option<io::Result<()>> {
        let mut buf = std::mem::take(&mut self.readbuf);
        let ended = loop {
            match self.transport.read(&mut buf) {
                // A last line without its newline is still printed.
                Ok(0) if self.lines.pending() > 0 => self.show(b"\n"),
                Ok(0) => break Some(Ok(())),
                Ok(n) => self.show(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(Err(e)),
            }
        };
        self.readbuf = buf;
        ended
    }

    /// Hands the complete lines in `input` to the sink.
    fn show(&mut self, input: &[u8]) {
        let mut too_long = 0usize;
        let (sink, last_error) = (&mut self.sink, &mut self.last_error);
        self.lines.feed(input, MAX_LINE, |line| match line {
            Ok(line) => {
                *last_error = line
                    .strip_prefix(b"ERROR:")
                    .map(|e| String::from_utf8_lossy(e).into_owned());
                sink.line(line);
            }
            Err(codec::LineError::TooLong) => too_long += 1,
        });
        if too_long > 0 {
            self.sink.skipped(too_long);
        }
        self.sink.flush();
    }
}
