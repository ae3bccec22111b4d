//! One harness thread: a mio loop over its share of the client connections, walking
//! through the phases the coordinator (`bench::run_bench`) announces.
//!
//! It owns the sockets and everything per client: connect with bounded concurrency from
//! the source addresses, join and wait for the server's answer, send paced messages,
//! receive and classify deliveries, notice closes. It does not own phase order or
//! timing of the run as a whole, and never blocks: between phases it keeps reading, so
//! the server never waits on the harness.
//!
//! Which clients a worker owns, their rooms and who sends follow
//! [`Layout`](super::contract::Layout); socket set-up is in [`sockets`](super::sockets).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::config::{BenchConfig, BenchDialect};
use super::contract::{Layout, Phase, STALL_LIMIT, Shared, WAKE};
use super::marker::{Marker, Needle};
use super::sockets;
use super::tally::{Inbox, Tally};
use crate::codec::{LineError, LineReader};
use crate::outq::{BufferPool, OutQueue};

/// Where one client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket yet.
    New,
    /// Non-blocking connect in progress.
    Connecting,
    /// Connected, not joined.
    Connected,
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
    stream: Option<TcpStream>,
    reader: LineReader,
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
    /// Spare output buffers for the clients' queues.
    pool: BufferPool,
    readbuf: Vec<u8>,
    line: Vec<u8>,

    phase: Phase,
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
                reader: LineReader::default(),
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
        let now = Instant::now();
        Worker {
            index,
            needle: Needle::new(run_id),
            prefix,
            ack_prefix,
            pool: BufferPool::default(),
            readbuf: vec![0; 64 * 1024],
            line: Vec::with_capacity(256),
            phase: Phase::Start,
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
                self.enter(Instant::now());
            }
            let now = Instant::now();
            let mut timeout = MAX_POLL;
            if !self.phase_done {
                if let Some(t) = self.step(now) {
                    timeout = timeout.min(t);
                }
                let abort = self.shared.abort.load(Relaxed);
                if self.complete(now, abort) {
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

    /// Sets up the phase just announced.
    fn enter(&mut self, now: Instant) {
        let c = Arc::clone(&self.config);
        match self.phase {
            Phase::Connect | Phase::Join => self.deadline = now + c.phase_timeout,
            Phase::Steady => {
                let start_us = self.shared.steady_start_us.load(Relaxed);
                self.steady_start = self.shared.epoch + Duration::from_micros(start_us);
                self.steady_end = self.steady_start + c.duration;
                self.senders = (0..self.clients.len())
                    .filter(|&i| self.clients[i].id < c.senders)
                    .collect();
                self.local_rate = self.senders.len() as f64 * c.rate;
                self.next_msg = 0;
            }
            Phase::Drain => self.start_drain(now),
            Phase::Stall => {
                self.deadline = now + STALL_LIMIT;
                for i in 0..self.clients.len() {
                    if self.clients[i].stalled && self.clients[i].stream.is_some() {
                        self.clients[i].last_data = Some(now);
                        self.read(i, true);
                    }
                }
            }
            Phase::Start | Phase::Idle | Phase::Finish => {}
        }
    }

    /// Does the phase's work that is due; returns how long until more is due.
    fn step(&mut self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Connect => {
                while self.connecting < self.config.concurrency
                    && self.next_connect < self.clients.len()
                {
                    let i = self.next_connect;
                    self.next_connect += 1;
                    self.start_connect(i);
                }
                Some(self.deadline.saturating_duration_since(now))
            }
            Phase::Join => {
                match self.config.dialect {
                    BenchDialect::Frames => {
                        while self.joining < self.config.concurrency
                            && self.next_join < self.clients.len()
                        {
                            let i = self.next_join;
                            self.next_join += 1;
                            if self.clients[i].state == State::Connected {
                                self.send_join(i);
                            }
                        }
                    }
                    BenchDialect::Lines => {
                        if self.next_join < self.clients.len() {
                            for i in self.next_join..self.clients.len() {
                                if self.clients[i].state == State::Connected {
                                    self.send_hello(i);
                                }
                            }
                            self.next_join = self.clients.len();
                            self.deadline = now + self.config.settle;
                        }
                    }
                }
                Some(self.deadline.saturating_duration_since(now))
            }
            Phase::Steady => Some(self.send_due(now)),
            Phase::Drain | Phase::Stall => Some(self.deadline.saturating_duration_since(now)),
            Phase::Start | Phase::Idle | Phase::Finish => None,
        }
    }

    /// Whether this worker is done with the current phase (closing out what timed out).
    /// With `abort`, every phase ends now.
    fn complete(&mut self, now: Instant, abort: bool) -> bool {
        match self.phase {
            Phase::Connect => {
                if self.next_connect == self.clients.len() && self.connecting == 0 {
                    return true;
                }
                if now < self.deadline && !abort {
                    return false;
                }
                let (late, never) = if abort {
                    ("run aborted while connecting", "not attempted: run aborted")
                } else {
                    (
                        "connect timed out",
                        "not attempted: connect phase timed out",
                    )
                };
                for i in 0..self.clients.len() {
                    match self.clients[i].state {
                        State::Connecting => self.fail(i, late.into()),
                        State::New => self.fail(i, never.into()),
                        _ => {}
                    }
                }
                self.next_connect = self.clients.len();
                true
            }
            Phase::Join => match self.config.dialect {
                BenchDialect::Frames => {
                    if self.next_join == self.clients.len() && self.joining == 0 {
                        return true;
                    }
                    if now < self.deadline && !abort {
                        return false;
                    }
                    let why = if abort {
                        "run aborted while joining".to_string()
                    } else {
                        format!(
                            "no answer to JOIN within {:?} (expected `SERVER:you are now in #room`)",
                            self.config.phase_timeout
                        )
                    };
                    for i in 0..self.clients.len() {
                        if matches!(self.clients[i].state, State::Joining | State::Connected) {
                            self.fail(i, why.clone());
                        }
                    }
                    self.next_join = self.clients.len();
                    true
                }
                BenchDialect::Lines => {
                    abort || (self.next_join == self.clients.len() && now >= self.deadline)
                }
            },
            Phase::Steady => {
                if now < self.steady_end && !abort {
                    return false;
                }
                for &i in &self.senders {
                    let c = &self.clients[i];
                    self.shared.room_sent[c.room].fetch_add(c.sent, Relaxed);
                }
                true
            }
            Phase::Drain => abort || self.outstanding == 0 || now >= self.deadline,
            Phase::Stall => {
                abort
                    || now >= self.deadline
                    || self.clients.iter().all(|c| {
                        !c.stalled
                            || c.stream.is_none()
                            || c.last_data
                                .is_some_and(|t| now.duration_since(t) >= STALL_QUIET)
                    })
            }
            Phase::Start | Phase::Idle | Phase::Finish => true,
        }
    }

    // ---- connect -------------------------------------------------------------------

    fn start_connect(&mut self, i: usize) {
        let c = &self.config;
        let src = if c.source_ips.is_empty() {
            None
        } else {
            Some(c.source_ips[self.clients[i].id % c.source_ips.len()])
        };
        match sockets::open(c.addr, src, self.clients[i].stalled) {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match self
                    .poll
                    .registry()
                    .register(&mut stream, Token(i), interest)
                {
                    Ok(()) => {
                        self.clients[i].stream = Some(stream);
                        self.live += 1;
                        self.clients[i].state = State::Connecting;
                        self.connecting += 1;
                    }
                    Err(e) => self.fail(i, format!("cannot register socket: {e}")),
                }
            }
            Err(e) => self.fail(i, sockets::connect_error(&e, c.addr)),
        }
    }

    /// Checks a connecting socket after an event (mio's documented sequence:
    /// `take_error`, then `peer_addr`). Returns whether it is now connected.
    fn check_connect(&mut self, i: usize) -> bool {
        let Some(stream) = &self.clients[i].stream else {
            return false;
        };
        let result = sockets::connected(stream);
        match result {
            Ok(true) => {
                self.connecting -= 1;
                self.clients[i].state = State::Connected;
                self.tally.connected += 1;
                true
            }
            Ok(false) => false,
            Err(e) => {
                let why = sockets::connect_error(&e, self.config.addr);
                self.fail(i, why);
                false
            }
        }
    }

    // ---- join ----------------------------------------------------------------------

    fn send_join(&mut self, i: usize) {
        let id = self.clients[i].id;
        let room = self.clients[i].room;
        let mut out = std::mem::take(&mut self.line);
        out.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(out, "JOIN:{p}{id}\nJOIN:#{p}{room}\n", p = self.prefix);
        self.clients[i].state = State::Joining;
        self.joining += 1;
        self.queue(i, &out);
        self.line = out;
    }

    fn send_hello(&mut self, i: usize) {
        self.clients[i].state = State::Joined;
        self.clients[i].joined = true;
        self.tally.joined += 1;
        if let Some(hello) = &self.config.hello {
            let mut line = hello
                .replace("%d", &self.clients[i].id.to_string())
                .into_bytes();
            line.push(b'\n');
            self.queue(i, &line);
        }
    }

    // ---- steady --------------------------------------------------------------------

    /// Sends every message whose intended time has come; returns the wait until the next.
    fn send_due(&mut self, now: Instant) -> Duration {
        if self.senders.is_empty() || self.local_rate <= 0.0 {
            return self.steady_end.saturating_duration_since(now);
        }
        // Offset each worker's schedule so that threads do not send in lockstep.
        let offset = self.index as f64 / self.config.threads as f64;
        loop {
            let at = (self.next_msg as f64 + offset) / self.local_rate;
            let when = self.steady_start + Duration::from_secs_f64(at);
            if when >= self.steady_end {
                return self.steady_end.saturating_duration_since(now);
            }
            if when > now {
                return when - now;
            }
            let sender = self.senders[(self.next_msg % self.senders.len() as u64) as usize];
            self.next_msg += 1;
            let sent_us = when.duration_since(self.shared.epoch).as_micros() as u64;
            self.send_message(sender, sent_us);
        }
    }

    fn send_message(&mut self, i: usize, sent_us: u64) {
        let c = &self.clients[i];
        if c.state != State::Joined || c.out.pending() > MAX_SENDER_BACKLOG {
            self.tally.send_skipped += 1;
            return;
        }
        let seq = c.sent + 1;
        let marker = Marker {
            sender: c.id as u64,
            seq,
            sent_us,
        };
        let mut out = std::mem::take(&mut self.line);
        out.clear();
        if self.config.dialect == BenchDialect::Frames {
            out.extend_from_slice(b"SAY::");
        }
        self.needle.encode(marker, self.config.payload, &mut out);
        out.push(b'\n');
        self.clients[i].sent = seq;
        self.tally.sent += 1;
        self.queue(i, &out);
        self.line = out;
    }

    // ---- drain ---------------------------------------------------------------------

    fn start_drain(&mut self, now: Instant) {
        self.deadline = now + self.config.drain_timeout;
        let mut expected = 0;
        let mut outstanding = 0;
        for c in &mut self.clients {
            if c.stalled || !c.joined {
                continue;
            }
            let room_sent = self.shared.room_sent[c.room].load(Relaxed);
            c.expected = room_sent.saturating_sub(c.sent);
            expected += c.expected;
            if c.stream.is_some() {
                outstanding += c.expected.saturating_sub(c.inbox.unique());
            }
        }
        self.tally.expected = expected;
        self.outstanding = outstanding;
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
        if writable && !self.clients[i].out.is_empty() {
            self.flush(i);
        }
        if readable {
            let c = &self.clients[i];
            let reading = !c.stalled || c.state == State::Joining || self.phase == Phase::Stall;
            if reading {
                self.read(i, exhaustive);
            }
        }
    }

    /// Appends `bytes` to the client's output and writes what the socket takes.
    fn queue(&mut self, i: usize, bytes: &[u8]) {
        self.clients[i].out.push(bytes, &mut self.pool);
        self.flush(i);
    }

    /// Writes queued output until the socket would block; what it does not take stays
    /// queued for the next writable event.
    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if let Err(e) = c.out.write_to(stream, &mut self.pool) {
            self.close(i, format!("write failed: {e}"));
        }
    }

    /// Reads until the socket is drained, handling every complete line. A read shorter
    /// than the buffer drained it (epoll(7): for stream sockets a short read means the
    /// input is exhausted, and new data raises a new edge), which saves the extra
    /// `read` that would only return `WouldBlock`: one syscall per delivery instead of
    /// two. With `exhaustive` (close or error seen) it reads on to EOF or `WouldBlock`.
    fn read(&mut self, i: usize, exhaustive: bool) {
        let mut buf = std::mem::take(&mut self.readbuf);
        while let Some(stream) = self.clients[i].stream.as_mut() {
            match stream.read(&mut buf) {
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
            State::Connecting | State::Connected | State::Joining
        ) {
            self.fail(i, why);
            return;
        }
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
            self.live -= 1;
        }
        // Nothing more can be written: the buffer goes back to the pool.
        c.out.clear(&mut self.pool);
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
            let _ = self.poll.registry().deregister(&mut s);
            self.live -= 1;
        }
        // Nothing more can be written: the buffer goes back to the pool.
        c.out.clear(&mut self.pool);
        let join_phase = matches!(c.state, State::Connected | State::Joining);
        match c.state {
            State::Connecting => self.connecting -= 1,
            State::Joining => self.joining -= 1,
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
        // Dropping the streams closes them; the counts are final.
        for c in &mut self.clients {
            c.stream = None;
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
        if let Some(m) = w.needle.find(line) {
            self.on_delivery(m);
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
