//! The full-screen client's connections: each one on a thread of its own, off the
//! render path, reporting to the interface's event queue.
//!
//! A connection thread connects (a new one after a loss; the first is connected before
//! the screen changes), then runs the same small mio loop as the line client
//! ([`Link`]), with a sink that batches each read's lines into one event. Every event
//! carries the connection's generation, so the model can tell the current connection
//! from one it has given up on. The queue to the interface is bounded: a server that
//! floods waits for the interface to keep up, and the interface never waits for a
//! connection (it queues frames with [`Outbox::try_send`]).

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender};
use std::thread;
use std::time::Duration;

use mio::{Poll, Waker};

use super::UiEvent;
use crate::client::link::{self, Link, Outbox, Sink};
use crate::client::transport::{TlsSetup, Transport};
use crate::client::{QUEUE, dial};

/// What a connection thread reports.
#[derive(Debug)]
pub(super) enum NetEvent {
    /// Connected; the text says over what (` over TLS 1.3 (…)`, or empty).
    Connected(String),
    /// The complete lines of one read, as they came (not yet made safe).
    Lines(Vec<String>),
    /// Lines over the client's line limit were dropped.
    Skipped(usize),
    /// Connecting failed; why, for the person.
    Failed(String),
    /// The connection ended: broken (`broken` says how) or closed by the server,
    /// whose last line may have been an `ERROR:`.
    Closed {
        /// The error, if it broke.
        broken: Option<String>,
        /// The text of the server's last line if it was an `ERROR:`.
        last_error: Option<String>,
    },
}

/// How to make a connection: the address, TLS, and how long to try.
#[derive(Debug)]
pub(super) struct Dialer {
    /// `host:port`.
    pub addr: String,
    /// TLS set-up, with `--tls`.
    pub tls: Option<TlsSetup>,
    /// `--connect-timeout`.
    pub timeout: Duration,
}

impl Dialer {
    /// Connects, blocking for at most the timeout (twice with TLS).
    pub(super) fn dial(&self) -> Result<Transport, String> {
        dial(&self.addr, self.tls.as_ref(), self.timeout).map(|(transport, _)| transport)
    }
}

/// Starts connection `generation` on its own thread and returns the queue for its
/// frames. `ready` is a connection already made; without it, the thread dials.
pub(super) fn start(
    dialer: Arc<Dialer>,
    generation: u64,
    ready: Option<Transport>,
    events: SyncSender<UiEvent>,
) -> io::Result<Outbox> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), link::WAKE)?;
    let (frames_tx, frames) = mpsc::sync_channel(QUEUE);
    thread::Builder::new()
        .name("client-connection".into())
        .spawn(move || {
            let mut sink = Forward {
                generation,
                events,
                batch: Vec::new(),
                ended: false,
            };
            let transport = match ready.map_or_else(|| dialer.dial(), Ok) {
                Ok(transport) => transport,
                Err(why) => return sink.send(NetEvent::Failed(why)),
            };
            sink.send(NetEvent::Connected(transport.describe()));
            let events = sink.events.clone();
            match Link::new(poll, transport, frames, sink, None) {
                Ok(link) => link.run(),
                Err(e) => {
                    let closed = NetEvent::Closed {
                        broken: Some(e.to_string()),
                        last_error: None,
                    };
                    let _ = events.send(UiEvent::Net(generation, closed));
                }
            }
        })?;
    Ok(Outbox::new(frames_tx, Arc::new(waker)))
}

/// A connection's sink: one event per read, and one for its end.
struct Forward {
    generation: u64,
    events: SyncSender<UiEvent>,
    batch: Vec<String>,
    /// The end is reported (or nobody listens): nothing more is sent.
    ended: bool,
}

impl Forward {
    fn send(&mut self, event: NetEvent) {
        if !self.ended
            && self
                .events
                .send(UiEvent::Net(self.generation, event))
                .is_err()
        {
            self.ended = true;
        }
    }

    fn end(&mut self, event: NetEvent) {
        self.send(event);
        self.ended = true;
    }
}

impl Sink for Forward {
    fn line(&mut self, line: &[u8]) {
        if !self.ended {
            self.batch.push(String::from_utf8_lossy(line).into_owned());
        }
    }

    fn skipped(&mut self, count: usize) {
        self.send(NetEvent::Skipped(count));
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.send(NetEvent::Lines(batch));
        }
    }

    /// A connection that cannot be written to is lost, even if it still reads.
    fn write_failed(&mut self, e: io::Error) {
        self.end(NetEvent::Closed {
            broken: Some(e.to_string()),
            last_error: None,
        });
    }

    fn closed(&mut self, result: io::Result<()>, last_error: Option<String>) {
        self.flush();
        self.end(NetEvent::Closed {
            broken: result.err().map(|e| e.to_string()),
            last_error,
        });
    }
}
