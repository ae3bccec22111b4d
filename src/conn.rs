//! One client connection: its socket, line reader, output queue, state flags and the
//! single function that derives its poll interest.
//!
//! A connection never writes on its own initiative: output is queued during an event
//! batch and the server flushes it once before polling again. Buffers are allocated only
//! while they hold data, so an idle connection costs a few hundred bytes.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpStream;

use crate::codec::{Dialect, LineReader, TelnetFilter};
use crate::outq::BufferPool;
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

/// Which dialect the first line chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No line yet: output is written as frames.
    Undecided,
    /// Protocol frames.
    Frames,
    /// Text for people.
    Text,
}

/// Queue grew past the output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// One client.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub socket: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Splits input into lines.
    pub reader: LineReader,
    /// Strips telnet negotiation until the connection proves to speak frames.
    pub telnet: TelnetFilter,
    /// Dialect of input and output.
    pub mode: Mode,
    /// Lifecycle.
    pub state: State,
    /// Registration, idle or linger deadline in the server's timer wheel.
    pub deadline: Option<TimerId>,
    /// Whether a complete line has arrived yet (ends the registration window).
    pub registered: bool,
    /// Whether the server has this connection in its flush list.
    pub flush_queued: bool,
    /// Whether the server has this connection in its close list.
    pub close_queued: bool,
    /// Message rate limit.
    pub bucket: TokenBucket,
    /// When the last bytes arrived (for the idle timeout).
    pub last_active: Instant,
    /// Why the server closed it, when that is worth an `info` line (eviction).
    pub close_reason: Option<&'static str>,
    /// Queued output; `out[out_pos..]` is still to be written. Empty and unallocated
    /// whenever nothing is owed.
    out: Vec<u8>,
    out_pos: usize,
    /// The interest currently registered with the poller.
    registered_interest: Interest,
}

impl Conn {
    /// A new open connection, registered for reading.
    pub fn new(socket: TcpStream, peer: SocketAddr, bucket: TokenBucket, now: Instant) -> Conn {
        Conn {
            socket,
            peer,
            reader: LineReader::default(),
            telnet: TelnetFilter::default(),
            mode: Mode::Undecided,
            state: State::Open,
            deadline: None,
            registered: false,
            flush_queued: false,
            close_queued: false,
            bucket,
            last_active: now,
            close_reason: None,
            out: Vec::new(),
            out_pos: 0,
            registered_interest: Interest::READABLE,
        }
    }

    /// The dialect output is written in.
    pub fn dialect(&self) -> Dialect {
        match self.mode {
            Mode::Text => Dialect::Text,
            Mode::Undecided | Mode::Frames => Dialect::Frames,
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Appends `bytes` to the output queue unless that would pass `cap`. An empty queue
    /// takes a buffer from `pool` rather than allocating.
    pub fn queue(
        &mut self,
        bytes: &[u8],
        cap: usize,
        pool: &mut BufferPool,
    ) -> Result<(), Overflow> {
        if self.pending() + bytes.len() > cap {
            return Err(Overflow);
        }
        if self.out.capacity() == 0 {
            self.out = pool.take();
        } else if self.out_pos > 0 && self.out_pos >= self.out.len() / 2 {
            // Reclaim the written prefix before growing; amortised O(1) per byte.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes queued output until done or the socket would block. Returns the number of
    /// `write` calls made. A drained queue's buffer goes back to `pool`.
    pub fn flush(&mut self, pool: &mut BufferPool) -> io::Result<u64> {
        let mut writes = 0;
        while self.out_pos < self.out.len() {
            writes += 1;
            match self.socket.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(writes),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out_pos = 0;
        pool.put(std::mem::take(&mut self.out));
        Ok(writes)
    }

    /// Drops queued output (the connection is being closed without flushing).
    pub fn discard_output(&mut self, pool: &mut BufferPool) {
        self.out_pos = 0;
        pool.put(std::mem::take(&mut self.out));
    }

    /// The interest this connection needs now: readable while it accepts input,
    /// writable only while output is owed that the socket could not take.
    pub fn interest(&self) -> Interest {
        let owes = self.pending() > 0;
        match (self.state == State::Open, owes) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // mio needs some interest; a draining connection with nothing owed is
            // closed before it would be polled again.
            (_, false) => Interest::READABLE,
        }
    }

    /// Re-registers with `registry` if the interest changed.
    pub fn update_interest(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> io::Result<()> {
        let wanted = self.interest();
        if wanted != self.registered_interest {
            registry.reregister(&mut self.socket, token, wanted)?;
            self.registered_interest = wanted;
        }
        Ok(())
    }
}
