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

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::{Interest, Registry, Token};

use crate::codec::{self, Command, Dialect, LineReader, ParseError, TelnetFilter};
use crate::hub::ConnId;
use crate::outq::{BufferPool, OutQueue, Written};
use crate::rate::{MessageLimit, TokenBucket};
use crate::timer::TimerId;
use crate::transport::Got;
pub use crate::transport::Transport;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading and writing.
    Open,
    /// No more input is used (what arrives is read and dropped): send what is queued,
    /// then close (after `LEAVE`, at end of input, on shutdown, after a ban).
    Draining,
    /// Everything owed was sent and the write side is shut (a FIN is on its way). Input
    /// is read and dropped until the peer's end of input or the linger deadline, so the
    /// final close never resets a connection that still had output in flight.
    Lingering,
    /// Done: remove at the next safe point without flushing.
    Closed,
}

/// Why the server closed a connection that did not ask to go: logged at `info` with
/// the queue's size and, for a slow reader, how long it was over the soft cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its queue was still over `--max-output` after a write attempt.
    OverHardCap {
        /// Bytes queued.
        queued: usize,
    },
    /// Its queue stayed over `--max-output-soft` for `--slow-grace`.
    Slow {
        /// Bytes queued.
        queued: usize,
        /// How long it was over the soft cap.
        over_for: std::time::Duration,
    },
    /// All queues together passed `--max-output-total` and this was among the largest.
    OverTotal {
        /// Bytes queued.
        queued: usize,
    },
}

impl std::fmt::Display for Eviction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Eviction::OverHardCap { queued } => write!(
                f,
                "not reading: {queued} bytes queued after a write attempt, over --max-output"
            ),
            Eviction::Slow { queued, over_for } => write!(
                f,
                "not reading: {queued} bytes queued, over --max-output-soft for {:.1} s",
                over_for.as_secs_f64()
            ),
            Eviction::OverTotal { queued } => write!(
                f,
                "{queued} bytes queued while all queues together passed --max-output-total"
            ),
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
    /// Whether the server has this connection in its list of connections with input
    /// left over from the last turn's read budget.
    ready_queued: bool,
    /// Input read but not parsed yet: what the line budget cut off. Unallocated
    /// unless a turn's budget ran out in the middle of a read.
    held: Vec<u8>,
    /// Replays this connection waits for; while any, its output is held back.
    holds: u8,
    /// Output held back while it waits for a replay, in order.
    held_out: Vec<u8>,
    /// Message rate limit, with its strike episodes.
    limit: MessageLimit,
    /// Private messages this connection receives, from all senders together.
    inbound: TokenBucket,
    /// Input bytes the telnet filter threw away and the server has not charged for
    /// yet (see [`Conn::take_swallowed`]).
    swallowed: usize,
    /// When the last bytes arrived (for the idle timeout).
    last_active: Instant,
    /// Why the server closed it, when it was an eviction.
    eviction: Option<Eviction>,
    out: OutQueue,
    /// When the queue went over the soft cap, while it stays over.
    over_soft_since: Option<Instant>,
    /// When output was last written (for `--coalesce`).
    last_write: Option<Instant>,
    /// Whether the last write stopped at `WouldBlock` with output left.
    write_blocked: bool,
    /// Whether the peer has ended its input (read returned 0).
    input_ended: bool,
    /// Waiting for another thread's answer (a password check): no input is read until
    /// it comes.
    waiting: bool,
    /// Whether it has given the server password (or none is needed).
    passed: bool,
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
            ready_queued: false,
            held: Vec::new(),
            holds: 0,
            held_out: Vec::new(),
            limit: MessageLimit::new(now),
            inbound: TokenBucket::new(now),
            swallowed: 0,
            last_active: now,
            eviction: None,
            out: OutQueue::default(),
            over_soft_since: None,
            last_write: None,
            write_blocked: false,
            input_ended: false,
            waiting: false,
            passed: false,
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

    /// Bytes queued and not yet written: in the connection's queue, and held by its
    /// transport (inside a TLS session).
    pub fn pending(&self) -> usize {
        self.out.pending() + self.transport.buffered()
    }

    /// Bytes in the connection's own queue (what the table's total counts).
    pub fn queued(&self) -> usize {
        self.out.pending()
    }

    /// When input last arrived.
    pub fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Whether it waits for another thread's answer; its input waits too.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Starts or ends a wait for another thread's answer.
    pub fn set_waiting(&mut self, waiting: bool) {
        self.waiting = waiting;
    }

    /// Whether it has given the server password.
    pub fn has_passed(&self) -> bool {
        self.passed
    }

    /// It gave the right server password (or none is needed).
    pub fn pass(&mut self) {
        self.passed = true;
    }

    /// Whether the peer has ended its input.
    pub fn input_ended(&self) -> bool {
        self.input_ended
    }

    /// Whether a complete line has arrived yet.
    pub fn sent_a_line(&self) -> bool {
        self.sent_a_line
    }

    /// Why the server closed it, if it was an eviction.
    pub fn eviction(&self) -> Option<Eviction> {
        self.eviction
    }

    /// The message rate limit.
    pub fn limit_mut(&mut self) -> &mut MessageLimit {
        &mut self.limit
    }

    /// The bucket of private messages this connection receives.
    pub fn inbound_mut(&mut self) -> &mut TokenBucket {
        &mut self.inbound
    }

    /// Keeps input the line budget cut off, to be parsed first next turn. Only an
    /// open connection's input is kept: the rest would be dropped anyway.
    pub fn keep_unparsed(&mut self, input: &[u8]) {
        if self.state == State::Open {
            self.held.extend_from_slice(input);
        }
    }

    /// Takes the held input (empty if none).
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Whether input is held from an earlier turn.
    pub fn has_unparsed(&self) -> bool {
        !self.held.is_empty()
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
                Ok(Got::Eof) => {
                    self.input_ended = true;
                    ReadOutcome::Eof
                }
                Ok(Got::Data { plain, raw }) => {
                    // Only an open connection's input is used: after LEAVE, at shutdown,
                    // or after a FIN, it is read (to avoid a reset) and dropped.
                    let len = if self.state != State::Open {
                        0
                    } else if self.dialect == Some(Dialect::Frames) {
                        plain
                    } else {
                        let len = self.telnet.filter(&mut buf[..plain]);
                        self.swallowed += plain - len;
                        len
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

    /// Fixes the dialect to frames (a browser: one frame per WebSocket message).
    pub fn speak_frames(&mut self) {
        self.dialect = Some(Dialect::Frames);
    }

    /// Keepalive for a browser: `None` for other connections, else whether it
    /// answered the last ping (a ping, or a close, is now queued).
    pub fn keepalive(&mut self) -> Option<bool> {
        self.transport.keepalive()
    }

    /// Whether a TLS handshake is still going on (it has a budget of its own per turn).
    pub fn is_handshaking(&self) -> bool {
        self.transport.is_handshaking()
    }

    /// Whether the transport has bytes of its own to send (a handshake's records), so
    /// the connection needs a flush even with nothing queued.
    pub fn transport_wants_write(&self) -> bool {
        self.transport.wants_write()
    }

    /// Whole tokens' worth of input the telnet filter has thrown away since the last
    /// call, at `bytes_per_token` bytes a token (`--max-line`, as for the bytes of an
    /// over-long line); the rest is carried over, so the few bytes of a real telnet
    /// negotiation cost nothing.
    pub fn take_swallowed(&mut self, bytes_per_token: usize) -> usize {
        let per = bytes_per_token.max(1);
        let tokens = self.swallowed / per;
        self.swallowed %= per;
        tokens
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

    /// Whether `line` is to be ignored without a word: a blank line from a person (a
    /// telnet user pressing Enter). Frames mode answers it with `ERROR:empty line`.
    pub fn ignores(&self, line: &[u8]) -> bool {
        self.dialect != Some(Dialect::Frames) && codec::is_blank(line)
    }

    /// Parses one line in this connection's dialect; the first line that can decide
    /// the dialect does so, for the connection's lifetime.
    pub fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Command<'l>, ParseError<'l>> {
        if self.dialect.is_none() {
            self.dialect = codec::decide_dialect(line);
        }
        match self.dialect() {
            Dialect::Text => codec::parse_text(line),
            Dialect::Frames => codec::parse_frame(line),
        }
    }

    /// Appends `bytes` to the output queue. The caller enforces the caps.
    pub fn queue(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        self.out.push(bytes, pool);
    }

    /// Holds output back from now on (until as many [`Conn::release`]s), so what a
    /// replay sends goes first.
    pub fn hold(&mut self) {
        self.holds = self.holds.saturating_add(1);
    }

    /// Whether output is held back.
    pub fn is_holding(&self) -> bool {
        self.holds > 0
    }

    /// Keeps `bytes` for after the replay. The caller enforces the caps.
    pub fn hold_bytes(&mut self, bytes: &[u8]) {
        self.held_out.extend_from_slice(bytes);
    }

    /// Bytes held back.
    pub fn held_bytes(&self) -> usize {
        self.held_out.len()
    }

    /// Gives up every hold (the connection is leaving and wants no replay): the held
    /// output is returned to be queued ahead of its last words.
    pub fn release_all(&mut self) -> Vec<u8> {
        self.holds = 0;
        std::mem::take(&mut self.held_out)
    }

    /// One replay is done; when none is left, the held output is returned to be
    /// queued.
    pub fn release(&mut self) -> Option<Vec<u8>> {
        self.holds = self.holds.saturating_sub(1);
        (self.holds == 0).then(|| std::mem::take(&mut self.held_out))
    }

    /// Writes queued output until done or the transport would block.
    pub fn flush(&mut self, pool: &mut BufferPool, now: Instant) -> io::Result<Written> {
        let written = self.transport.write_from(&mut self.out, pool)?;
        if written.calls > 0 {
            self.last_write = Some(now);
        }
        self.write_blocked = self.pending() > 0;
        Ok(written)
    }

    /// When held-back output may be written under `--coalesce`: at once (`None`) if
    /// the socket is waiting for it or nothing was written within `interval` (the
    /// first output after a quiet spell is never delayed), else one interval after the
    /// last write.
    pub fn coalesce_until(&self, interval: std::time::Duration, now: Instant) -> Option<Instant> {
        if self.write_blocked || self.state != State::Open || self.transport.is_handshaking() {
            return None;
        }
        let due = self.last_write?.checked_add(interval)?;
        (due > now).then_some(due)
    }

    /// Tracks the soft cap: returns since when the queue has been over `soft` (set
    /// now if it just went over), or `None` once it is at or under it.
    pub fn over_soft(&mut self, soft: usize, now: Instant) -> Option<Instant> {
        if self.pending() > soft {
            Some(*self.over_soft_since.get_or_insert(now))
        } else {
            self.over_soft_since = None;
            None
        }
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

    /// Closes without flushing (an error, or an eviction). Returns the bytes that were
    /// still queued, or `None` if it was closed already.
    pub fn mark_closed(
        &mut self,
        eviction: Option<Eviction>,
        pool: &mut BufferPool,
    ) -> Option<usize> {
        if self.state == State::Closed {
            return None;
        }
        let dropped = self.queued();
        self.state = State::Closed;
        self.eviction = eviction;
        self.out.clear(pool);
        self.held = Vec::new();
        self.held_out = Vec::new();
        Some(dropped)
    }

    /// Everything owed was sent: shuts the write side (FIN) and waits for the peer's
    /// end of input. Returns false if the write side could not be shut (the socket is
    /// gone; close it).
    pub fn start_lingering(&mut self) -> bool {
        self.state = State::Lingering;
        self.held = Vec::new();
        self.transport.shutdown_write().is_ok()
    }

    /// Sets the ready-list flag; true if it was not set (the caller then lists it).
    pub fn enlist_as_ready(&mut self) -> bool {
        !std::mem::replace(&mut self.ready_queued, true)
    }

    /// Clears the ready-list flag as the list is worked through.
    pub fn delist_as_ready(&mut self) {
        self.ready_queued = false;
    }

    /// Whether it is on the ready list (its input is served from there this turn).
    pub fn is_ready_queued(&self) -> bool {
        self.ready_queued
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
        // Input is read in every state but Closed (after LEAVE it is read and dropped,
        // so the final close is clean), so READABLE stays, but while a password check
        // is out: then the kernel's buffer holds the input back.
        let owes = self.pending() > 0 || self.transport.wants_write();
        match (self.waiting && self.state == State::Open, owes) {
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            (false, false) => Interest::READABLE,
            (true, _) => Interest::WRITABLE,
        }
    }

    /// Registers the connection's socket with the poller, for reading, under its
    /// id's token.
    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        let token = Token(self.id.index());
        registry.register(self.transport.socket(), token, Interest::READABLE)
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

    /// Takes the connection off the poller before it is dropped (which closes it).
    /// One that was draining with nothing left owed ends its write side first, so the
    /// peer sees a FIN after its last line.
    pub fn finish(&mut self, registry: &Registry) {
        if let Err(e) = registry.deregister(self.transport.socket()) {
            log::debug!("deregister {}: {e}", self.id);
        }
        if self.state == State::Draining && self.pending() == 0 {
            let _ = self.transport.shutdown_write();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::time::Duration;

    use mio::net::TcpStream;

    use super::*;

    /// A connection over loopback and its peer's socket.
    fn pair() -> (Conn, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, from) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        let id = ConnId {
            key: 0,
            generation: 0,
        };
        let socket = TcpStream::from_std(server_side);
        (
            Conn::new(id, Transport::Plain(socket), from, Instant::now()),
            peer,
        )
    }

    /// Reads what the peer sent until `want` bytes of input came out of the filter.
    fn read_input(conn: &mut Conn, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..1000 {
            if got.len() >= want {
                break;
            }
            match conn.read_into(&mut buf, Instant::now()) {
                ReadOutcome::Data { len, .. } => got.extend_from_slice(&buf[..len]),
                ReadOutcome::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                other => panic!("read: {other:?}"),
            }
        }
        got
    }

    #[test]
    fn bytes_the_telnet_filter_swallows_are_charged_in_whole_tokens() {
        let (mut conn, mut peer) = pair();
        // A negotiation (6 bytes), then a subnegotiation swallowing 2500 more, then a
        // line after its end.
        let mut input = b"\xff\xfb\x18\xff\xfd\x01\xff\xfa\x18".to_vec();
        input.resize(input.len() + 2497, b'q');
        input.extend_from_slice(b"\xff\xf0hi\r\n");
        peer.write_all(&input).unwrap();
        assert_eq!(read_input(&mut conn, 4), b"hi\r\n");
        // 2508 bytes swallowed: two tokens of 1000, 508 carried over.
        assert_eq!(conn.take_swallowed(1000), 2);
        assert_eq!(conn.take_swallowed(1000), 0);
        peer.write_all(&[0xff, 0xf1].repeat(246)).unwrap();
        peer.write_all(b"x\n").unwrap();
        assert_eq!(read_input(&mut conn, 2), b"x\n");
        // 508 + 492 = 1000: one more.
        assert_eq!(conn.take_swallowed(1000), 1);
        assert_eq!(conn.take_swallowed(0), 0, "a zero size counts as one byte");
    }

    #[test]
    fn a_frames_connections_input_is_not_filtered_or_charged() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"JOIN:bob\n").unwrap();
        let line = read_input(&mut conn, 9);
        assert_eq!(conn.parse(&line[..8]), Ok(Command::Nick("bob")));
        assert_eq!(conn.dialect(), Dialect::Frames);
        peer.write_all(b"SAY::\xff\xfa\n").unwrap();
        assert_eq!(read_input(&mut conn, 8), b"SAY::\xff\xfa\n");
        assert_eq!(conn.take_swallowed(1), 0);
    }

    #[test]
    fn a_draining_connections_input_is_read_and_dropped() {
        let (mut conn, mut peer) = pair();
        assert!(conn.start_draining());
        peer.write_all(&[b'z'; 3000]).unwrap();
        let mut buf = [0u8; 4096];
        let mut raw_total = 0;
        for _ in 0..1000 {
            match conn.read_into(&mut buf, Instant::now()) {
                ReadOutcome::Data { len, raw, .. } => {
                    assert_eq!(len, 0);
                    raw_total += raw;
                }
                ReadOutcome::WouldBlock if raw_total >= 3000 => break,
                ReadOutcome::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                other => panic!("read: {other:?}"),
            }
        }
        assert_eq!(raw_total, 3000);
        assert_eq!(conn.take_swallowed(1), 0, "dropped input is not charged");
        drop(peer);
        let mut end = None;
        for _ in 0..1000 {
            match conn.read_into(&mut buf, Instant::now()) {
                ReadOutcome::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                other => {
                    end = Some(other);
                    break;
                }
            }
        }
        assert!(matches!(end, Some(ReadOutcome::Eof)), "{end:?}");
        assert!(conn.input_ended());
    }

    #[test]
    fn output_is_held_for_coalescing_only_right_after_a_write() {
        let (mut conn, _peer) = pair();
        let mut pool = BufferPool::default();
        let t0 = Instant::now();
        let interval = Duration::from_millis(5);
        // Never written: the first output goes at once.
        assert_eq!(conn.coalesce_until(interval, t0), None);
        conn.queue(b"SERVER:one\n", &mut pool);
        conn.flush(&mut pool, t0).unwrap();
        conn.queue(b"SERVER:two\n", &mut pool);
        assert_eq!(conn.coalesce_until(interval, t0), Some(t0 + interval));
        assert_eq!(
            conn.coalesce_until(interval, t0 + Duration::from_millis(4)),
            Some(t0 + interval)
        );
        assert_eq!(conn.coalesce_until(interval, t0 + interval), None);
        // Leaving: never held.
        assert!(conn.start_draining());
        assert_eq!(conn.coalesce_until(interval, t0), None);
    }

    #[test]
    fn interest_asks_for_writable_only_while_output_is_owed() {
        let (mut conn, _peer) = pair();
        let mut pool = BufferPool::default();
        assert_eq!(conn.interest(), Interest::READABLE);
        conn.queue(b"SERVER:hi\n", &mut pool);
        assert_eq!(conn.interest(), Interest::READABLE | Interest::WRITABLE);
        conn.flush(&mut pool, Instant::now()).unwrap();
        assert_eq!(conn.pending(), 0);
        assert_eq!(conn.interest(), Interest::READABLE);
    }

    #[test]
    fn the_soft_cap_clock_starts_when_first_seen_over_and_stops_under() {
        let (mut conn, _peer) = pair();
        let mut pool = BufferPool::default();
        let t0 = Instant::now();
        conn.queue(&[b'x'; 100], &mut pool);
        assert_eq!(conn.over_soft(100, t0), None, "at the cap is not over it");
        conn.queue(b"x", &mut pool);
        assert_eq!(conn.over_soft(100, t0), Some(t0));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            conn.over_soft(100, later),
            Some(t0),
            "the clock keeps its start"
        );
        conn.flush(&mut pool, later).unwrap();
        assert_eq!(conn.over_soft(100, later), None);
        conn.queue(&[b'x'; 101], &mut pool);
        assert_eq!(conn.over_soft(100, later), Some(later), "a new clock");
    }
}
