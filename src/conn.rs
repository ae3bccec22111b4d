//! One client connection: its transport, line reader, output queue, state flags and the
//! single function that derives its poll interest.
//!
//! The connection owns its I/O: the loop asks it to read ([`Conn::read_into`]) and to
//! write ([`Conn::flush`]) and never reaches into its socket. What the bytes mean is the
//! codec's business; what to do with a line is the server's.
//!
//! A connection never writes on its own initiative: output is queued during an event
//! batch and the server flushes it once before polling again. Buffers are allocated only
//! while they hold data, so an idle connection costs a few hundred bytes.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::codec::{self, Command, Dialect, LineReader, ParseError, TelnetFilter};
use crate::hub::ConnId;
use crate::outq::{BufferPool, OutQueue, Written};
use crate::rate::TokenBucket;
use crate::timer::TimerId;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading and writing.
    Open,
    /// No more reading: send what is queued, then close (after `LEAVE`, at end of
    /// input, on shutdown).
    Draining,
    /// Done: remove at the next safe point without flushing.
    Closed,
}

/// The byte stream under a connection. Only plain TCP today; a TLS session is another
/// variant, so the loop need not know which it drives.
#[derive(Debug)]
pub enum Transport {
    /// A plain TCP socket.
    Plain(TcpStream),
}

impl Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
        }
    }

    fn write_from(&mut self, out: &mut OutQueue, pool: &mut BufferPool) -> io::Result<Written> {
        match self {
            Transport::Plain(s) => out.write_to(s, pool),
        }
    }

    /// Whether a read shorter than the buffer proves the socket is drained, so the
    /// next read would only say `WouldBlock`. True for TCP (epoll(7): for stream sockets
    /// a short read means the input is exhausted, and new data raises a new edge); not
    /// for a transport that hands out its input in pieces of its own.
    fn short_read_drains(&self) -> bool {
        match self {
            Transport::Plain(_) => true,
        }
    }

    /// Whether the transport itself has bytes to send (handshakes, alerts), beside the
    /// connection's queue.
    fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown(Shutdown::Write),
        }
    }
}

/// What one [`Conn::read_into`] found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Input is at the front of the buffer: `len` bytes after telnet negotiation was
    /// removed, from `raw` bytes read. `drained`: nothing more is waiting now.
    Data {
        /// Bytes of input for the line reader.
        len: usize,
        /// Bytes taken from the transport (what the read budget counts).
        raw: usize,
        /// The transport knows no more input is waiting.
        drained: bool,
    },
    /// No input now.
    WouldBlock,
    /// The peer closed its end.
    Eof,
    /// The transport failed; the connection cannot go on.
    Failed(io::Error),
}

/// Queue grew past the output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// One client.
#[derive(Debug)]
pub struct Conn {
    id: ConnId,
    transport: Transport,
    peer: SocketAddr,
    reader: LineReader,
    /// Strips telnet negotiation until the connection proves to speak frames.
    telnet: TelnetFilter,
    /// The dialect its first valid line chose; `None` until then (output is frames).
    dialect: Option<Dialect>,
    state: State,
    /// Registration, idle or linger deadline in the server's timer wheel.
    deadline: Option<TimerId>,
    /// Whether a complete line has arrived yet (ends the registration window).
    sent_a_line: bool,
    /// Whether the server has this connection in its flush list.
    flush_queued: bool,
    /// Whether the server has this connection in its close list.
    close_queued: bool,
    /// Message rate limit.
    bucket: TokenBucket,
    /// When the last bytes arrived (for the idle timeout).
    last_active: Instant,
    /// Why the server closed it, when that is worth an `info` line (eviction).
    close_reason: Option<&'static str>,
    out: OutQueue,
    /// The interest currently registered with the poller.
    registered_interest: Interest,
}

impl Conn {
    /// A new open connection; the caller has registered its socket for reading.
    pub fn new(id: ConnId, transport: Transport, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            id,
            transport,
            peer,
            reader: LineReader::default(),
            telnet: TelnetFilter::default(),
            dialect: None,
            state: State::Open,
            deadline: None,
            sent_a_line: false,
            flush_queued: false,
            close_queued: false,
            bucket: TokenBucket::full(0.0, now),
            last_active: now,
            close_reason: None,
            out: OutQueue::default(),
            registered_interest: Interest::READABLE,
        }
    }

    /// Its identity.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Where it is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The dialect output is written in: frames until the first line says otherwise.
    pub fn dialect(&self) -> Dialect {
        self.dialect.unwrap_or(Dialect::Frames)
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.pending()
    }

    /// When input last arrived.
    pub fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Whether a complete line has arrived yet.
    pub fn sent_a_line(&self) -> bool {
        self.sent_a_line
    }

    /// Why the server closed it, if it was an eviction.
    pub fn close_reason(&self) -> Option<&'static str> {
        self.close_reason
    }

    /// The message token bucket.
    pub fn bucket_mut(&mut self) -> &mut TokenBucket {
        &mut self.bucket
    }

    /// Takes the pending deadline's timer id, if any (to cancel or replace it).
    pub fn take_deadline(&mut self) -> Option<TimerId> {
        self.deadline.take()
    }

    /// Records the timer id of its deadline.
    pub fn set_deadline(&mut self, id: TimerId) {
        self.deadline = Some(id);
    }

    /// Reads once into `buf`. Input is passed through the telnet filter unless the
    /// connection speaks frames; a draining connection's input is read and dropped
    /// (`len` 0), so its final close is a FIN and not a reset that loses output.
    pub fn read_into(&mut self, buf: &mut [u8], now: Instant) -> ReadOutcome {
        loop {
            return match self.transport.read(buf) {
                Ok(0) => ReadOutcome::Eof,
                Ok(raw) => {
                    let len = if self.state != State::Open {
                        0
                    } else if self.dialect == Some(Dialect::Frames) {
                        raw
                    } else {
                        self.telnet.filter(&mut buf[..raw])
                    };
                    if self.state == State::Open {
                        self.last_active = now;
                    }
                    ReadOutcome::Data {
                        len,
                        raw,
                        drained: raw < buf.len() && self.transport.short_read_drains(),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => ReadOutcome::Failed(e),
            };
        }
    }

    /// Takes the line reader out while its lines are handled (they may touch this
    /// connection); give it back with [`Conn::put_reader`].
    pub fn take_reader(&mut self) -> LineReader {
        std::mem::take(&mut self.reader)
    }

    /// Returns the line reader taken by [`Conn::take_reader`].
    pub fn put_reader(&mut self, reader: LineReader) {
        self.reader = reader;
    }

    /// Notes a complete line. Returns true for the first one, which ends the
    /// registration window.
    pub fn note_line(&mut self) -> bool {
        !std::mem::replace(&mut self.sent_a_line, true)
    }

    /// Parses one line in this connection's dialect; the first line that can decide
    /// the dialect does so, for the connection's lifetime.
    pub fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Command<'l>, ParseError<'l>> {
        if self.dialect.is_none() && codec::check_text(line).is_ok() {
            self.dialect = Some(if codec::is_frame(line) {
                Dialect::Frames
            } else {
                Dialect::Text
            });
        }
        match self.dialect() {
            Dialect::Text => codec::parse_text(line),
            Dialect::Frames => codec::parse_frame(line),
        }
    }

    /// Appends `bytes` to the output queue unless that would pass `cap`.
    pub fn queue(
        &mut self,
        bytes: &[u8],
        cap: usize,
        pool: &mut BufferPool,
    ) -> Result<(), Overflow> {
        if self.pending().saturating_add(bytes.len()) > cap {
            return Err(Overflow);
        }
        self.out.push(bytes, pool);
        Ok(())
    }

    /// Writes queued output until done or the transport would block.
    pub fn flush(&mut self, pool: &mut BufferPool) -> io::Result<Written> {
        self.transport.write_from(&mut self.out, pool)
    }

    /// Stops reading: what is queued is still sent, then the connection closes.
    /// Returns false if it was not open.
    pub fn start_draining(&mut self) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.state = State::Draining;
        true
    }

    /// Closes without flushing (an error, or an eviction with its `reason`). Returns
    /// false if it was closed already.
    pub fn mark_closed(&mut self, reason: Option<&'static str>, pool: &mut BufferPool) -> bool {
        if self.state == State::Closed {
            return false;
        }
        self.state = State::Closed;
        self.close_reason = reason;
        self.out.clear(pool);
        true
    }

    /// Sets the flush-list flag; true if it was not set (the caller then lists it).
    pub fn enlist_for_flush(&mut self) -> bool {
        !std::mem::replace(&mut self.flush_queued, true)
    }

    /// Clears the flush-list flag as the list is worked through.
    pub fn delist_for_flush(&mut self) {
        self.flush_queued = false;
    }

    /// Sets the close-list flag; true if it was not set (the caller then lists it).
    pub fn enlist_for_close(&mut self) -> bool {
        !std::mem::replace(&mut self.close_queued, true)
    }

    /// Clears the close-list flag as the list is worked through.
    pub fn delist_for_close(&mut self) {
        self.close_queued = false;
    }

    /// The interest this connection needs now: readable while it accepts input,
    /// writable only while output is owed that the transport could not take.
    pub fn interest(&self) -> Interest {
        let owes = self.pending() > 0 || self.transport.wants_write();
        match (self.state == State::Open, owes) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // mio needs some interest; a draining connection with nothing owed is
            // closed before it would be polled again.
            (_, false) => Interest::READABLE,
        }
    }

    /// Re-registers with `registry` if the interest changed.
    pub fn update_interest(&mut self, registry: &Registry) -> io::Result<()> {
        let wanted = self.interest();
        if wanted != self.registered_interest {
            let token = Token(self.id.index());
            registry.reregister(self.transport.socket(), token, wanted)?;
            self.registered_interest = wanted;
        }
        Ok(())
    }

    /// Takes the connection off the poller and, when everything owed was sent, ends
    /// the write side with a FIN.
    pub fn finish(&mut self, registry: &Registry) {
        if let Err(e) = registry.deregister(self.transport.socket()) {
            log::debug!("deregister {}: {e}", self.id);
        }
        if self.state == State::Draining {
            let _ = self.transport.shutdown_write();
        }
    }
}
