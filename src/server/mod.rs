//! The event loop: one `mio::Poll`, the listeners, the connection table, signals, the
//! inbox and the timer wheel, on one thread.
//!
//! One turn of the loop: poll (the nearest deadline sets the timeout) → handle the
//! events (accept until `WouldBlock`, read until `WouldBlock`, split lines, apply each
//! command to the hub, queue output) → fire due timers → the before-sleep step: remove
//! closed connections at a safe point, then flush every connection with pending output
//! once → poll again. WRITABLE interest is requested only for output a socket could not
//! take.
//!
//! The loop dispatches; it owns no client state of its own. The connection table and
//! the output path are in [`conns`], accepting and admission in [`accept`], counters
//! and the summary line in [`stats`], the door for other threads in [`inbox`]. Chat
//! logic lives in [`crate::hub`], wire format in [`crate::codec`], per-IP policy in
//! [`crate::abuse`], reply texts in [`crate::notice`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Events, Interest, Poll, Token};

use crate::abuse::Abuse;
use crate::codec::{Command, LineError, ParseError};
use crate::config::ServerConfig;
use crate::conn::{Conn, ReadOutcome, State};
use crate::hub::{ConnId, Hub, Next, Outbox};
use crate::net::{IpKey, Redacted};
use crate::notice::Notice;
use crate::rate::Verdict;
use crate::timer::TimerWheel;

mod accept;
mod conns;
pub mod inbox;
pub mod stats;

use accept::{LISTENER_BASE, Listener, ListenerKind};
use conns::{Conns, OutputLimits};
use inbox::{Inbox, InboxSender, LoopMsg};
use stats::{Stats, Summary};

pub use crate::notice::GREETING;

/// The loop's own tokens, above every listener's.
const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Bytes read per `read` call. Shared by all connections; lines that end inside it are
/// parsed in place, so only an unfinished tail is ever copied into a connection.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes one connection may have read per loop turn (telnet filtering and bytes thrown
/// away from over-long lines count too). One chunk: splitting it costs ~40 µs, so a
/// client blasting an endless line takes that much of a turn, not all of it.
const READ_BUDGET: usize = READ_CHUNK;

/// Lines one connection may have handled per loop turn. A line can be a broadcast to a
/// room of a thousand (~5 µs); 32 of them keep one sender's share of a turn well under
/// a millisecond, while a client that pastes a few lines is served in one turn.
const LINE_BUDGET: usize = 32;

/// Timer wheel resolution and size: 10 ms ticks, 4096 slots (one rotation ≈ 41 s).
const TIMER_TICK: Duration = Duration::from_millis(10);
const TIMER_SLOTS: usize = 4096;

/// Events handled per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// What a timer in the wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The connection's current deadline: registration, idle or linger, by its state.
    Conn(ConnId),
    /// Try `accept` again after EMFILE/ENFILE.
    AcceptRetry,
    /// Log the periodic summary.
    Summary,
    /// Give up flushing at shutdown.
    ShutdownDeadline,
}

/// Asks a running server to shut down, from any thread.
#[derive(Clone)]
pub struct ServerHandle {
    inbox: InboxSender,
}

impl ServerHandle {
    /// Starts a graceful shutdown, as SIGTERM does; a second call exits at once.
    pub fn shutdown(&self) {
        if self.inbox.send(LoopMsg::Shutdown).is_err() {
            log::warn!("shutdown request dropped: the server's inbox is full");
        }
    }
}

/// A bound server. [`Server::run`] drives it until shutdown.
pub struct Server {
    config: ServerConfig,
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    inbox: Inbox,
    conns: Conns,
    hub: Hub,
    abuse: Abuse,
    timers: TimerWheel<Timer>,
    read_buf: Vec<u8>,
    max_clients: usize,
    accept_paused: bool,
    /// Whether the last `accept` failed for want of descriptors (logged once).
    out_of_fds: bool,
    shutting_down: bool,
    exit_now: bool,
    last_summary: Stats,
}

impl Server {
    /// Binds the listener, raises the open-files limit and derives the client cap.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        let now = Instant::now();
        let poll = Poll::new()?;
        let listeners = vec![Listener::bind(
            poll.registry(),
            0,
            config.addr,
            config.backlog,
            ListenerKind::Chat,
        )?];
        let inbox = Inbox::new(poll.registry(), WAKER)?;
        let signals = if config.handle_signals {
            use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
            let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };

        let (max_clients, limit) = accept::client_cap(config.max_clients);
        for listener in &listeners {
            // The port is no one's address; under --redact-ips only the IP is hidden.
            let shown = if config.redact_ips {
                format!("[redacted]:{}", listener.addr.port())
            } else {
                listener.addr.to_string()
            };
            info!("listening on {shown} (open files limit {limit}, max clients {max_clients})");
        }

        let mut timers = TimerWheel::new(TIMER_TICK, TIMER_SLOTS, now);
        // An interval too long to represent (a config built in code) is "never".
        if !config.summary_interval.is_zero()
            && let Some(at) = now.checked_add(config.summary_interval)
        {
            timers.insert(at, Timer::Summary);
        }
        Ok(Server {
            hub: Hub::new(config.announce_limit),
            abuse: Abuse::new(&config, now),
            conns: Conns::new(OutputLimits::of(&config), now),
            config,
            poll,
            listeners,
            signals,
            inbox,
            timers,
            read_buf: vec![0; READ_CHUNK],
            max_clients,
            accept_paused: false,
            out_of_fds: false,
            shutting_down: false,
            exit_now: false,
            last_summary: Stats::default(),
        })
    }

    /// The address the (first) chat listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find(|l| l.kind == ListenerKind::Chat)
            .map_or(self.config.addr, |l| l.addr)
    }

    /// A handle that can stop the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            inbox: self.inbox.sender(),
        }
    }

    /// Runs the event loop until shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut fired = Vec::new();
        loop {
            let now = Instant::now();
            self.conns.set_now(now);
            self.timers.poll(now, &mut fired);
            for timer in fired.drain(..) {
                self.on_timer(timer, now);
            }
            if self.exit_now {
                break;
            }
            self.abuse.expire(now);
            // Input left over from last turn's budgets, round-robin, before new events.
            for id in self.conns.take_ready() {
                self.serve_input(id, true, now);
            }
            let wake_at = self.before_sleep(now);
            if self.shutting_down && self.conns.is_empty() {
                break;
            }

            let timeout = if self.conns.has_ready() {
                Some(Duration::ZERO)
            } else {
                [
                    self.timers.next_deadline(),
                    self.abuse.next_deadline(),
                    wake_at,
                ]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.conns.set_now(now);
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(now),
                    WAKER => self.on_inbox(now),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                    Token(key) => {
                        let Some(id) = self.conns.id_of(key) else {
                            continue;
                        };
                        if event.is_writable() {
                            self.conns.schedule_flush(id);
                        }
                        // A connection on the ready list is read from there, in turn.
                        let queued = self.conns.get(id).is_some_and(Conn::is_ready_queued);
                        if !queued
                            && (event.is_readable() || event.is_read_closed() || event.is_error())
                        {
                            // After a FIN or an error the socket signals no more: read
                            // past a short read to see the end of input.
                            let exhaustive = event.is_read_closed() || event.is_error();
                            self.serve_input(id, exhaustive, now);
                        }
                    }
                }
            }
        }
        let stats = self.conns.stats;
        info!(
            "shut down: {} connections closed, {} lines in, {} deliveries",
            stats.closed + self.conns.len() as u64,
            stats.lines_in,
            stats.deliveries
        );
        Ok(())
    }

    /// The step before the loop sleeps: brings the batch to a safe point, writes what
    /// is owed, and evicts readers that really stopped. Returns when it next has work
    /// (output held back by `--coalesce`, a slow reader's grace ending), if ever.
    fn before_sleep(&mut self, now: Instant) -> Option<Instant> {
        // Removing closed connections may queue `LEAVE` notices, and writing or
        // evicting may close more: go round until nothing is left to close.
        loop {
            self.reap(now);
            let held_until = self.conns.flush_all(self.poll.registry());
            let grace_ends = self.conns.evict_stalled();
            if !self.conns.has_closes() {
                return [held_until, grace_ends].into_iter().flatten().min();
            }
        }
    }

    // ----- reading ---------------------------------------------------------------

    /// Reads and handles `id`'s input within one turn's budget (bytes and lines).
    /// What the budget leaves is read next turn from the ready list, without waiting
    /// for a readiness event: mio is edge-triggered, and the socket may not signal
    /// again. `exhaustive`: read on past a short read (the peer has closed, or the
    /// turn is serving left-over input), to `WouldBlock` or the end of input.
    fn serve_input(&mut self, id: ConnId, exhaustive: bool, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut bytes_left = READ_BUDGET;
        let mut lines_left = LINE_BUDGET;
        let more = loop {
            let Some(conn) = self.conns.get_mut(id) else {
                break false;
            };
            if conn.state() == State::Closed {
                break false;
            }
            let held = conn.take_held();
            if !held.is_empty() {
                if !self.handle_input(id, &held, &mut lines_left, now) {
                    break true;
                }
                continue;
            }
            if bytes_left == 0 {
                break true;
            }
            let want = bytes_left.min(buf.len());
            match conn.read_into(&mut buf[..want], now) {
                ReadOutcome::Data { len, raw, drained } => {
                    bytes_left -= raw;
                    // Input the telnet filter swallowed costs tokens like an endless
                    // line: a subnegotiation that never ends is read without a line.
                    let swallowed = conn.take_swallowed(self.config.max_line);
                    if swallowed > 0 {
                        self.charge(id, swallowed, now);
                    }
                    if !self.handle_input(id, &buf[..len], &mut lines_left, now) {
                        break true;
                    }
                    if drained && !exhaustive {
                        break false;
                    }
                }
                ReadOutcome::Eof => {
                    self.on_end_of_input(id, now);
                    break false;
                }
                ReadOutcome::WouldBlock => break false,
                ReadOutcome::Failed(e) => {
                    debug!("{id} read error: {e}");
                    self.conns.close(id, None);
                    break false;
                }
            }
        };
        self.read_buf = buf;
        if more {
            self.conns.schedule_read(id);
        }
    }

    /// Splits `input` into lines and handles at most `lines_left` of them; the rest is
    /// held in the connection for the next turn. Returns whether all was used.
    fn handle_input(
        &mut self,
        id: ConnId,
        input: &[u8],
        lines_left: &mut usize,
        now: Instant,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return true;
        };
        let mut reader = conn.take_reader();
        let mut lines = 0;
        let used = reader.feed_some(input, self.config.max_line, *lines_left, |line| {
            lines += 1;
            self.on_line(id, line, now);
        });
        *lines_left -= lines;
        let discarded = reader.take_discarded();
        if let Some(conn) = self.conns.get_mut(id) {
            conn.put_reader(reader);
            conn.hold(&input[used..]);
        }
        if discarded > 0 {
            self.charge_discarded(id, discarded, now);
        }
        used == input.len()
    }

    /// The peer ended its input. An open connection still gets what it is owed, then
    /// closes; one that was lingering for this closes now, cleanly.
    fn on_end_of_input(&mut self, id: ConnId, now: Instant) {
        debug!("{id} closed its end");
        match self.conns.get(id).map(Conn::state) {
            Some(State::Open) if self.conns.drain(id) => {
                self.set_deadline(id, now.checked_add(self.config.linger));
            }
            Some(State::Lingering) => self.remove_now(id, now),
            _ => {}
        }
    }

    fn on_line(&mut self, id: ConnId, line: Result<&[u8], LineError>, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.state() != State::Open {
            return;
        }
        let first = conn.note_line();
        self.conns.stats.lines_in += 1;
        if first {
            // The registration window ends; the idle window starts.
            let idle = (!self.config.idle_timeout.is_zero())
                .then(|| now.checked_add(self.config.idle_timeout))
                .flatten();
            self.set_deadline(id, idle);
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if let Ok(line) = line
            && conn.ignores(line)
        {
            return;
        }
        let parsed = match line {
            Ok(line) => conn.parse(line),
            Err(LineError::TooLong) => Err(ParseError::TooLong),
        };
        // Every line but a LEAVE costs a token: renames and room hopping cannot flood a
        // room with notices, and bad lines cannot buy an error reply each for free.
        if !matches!(parsed, Ok(Command::Leave(_))) && !self.take_token(id, true, now) {
            return;
        }
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(ParseError::TooLong) => {
                let max = self.config.max_line;
                return self.conns.notice(id, Notice::LineTooLong { max });
            }
            Err(e) => return self.conns.notice(id, Notice::Parse(e)),
        };
        if self.hub.apply(id, cmd, &mut self.conns) == Next::Leave {
            if let Command::Leave(reason) = cmd {
                debug!("{id} leaves: {reason:?}");
            }
            self.last_words(id, Notice::Goodbye, now);
        }
    }

    /// Takes one message token from `id`: from its own limit, then from its
    /// address's (checked in that order, so a connection's dropped lines do not use up
    /// tokens its neighbours share). Without one, the line is dropped and the sender
    /// told when `reply` is set; the first drop of an episode earns the address a
    /// strike (see [`crate::rate::MessageLimit`]), which may ban it. Returns whether
    /// the line may go on.
    fn take_token(&mut self, id: ConnId, reply: bool, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        let ip = conn.peer().ip();
        if self.abuse.is_exempt(ip) {
            return true;
        }
        let (verdict, notice) =
            match conn
                .limit_mut()
                .check(self.config.rate, self.config.burst, now)
            {
                Verdict::Pass => (
                    self.abuse.take_message(ip, now),
                    Notice::AddressRateLimited {
                        rate: self.config.ip_rate,
                    },
                ),
                drop => (
                    drop,
                    Notice::RateLimited {
                        rate: self.config.rate,
                    },
                ),
            };
        let Verdict::Drop { strike } = verdict else {
            return true;
        };
        self.conns.stats.rate_limited += 1;
        if strike && let Some(ban) = self.abuse.strike(ip, now) {
            self.ban(IpKey::of(ip), ban, now);
        } else if reply {
            self.conns.notice(id, notice);
        }
        false
    }

    /// Bytes thrown away from over-long lines cost tokens like lines do: one per
    /// `--max-line` bytes (rounded up), so an endless line runs into the rate limit and
    /// the strikes like a flood of lines would.
    fn charge_discarded(&mut self, id: ConnId, bytes: usize, now: Instant) {
        let tokens = bytes.div_ceil(self.config.max_line.max(1));
        self.charge(id, tokens, now);
    }

    /// Takes `tokens` from `id` without a reply, stopping at the first drop (which
    /// may strike).
    fn charge(&mut self, id: ConnId, tokens: usize, now: Instant) {
        for _ in 0..tokens {
            if !self.take_token(id, false, now) {
                break;
            }
        }
    }

    // ----- closing ---------------------------------------------------------------

    /// Sends `id` its last line, then drains it: what it is owed is flushed (bounded
    /// by `--linger`), then it closes cleanly. Its room hears it leave at the next safe
    /// point.
    fn last_words(&mut self, id: ConnId, notice: Notice<'_>, now: Instant) {
        if self.conns.last_words(id, notice) {
            self.set_deadline(id, now.checked_add(self.config.linger));
        }
    }

    /// [`Server::last_words`] for every open connection that `pred` picks (a ban, the
    /// shutdown).
    fn last_words_to_all(
        &mut self,
        pred: impl Fn(&Conn) -> bool,
        notice: Notice<'_>,
        now: Instant,
    ) {
        for id in self
            .conns
            .ids_where(|c| c.state() == State::Open && pred(c))
        {
            self.last_words(id, notice, now);
        }
    }

    /// Replaces `id`'s deadline (registration, idle or linger) with one at `at`; `None`
    /// (no deadline, or one too far away to represent) just cancels the old one.
    fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) {
        if let Some(conn) = self.conns.get_mut(id) {
            if let Some(timer) = conn.take_deadline() {
                self.timers.cancel(timer);
            }
            if let Some(at) = at {
                conn.set_deadline(self.timers.insert(at, Timer::Conn(id)));
            }
        }
    }

    /// Takes connections off the close list at a safe point, between event batches
    /// and never in the middle of a broadcast: out of the hub (their room hears them
    /// leave), then, for one that has sent all it owed, the write side is shut and it
    /// lingers for the peer's end of input; a closed one is removed.
    fn reap(&mut self, now: Instant) {
        while let Some(id) = self.conns.next_to_close() {
            let announce = !self.shutting_down;
            self.hub.remove(id, announce, &mut self.conns);
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            match conn.state() {
                State::Draining if conn.pending() > 0 => {}
                State::Draining if !conn.input_ended() && conn.start_lingering() => {
                    // Reading on (and dropping) until the peer's FIN means the close
                    // sends no reset that could destroy the output still in flight.
                    if let Err(e) = conn.update_interest(self.poll.registry()) {
                        debug!("{id} reregister: {e}");
                        self.remove_now(id, now);
                    }
                }
                _ => self.remove_now(id, now),
            }
        }
    }

    /// Removes `id` from the table and the hub and closes its socket (with a FIN if it
    /// was draining and has sent everything).
    fn remove_now(&mut self, id: ConnId, now: Instant) {
        self.hub.remove(id, !self.shutting_down, &mut self.conns);
        let Some(mut conn) = self.conns.remove(id) else {
            return;
        };
        if let Some(timer) = conn.take_deadline() {
            self.timers.cancel(timer);
        }
        conn.finish(self.poll.registry());
        self.abuse.release(conn.peer().ip(), now);
        self.conns.stats.closed += 1;
        let peer = self.peer(conn.peer());
        match conn.eviction() {
            Some(why) => {
                self.conns.stats.evictions += 1;
                info!("evicted {id} ({peer}): {why}");
            }
            None => debug!("closed {id} ({peer})"),
        }
    }

    /// Bans `ip`: every connection from it is told why, flushed and closed.
    fn ban(&mut self, ip: IpKey, duration: Duration, now: Instant) {
        let seconds = whole_seconds(duration);
        self.last_words_to_all(
            |c| IpKey::of(c.peer().ip()) == ip,
            Notice::Banned { seconds },
            now,
        );
    }

    // ----- timers, signals, inbox, shutdown -------------------------------------------

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Conn(id) => self.on_conn_deadline(id, now),
            Timer::AcceptRetry => {
                self.accept_paused = false;
                self.accept_all(now);
            }
            Timer::Summary => {
                self.log_summary();
                if let Some(at) = now.checked_add(self.config.summary_interval) {
                    self.timers.insert(at, Timer::Summary);
                }
            }
            Timer::ShutdownDeadline => {
                // One last write each, so even `--linger 0` sends the shutdown notice.
                for id in self.conns.ids_where(|c| c.pending() > 0) {
                    self.conns.write(id, self.poll.registry());
                }
                let left = self.conns.ids_where(|c| c.pending() > 0).len();
                if left > 0 {
                    info!("shutdown deadline passed with {left} connections still owed output");
                }
                self.exit_now = true;
            }
        }
    }

    fn on_conn_deadline(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let _ = conn.take_deadline();
        match conn.state() {
            State::Closed => {}
            State::Draining => {
                // One last write, so even `--linger 0` sends what it can.
                self.conns.write(id, self.poll.registry());
                if self.conns.get(id).is_some_and(|c| c.pending() > 0) {
                    debug!("{id} did not take its output within the linger time");
                }
                self.remove_now(id, now);
            }
            State::Lingering => self.remove_now(id, now),
            State::Open if !conn.sent_a_line() => {
                self.last_words(id, Notice::RegistrationTimeout, now);
            }
            State::Open => {
                let due = conn.last_active().checked_add(self.config.idle_timeout);
                match due {
                    Some(due) if due <= now => self.last_words(id, Notice::IdleTimeout, now),
                    due => self.set_deadline(id, due),
                }
            }
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let mut received = Vec::new();
        if let Some(signals) = &mut self.signals {
            received.extend(signals.pending());
        }
        for signal in received {
            if signal == signal_hook::consts::SIGUSR1 {
                self.log_bans(now);
            } else {
                self.begin_shutdown(now);
            }
        }
    }

    fn on_inbox(&mut self, now: Instant) {
        while let Some(msg) = self.inbox.try_recv() {
            match msg {
                LoopMsg::Shutdown => self.begin_shutdown(now),
            }
        }
    }

    /// First call: stop accepting, tell everyone, flush within `--linger`. Second call:
    /// exit at once.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            info!("second shutdown request: exiting now");
            self.exit_now = true;
            return;
        }
        info!("shutting down: {} connections", self.conns.len());
        self.shutting_down = true;
        self.conns.set_urgent();
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.last_words_to_all(|_| true, Notice::ShuttingDown, now);
        // A linger too long to represent means waiting for every client (a second
        // request still exits at once), not giving up now.
        if let Some(deadline) = now.checked_add(self.config.linger) {
            self.timers.insert(deadline, Timer::ShutdownDeadline);
        }
    }

    fn log_summary(&mut self) {
        let stats = self.conns.stats;
        let summary = Summary {
            clients: self.conns.len(),
            named: self.hub.named(),
            rooms: self.hub.room_count(),
            interval: self.config.summary_interval,
            delta: stats.since(&self.last_summary),
            bans: self.abuse.ban_count(),
        };
        info!("{summary}");
        self.last_summary = stats;
        let dropped = self.inbox.dropped();
        if dropped > 0 {
            info!("inbox: {dropped} messages dropped since start (queue full)");
        }
    }

    fn log_bans(&self, now: Instant) {
        let bans = self.abuse.bans(now);
        info!("{} active bans", bans.len());
        for (ip, remaining) in bans.iter().take(100) {
            let ip = Redacted {
                value: *ip,
                redact: self.config.redact_ips,
            };
            info!("  ban {ip}: {} s left", remaining.as_secs());
        }
    }

    fn peer(&self, addr: SocketAddr) -> Redacted<SocketAddr> {
        Redacted {
            value: addr,
            redact: self.config.redact_ips,
        }
    }
}

/// A duration as whole seconds for people: rounded up, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}
