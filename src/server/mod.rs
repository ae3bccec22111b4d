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
//! the output path are in [`conns`], reading within budgets in `input`, accepting and
//! admission in `accept`, history in `history`, accounts in `access`, the metrics
//! endpoint in `metrics`, live reload in `reload`, counters and the summary line in
//! [`stats`], the door for other threads in [`inbox`]. Chat logic lives in
//! [`crate::hub`], wire format in [`crate::codec`], per-IP policy in [`crate::abuse`],
//! reply texts in [`crate::notice`].
//!
//! This file is past 600 lines because `bind` assembles every part in the order their
//! failures must be reported (flags, TLS, the database, the hasher, and only then the
//! listeners), and because every timer and inbox message is dispatched here, in one
//! place to read.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Interest, Poll, Token};

use crate::abuse::Abuse;
use crate::config::ServerConfig;
use crate::conn::{Conn, State};
use crate::hub::{ConnId, Hub};
use crate::net::{IpKey, Redacted};
use crate::notice::Notice;
use crate::timer::TimerWheel;

mod accept;
mod access;
mod cluster;
mod conns;
mod history;
pub mod inbox;
mod input;
mod metrics;
mod reload;
pub mod stats;

use accept::{LISTENER_BASE, Listener, ListenerKind};
use access::Access;
use cluster::Cluster;
use conns::{Conns, OutputLimits};
use history::{Delivery, History, REPLAY_WAIT};
use inbox::{Inbox, InboxSender, LoopMsg};
use metrics::{SCRAPE_BASE, Scrapes, TurnHistogram};
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

/// How often browsers are pinged; one that has not answered by the next ping is closed.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// How long shutdown waits for the store to commit what it was given.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(10);

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
    /// Stop waiting for the store's answer to this question (a replay).
    Replay(crate::store::Tag),
    /// Ping every browser; close those that did not answer the last ping.
    Keepalive,
    /// Stop waiting for Redis to answer this question (a claim, `WHO:`, `ROOMS:`).
    Cluster(u64),
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

    /// Re-reads the configuration file, the password file and the TLS certificate and
    /// key, as SIGHUP does.
    pub fn reload(&self) {
        if self.inbox.send(LoopMsg::Reload).is_err() {
            log::warn!("reload request dropped: the server's inbox is full");
        }
    }
}

/// The TLS certificate in use and where it came from (re-read on SIGHUP).
struct TlsSetup {
    config: Arc<rustls::ServerConfig>,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsSetup {
    /// The certificate and key, if a TLS listener (chat or browsers) is asked for; an
    /// error if the flags do not go together or the files do not load.
    fn load(config: &ServerConfig) -> io::Result<Option<TlsSetup>> {
        let wanted = config.tls_listen.is_some() || config.wss_listen.is_some();
        match (wanted, &config.tls_cert, &config.tls_key) {
            (false, None, None) => Ok(None),
            (true, Some(cert), Some(key)) => Ok(Some(TlsSetup {
                config: crate::tls::server_config(cert, key)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--tls-listen (or --wss-listen), --tls-cert and --tls-key go together",
            )),
        }
    }
}

/// A bound server. [`Server::run`] drives it until shutdown.
pub struct Server {
    config: ServerConfig,
    poll: Poll,
    listeners: Vec<Listener>,
    /// The TLS configuration new TLS connections get, if a TLS listener is open.
    tls: Option<TlsSetup>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    inbox: Inbox,
    conns: Conns,
    /// Room history: time stamps, tails, replay and paging; the store behind it.
    history: History,
    /// Questions put to the store during one delivery, to arm their timeouts.
    asked: Vec<crate::store::Tag>,
    /// Accounts, the server password, room keys and operators.
    access: Access,
    /// The other servers, with `--cluster`.
    cluster: Cluster,
    /// Scrapes of `--metrics` in progress.
    scrapes: Scrapes,
    /// What browser connections share.
    web: Arc<crate::web::WebConfig>,
    /// How long loop turns take.
    turns: TurnHistogram,
    hub: Hub,
    abuse: Abuse,
    timers: TimerWheel<Timer>,
    read_buf: Vec<u8>,
    /// TLS handshake steps left this turn ([`input::HANDSHAKE_BUDGET`]).
    handshakes_left: usize,
    max_clients: usize,
    accept_paused: bool,
    /// Whether the last `accept` failed for want of descriptors (logged once).
    out_of_fds: bool,
    shutting_down: bool,
    exit_now: bool,
    last_summary: Stats,
}

impl Server {
    /// Binds the listeners, loads the TLS certificate, raises the open-files limit and
    /// derives the client cap. A bad combination of flags or an unusable certificate
    /// is an error that says what is wrong, before anything listens.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        let now = Instant::now();
        let poll = Poll::new()?;
        let tls = TlsSetup::load(&config)?;
        let wanted = accept::wanted_listeners(&config, tls.is_some())?;
        let inbox = Inbox::new(poll.registry(), WAKER)?;
        // Redis is reached before anything listens: a cluster that cannot be joined is
        // an error at start.
        let (cluster, joined) = Cluster::join(&config, inbox.sender())?;
        // The database opens before anything listens, so a bad file is an error at
        // start, not a surprise later.
        let answers = inbox.sender();
        let mut store = crate::store::Store::open(
            crate::store::StoreConfig {
                // In a cluster, history and accounts live in the cluster's Redis, so
                // every server answers the same.
                path: (config.db != "none" && config.cluster.is_none())
                    .then(|| PathBuf::from(&config.db)),
                redis: config.cluster.clone(),
                flush: config.db_flush,
                retain: config.history_retain,
                queue: crate::store::DEFAULT_QUEUE,
            },
            Box::new(move |answer| {
                // A full inbox drops the answer; the replay's timeout releases whoever
                // waited for it.
                let _ = answers.send(LoopMsg::History(answer));
            }),
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        let verdicts = inbox.sender();
        let hasher = crate::auth::Hasher::start(
            crate::auth::HasherConfig {
                threads: match config.auth_threads {
                    0 => crate::auth::HasherConfig::default().threads,
                    n => n,
                },
                ..crate::auth::HasherConfig::default()
            },
            Box::new(move |answer| {
                // A full inbox drops the answer: that connection stays waiting until
                // its registration or idle deadline, nobody else notices.
                let _ = verdicts.send(LoopMsg::Auth(answer));
            }),
        )?;
        let access = Access::new(
            hasher,
            store.take_secrets(),
            config.password_file.clone(),
            &config.admins,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // Only now, with the database and the hasher ready, does anything listen.
        let listeners = wanted
            .into_iter()
            .enumerate()
            .map(|(i, (addr, kind))| {
                Listener::bind(
                    poll.registry(),
                    i,
                    addr,
                    config.backlog,
                    config.reuse_port,
                    kind,
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut hub = Hub::new(config.announce_limit);
        for name in access.account_names() {
            hub.reserve(name);
        }
        if cluster.is_on() {
            hub.set_guests(joined.guests.clone());
        }
        let signals = if config.handle_signals {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
            let mut signals =
                signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGHUP])?;
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
            let tls = match listener.kind {
                ListenerKind::Chat => "",
                ListenerKind::Tls => " for TLS",
                ListenerKind::Metrics => " for metrics",
                ListenerKind::Ws => " for browsers",
                ListenerKind::Wss => " for browsers over TLS",
            };
            info!(
                "listening on {shown}{tls} (open files limit {limit}, max clients {max_clients})"
            );
        }

        let mut timers = TimerWheel::new(TIMER_TICK, TIMER_SLOTS, now);
        if listeners
            .iter()
            .any(|l| matches!(l.kind, ListenerKind::Ws | ListenerKind::Wss))
        {
            timers.insert(now + KEEPALIVE, Timer::Keepalive);
        }
        // An interval too long to represent (a config built in code) is "never".
        if !config.summary_interval.is_zero()
            && let Some(at) = now.checked_add(config.summary_interval)
        {
            timers.insert(at, Timer::Summary);
        }
        Ok(Server {
            hub,
            access,
            scrapes: Scrapes::default(),
            web: Arc::new(crate::web::WebConfig {
                origins: config.ws_origins.clone(),
                max_message: config.max_line,
            }),
            turns: TurnHistogram::default(),
            abuse: {
                let mut abuse = Abuse::new(&config, now);
                for (ip, ms, why) in &joined.bans {
                    let key = IpKey::of(*ip);
                    abuse.ban_from_cluster(key, Duration::from_millis(*ms), why, now);
                }
                abuse
            },
            cluster,
            conns: Conns::new(OutputLimits::of(&config), now),
            history: History::new(store, config.history_replay),
            asked: Vec::new(),
            config,
            poll,
            listeners,
            tls,
            signals,
            inbox,
            timers,
            read_buf: vec![0; READ_CHUNK],
            handshakes_left: input::HANDSHAKE_BUDGET,
            max_clients,
            accept_paused: false,
            out_of_fds: false,
            shutting_down: false,
            exit_now: false,
            last_summary: Stats::default(),
        })
    }

    /// The address the plain chat listener is bound to (useful with port 0); with
    /// `--no-plain`, the TLS listener's.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find(|l| l.kind == ListenerKind::Chat)
            .or(self.listeners.first())
            .map_or(self.config.addr, |l| l.addr)
    }

    /// The address the TLS listener is bound to, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listener_addr(ListenerKind::Tls)
    }

    /// The address the browser listener (`--ws-listen`) is bound to, if there is one.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.listener_addr(ListenerKind::Ws)
    }

    /// The address the browser listener over TLS (`--wss-listen`) is bound to.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.listener_addr(ListenerKind::Wss)
    }

    /// The address the metrics listener is bound to, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listener_addr(ListenerKind::Metrics)
    }

    fn listener_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
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
        let mut woke = Instant::now();
        loop {
            let now = Instant::now();
            self.conns.set_now(now);
            self.handshakes_left = input::HANDSHAKE_BUDGET;
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

            let scrapes_due = self.scrapes.expire(self.poll.registry(), now);
            let timeout = if self.conns.has_ready() {
                Some(Duration::ZERO)
            } else {
                [
                    self.timers.next_deadline(),
                    self.abuse.next_deadline(),
                    wake_at,
                    scrapes_due,
                ]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(now))
            };
            self.turns.record(woke.elapsed());
            let polled = self.poll.poll(&mut events, timeout);
            woke = Instant::now();
            if let Err(e) = polled {
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
                    Token(t) if t >= SCRAPE_BASE => self.on_scrape(t - SCRAPE_BASE),
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
        // Everything accepted is committed before the process exits.
        let store = self.history.into_store();
        store.close(STORE_CLOSE_WAIT);
        self.access.stop();
        self.cluster.stop();
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
            self.cluster.top_up_guests(self.hub.guests_left());
            let held_until = self.conns.flush_all(self.poll.registry());
            let grace_ends = self.conns.evict_stalled();
            if !self.conns.has_closes() {
                return [held_until, grace_ends].into_iter().flatten().min();
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

    /// Arms a timeout for each question put to the store since the last call.
    fn arm_replay_timers(&mut self, now: Instant) {
        for tag in self.asked.drain(..) {
            self.timers.insert(now + REPLAY_WAIT, Timer::Replay(tag));
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
            // At shutdown nobody here needs to hear it; other servers' members do.
            let announce = !self.shutting_down || self.cluster.is_on();
            self.hub.remove(
                id,
                announce,
                &mut Delivery::new(
                    &mut self.conns,
                    &mut self.history,
                    &mut self.asked,
                    &mut self.cluster,
                ),
            );
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
        let announce = !self.shutting_down || self.cluster.is_on();
        self.hub.remove(
            id,
            announce,
            &mut Delivery::new(
                &mut self.conns,
                &mut self.history,
                &mut self.asked,
                &mut self.cluster,
            ),
        );
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

    /// Bans `ip` (abuse control has recorded it): every connection from it is told
    /// why, flushed and closed, and in a cluster every other server bans it too.
    fn ban(&mut self, ip: IpKey, duration: Duration, now: Instant) {
        self.announce_ban(ip, duration, "strikes");
        self.close_banned(ip, duration, now);
    }

    /// Closes every connection from a banned address, telling it why.
    fn close_banned(&mut self, ip: IpKey, duration: Duration, now: Instant) {
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
                // A reload may have set the interval to 0 (never).
                if !self.config.summary_interval.is_zero()
                    && let Some(at) = now.checked_add(self.config.summary_interval)
                {
                    self.timers.insert(at, Timer::Summary);
                }
            }
            Timer::Replay(tag) => self.history.timed_out(tag, &mut self.conns),
            Timer::Cluster(tag) => self.cluster_timed_out(tag, now),
            Timer::Keepalive => {
                for id in self.conns.ids_where(|c| c.state() == State::Open) {
                    match self.conns.get_mut(id).and_then(|c| c.keepalive()) {
                        Some(true) => self.conns.schedule_flush(id),
                        Some(false) => {
                            debug!("{id} did not answer a ping; closing");
                            if self.conns.drain(id) {
                                self.set_deadline(id, now.checked_add(self.config.linger));
                            }
                        }
                        None => {}
                    }
                }
                self.timers.insert(now + KEEPALIVE, Timer::Keepalive);
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
            match signal {
                signal_hook::consts::SIGUSR1 => self.log_bans(now),
                signal_hook::consts::SIGHUP => self.reload(now),
                _ => self.begin_shutdown(now),
            }
        }
    }

    fn on_inbox(&mut self, now: Instant) {
        while let Some(msg) = self.inbox.try_recv() {
            match msg {
                LoopMsg::Shutdown => self.begin_shutdown(now),
                LoopMsg::Reload => self.reload(now),
                LoopMsg::History(answer) => self.history.answered(answer, &mut self.conns),
                LoopMsg::Auth(answer) => self.on_auth_answer(answer, now),
                LoopMsg::Cluster(event) => self.on_cluster(event, now),
            }
        }
    }

    /// SIGHUP: re-reads the configuration file, if there is one, and applies what can
    /// change live ([`reload`]); then the server password file, and the TLS certificate
    /// and key. New connections get the new pair; open ones keep theirs. A
    /// configuration file that does not load changes nothing at all; a password or
    /// certificate file that does not load is logged and the old one stays.
    fn reload(&mut self, now: Instant) {
        if let Some(reread) = self.config.reread() {
            match reread {
                Ok(config) => self.apply_config(config, now),
                Err(e) => return warn!("reload: {e}; nothing changed"),
            }
        }
        self.access.reload();
        let Some(tls) = &mut self.tls else {
            return;
        };
        match crate::tls::server_config(&tls.cert, &tls.key) {
            Ok(config) => {
                tls.config = config;
                info!("reload: TLS certificate {} loaded", tls.cert.display());
            }
            Err(e) => warn!("reload: {e}; keeping the certificate in use"),
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
            unsaved: self.history.store().unsaved(),
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
