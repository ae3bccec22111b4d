//! The event loop: one `mio::Poll`, the listener, a `Slab` of connections, signals and
//! the timer wheel, on one thread.
//!
//! One turn of the loop: poll (the nearest deadline sets the timeout) → handle the
//! events (accept until `WouldBlock`, read until `WouldBlock`, split lines, apply each
//! command to the hub, queue output) → fire due timers → remove closed connections at a
//! safe point → flush every connection with pending output once → poll again. WRITABLE
//! interest is requested only for output a socket could not take.
//!
//! The loop owns everything that touches the OS; chat logic lives in [`crate::hub`],
//! wire format in [`crate::codec`], per-IP policy in [`crate::abuse`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::abuse::{Abuse, Admit};
use crate::codec::{self, Command, Event, LineError, ParseError};
use crate::config::ServerConfig;
use crate::conn::{Conn, Mode, State};
use crate::hub::{ConnId, Hub, Next, Outbox};
use crate::net::{self, IpKey, Redacted};
use crate::outq::BufferPool;
use crate::rate::TokenBucket;
use crate::timer::TimerWheel;

pub mod stats;

use stats::{Stats, Summary};

/// Borrows the server's output side as a [`Delivery`], field by field, so the hub
/// can be borrowed beside it.
macro_rules! delivery {
    ($server:expr) => {
        Delivery {
            queues: Queues {
                conns: &mut $server.conns,
                flush_list: &mut $server.flush_list,
                close_list: &mut $server.close_list,
                pool: &mut $server.pool,
                stats: &mut $server.stats,
                cap: $server.config.max_output,
            },
            frames: &mut $server.frames_buf,
            text: &mut $server.text_buf,
        }
    };
}

/// Tokens above any slab key (the client cap is far below these).
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);

/// File descriptors kept back from the client cap: listener, epoll, signal pipe, waker,
/// stdio, and headroom so `accept` still works when the cap is reached (to say
/// `server full`).
const RESERVED_FDS: u64 = 32;

/// Bytes read per `read` call. Shared by all connections; lines that end inside it are
/// parsed in place, so only an unfinished tail is ever copied into a connection.
const READ_CHUNK: usize = 64 * 1024;

/// Timer wheel resolution and size: 10 ms ticks, 4096 slots (one rotation ≈ 41 s).
const TIMER_TICK: Duration = Duration::from_millis(10);
const TIMER_SLOTS: usize = 4096;

/// Pause before retrying `accept` after running out of file descriptors (EMFILE/ENFILE).
/// Edge-triggered polling will not report the listener again, so a timer must.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Events handled per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// The greeting every connection gets first: readable as text, parseable as a frame.
pub const GREETING: &str =
    "welcome to loopchat; send JOIN:<name> to pick a name, or just type (/help for commands)";

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
    requests: Arc<AtomicUsize>,
    waker: Arc<Waker>,
}

impl ServerHandle {
    /// Starts a graceful shutdown, as SIGTERM does; a second call exits at once.
    pub fn shutdown(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the server: {e}");
        }
    }
}

/// A bound server. [`Server::run`] drives it until shutdown.
pub struct Server {
    config: ServerConfig,
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    requests: Arc<AtomicUsize>,
    requests_seen: usize,
    waker: Arc<Waker>,
    conns: Slab<Conn>,
    hub: Hub,
    abuse: Abuse,
    timers: TimerWheel<Timer>,
    /// Connections with output queued this turn; flushed before the next poll.
    flush_list: Vec<ConnId>,
    /// Connections to close or drain at the next safe point.
    close_list: Vec<ConnId>,
    pool: BufferPool,
    read_buf: Vec<u8>,
    /// A broadcast encoded once per dialect.
    frames_buf: Vec<u8>,
    text_buf: Vec<u8>,
    max_clients: usize,
    accept_paused: bool,
    /// Whether the last `accept` failed for want of descriptors (logged once).
    out_of_fds: bool,
    /// When output was last written (for `--coalesce`).
    last_flush: Instant,
    shutting_down: bool,
    exit_now: bool,
    stats: Stats,
    last_summary: Stats,
}

impl Server {
    /// Binds the listener, raises the open-files limit and derives the client cap.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        let now = Instant::now();
        let poll = Poll::new()?;
        let mut listener = net::listen(config.addr, config.backlog)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = if config.handle_signals {
            use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
            let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };

        let limit = net::raise_nofile_limit();
        let derived = limit.saturating_sub(RESERVED_FDS).max(1) as usize;
        let max_clients = match config.max_clients {
            0 => derived,
            n if n > derived => {
                warn!(
                    "--max-clients {n} exceeds what the open-files limit allows; using {derived}"
                );
                derived
            }
            n => n,
        };
        // The port is no one's address; under --redact-ips only the IP is hidden.
        let shown = if config.redact_ips {
            format!("[redacted]:{}", local_addr.port())
        } else {
            local_addr.to_string()
        };
        info!("listening on {shown} (open files limit {limit}, max clients {max_clients})");

        let mut timers = TimerWheel::new(TIMER_TICK, TIMER_SLOTS, now);
        if !config.summary_interval.is_zero() {
            timers.insert(now + config.summary_interval, Timer::Summary);
        }
        Ok(Server {
            hub: Hub::new(config.announce_limit),
            abuse: Abuse::new(&config, now),
            config,
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            requests: Arc::new(AtomicUsize::new(0)),
            requests_seen: 0,
            waker,
            conns: Slab::new(),
            timers,
            flush_list: Vec::new(),
            close_list: Vec::new(),
            pool: BufferPool::default(),
            read_buf: vec![0; READ_CHUNK],
            frames_buf: Vec::new(),
            text_buf: Vec::new(),
            max_clients,
            accept_paused: false,
            out_of_fds: false,
            last_flush: now,
            shutting_down: false,
            exit_now: false,
            stats: Stats::default(),
            last_summary: Stats::default(),
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that can stop the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            requests: Arc::clone(&self.requests),
            waker: Arc::clone(&self.waker),
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
            // With --coalesce, output queued within the interval after a flush waits
            // for the next one, so each write carries more messages. The first output
            // after a quiet spell goes out at once.
            let flush_at = self.last_flush + self.config.coalesce;
            if now >= flush_at || self.shutting_down {
                if !self.flush_list.is_empty() {
                    self.last_flush = now;
                }
                self.settle(now);
            } else {
                self.reap(now);
            }
            if self.exit_now || (self.shutting_down && self.conns.is_empty()) {
                break;
            }

            let mut deadline = match (self.timers.next_deadline(), self.abuse.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !self.flush_list.is_empty() {
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
                    LISTENER => self.accept(now),
                    SIGNALS => self.on_signals(now),
                    WAKER => self.on_wake(now),
                    Token(k) => {
                        if event.is_writable() {
                            self.schedule_flush(k);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(k, event.is_read_closed(), now);
                        }
                    }
                }
            }
        }
        info!(
            "shut down: {} connections closed, {} lines in, {} deliveries",
            self.stats.closed + self.conns.len() as u64,
            self.stats.lines_in,
            self.stats.deliveries
        );
        Ok(())
    }

    /// Brings the batch to a safe point: removes closed connections (which may queue
    /// `LEAVE` notices and evict more readers), then writes all queued output once.
    fn settle(&mut self, now: Instant) {
        loop {
            self.reap(now);
            if self.flush_list.is_empty() {
                break;
            }
            self.flush_all();
            if self.close_list.is_empty() {
                break;
            }
        }
    }

    // ----- accepting -------------------------------------------------------------

    fn accept(&mut self, now: Instant) {
        if self.accept_paused {
            return;
        }
        while let Some(listener) = &self.listener {
            match listener.accept() {
                Ok((socket, peer)) => {
                    if self.out_of_fds {
                        self.out_of_fds = false;
                        info!("accepting again");
                    }
                    self.admit(socket, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if out_of_descriptors(&e) => {
                    // One warning per episode, not one per retry.
                    if !self.out_of_fds {
                        self.out_of_fds = true;
                        warn!("accept: {e}; pausing accepts, retrying every {ACCEPT_RETRY:?}");
                    } else {
                        debug!("accept: {e}; still paused");
                    }
                    self.accept_paused = true;
                    self.timers.insert(now + ACCEPT_RETRY, Timer::AcceptRetry);
                    return;
                }
                // A connection that died in the queue (ECONNABORTED and the like).
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, addr: SocketAddr, now: Instant) {
        let peer = self.peer(addr);
        if self.shutting_down {
            return;
        }
        if self.conns.len() >= self.max_clients {
            self.stats.refused += 1;
            debug!("refused {peer}: server full ({} clients)", self.conns.len());
            return refuse(&socket, "server full");
        }
        match self.abuse.admit(addr.ip(), now) {
            Admit::Allowed => {}
            refusal => {
                self.stats.refused += 1;
                let text = match refusal {
                    Admit::Banned { remaining } => {
                        // This refusal may itself have earned the ban: the IP's open
                        // connections go too.
                        if self.abuse.connections(addr.ip()) > 0 {
                            self.ban(IpKey::of(addr.ip()), remaining, now);
                        }
                        format!("banned for {} more seconds", whole_seconds(remaining))
                    }
                    Admit::TooManyConnections => "too many connections from your address".into(),
                    _ => "connecting too fast, try again later".into(),
                };
                debug!("refused {peer}: {text}");
                return refuse(&socket, &text);
            }
        }
        // Chat lines are small and latency matters more than packet count.
        if let Err(e) = socket.set_nodelay(true) {
            debug!("set_nodelay for {peer}: {e}");
        }
        if self.config.send_buffer > 0 {
            let sock = socket2::SockRef::from(&socket);
            if let Err(e) = sock.set_send_buffer_size(self.config.send_buffer) {
                debug!("SO_SNDBUF for {peer}: {e}");
            }
        }
        let entry = self.conns.vacant_entry();
        let k = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(k), Interest::READABLE)
        {
            warn!("register {peer}: {e}");
            self.abuse.release(addr.ip(), now);
            return;
        }
        let mut conn = Conn::new(socket, addr, TokenBucket::full(self.config.burst, now), now);
        if !self.config.register_timeout.is_zero() {
            conn.deadline = Some(
                self.timers
                    .insert(now + self.config.register_timeout, Timer::Conn(k)),
            );
        }
        entry.insert(conn);
        self.hub.add(k);
        self.stats.accepted += 1;
        debug!("accepted {peer} as #{k}");
        self.outbox().send(k, Event::Server(GREETING));
    }

    // ----- reading ---------------------------------------------------------------

    fn on_readable(&mut self, k: ConnId, read_closed: bool, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        while let Some(conn) = self.conns.get_mut(k) {
            if conn.state == State::Closed {
                break;
            }
            match conn.socket.read(&mut buf) {
                Ok(0) => {
                    // End of input: what is owed is still sent, then the socket closes.
                    debug!("#{k} closed its end");
                    self.begin_drain(k, now);
                    break;
                }
                Ok(n) => {
                    if conn.state == State::Draining {
                        // Input after LEAVE or at shutdown is read and dropped, so the
                        // final close is a FIN rather than a reset that loses output.
                        continue;
                    }
                    conn.last_active = now;
                    let data = if conn.mode == Mode::Frames {
                        n
                    } else {
                        conn.telnet.filter(&mut buf[..n])
                    };
                    let mut reader = std::mem::take(&mut conn.reader);
                    let max = self.config.max_line;
                    reader.feed(&buf[..data], max, |line| self.on_line(k, line, now));
                    if let Some(conn) = self.conns.get_mut(k) {
                        conn.reader = reader;
                    }
                    // A short read emptied the socket buffer: new data raises a new
                    // edge, so a further read would only return WouldBlock. When the
                    // peer has closed, read on to see the end of input.
                    if n < buf.len() && !read_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("#{k} read error: {e}");
                    self.close(k, None);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    fn on_line(&mut self, k: ConnId, line: Result<&[u8], LineError>, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.state != State::Open {
            return;
        }
        self.stats.lines_in += 1;
        if !conn.registered {
            conn.registered = true;
            if let Some(id) = conn.deadline.take() {
                self.timers.cancel(id);
            }
            if !self.config.idle_timeout.is_zero() {
                conn.deadline = Some(
                    self.timers
                        .insert(now + self.config.idle_timeout, Timer::Conn(k)),
                );
            }
        }
        let parsed = match line {
            Ok(line) => {
                if conn.mode == Mode::Undecided && codec::check_text(line).is_ok() {
                    conn.mode = if codec::is_frame(line) {
                        Mode::Frames
                    } else {
                        Mode::Text
                    };
                }
                match conn.mode {
                    Mode::Text => codec::parse_text(line),
                    Mode::Frames | Mode::Undecided => codec::parse_frame(line),
                }
            }
            Err(LineError::TooLong) => Err(ParseError::TooLong),
        };
        // Every line but a LEAVE costs a token: renames and room hopping cannot flood a
        // room with notices, and bad lines cannot buy an error reply each for free.
        let ip = conn.peer.ip();
        if !matches!(parsed, Ok(Command::Leave(_)))
            && !self.abuse.is_exempt(ip)
            && !conn.bucket.take(self.config.rate, self.config.burst, now)
        {
            self.stats.rate_limited += 1;
            match self.abuse.strike(ip, now) {
                Some(ban) => self.ban(IpKey::of(ip), ban, now),
                None => {
                    let msg = format!(
                        "rate limit exceeded ({} messages/s), message dropped",
                        self.config.rate
                    );
                    self.outbox().send(k, Event::Error(&msg));
                }
            }
            return;
        }
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(ParseError::TooLong) => {
                let msg = format!("line too long (max {} bytes)", self.config.max_line);
                return self.outbox().send(k, Event::Error(&msg));
            }
            Err(e) => {
                let msg = e.to_string();
                return self.outbox().send(k, Event::Error(&msg));
            }
        };
        let next = self.hub.apply(k, cmd, &mut delivery!(self));
        if next == Next::Leave {
            if let Command::Leave(reason) = cmd {
                debug!("#{k} leaves: {reason}");
            }
            self.outbox().send(k, Event::Server("goodbye"));
            self.begin_drain(k, now);
        }
    }

    // ----- closing ---------------------------------------------------------------

    /// Stops reading from `k`; what it is owed is flushed (bounded by `--linger`), then
    /// it closes. Its room hears it leave at the next safe point.
    fn begin_drain(&mut self, k: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.state != State::Open {
            return;
        }
        conn.state = State::Draining;
        if let Some(id) = conn.deadline.take() {
            self.timers.cancel(id);
        }
        conn.deadline = Some(self.timers.insert(now + self.config.linger, Timer::Conn(k)));
        if !conn.close_queued {
            conn.close_queued = true;
            self.close_list.push(k);
        }
        // Interest drops WRITABLE-only or closes after the flush.
        self.schedule_flush(k);
    }

    /// Marks `k` closed without flushing; removed at the next safe point.
    fn close(&mut self, k: ConnId, reason: Option<&'static str>) {
        if let Some(conn) = self.conns.get_mut(k) {
            mark_closed(conn, k, reason, &mut self.close_list, &mut self.pool);
        }
    }

    /// Removes closed connections and takes draining ones out of the hub. Runs between
    /// event batches, never in the middle of a broadcast.
    fn reap(&mut self, now: Instant) {
        while let Some(k) = self.close_list.pop() {
            let announce = !self.shutting_down;
            self.hub.remove(k, announce, &mut delivery!(self));
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            conn.close_queued = false;
            if conn.state == State::Draining && conn.pending() > 0 {
                continue;
            }
            let mut conn = self.conns.remove(k);
            if let Some(id) = conn.deadline.take() {
                self.timers.cancel(id);
            }
            if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
                debug!("deregister #{k}: {e}");
            }
            if conn.state == State::Draining {
                // Everything owed has been written: finish with a FIN.
                let _ = conn.socket.shutdown(std::net::Shutdown::Write);
            }
            self.abuse.release(conn.peer.ip(), now);
            self.stats.closed += 1;
            let peer = self.peer(conn.peer);
            match conn.close_reason {
                Some(reason) => {
                    self.stats.evictions += 1;
                    info!("evicted #{k} ({peer}): {reason}");
                }
                None => debug!("closed #{k} ({peer})"),
            }
        }
    }

    /// Bans `ip`: every connection from it is told why, flushed and closed.
    fn ban(&mut self, ip: IpKey, duration: Duration, now: Instant) {
        let msg = format!(
            "banned for {} seconds: too many strikes, closing",
            whole_seconds(duration)
        );
        let victims: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Open && IpKey::of(c.peer.ip()) == ip)
            .map(|(k, _)| k)
            .collect();
        for k in victims {
            self.outbox().send(k, Event::Error(&msg));
            self.begin_drain(k, now);
        }
    }

    // ----- writing ---------------------------------------------------------------

    fn schedule_flush(&mut self, k: ConnId) {
        if let Some(conn) = self.conns.get_mut(k)
            && !conn.flush_queued
        {
            conn.flush_queued = true;
            self.flush_list.push(k);
        }
    }

    /// One pass over the connections with queued output: write until done or
    /// `WouldBlock`, then derive interest.
    fn flush_all(&mut self) {
        let mut list = std::mem::take(&mut self.flush_list);
        for &k in &list {
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            conn.flush_queued = false;
            if conn.state == State::Closed {
                continue;
            }
            match conn.flush(&mut self.pool) {
                Ok(writes) => self.stats.writes += writes,
                Err(e) => {
                    debug!("#{k} write error: {e}");
                    mark_closed(conn, k, None, &mut self.close_list, &mut self.pool);
                    continue;
                }
            }
            if conn.state == State::Draining && conn.pending() == 0 {
                if !conn.close_queued {
                    conn.close_queued = true;
                    self.close_list.push(k);
                }
                continue;
            }
            if let Err(e) = conn.update_interest(self.poll.registry(), Token(k)) {
                debug!("#{k} reregister: {e}");
                mark_closed(conn, k, None, &mut self.close_list, &mut self.pool);
            }
        }
        list.clear();
        if self.flush_list.is_empty() {
            self.flush_list = list;
        }
    }

    fn outbox(&mut self) -> Delivery<'_> {
        delivery!(self)
    }

    // ----- timers, signals, shutdown ------------------------------------------------

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Conn(k) => self.on_conn_deadline(k, now),
            Timer::AcceptRetry => {
                self.accept_paused = false;
                self.accept(now);
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

    fn on_conn_deadline(&mut self, k: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        conn.deadline = None;
        match conn.state {
            State::Closed => {}
            State::Draining => {
                debug!("#{k} did not take its output within the linger time");
                self.close(k, None);
            }
            State::Open if !conn.registered => {
                self.outbox()
                    .send(k, Event::Error("registration timeout, closing"));
                self.begin_drain(k, now);
            }
            State::Open => {
                let due = conn.last_active + self.config.idle_timeout;
                if due <= now {
                    self.outbox().send(k, Event::Error("idle timeout, closing"));
                    self.begin_drain(k, now);
                } else {
                    conn.deadline = Some(self.timers.insert(due, Timer::Conn(k)));
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

    fn on_wake(&mut self, now: Instant) {
        let requests = self.requests.load(Ordering::SeqCst);
        while self.requests_seen < requests {
            self.requests_seen += 1;
            self.begin_shutdown(now);
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
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Open)
            .map(|(k, _)| k)
            .collect();
        for k in open {
            self.outbox().send(k, Event::Server("server shutting down"));
            self.begin_drain(k, now);
        }
        self.timers
            .insert(now + self.config.linger, Timer::ShutdownDeadline);
    }

    fn log_summary(&mut self) {
        let summary = Summary {
            clients: self.conns.len(),
            named: self.hub.named(),
            rooms: self.hub.room_count(),
            interval: self.config.summary_interval,
            delta: self.stats.since(&self.last_summary),
            bans: self.abuse.ban_count(),
        };
        info!("{summary}");
        self.last_summary = self.stats;
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

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of descriptors or
/// buffers. Retrying at once would spin.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A duration as whole seconds for people: rounded up, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// Tells a connection we will not serve why, then drops it. The socket is new, so its
/// send buffer has room for one short line; if not, the line is simply lost.
fn refuse(socket: &TcpStream, text: &str) {
    let mut line = Vec::with_capacity(text.len() + 8);
    Event::Error(text).encode(codec::Dialect::Frames, &mut line);
    let _ = (&*socket).write(&line);
}

fn mark_closed(
    conn: &mut Conn,
    k: ConnId,
    reason: Option<&'static str>,
    close_list: &mut Vec<ConnId>,
    pool: &mut BufferPool,
) {
    if conn.state == State::Closed {
        return;
    }
    conn.state = State::Closed;
    conn.close_reason = reason;
    conn.discard_output(pool);
    if !conn.close_queued {
        conn.close_queued = true;
        close_list.push(k);
    }
}

/// Output queues of all connections, as the delivery path needs them.
struct Queues<'a> {
    conns: &'a mut Slab<Conn>,
    flush_list: &'a mut Vec<ConnId>,
    close_list: &'a mut Vec<ConnId>,
    pool: &'a mut BufferPool,
    stats: &'a mut Stats,
    /// `--max-output`.
    cap: usize,
}

impl Queues<'_> {
    /// Appends already-encoded bytes, in the recipient's dialect, to its queue.
    fn push(&mut self, to: ConnId, frames: &[u8], text: &[u8]) {
        let Some(conn) = self.conns.get_mut(to) else {
            return;
        };
        // A connection that is leaving has had its last line (goodbye, ban, shutdown):
        // nothing may follow it, not even the LEAVE of another connection closing in
        // the same pass.
        if conn.state != State::Open {
            return;
        }
        let bytes = match conn.mode {
            Mode::Text => text,
            Mode::Frames | Mode::Undecided => frames,
        };
        match conn.queue(bytes, self.cap, self.pool) {
            Ok(()) => {
                self.stats.deliveries += 1;
                if !conn.flush_queued {
                    conn.flush_queued = true;
                    self.flush_list.push(to);
                }
            }
            Err(_) => mark_closed(
                conn,
                to,
                Some("output queue over --max-output (not reading)"),
                self.close_list,
                self.pool,
            ),
        }
    }
}

/// The server's [`Outbox`]: encodes each event once per dialect and appends the bytes
/// to each recipient's queue. A recipient whose queue would pass the output cap is
/// evicted on the spot; the others are not held up.
struct Delivery<'a> {
    queues: Queues<'a>,
    frames: &'a mut Vec<u8>,
    text: &'a mut Vec<u8>,
}

impl Outbox for Delivery<'_> {
    fn send(&mut self, to: ConnId, event: Event<'_>) {
        let Some(conn) = self.queues.conns.get(to) else {
            return;
        };
        let dialect = conn.dialect();
        let buf = match dialect {
            codec::Dialect::Text => &mut *self.text,
            codec::Dialect::Frames => &mut *self.frames,
        };
        buf.clear();
        event.encode(dialect, buf);
        self.queues.push(to, self.frames, self.text);
    }

    fn broadcast(&mut self, members: &[ConnId], except: Option<ConnId>, event: Event<'_>) {
        // Encoded once per dialect, whatever the number of recipients.
        self.frames.clear();
        self.text.clear();
        event.encode(codec::Dialect::Frames, self.frames);
        event.encode(codec::Dialect::Text, self.text);
        for &to in members {
            if Some(to) != except {
                self.queues.push(to, self.frames, self.text);
            }
        }
    }
}
