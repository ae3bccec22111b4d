//! One harness thread: a mio loop over its share of the client connections, walking
//! through the phases the coordinator (`bench::run_bench`) announces.
//!
//! It owns the sockets and everything per client: connect with bounded concurrency from
//! the source addresses to the client's server address, complete the TLS handshake
//! (with `--tls`) and the WebSocket upgrade (with `--ws`; both timed from the connect's
//! start), join and wait for the server's answer, send paced messages, receive and
//! classify deliveries, answer WebSocket pings and closes, notice closes. It does not
//! own phase order or timing of the run as a whole, and never blocks: between phases
//! it keeps reading, so the server never waits on the harness.
//!
//! This module is the loop and the client I/O: it polls, hands each phase's work to
//! that phase's hooks ([`phases`]), reads and classifies lines, queues and flushes
//! output, and records closes and failures. Which clients a worker owns, their rooms
//! and who sends follow [`Layout`]; socket set-up is in [`sockets`](super::sockets);
//! the counts are a [`Tally`]; `worker::ws` is a client's WebSocket upgrade and
//! frames, over the pure codec in [`websocket`](super::websocket).

mod irc;
mod phases;
mod ws;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::config::BenchConfig;
use super::contract::{Layout, Phase, Shared, WAKE};
use super::marker::{Marker, Needle};
use super::tally::{Inbox, Tally};
use super::websocket::{Masks, WsReader};
use crate::client::transport::{Transport, handshake_error};
use crate::codec::{LineError, LineReader};
use crate::outq::{BufferPool, OutQueue};
use phases::Hooks;

/// Where one client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket yet.
    New,
    /// Non-blocking connect in progress.
    Connecting,
    /// TCP connected, TLS handshake under way (`--tls` only).
    Handshaking,
    /// WebSocket upgrade request sent, waiting for the 101 (`--ws` only).
    Upgrading,
    /// Connected, not joined.
    Connected,
    /// IRC: `NICK`/`USER` sent, waiting for `001` before joining.
    Registering,
    /// Join lines sent, waiting for the server's answer.
    Joining,
    /// In its room.
    Joined,
    /// Connect or join failed; socket closed.
    Failed,
    /// Closed by the server (or an I/O error) after connecting.
    Closed,
}

/// One client connection.
#[derive(Debug)]
struct Client {
    /// Global index.
    id: usize,
    /// Room index.
    room: usize,
    /// Never reads after joining.
    stalled: bool,
    state: State,
    stream: Option<Transport>,
    /// When its connect started (for the handshake latency).
    started: Option<Instant>,
    reader: LineReader,
    /// With `--ws`: the upgrade answer, then the server's frames (empty otherwise).
    ws: WsReader,
    /// Output not yet written.
    out: OutQueue,
    /// Whether the join was acknowledged (stays true after a close).
    joined: bool,
    /// What it has received, per sender of its room.
    inbox: Inbox,
    /// Messages sent (the last sequence number used).
    sent: u64,
    /// Deliveries expected (set when the drain starts).
    expected: u64,
    /// Last time a stalled client read something (stall phase).
    last_data: Option<Instant>,
}

/// A sender whose unsent output exceeds this skips messages (counted) instead of
/// queueing without bound when the server stops reading.
const MAX_SENDER_BACKLOG: usize = 1 << 20;

/// Longest line the harness accepts; longer ones are counted and skipped.
const MAX_LINE: usize = 1 << 20;

/// Bound on a poll, so the abort flag is seen even without a wake-up.
const MAX_POLL: Duration = Duration::from_millis(50);

/// How long a stalled client may be silent in the stall phase before it counts as still
/// connected (not evicted).
const STALL_QUIET: Duration = Duration::from_millis(500);

/// One harness thread.
pub struct Worker {
    index: usize,
    config: Arc<BenchConfig>,
    shared: Arc<Shared>,
    poll: Poll,
    layout: Layout,
    clients: Vec<Client>,
    needle: Needle,
    /// Name prefix (`lb<run>-`) for names and rooms.
    prefix: String,
    /// `SERVER:you are now in #<prefix>`: the join answer, room number follows.
    ack_prefix: Vec<u8>,
    /// The run id (IRC nicks are made from it).
    run_id: u32,
    /// IRC: each room's channel name, `#<prefix><room>` (empty in other dialects).
    channels: Vec<String>,
    /// Spare output buffers for the clients' queues.
    pool: BufferPool,
    readbuf: Vec<u8>,
    line: Vec<u8>,
    /// Scratch for one WebSocket frame on its way out.
    frame: Vec<u8>,
    /// Masks for the WebSocket frames this worker's clients send.
    masks: Masks,

    phase: Phase,
    /// What to do in `phase`.
    hooks: Hooks,
    phase_done: bool,
    deadline: Instant,
    // connect
    next_connect: usize,
    connecting: usize,
    // join
    next_join: usize,
    joining: usize,
    // steady
    senders: Vec<usize>,
    steady_start: Instant,
    steady_end: Instant,
    next_msg: u64,
    /// Messages per second over this worker's senders.
    local_rate: f64,
    // drain
    outstanding: u64,
    /// Open sockets.
    live: u64,

    tally: Tally,
}

impl Worker {
    /// A worker for thread `index`, owning clients `index, index + threads, …`.
    pub fn new(
        index: usize,
        config: Arc<BenchConfig>,
        shared: Arc<Shared>,
        poll: Poll,
        run_id: u32,
    ) -> Worker {
        let layout = Layout::of(&config);
        let clients = (index..config.connections())
            .step_by(config.threads)
            .map(|id| Client {
                id,
                room: layout.room_of(id),
                stalled: layout.is_stalled(id),
                state: State::New,
                stream: None,
                started: None,
                reader: LineReader::default(),
                ws: WsReader::default(),
                out: OutQueue::default(),
                joined: false,
                inbox: Inbox::new(id, &layout),
                sent: 0,
                expected: 0,
                last_data: None,
            })
            .collect();
        let prefix = format!("lb{:06x}-", run_id & 0xff_ffff);
        let ack_prefix = format!("SERVER:you are now in #{prefix}").into_bytes();
        let channels = if config.dialect == super::BenchDialect::Irc {
            (0..config.rooms).map(|r| format!("#{prefix}{r}")).collect()
        } else {
            Vec::new()
        };
        let now = Instant::now();
        Worker {
            index,
            needle: Needle::new(run_id),
            prefix,
            ack_prefix,
            run_id,
            channels,
            pool: BufferPool::default(),
            readbuf: vec![0; 64 * 1024],
            line: Vec::with_capacity(256),
            frame: Vec::with_capacity(256),
            masks: Masks::new((u64::from(run_id) << 32) | index as u64),
            phase: Phase::Start,
            hooks: phases::hooks(Phase::Start, config.dialect),
            phase_done: false,
            deadline: now,
            next_connect: 0,
            connecting: 0,
            next_join: 0,
            joining: 0,
            senders: Vec::new(),
            steady_start: now,
            steady_end: now,
            next_msg: 0,
            local_rate: 0.0,
            outstanding: 0,
            live: 0,
            tally: Tally::default(),
            layout,
            clients,
            config,
            shared,
            poll,
        }
    }

    /// Runs the phases until the coordinator says `Finish`, then closes everything.
    pub fn run(mut self) -> Tally {
        let mut events = Events::with_capacity(1024);
        loop {
            let want = self.shared.phase();
            if want != self.phase {
                self.phase = want;
                self.phase_done = false;
                if want == Phase::Finish {
                    break;
                }
                self.hooks = phases::hooks(want, self.config.dialect);
                (self.hooks.enter)(&mut self, Instant::now());
            }
            let now = Instant::now();
            let mut timeout = MAX_POLL;
            if !self.phase_done {
                if let Some(t) = (self.hooks.step)(&mut self, now) {
                    timeout = timeout.min(t);
                }
                let abort = self.shared.abort.load(Relaxed);
                if (self.hooks.done)(&mut self, now, abort) {
                    self.phase_done = true;
                    self.report_done();
                }
            }
            self.publish();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.tally.note_failure(format!("harness poll failed: {e}"));
                self.shared.abort.store(true, Relaxed);
                // Do not spin on a broken poll while the coordinator winds down.
                std::thread::sleep(MAX_POLL);
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKE {
                    continue;
                }
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let exhaustive = event.is_read_closed() || event.is_error();
                self.on_event(event.token().0, readable, exhaustive, event.is_writable());
            }
        }
        self.finish()
    }

    fn report_done(&self) {
        let p = &self.shared.workers[self.index];
        let us = self.shared.epoch.elapsed().as_micros() as u64;
        p.done_at_us.store(us, Relaxed);
        p.done.store(self.phase as u8, Release);
    }

    fn publish(&self) {
        let p = &self.shared.workers[self.index];
        p.connected.store(self.tally.connected, Relaxed);
        p.connect_failed.store(self.tally.connect_failed, Relaxed);
        p.joined.store(self.tally.joined, Relaxed);
        p.sent.store(self.tally.sent, Relaxed);
        p.received.store(self.tally.received, Relaxed);
        p.live.store(self.live, Relaxed);
    }

    // ---- I/O -----------------------------------------------------------------------

    /// Handles readiness of client `i`. `exhaustive`: the event also reported a close or
    /// an error, so reading must go on to the end rather than stop at a short read.
    fn on_event(&mut self, i: usize, readable: bool, exhaustive: bool, writable: bool) {
        let Some(state) = self.clients.get(i).map(|c| c.state) else {
            return;
        };
        match state {
            State::Connecting if !self.check_connect(i) => return,
            State::New | State::Failed | State::Closed => return,
            _ => {}
        }
        let c = &self.clients[i];
        if writable && (!c.out.is_empty() || c.stream.as_ref().is_some_and(|s| s.wants_write())) {
            self.flush(i);
        }
        if readable {
            let c = &self.clients[i];
            let reading = !c.stalled
                || matches!(
                    c.state,
                    State::Handshaking | State::Upgrading | State::Registering | State::Joining
                )
                || self.phase == Phase::Stall;
            if reading {
                self.read(i, exhaustive);
            }
        }
        if self.clients[i].state == State::Handshaking {
            self.check_handshake(i);
        }
    }

    /// Appends `bytes` to the client's output and writes what the socket takes.
    fn queue(&mut self, i: usize, bytes: &[u8]) {
        self.clients[i].out.push(bytes, &mut self.pool);
        self.flush(i);
    }

    /// Queues one protocol line, given without its end: with `\n` (IRC: `\r\n`) over a
    /// byte stream, as one masked text frame over WebSocket. `line` is scratch: its
    /// end may be appended.
    fn queue_line(&mut self, i: usize, line: &mut Vec<u8>) {
        if self.config.ws {
            let mut frame = std::mem::take(&mut self.frame);
            frame.clear();
            super::websocket::text(line, self.masks.next_mask(), &mut frame);
            self.queue(i, &frame);
            self.frame = frame;
        } else {
            if self.config.dialect == super::BenchDialect::Irc {
                line.push(b'\r');
            }
            line.push(b'\n');
            self.queue(i, line);
        }
    }

    /// Writes queued output (and TLS records rustls holds) until the socket would
    /// block; what it does not take stays queued for the next writable event.
    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let mut result = c.out.write_to(stream, &mut self.pool).map(drop);
        if result.is_ok() && stream.wants_write() {
            result = match stream.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            };
        }
        if let Err(e) = result {
            self.close(i, format!("write failed: {e}"));
        }
    }

    /// Reads until the socket is drained, handling every complete line. A read shorter
    /// than the buffer drained it (epoll(7): for stream sockets a short read means the
    /// input is exhausted, and new data raises a new edge), which saves the extra
    /// `read` that would only return `WouldBlock`: one syscall per delivery instead of
    /// two. With `exhaustive` (close or error seen) it reads on to EOF or `WouldBlock`,
    /// and always over TLS: a short read there only empties rustls's buffer.
    fn read(&mut self, i: usize, exhaustive: bool) {
        let exhaustive = exhaustive || self.config.tls.is_some();
        let mut buf = std::mem::take(&mut self.readbuf);
        loop {
            let c = &mut self.clients[i];
            let handshaking = c.state == State::Handshaking;
            let upgrading = c.state == State::Upgrading;
            let Some(stream) = c.stream.as_mut() else {
                break;
            };
            match stream.read(&mut buf) {
                Ok(0) if handshaking => {
                    self.close(i, "closed by the server during the TLS handshake".into());
                    break;
                }
                Ok(0) if upgrading => {
                    self.close(
                        i,
                        "closed by the server during the WebSocket upgrade".into(),
                    );
                    break;
                }
                Ok(0) => {
                    self.close(i, "closed by the server".into());
                    break;
                }
                Ok(n) => {
                    let now = Instant::now();
                    self.on_bytes(i, &buf[..n], now);
                    if n < buf.len() && !exhaustive {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if handshaking => {
                    let addr = self.config.addr_of(self.clients[i].id).to_string();
                    let why = handshake_error(&e, &addr, self.config.phase_timeout);
                    self.close(i, format!("TLS handshake failed: {why}"));
                    break;
                }
                Err(e) => {
                    self.close(i, format!("read failed: {e}"));
                    break;
                }
            }
        }
        self.readbuf = buf;
    }

    fn on_bytes(&mut self, i: usize, data: &[u8], now: Instant) {
        if self.clients[i].stalled && self.phase == Phase::Stall {
            // Only eviction matters now; the contents are not measured.
            self.clients[i].last_data = Some(now);
            return;
        }
        if self.config.ws {
            self.on_ws_bytes(i, data, now);
            return;
        }
        let now_us = now.duration_since(self.shared.epoch).as_micros() as u64;
        // Split borrows: the reader belongs to the client, the handler needs the rest.
        let mut reader = std::mem::take(&mut self.clients[i].reader);
        let mut ctx = LineCtx {
            worker: self,
            i,
            now,
            now_us,
        };
        reader.feed(data, MAX_LINE, |line| match line {
            Ok(l) => ctx.on_line(l),
            // Nothing the harness sends produces such a line; it is not a delivery.
            Err(LineError::TooLong) => {}
        });
        self.clients[i].reader = reader;
    }

    /// Closes a connection the server closed or broke.
    fn close(&mut self, i: usize, why: String) {
        let phase = self.phase;
        let c = &mut self.clients[i];
        if c.stream.is_none() {
            return;
        }
        if matches!(
            c.state,
            State::Connecting
                | State::Handshaking
                | State::Upgrading
                | State::Connected
                | State::Registering
                | State::Joining
        ) {
            self.fail(i, why);
            return;
        }
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(s.socket_mut());
            self.live -= 1;
        }
        // Nothing more can be written or read: the buffers go.
        c.out.clear(&mut self.pool);
        c.ws.clear();
        c.state = State::Closed;
        if c.stalled {
            self.tally.stalled_evicted += 1;
            return;
        }
        self.tally.closed_by_server += 1;
        if phase == Phase::Drain {
            self.outstanding = self
                .outstanding
                .saturating_sub(c.expected.saturating_sub(c.inbox.unique()));
        }
        self.tally
            .note_failure(format!("{why} during {}", phase.name()));
    }

    /// Marks a client failed (connect or join) and drops its socket.
    fn fail(&mut self, i: usize, why: String) {
        let c = &mut self.clients[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(s.socket_mut());
            self.live -= 1;
        }
        // Nothing more can be written or read: the buffers go.
        c.out.clear(&mut self.pool);
        c.ws.clear();
        let join_phase = matches!(
            c.state,
            State::Connected | State::Registering | State::Joining
        );
        match c.state {
            State::Connecting | State::Handshaking | State::Upgrading => self.connecting -= 1,
            State::Registering | State::Joining => self.joining -= 1,
            _ => {}
        }
        c.state = State::Failed;
        if let Ok(mut first) = self.shared.first_failure.lock()
            && first.is_none()
        {
            *first = Some(why.clone());
        }
        if join_phase {
            self.tally.join_failed += 1;
            self.tally.note_failure(format!("join: {why}"));
        } else {
            self.tally.connect_failed += 1;
            self.tally.note_failure(format!("connect: {why}"));
        }
    }

    fn finish(mut self) -> Tally {
        // Dropping the streams closes them (after a WebSocket close frame and a TLS
        // close_notify, so the server sees a clean end); the counts are final.
        for i in 0..self.clients.len() {
            if self.config.ws && self.clients[i].stream.is_some() {
                self.send_ws_close(i);
            }
            if let Some(mut s) = self.clients[i].stream.take() {
                let _ = s.close_notify();
            }
        }
        self.live = 0;
        self.publish();
        self.tally
    }
}

/// Handles lines for one client while its reader is borrowed out.
struct LineCtx<'a> {
    worker: &'a mut Worker,
    i: usize,
    now: Instant,
    now_us: u64,
}

impl LineCtx<'_> {
    fn on_line(&mut self, line: &[u8]) {
        let w = &mut *self.worker;
        if w.clients[self.i].stream.is_none() {
            // Closed by an earlier line of the same read (a failed join or write).
            return;
        }
        if let Some(m) = w.needle.find(line) {
            self.on_delivery(m);
            return;
        }
        if w.config.dialect == super::BenchDialect::Irc {
            self.on_irc_line(line);
            return;
        }
        let i = self.i;
        let joining = w.clients[i].state == State::Joining;
        if let Some(err) = line.strip_prefix(b"ERROR:") {
            w.tally.server_error(line);
            if joining {
                let why = format!("server said ERROR:{}", String::from_utf8_lossy(err));
                w.fail(i, why);
            }
            return;
        }
        if joining
            && let Some(room) = line.strip_prefix(&w.ack_prefix[..])
            && room == w.clients[i].room.to_string().as_bytes()
        {
            let c = &mut w.clients[i];
            c.state = State::Joined;
            c.joined = true;
            w.joining -= 1;
            w.tally.joined += 1;
        }
    }

    fn on_delivery(&mut self, m: Marker) {
        let w = &mut *self.worker;
        let c = &mut w.clients[self.i];
        if c.stalled {
            return;
        }
        let delivery = w
            .tally
            .record(&w.layout, &mut c.inbox, m, self.now, self.now_us);
        if delivery.is_distinct() && w.phase == Phase::Drain && c.inbox.unique() <= c.expected {
            w.outstanding = w.outstanding.saturating_sub(1);
        }
    }
}
