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
use crate::conn::{ReadOutcome, State};
use crate::hub::{ConnId, Hub, Next, Outbox};
use crate::net::{IpKey, Redacted};
use crate::notice::Notice;
use crate::timer::TimerWheel;

mod accept;
mod conns;
pub mod inbox;
pub mod stats;

use accept::{LISTENER_BASE, Listener, ListenerKind};
use conns::Conns;
use inbox::{Inbox, InboxSender, LoopMsg};
use stats::{Stats, Summary};

pub use crate::notice::GREETING;

/// The loop's own tokens, above every listener's.
const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Bytes read per `read` call. Shared by all connections; lines that end inside it are
/// parsed in place, so only an unfinished tail is ever copied into a connection.
const READ_CHUNK: usize = 64 * 1024;

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
    /// When output was last written (for `--coalesce`).
    last_flush: Instant,
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
        if !config.summary_interval.is_zero() {
            timers.insert(now + config.summary_interval, Timer::Summary);
        }
        Ok(Server {
            hub: Hub::new(config.announce_limit),
            abuse: Abuse::new(&config, now),
            conns: Conns::new(config.max_output),
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
            last_flush: now,
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
            self.timers.poll(now, &mut fired);
            for timer in fired.drain(..) {
                self.on_timer(timer, now);
            }
            self.abuse.expire(now);
            let flush_at = self.before_sleep(now);
            if self.exit_now || (self.shutting_down && self.conns.is_empty()) {
                break;
            }

            let mut deadline = match (self.timers.next_deadline(), self.abuse.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(flush_at) = flush_at {
                deadline = Some(deadline.map_or(flush_at, |d| d.min(flush_at)));
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
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
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(id, event.is_read_closed(), now);
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

    /// The step before the loop sleeps: brings the batch to a safe point and writes
    /// what is owed. Returns when held-back output is due, if any.
    ///
    /// With `--coalesce`, output queued within the interval after a flush waits for
    /// the next one, so each write carries more messages. The first output after a
    /// quiet spell goes out at once.
    fn before_sleep(&mut self, now: Instant) -> Option<Instant> {
        let flush_at = self.last_flush + self.config.coalesce;
        if now < flush_at && !self.shutting_down {
            self.reap(now);
            return self.conns.has_output().then_some(flush_at);
        }
        if self.conns.has_output() {
            self.last_flush = now;
        }
        // Removing closed connections may queue `LEAVE` notices, and writing may evict
        // more readers: go round until both lists are empty.
        loop {
            self.reap(now);
            if !self.conns.has_output() {
                break;
            }
            self.conns.flush_all(self.poll.registry());
            if !self.conns.has_closes() {
                break;
            }
        }
        None
    }

    // ----- reading ---------------------------------------------------------------

    fn on_readable(&mut self, id: ConnId, read_closed: bool, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        while let Some(conn) = self.conns.get_mut(id) {
            if conn.state() == State::Closed {
                break;
            }
            match conn.read_into(&mut buf, now) {
                ReadOutcome::Eof => {
                    // End of input: what is owed is still sent, then the socket closes.
                    debug!("{id} closed its end");
                    self.begin_drain(id, now);
                    break;
                }
                ReadOutcome::Data { len, drained, .. } => {
                    let mut reader = conn.take_reader();
                    let max = self.config.max_line;
                    reader.feed(&buf[..len], max, |line| self.on_line(id, line, now));
                    if let Some(conn) = self.conns.get_mut(id) {
                        conn.put_reader(reader);
                    }
                    // When the peer has closed, read on to see the end of input.
                    if drained && !read_closed {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Failed(e) => {
                    debug!("{id} read error: {e}");
                    self.conns.close(id, None);
                    break;
                }
            }
        }
        self.read_buf = buf;
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
            if !self.config.idle_timeout.is_zero() {
                self.set_deadline(id, now + self.config.idle_timeout);
            } else if let Some(timer) = self.conns.get_mut(id).and_then(|c| c.take_deadline()) {
                self.timers.cancel(timer);
            }
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let parsed = match line {
            Ok(line) => conn.parse(line),
            Err(LineError::TooLong) => Err(ParseError::TooLong),
        };
        // Every line but a LEAVE costs a token: renames and room hopping cannot flood a
        // room with notices, and bad lines cannot buy an error reply each for free.
        let ip = conn.peer().ip();
        if !matches!(parsed, Ok(Command::Leave(_)))
            && !self.abuse.is_exempt(ip)
            && !conn
                .bucket_mut()
                .take(self.config.rate, self.config.burst, now)
        {
            self.conns.stats.rate_limited += 1;
            match self.abuse.strike(ip, now) {
                Some(ban) => self.ban(IpKey::of(ip), ban, now),
                None => self.conns.notice(
                    id,
                    Notice::RateLimited {
                        rate: self.config.rate,
                    },
                ),
            }
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

    // ----- closing ---------------------------------------------------------------

    /// Sends `id` its last line, then drains it: what it is owed is flushed (bounded by
    /// `--linger`), then it closes. Its room hears it leave at the next safe point.
    fn last_words(&mut self, id: ConnId, notice: Notice<'_>, now: Instant) {
        if self.conns.last_words(id, notice) {
            self.set_deadline(id, now + self.config.linger);
        }
    }

    /// [`Server::last_words`] for every open connection that `pred` picks.
    fn last_words_to_all(
        &mut self,
        pred: impl Fn(&crate::conn::Conn) -> bool,
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

    /// Stops reading from `id` without a last line (end of input).
    fn begin_drain(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.start_draining() {
            self.conns.schedule_close(id);
            self.conns.schedule_flush(id);
            self.set_deadline(id, now + self.config.linger);
        }
    }

    /// Replaces `id`'s deadline (registration, idle or linger) with one at `at`.
    fn set_deadline(&mut self, id: ConnId, at: Instant) {
        if let Some(conn) = self.conns.get_mut(id) {
            if let Some(timer) = conn.take_deadline() {
                self.timers.cancel(timer);
            }
            conn.set_deadline(self.timers.insert(at, Timer::Conn(id)));
        }
    }

    /// Removes closed connections and takes draining ones out of the hub. Runs between
    /// event batches, never in the middle of a broadcast.
    fn reap(&mut self, now: Instant) {
        while let Some(id) = self.conns.next_to_close() {
            let announce = !self.shutting_down;
            self.hub.remove(id, announce, &mut self.conns);
            let Some(conn) = self.conns.get(id) else {
                continue;
            };
            if conn.state() == State::Draining && conn.pending() > 0 {
                continue;
            }
            let Some(mut conn) = self.conns.remove(id) else {
                continue;
            };
            if let Some(timer) = conn.take_deadline() {
                self.timers.cancel(timer);
            }
            conn.finish(self.poll.registry());
            self.abuse.release(conn.peer().ip(), now);
            self.conns.stats.closed += 1;
            let peer = self.peer(conn.peer());
            match conn.close_reason() {
                Some(reason) => {
                    self.conns.stats.evictions += 1;
                    info!("evicted {id} ({peer}): {reason}");
                }
                None => debug!("closed {id} ({peer})"),
            }
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
                self.timers
                    .insert(now + self.config.summary_interval, Timer::Summary);
            }
            Timer::ShutdownDeadline => {
                info!(
                    "shutdown deadline passed with {} connections still flushing",
                    self.conns.len()
                );
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
                debug!("{id} did not take its output within the linger time");
                self.conns.close(id, None);
            }
            State::Open if !conn.sent_a_line() => {
                self.last_words(id, Notice::RegistrationTimeout, now);
            }
            State::Open => {
                let due = conn.last_active() + self.config.idle_timeout;
                if due <= now {
                    self.last_words(id, Notice::IdleTimeout, now);
                } else {
                    self.set_deadline(id, due);
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
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.last_words_to_all(|_| true, Notice::ShuttingDown, now);
        self.timers
            .insert(now + self.config.linger, Timer::ShutdownDeadline);
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
