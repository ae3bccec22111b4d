//! Taking connections: the listener list, `accept` until `WouldBlock`, admission
//! (client cap, bans, per-IP limits), refusals, and the retry after running out of
//! descriptors.
//!
//! A listener has a kind: chat over plain TCP or inside TLS, browsers (WebSocket, plain
//! or TLS), or metrics scrapes. Another kind is a new [`ListenerKind`] and an arm where
//! a connection is made, not a new special case in the loop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::{Server, Timer};
use crate::abuse::Admit;
use crate::codec::{Dialect, Event};
use crate::conn::{Conn, Transport};
use crate::hub::Outbox;
use crate::net::{self, IpKey};
use crate::notice::Notice;
use crate::web::WsStream;

/// Pause before retrying `accept` after running out of file descriptors (EMFILE/ENFILE).
/// Edge-triggered polling will not report the listener again, so a timer must.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// File descriptors kept back from the client cap: listener, epoll, signal pipe, waker,
/// stdio, and headroom so `accept` still works when the cap is reached (to say
/// `server full`).
const RESERVED_FDS: u64 = 32;

/// Poll tokens of listeners: `LISTENER_BASE + index`. Far above any slab key (the
/// client cap is below the open-files limit) and below the loop's own tokens.
pub(super) const LISTENER_BASE: usize = usize::MAX - 1024;

/// What a listener's connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListenerKind {
    /// The chat protocol (frames or text) over plain TCP.
    Chat,
    /// The same inside TLS.
    Tls,
    /// Prometheus scrapes (`--metrics`).
    Metrics,
    /// Browsers: the web page and WebSocket (`--ws-listen`).
    Ws,
    /// The same inside TLS (`--wss-listen`).
    Wss,
}

/// One listening socket.
#[derive(Debug)]
pub(super) struct Listener {
    pub(super) socket: TcpListener,
    pub(super) kind: ListenerKind,
    pub(super) addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` with `backlog` (and `SO_REUSEPORT` if asked) and registers it under its index's token.
    pub(super) fn bind(
        registry: &mio::Registry,
        index: usize,
        addr: SocketAddr,
        backlog: i32,
        reuse_port: bool,
        kind: ListenerKind,
    ) -> io::Result<Listener> {
        let mut socket = net::listen(addr, backlog, reuse_port)?;
        let addr = socket.local_addr()?;
        registry.register(
            &mut socket,
            Token(LISTENER_BASE + index),
            Interest::READABLE,
        )?;
        Ok(Listener { socket, kind, addr })
    }
}

/// The listeners `config` asks for, in order; an error for flags that do not go
/// together. `tls`: a certificate is loaded.
pub(super) fn wanted_listeners(
    config: &crate::config::ServerConfig,
    tls: bool,
) -> io::Result<Vec<(SocketAddr, ListenerKind)>> {
    let refuse = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            what.to_string(),
        ))
    };
    let mut wanted = Vec::new();
    if config.no_plain {
        if !tls {
            return refuse("--no-plain needs a TLS listener (--tls-listen, --tls-cert, --tls-key)");
        }
        if config.addr != crate::config::ServerConfig::default().addr {
            warn!("--no-plain: the address {} is not listened on", config.addr);
        }
    } else {
        wanted.push((config.addr, ListenerKind::Chat));
    }
    if config.wss_listen.is_some() && !tls {
        return refuse("--wss-listen needs --tls-cert and --tls-key");
    }
    let optional = [
        (config.tls_listen, ListenerKind::Tls),
        (config.metrics, ListenerKind::Metrics),
        (config.ws_listen, ListenerKind::Ws),
        (config.wss_listen, ListenerKind::Wss),
    ];
    wanted.extend(
        optional
            .into_iter()
            .filter_map(|(addr, kind)| addr.map(|a| (a, kind))),
    );
    Ok(wanted)
}

/// The client cap: `--max-clients`, or what the open-files limit allows (after
/// raising it as far as the hard limit goes), keeping a reserve for the server itself.
pub(super) fn client_cap(configured: usize) -> (usize, u64) {
    let limit = net::raise_nofile_limit();
    let derived = limit.saturating_sub(RESERVED_FDS).max(1) as usize;
    let cap = match configured {
        0 => derived,
        n if n > derived => {
            warn!("--max-clients {n} exceeds what the open-files limit allows; using {derived}");
            derived
        }
        n => n,
    };
    (cap, limit)
}

impl Server {
    /// Accepts on listener `index` until `WouldBlock`.
    pub(super) fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused {
            return;
        }
        while let Some(listener) = self.listeners.get(index) {
            let kind = listener.kind;
            match listener.socket.accept() {
                Ok((socket, peer)) => {
                    if self.out_of_fds {
                        self.out_of_fds = false;
                        info!("accepting again");
                    }
                    if kind == ListenerKind::Metrics {
                        self.scrapes.add(socket, self.poll.registry(), now);
                    } else {
                        self.admit(socket, peer, kind, now);
                    }
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

    /// Accepts on every listener (after a pause for descriptors).
    pub(super) fn accept_all(&mut self, now: Instant) {
        for index in 0..self.listeners.len() {
            self.accept(index, now);
        }
    }

    fn admit(&mut self, socket: TcpStream, addr: SocketAddr, kind: ListenerKind, now: Instant) {
        let peer = self.peer(addr);
        if self.shutting_down {
            return;
        }
        if self.conns.len() >= self.max_clients {
            self.conns.stats.refused += 1;
            debug!("refused {peer}: server full ({} clients)", self.conns.len());
            return refuse(&socket, Notice::ServerFull);
        }
        match self.abuse.admit(addr.ip(), now) {
            Admit::Allowed => {}
            refusal => {
                self.conns.stats.refused += 1;
                let notice = match refusal {
                    Admit::Banned { remaining } => {
                        // This refusal may itself have earned the ban: the IP's open
                        // connections go too.
                        if self.abuse.connections(addr.ip()) > 0 {
                            self.ban(IpKey::of(addr.ip()), remaining, now);
                        }
                        Notice::StillBanned {
                            seconds: super::whole_seconds(remaining),
                        }
                    }
                    Admit::TooManyConnections => Notice::TooManyConnections,
                    Admit::Allowed | Admit::TooFast => Notice::ConnectingTooFast,
                };
                debug!("refused {peer}: {notice}");
                return refuse(&socket, notice);
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
        let registry = self.poll.registry();
        let tls = self.tls.as_ref().map(|t| Arc::clone(&t.config));
        let web = Arc::clone(&self.web);
        let made = self.conns.insert(|id| {
            let session = |config: Option<Arc<rustls::ServerConfig>>| match config {
                Some(config) => rustls::ServerConnection::new(config)
                    .map_err(|e| io::Error::other(format!("TLS session: {e}"))),
                None => Err(io::Error::other("TLS listener without a certificate")),
            };
            let transport = match kind {
                ListenerKind::Chat => Transport::Plain(socket),
                ListenerKind::Tls => Transport::tls(socket, session(tls)?),
                ListenerKind::Ws => {
                    Transport::Ws(Box::new(WsStream::new(Transport::Plain(socket), web)))
                }
                ListenerKind::Wss => {
                    let inner = Transport::tls(socket, session(tls)?);
                    Transport::Ws(Box::new(WsStream::new(inner, web)))
                }
                ListenerKind::Metrics => return Err(io::Error::other("not a chat listener")),
            };
            let browser = matches!(kind, ListenerKind::Ws | ListenerKind::Wss);
            let mut conn = Conn::new(id, transport, addr, now);
            if browser {
                // A browser speaks frames, one per WebSocket message.
                conn.speak_frames();
            }
            conn.register(registry)?;
            Ok::<_, io::Error>(conn)
        });
        let id = match made {
            Ok(id) => id,
            Err(e) => {
                warn!("register {peer}: {e}");
                self.abuse.release(addr.ip(), now);
                return;
            }
        };
        if !self.config.register_timeout.is_zero() {
            self.set_deadline(id, now.checked_add(self.config.register_timeout));
        }
        self.hub.add(id);
        self.conns.stats.accepted += 1;
        debug!("accepted {peer} as {id}");
        self.conns.notice(id, Notice::Greeting);
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

/// Reads at most this many bytes from a refused connection before dropping it: what a
/// client sent before reading its refusal (a pipelined first line), not a flood.
const REFUSED_INPUT_READ: usize = 16 * 1024;

/// Tells a connection we will not serve why, then drops it. The socket is new, so its
/// send buffer has room for one short line; if not, the line is simply lost.
///
/// Closing a socket with unread input sends a reset, and a client that spoke first
/// (`echo JOIN:bob | nc`) would read "connection reset" after the refusal, or lose the
/// refusal on a network where the reset overtakes it. So the write side is shut first
/// (the FIN goes out right behind the line and before any reset), and what input has
/// arrived already is read and dropped, so that most refusals close cleanly.
fn refuse(socket: &TcpStream, notice: Notice<'_>) {
    let text = notice.to_string();
    let mut line = Vec::with_capacity(text.len() + 8);
    Event::Error(&text).encode(Dialect::Frames, &mut line);
    let _ = (&*socket).write(&line);
    let _ = socket.shutdown(Shutdown::Write);
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < REFUSED_INPUT_READ {
        match (&*socket).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
