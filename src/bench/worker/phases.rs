//! What a worker does in each phase.
//!
//! Every phase has three hooks: `enter` sets it up when the coordinator announces it,
//! `step` does the work that is due and says how long until more is, and `done` says
//! whether this worker has finished the phase (closing out what timed out; when the run
//! is aborted every phase ends at once). [`hooks`] is the one table from a phase to its
//! hooks, so a new phase is one entry there plus its own functions here.
//!
//! The loop, the client I/O, closes and failures are the parent module's.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::{MAX_SENDER_BACKLOG, STALL_QUIET, State, Worker};
use crate::bench::config::BenchDialect;
use crate::bench::contract::{Phase, STALL_LIMIT};
use crate::bench::marker::Marker;
use crate::bench::sockets;
use crate::client::transport::{TlsStream, Transport};

/// One phase's hooks.
#[derive(Clone, Copy)]
pub(super) struct Hooks {
    /// Sets the phase up when it is announced.
    pub(super) enter: fn(&mut Worker, Instant),
    /// Does the work that is due; returns how long until more is due (`None`: no
    /// work of its own, only events).
    pub(super) step: fn(&mut Worker, Instant) -> Option<Duration>,
    /// Whether this worker is done with the phase; the flag says the run is aborted.
    pub(super) done: fn(&mut Worker, Instant, bool) -> bool,
}

/// A phase with no work of its own, done as soon as it starts; the worker keeps
/// reading meanwhile.
const HOLD: Hooks = Hooks {
    enter: |_, _| {},
    step: |_, _| None,
    done: |_, _, _| true,
};

/// The hooks of `phase`. Joining depends on the `dialect`: frames wait for the
/// server's answer to `JOIN`, IRC registers, joins and waits for the echo, lines send
/// a hello and let it settle.
pub(super) fn hooks(phase: Phase, dialect: BenchDialect) -> Hooks {
    match (phase, dialect) {
        (Phase::Connect, _) => Hooks {
            enter: Worker::enter_connect,
            step: Worker::step_connect,
            done: Worker::connect_done,
        },
        (Phase::Join, BenchDialect::Frames | BenchDialect::Irc) => Hooks {
            enter: Worker::enter_join,
            step: Worker::step_join,
            done: Worker::join_done,
        },
        (Phase::Join, BenchDialect::Lines) => Hooks {
            enter: Worker::enter_join,
            step: Worker::step_hello,
            done: Worker::hello_done,
        },
        (Phase::Steady, _) => Hooks {
            enter: Worker::enter_steady,
            step: Worker::step_steady,
            done: Worker::steady_done,
        },
        (Phase::Drain, _) => Hooks {
            enter: Worker::enter_drain,
            step: Worker::until_deadline,
            done: Worker::drain_done,
        },
        (Phase::Stall, _) => Hooks {
            enter: Worker::enter_stall,
            step: Worker::until_deadline,
            done: Worker::stall_done,
        },
        (Phase::Start | Phase::Idle | Phase::Finish, _) => HOLD,
    }
}

impl Worker {
    /// A `step` for phases that only wait for events until their deadline.
    fn until_deadline(&mut self, now: Instant) -> Option<Duration> {
        Some(self.deadline.saturating_duration_since(now))
    }

    // ---- connect -------------------------------------------------------------------

    fn enter_connect(&mut self, now: Instant) {
        self.deadline = now + self.config.phase_timeout;
    }

    /// Starts connects up to the concurrency limit.
    fn step_connect(&mut self, now: Instant) -> Option<Duration> {
        while self.connecting < self.config.concurrency && self.next_connect < self.clients.len() {
            let i = self.next_connect;
            self.next_connect += 1;
            self.start_connect(i);
        }
        self.until_deadline(now)
    }

    /// Done when every client has been tried and none is still connecting; at the
    /// deadline (or on abort) the rest fail.
    fn connect_done(&mut self, now: Instant, abort: bool) -> bool {
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
                State::Handshaking | State::Upgrading if abort => self.fail(i, late.into()),
                State::Handshaking => self.fail(i, "TLS handshake timed out".into()),
                State::Upgrading => self.fail(i, "WebSocket upgrade timed out".into()),
                State::New => self.fail(i, never.into()),
                _ => {}
            }
        }
        self.next_connect = self.clients.len();
        true
    }

    fn start_connect(&mut self, i: usize) {
        let c = &self.config;
        let id = self.clients[i].id;
        let src = if c.source_ips.is_empty() {
            None
        } else {
            Some(c.source_ips[id % c.source_ips.len()])
        };
        let addr = c.addr_of(id);
        self.clients[i].started = Some(Instant::now());
        let opened = sockets::open(addr, src, self.clients[i].stalled)
            .map_err(|e| sockets::connect_error(&e, addr))
            .and_then(|sock| match &c.tls {
                // The ClientHello waits in rustls until the connect completes.
                Some(tls) => tls
                    .connection()
                    .map(|conn| Transport::Tls(Box::new(TlsStream::new(conn, sock))))
                    .map_err(|e| e.to_string()),
                None => Ok(Transport::Plain(sock)),
            });
        match opened {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match self
                    .poll
                    .registry()
                    .register(stream.socket_mut(), Token(i), interest)
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
            Err(why) => self.fail(i, why),
        }
    }

    /// Checks a connecting socket after an event. Returns whether it is now connected
    /// (over TLS: handshaking, with the ClientHello on its way; over WebSocket:
    /// upgrading, with the request on its way).
    pub(super) fn check_connect(&mut self, i: usize) -> bool {
        let Some(stream) = &self.clients[i].stream else {
            return false;
        };
        match sockets::connected(stream.socket()) {
            Ok(true) if self.config.tls.is_some() => {
                self.clients[i].state = State::Handshaking;
                self.flush(i);
                self.clients[i].state == State::Handshaking
            }
            Ok(true) if self.config.ws => {
                self.send_upgrade(i);
                self.clients[i].state == State::Upgrading
            }
            Ok(true) => {
                self.connected(i);
                true
            }
            Ok(false) => false,
            Err(e) => {
                let why = sockets::connect_error(&e, self.config.addr_of(self.clients[i].id));
                self.fail(i, why);
                false
            }
        }
    }

    /// After I/O on a handshaking client: once its TLS handshake is done it upgrades
    /// to WebSocket (`--ws`) or is connected.
    pub(super) fn check_handshake(&mut self, i: usize) {
        let c = &self.clients[i];
        if c.stream.as_ref().is_none_or(|s| s.is_handshaking()) {
            return;
        }
        if self.config.ws {
            self.send_upgrade(i);
        } else {
            self.connected(i);
        }
    }

    /// A connection is ready for the join. After a TLS handshake or a WebSocket
    /// upgrade, the time from the connect's start is recorded.
    pub(super) fn connected(&mut self, i: usize) {
        if (self.config.tls.is_some() || self.config.ws)
            && let Some(started) = self.clients[i].started
        {
            let us = started.elapsed().as_micros() as u64;
            self.tally.handshake.saturating_record(us.max(1));
        }
        self.connecting -= 1;
        self.clients[i].state = State::Connected;
        self.tally.connected += 1;
    }

    // ---- join ----------------------------------------------------------------------

    fn enter_join(&mut self, now: Instant) {
        self.deadline = now + self.config.phase_timeout;
    }

    /// Frames and IRC: sends `JOIN` lines (IRC: `NICK`/`USER` first) up to the
    /// concurrency limit; the server's answers arrive as events.
    fn step_join(&mut self, now: Instant) -> Option<Duration> {
        while self.joining < self.config.concurrency && self.next_join < self.clients.len() {
            let i = self.next_join;
            self.next_join += 1;
            if self.clients[i].state == State::Connected {
                if self.config.dialect == BenchDialect::Irc {
                    self.send_register(i);
                } else {
                    self.send_join(i);
                }
            }
        }
        self.until_deadline(now)
    }

    /// Frames and IRC: done when every connected client has joined or failed; at the
    /// deadline (or on abort) the rest fail.
    fn join_done(&mut self, now: Instant, abort: bool) -> bool {
        if self.next_join == self.clients.len() && self.joining == 0 {
            return true;
        }
        if now < self.deadline && !abort {
            return false;
        }
        let why = if abort {
            "run aborted while joining".to_string()
        } else if self.config.dialect == BenchDialect::Irc {
            format!(
                "not joined within {:?} (expected 001 after NICK/USER, then the JOIN echo \
                 or 366 after JOIN)",
                self.config.phase_timeout
            )
        } else {
            format!(
                "no answer to JOIN within {:?} (expected `SERVER:you are now in #room`)",
                self.config.phase_timeout
            )
        };
        for i in 0..self.clients.len() {
            if matches!(
                self.clients[i].state,
                State::Connected | State::Registering | State::Joining
            ) {
                self.fail(i, why.clone());
            }
        }
        self.next_join = self.clients.len();
        true
    }

    /// Lines: sends every connected client's hello at once (there is no answer to
    /// wait for), then waits `--settle`.
    fn step_hello(&mut self, now: Instant) -> Option<Duration> {
        if self.next_join < self.clients.len() {
            for i in self.next_join..self.clients.len() {
                if self.clients[i].state == State::Connected {
                    self.send_hello(i);
                }
            }
            self.next_join = self.clients.len();
            self.deadline = now + self.config.settle;
        }
        self.until_deadline(now)
    }

    /// Lines: done once the hellos are out and the settle time has passed.
    fn hello_done(&mut self, now: Instant, abort: bool) -> bool {
        abort || (self.next_join == self.clients.len() && now >= self.deadline)
    }

    fn send_join(&mut self, i: usize) {
        let id = self.clients[i].id;
        let room = self.clients[i].room;
        let mut out = std::mem::take(&mut self.line);
        self.clients[i].state = State::Joining;
        self.joining += 1;
        // Writing to a Vec cannot fail.
        out.clear();
        let _ = write!(out, "JOIN:{}{id}", self.prefix);
        self.queue_line(i, &mut out);
        out.clear();
        let _ = write!(out, "JOIN:#{}{room}", self.prefix);
        self.queue_line(i, &mut out);
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

    /// Takes the shared start time and picks this worker's senders.
    fn enter_steady(&mut self, _now: Instant) {
        let c = &self.config;
        let start_us = self.shared.steady_start_us.load(Relaxed);
        self.steady_start = self.shared.epoch + Duration::from_micros(start_us);
        self.steady_end = self.steady_start + c.duration;
        self.senders = (0..self.clients.len())
            .filter(|&i| self.clients[i].id < c.senders)
            .collect();
        self.local_rate = self.senders.len() as f64 * c.rate;
        self.next_msg = 0;
    }

    fn step_steady(&mut self, now: Instant) -> Option<Duration> {
        Some(self.send_due(now))
    }

    /// Done at the end of the load; adds this worker's sends to its rooms' counts, from
    /// which every receiver learns what it is owed.
    fn steady_done(&mut self, now: Instant, abort: bool) -> bool {
        if now < self.steady_end && !abort {
            return false;
        }
        for &i in &self.senders {
            let c = &self.clients[i];
            self.shared.room_sent[c.room].fetch_add(c.sent, Relaxed);
        }
        true
    }

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
        match self.config.dialect {
            BenchDialect::Frames => out.extend_from_slice(b"SAY::"),
            BenchDialect::Irc => self.irc_privmsg_prefix(i, &mut out),
            BenchDialect::Lines => {}
        }
        self.needle.encode(marker, self.config.payload, &mut out);
        self.clients[i].sent = seq;
        self.tally.sent += 1;
        self.queue_line(i, &mut out);
        self.line = out;
    }

    // ---- drain ---------------------------------------------------------------------

    /// Works out what every joined receiver is owed (its room's sends minus its own)
    /// and how much of that has not arrived yet.
    fn enter_drain(&mut self, now: Instant) {
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

    /// Done when nothing is outstanding, or at the drain timeout.
    fn drain_done(&mut self, now: Instant, abort: bool) -> bool {
        abort || self.outstanding == 0 || now >= self.deadline
    }

    // ---- stall ---------------------------------------------------------------------

    /// Starts reading the stalled clients: what the server had queued for them comes
    /// now, then silence or a close.
    fn enter_stall(&mut self, now: Instant) {
        self.deadline = now + STALL_LIMIT;
        for i in 0..self.clients.len() {
            if self.clients[i].stalled && self.clients[i].stream.is_some() {
                self.clients[i].last_data = Some(now);
                self.read(i, true);
            }
        }
    }

    /// Done when every stalled client is closed or has been quiet for
    /// [`STALL_QUIET`], or at the stall limit.
    fn stall_done(&mut self, now: Instant, abort: bool) -> bool {
        abort
            || now >= self.deadline
            || self.clients.iter().all(|c| {
                !c.stalled
                    || c.stream.is_none()
                    || c.last_data
                        .is_some_and(|t| now.duration_since(t) >= STALL_QUIET)
            })
    }
}
