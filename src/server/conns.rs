//! The connection table: the slab of connections, the lists of those to flush, to
//! close and with input left over, the output buffer pool, the output limits, and the
//! delivery counters.
//!
//! It is the server's [`Outbox`]: the hub names recipients, and this table encodes each
//! event once per dialect and appends the bytes to every recipient's queue. It also
//! enforces the output limits (Redis's `client-output-buffer-limit` model): a queue
//! over the hard cap after a write attempt, or over the soft cap for longer than the
//! grace period, is evicted; past the budget for all queues together, the largest go
//! first. It knows nothing of accepting, timers or chat state; the loop in
//! `server/mod.rs` drives it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Registry;
use slab::Slab;

use super::stats::Stats;
use crate::codec::{Dialect, Event};
use crate::config::ServerConfig;
use crate::conn::{Conn, Eviction, State};
use crate::hub::{Audience, Busy, ConnId, Outbox};
use crate::notice::Notice;
use crate::outq::BufferPool;

/// The output limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutputLimits {
    /// `--max-output`: over it after a write attempt, a connection is evicted.
    hard: usize,
    /// `--max-output-soft`: over it for `grace` (`--slow-grace`), evicted.
    soft: usize,
    grace: Duration,
    /// `--max-output-total`: all queues together.
    total: usize,
    /// `--msg-in-rate` and `--msg-in-burst`.
    inbound_rate: f64,
    inbound_burst: f64,
    /// `--coalesce`.
    coalesce: Duration,
}

impl OutputLimits {
    /// The limits `config` sets.
    pub(super) fn of(config: &ServerConfig) -> OutputLimits {
        OutputLimits {
            hard: config.max_output,
            // A soft cap above the hard one would never apply.
            soft: config.max_output_soft.min(config.max_output),
            grace: config.slow_grace,
            total: config.max_output_total,
            inbound_rate: config.msg_in_rate,
            inbound_burst: config.msg_in_burst,
            coalesce: config.coalesce,
        }
    }
}

/// All connections and their output side.
pub(super) struct Conns {
    slab: Slab<Conn>,
    /// Generation for the next connection; wraps after 2^32 connections, and only an
    /// answer that old for exactly the same slot could then be confused.
    next_generation: u32,
    /// Connections with output queued; flushed before the loop sleeps. The first
    /// `held` of them were held back by `--coalesce` at the last pass, until
    /// `held_until` at the earliest; the rest were listed since.
    flush_list: Vec<ConnId>,
    held: usize,
    held_until: Option<Instant>,
    /// Connections to close or drain at the next safe point.
    close_list: Vec<ConnId>,
    /// Connections whose read budget ran out with input left, served in turn.
    ready: VecDeque<ConnId>,
    /// Connections whose queue was over the soft cap when last written.
    slow: Vec<ConnId>,
    pool: BufferPool,
    /// A broadcast encoded once per dialect.
    frames: Vec<u8>,
    text: Vec<u8>,
    /// A notice's text, formatted once.
    notice_text: String,
    limits: OutputLimits,
    /// Bytes queued in all connections together.
    queued: usize,
    /// The time of this loop turn.
    now: Instant,
    /// Whether output is no longer held back for coalescing (shutdown).
    urgent: bool,
    /// Set while a replay is sent: it goes before output held back for it.
    direct: bool,
    /// Counters for the summary.
    pub(super) stats: Stats,
}

impl Conns {
    /// An empty table with these output limits.
    pub(super) fn new(limits: OutputLimits, now: Instant) -> Conns {
        Conns {
            slab: Slab::new(),
            next_generation: 0,
            flush_list: Vec::new(),
            held: 0,
            held_until: None,
            close_list: Vec::new(),
            ready: VecDeque::new(),
            slow: Vec::new(),
            pool: BufferPool::default(),
            frames: Vec::new(),
            text: Vec::new(),
            notice_text: String::new(),
            limits,
            queued: 0,
            now,
            urgent: false,
            direct: false,
            stats: Stats::default(),
        }
    }

    /// Takes on reloaded output limits. Queues over a lowered cap are judged at their
    /// next write, as any other.
    pub(super) fn set_limits(&mut self, limits: OutputLimits) {
        self.limits = limits;
    }

    /// Sets the time of this loop turn (inbound limits and soft caps read it).
    pub(super) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// From now on, output is never held back for coalescing (shutdown).
    pub(super) fn set_urgent(&mut self) {
        self.urgent = true;
    }

    /// Bytes queued in all connections together.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// Connections in the table (open, draining, lingering or about to be removed).
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether the table is empty.
    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Inserts a connection under a fresh id. `make` builds it (registering its socket
    /// under the id's token); if it fails, nothing is inserted.
    pub(super) fn insert<E>(
        &mut self,
        make: impl FnOnce(ConnId) -> Result<Conn, E>,
    ) -> Result<ConnId, E> {
        let entry = self.slab.vacant_entry();
        let id = ConnId {
            // The client cap keeps slab keys far below u32::MAX.
            key: entry.key() as u32,
            generation: self.next_generation,
        };
        let conn = make(id)?;
        self.next_generation = self.next_generation.wrapping_add(1);
        entry.insert(conn);
        Ok(id)
    }

    /// The connection with this id, unless its slot now holds another.
    pub(super) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slab.get(id.index()).filter(|c| c.id() == id)
    }

    /// The connection with this id, unless its slot now holds another.
    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        slot(&mut self.slab, id)
    }

    /// The id of the connection registered under poll token `key`.
    pub(super) fn id_of(&self, key: usize) -> Option<ConnId> {
        self.slab.get(key).map(Conn::id)
    }

    /// The ids of the connections that satisfy `pred`.
    pub(super) fn ids_where(&self, pred: impl Fn(&Conn) -> bool) -> Vec<ConnId> {
        self.slab
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(_, c)| c.id())
            .collect()
    }

    /// Takes a connection out of the table.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.get(id)?;
        self.queued -= conn.queued();
        Some(self.slab.remove(id.index()))
    }

    /// Puts `id` on the flush list (once).
    pub(super) fn schedule_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id)
            && conn.enlist_for_flush()
        {
            self.flush_list.push(id);
        }
    }

    /// Puts `id` on the close list (once), for the next safe point.
    pub(super) fn schedule_close(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id)
            && conn.enlist_for_close()
        {
            self.close_list.push(id);
        }
    }

    /// Puts `id` on the ready list (once): its input is served next turn without
    /// waiting for a readiness event.
    pub(super) fn schedule_read(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id)
            && conn.enlist_as_ready()
        {
            self.ready.push_back(id);
        }
    }

    /// Takes the ready list as it stands (what is listed while serving it waits for
    /// the next turn).
    pub(super) fn take_ready(&mut self) -> Vec<ConnId> {
        let ready: Vec<ConnId> = self.ready.drain(..).collect();
        for &id in &ready {
            if let Some(conn) = self.get_mut(id) {
                conn.delist_as_ready();
            }
        }
        ready
    }

    /// Whether some connection has input left over from its budget.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Closes `id` without flushing; removed at the next safe point. An eviction is
    /// logged at `info` with its reason.
    pub(super) fn close(&mut self, id: ConnId, eviction: Option<Eviction>) {
        if let Some(conn) = slot(&mut self.slab, id)
            && let Some(dropped) = conn.mark_closed(eviction, &mut self.pool)
        {
            self.queued -= dropped;
            self.schedule_close(id);
        }
    }

    /// The next connection to close or drain, if any.
    pub(super) fn next_to_close(&mut self) -> Option<ConnId> {
        let id = self.close_list.pop()?;
        if let Some(conn) = self.get_mut(id) {
            conn.delist_for_close();
        }
        Some(id)
    }

    /// Whether any connection waits to be closed.
    pub(super) fn has_closes(&self) -> bool {
        !self.close_list.is_empty()
    }

    /// One pass over the connections with queued output: write until done or
    /// `WouldBlock`, then derive interest. A draining connection that has sent
    /// everything goes on the close list. Output that `--coalesce` holds back stays
    /// listed; returns when the first of it is due. While none of the held output is
    /// due, only what was listed since the last pass is looked at, so a loop that
    /// turns often (input left on the ready list) does not rescan the held thousands.
    pub(super) fn flush_all(&mut self, registry: &Registry) -> Option<Instant> {
        let now = self.now;
        let mut list = std::mem::take(&mut self.flush_list);
        let start = match self.held_until {
            Some(due) if due > now && !self.urgent => self.held,
            _ => {
                self.held_until = None;
                0
            }
        };
        let mut held = start;
        for i in start..list.len() {
            let id = list[i];
            let Some(conn) = slot(&mut self.slab, id) else {
                continue;
            };
            if !self.urgent
                && let Some(at) = conn.coalesce_until(self.limits.coalesce, now)
            {
                self.held_until = Some(self.held_until.map_or(at, |d| d.min(at)));
                list[held] = id;
                held += 1;
                continue;
            }
            conn.delist_for_flush();
            self.write(id, registry);
        }
        list.truncate(held);
        list.append(&mut self.flush_list);
        self.flush_list = list;
        self.held = held;
        self.held_until
    }

    /// Writes one connection's queue now and settles what follows from it: a draining
    /// connection that has sent everything is closed, one over the soft cap is
    /// watched, and its interest is derived again.
    pub(super) fn write(&mut self, id: ConnId, registry: &Registry) {
        let Some(conn) = slot(&mut self.slab, id) else {
            return;
        };
        if matches!(conn.state(), State::Closed | State::Lingering) {
            return;
        }
        let now = self.now;
        if let Err(e) = flush_counted(conn, &mut self.pool, now, &mut self.stats, &mut self.queued)
        {
            debug!("{id} write error: {e}");
            return self.close(id, None);
        }
        if conn.state() == State::Draining && conn.pending() == 0 {
            return self.schedule_close(id);
        }
        if conn.over_soft(self.limits.soft, self.now).is_some() && !self.slow.contains(&id) {
            self.slow.push(id);
        }
        if let Err(e) = conn.update_interest(registry) {
            debug!("{id} reregister: {e}");
            self.close(id, None);
        }
    }

    /// Evicts the readers that really stopped: those over the soft cap for longer
    /// than the grace period, then, while all queues together are over the total
    /// budget, the largest queues first. Returns when the next slow reader's grace
    /// ends, if one is over the soft cap.
    pub(super) fn evict_stalled(&mut self) -> Option<Instant> {
        let now = self.now;
        let (soft, grace) = (self.limits.soft, self.limits.grace);
        let mut next: Option<Instant> = None;
        let mut evict = Vec::new();
        self.slow.retain(|&id| {
            let Some(conn) = slot(&mut self.slab, id) else {
                return false;
            };
            if conn.state() == State::Closed {
                return false;
            }
            let Some(since) = conn.over_soft(soft, now) else {
                return false;
            };
            let over_for = now.saturating_duration_since(since);
            if over_for >= grace {
                let queued = conn.pending();
                evict.push((id, Eviction::Slow { queued, over_for }));
                return false;
            }
            // A grace too long to represent never ends: nothing to wake up for (a
            // deadline of `now` would have the loop poll without sleeping).
            if let Some(at) = since.checked_add(grace) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            true
        });
        for (id, why) in evict {
            self.close(id, Some(why));
        }
        if self.queued > self.limits.total {
            self.evict_largest();
        }
        next
    }

    /// Evicts the largest queues until all together are within the total budget.
    fn evict_largest(&mut self) {
        let mut by_size: Vec<(usize, ConnId)> = self
            .slab
            .iter()
            .filter(|(_, c)| c.pending() > 0 && c.state() != State::Closed)
            .map(|(_, c)| (c.pending(), c.id()))
            .collect();
        by_size.sort_unstable_by_key(|&(queued, _)| std::cmp::Reverse(queued));
        let before = self.queued;
        let mut evicted = 0;
        for (queued, id) in by_size {
            if self.queued <= self.limits.total {
                break;
            }
            self.close(id, Some(Eviction::OverTotal { queued }));
            evicted += 1;
        }
        warn!(
            "output queues held {before} bytes, over --max-output-total {}: evicted the \
             {evicted} largest",
            self.limits.total
        );
    }

    /// Appends already-encoded bytes, in the recipient's dialect, to its queue. A
    /// queue that would pass the hard cap is first written to the socket; only if it is
    /// still over after that is the recipient evicted. The others are not held up.
    fn push(&mut self, to: ConnId) {
        let Some(conn) = slot(&mut self.slab, to) else {
            return;
        };
        // A connection that is leaving has had its last line (goodbye, ban, shutdown):
        // nothing may follow it, not even the LEAVE of another connection closing in
        // the same pass.
        if conn.state() != State::Open {
            return;
        }
        let dialect = conn.dialect();
        let len = match dialect {
            Dialect::Text => self.text.len(),
            Dialect::Frames => self.frames.len(),
        };
        if conn.is_holding() && !self.direct {
            // Waiting for a replay: kept in order for after it, under the same cap.
            if conn.pending() + conn.held_bytes() + len > self.limits.hard {
                let queued = conn.pending() + conn.held_bytes();
                return self.close(to, Some(Eviction::OverHardCap { queued }));
            }
            conn.hold_bytes(match dialect {
                Dialect::Text => &self.text,
                Dialect::Frames => &self.frames,
            });
            self.stats.deliveries += 1;
            return;
        }
        if conn.pending().saturating_add(len) > self.limits.hard {
            // A write attempt first: a reader that keeps up is not evicted for a burst
            // the loop had not yet tried to send.
            let now = self.now;
            if let Err(e) =
                flush_counted(conn, &mut self.pool, now, &mut self.stats, &mut self.queued)
            {
                debug!("{to} write error: {e}");
                return self.close(to, None);
            }
            if conn.pending().saturating_add(len) > self.limits.hard {
                let queued = conn.pending();
                return self.close(to, Some(Eviction::OverHardCap { queued }));
            }
        }
        let bytes = match dialect {
            Dialect::Text => &self.text,
            Dialect::Frames => &self.frames,
        };
        conn.queue(bytes, &mut self.pool);
        self.queued += len;
        self.stats.deliveries += 1;
        if conn.enlist_for_flush() {
            self.flush_list.push(to);
        }
    }

    /// Holds `id`'s output back until [`Conns::release_output`] (a replay is coming).
    pub(super) fn hold_output(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id) {
            conn.hold();
        }
    }

    /// Sends with `send` to connections whose output is held, ahead of what is held
    /// (a replay).
    pub(super) fn ahead_of_held(&mut self, send: impl FnOnce(&mut Conns)) {
        self.direct = true;
        send(self);
        self.direct = false;
    }

    /// One replay for `id` is done: its held output follows, once none is left.
    pub(super) fn release_output(&mut self, id: ConnId) {
        let Some(conn) = slot(&mut self.slab, id) else {
            return;
        };
        let Some(held) = conn.release() else {
            return;
        };
        if held.is_empty() || conn.state() != State::Open {
            return;
        }
        self.queued += held.len();
        conn.queue(&held, &mut self.pool);
        self.schedule_flush(id);
    }

    /// Sends `id` its last line and starts draining it: nothing else will be queued to
    /// it, what it is owed is flushed, then it closes. Returns false if it was not
    /// open. The caller sets the linger deadline.
    pub(super) fn last_words(&mut self, id: ConnId, notice: Notice<'_>) -> bool {
        self.notice(id, notice);
        self.drain(id)
    }

    /// Starts draining `id` without a last line (its peer ended its input). Returns
    /// false if it was not open.
    pub(super) fn drain(&mut self, id: ConnId) -> bool {
        let Some(conn) = slot(&mut self.slab, id) else {
            return false;
        };
        // Output held back for a replay goes out now: a leaving connection is owed it
        // (its last words are in it) and waits for no history.
        let held = conn.release_all();
        if !conn.start_draining() {
            return false;
        }
        if !held.is_empty() {
            self.queued += held.len();
            conn.queue(&held, &mut self.pool);
        }
        self.schedule_close(id);
        self.schedule_flush(id);
        true
    }
}

impl Outbox for Conns {
    fn send(&mut self, to: ConnId, event: Event<'_>) {
        let Some(dialect) = self.get(to).map(Conn::dialect) else {
            return;
        };
        let buf = match dialect {
            Dialect::Text => &mut self.text,
            Dialect::Frames => &mut self.frames,
        };
        buf.clear();
        event.encode(dialect, buf);
        self.push(to);
    }

    fn to_room(&mut self, room: Audience<'_>, except: Option<ConnId>, event: Event<'_>) {
        // Encoded once per dialect, whatever the number of recipients.
        self.frames.clear();
        self.text.clear();
        event.encode(Dialect::Frames, &mut self.frames);
        event.encode(Dialect::Text, &mut self.text);
        for &to in room.members {
            if Some(to) != except {
                self.push(to);
            }
        }
    }

    fn private(&mut self, to: ConnId, event: Event<'_>) -> Result<(), Busy> {
        let (rate, burst, now) = (
            self.limits.inbound_rate,
            self.limits.inbound_burst,
            self.now,
        );
        if let Some(conn) = self.get_mut(to)
            && !conn.inbound_mut().take(rate, burst, now)
        {
            return Err(Busy);
        }
        self.send(to, event);
        Ok(())
    }

    fn notice(&mut self, to: ConnId, notice: Notice<'_>) {
        let mut text = std::mem::take(&mut self.notice_text);
        text.clear();
        let _ = write!(text, "{notice}");
        self.send(to, notice.event(&text));
        self.notice_text = text;
    }
}

/// Writes `conn`'s queue now, counting the write calls and bytes and taking what was
/// written off the table's total.
fn flush_counted(
    conn: &mut Conn,
    pool: &mut BufferPool,
    now: Instant,
    stats: &mut Stats,
    queued: &mut usize,
) -> std::io::Result<()> {
    let written = conn.flush(pool, now)?;
    stats.writes += written.calls;
    stats.bytes_out += written.bytes as u64;
    *queued -= written.bytes;
    Ok(())
}

/// The connection with this id in `slab`, unless its slot now holds another. A free
/// function, so the table's other fields can be borrowed beside it.
fn slot(slab: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    slab.get_mut(id.index()).filter(|c| c.id() == id)
}

#[cfg(test)]
mod tests {
    //! The output limits against real loopback sockets whose peer reads nothing (or
    //! everything), with time passed in: the soft cap's grace, the write attempt before
    //! the hard cap evicts, and the total budget's largest-first eviction.

    use std::io::{self, Read};
    use std::net::{TcpListener, TcpStream as StdStream};

    use mio::{Interest, Poll, Token};

    use super::*;
    use crate::conn::Transport;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(hard: usize, soft: usize, grace: Duration, total: usize) -> OutputLimits {
        OutputLimits {
            hard,
            soft,
            grace,
            total,
            inbound_rate: 0.0,
            inbound_burst: 1.0,
            coalesce: Duration::ZERO,
        }
    }

    /// A table with `limits`, its poller, and a listener for [`Table::open`].
    struct Table {
        conns: Conns,
        poll: Poll,
        listener: TcpListener,
        t0: Instant,
    }

    impl Table {
        fn new(limits: OutputLimits) -> Table {
            let t0 = Instant::now();
            Table {
                conns: Conns::new(limits, t0),
                poll: Poll::new().unwrap(),
                listener: TcpListener::bind("127.0.0.1:0").unwrap(),
                t0,
            }
        }

        /// A connection whose peer (returned) reads only when the test says so. Both
        /// kernel buffers are small, so a few kilobytes fill them.
        fn open(&mut self) -> (ConnId, StdStream) {
            let addr = self.listener.local_addr().unwrap();
            let peer = {
                use socket2::{Domain, Protocol, Socket, Type};
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
                s.set_recv_buffer_size(4096).unwrap();
                s.connect(&addr.into()).unwrap();
                StdStream::from(s)
            };
            let (server_side, from) = self.listener.accept().unwrap();
            socket2::SockRef::from(&server_side)
                .set_send_buffer_size(4096)
                .unwrap();
            server_side.set_nonblocking(true).unwrap();
            let mut socket = mio::net::TcpStream::from_std(server_side);
            let registry = self.poll.registry();
            let t0 = self.t0;
            let id = self
                .conns
                .insert(|id| {
                    registry.register(&mut socket, Token(id.index()), Interest::READABLE)?;
                    Ok::<_, io::Error>(Conn::new(id, Transport::Plain(socket), from, t0))
                })
                .unwrap();
            (id, peer)
        }

        /// Queues one line of `len` bytes (line end included) for `id`.
        fn say(&mut self, id: ConnId, len: usize) {
            let text = "x".repeat(len - "SERVER:\n".len());
            self.conns.send(id, Event::Server(&text));
        }

        /// Queues and writes lines of `len` bytes until the kernel takes no more and
        /// `id` has output queued.
        fn fill(&mut self, id: ConnId, len: usize) {
            for _ in 0..10_000 {
                self.say(id, len);
                self.conns.flush_all(self.poll.registry());
                if self.pending(id) > 0 {
                    return;
                }
            }
            panic!("the kernel took 10 000 lines of {len} bytes");
        }

        fn pending(&self, id: ConnId) -> usize {
            self.conns.get(id).map_or(0, Conn::pending)
        }

        fn eviction(&self, id: ConnId) -> Option<Eviction> {
            self.conns.get(id).and_then(Conn::eviction)
        }

        fn closed(&self, id: ConnId) -> bool {
            self.conns
                .get(id)
                .is_none_or(|c| c.state() == State::Closed)
        }

        /// One loop turn at `t0 + at`: every connection with output owed is reported
        /// writable (as the poller would once its peer reads), then the before-sleep
        /// step writes and evicts.
        fn turn(&mut self, at: Duration) -> Option<Instant> {
            self.conns.set_now(self.t0 + at);
            for id in self.conns.ids_where(|c| c.pending() > 0) {
                self.conns.schedule_flush(id);
            }
            self.conns.flush_all(self.poll.registry());
            self.conns.evict_stalled()
        }
    }

    /// Reads everything `peer` has been sent so far.
    fn read_all(peer: &mut StdStream) -> usize {
        peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
                Err(e) => panic!("peer read: {e}"),
            }
        }
    }

    #[test]
    fn a_queue_over_the_soft_cap_is_evicted_once_the_grace_has_passed() {
        let mut t = Table::new(limits(1 << 20, 1000, ms(200), usize::MAX));
        let (id, _peer) = t.open();
        let (other, _other_peer) = t.open();
        t.fill(id, 500);
        for _ in 0..3 {
            t.say(id, 500);
        }
        // Over the soft cap from now: watched, and the loop is told when to look again.
        assert_eq!(t.turn(ms(0)), Some(t.t0 + ms(200)));
        assert!(t.pending(id) > 1000);
        assert_eq!(t.turn(ms(199)), Some(t.t0 + ms(200)));
        assert!(!t.closed(id));
        assert_eq!(t.turn(ms(200)), None);
        assert!(t.closed(id));
        match t.eviction(id) {
            Some(Eviction::Slow { over_for, .. }) => assert_eq!(over_for, ms(200)),
            e => panic!("evicted as {e:?}"),
        }
        // Only the one that stopped reading.
        assert!(!t.closed(other));
        assert_eq!(t.conns.queued, t.pending(other));
    }

    #[test]
    fn a_queue_that_drops_under_the_soft_cap_starts_its_grace_again() {
        let mut t = Table::new(limits(1 << 20, 1000, ms(200), usize::MAX));
        let (id, mut peer) = t.open();
        t.fill(id, 500);
        for _ in 0..3 {
            t.say(id, 500);
        }
        assert_eq!(t.turn(ms(0)), Some(t.t0 + ms(200)));
        // The reader catches up before the grace ends: forgiven.
        for _ in 0..10_000 {
            if t.pending(id) == 0 {
                break;
            }
            read_all(&mut peer);
            t.turn(ms(150));
        }
        assert_eq!(t.pending(id), 0);
        assert_eq!(t.turn(ms(150)), None);
        // Over again later: a new grace from then, not from the first time.
        t.fill(id, 500);
        for _ in 0..3 {
            t.say(id, 500);
        }
        assert_eq!(t.turn(ms(300)), Some(t.t0 + ms(500)));
        assert!(!t.closed(id));
        assert_eq!(t.turn(ms(499)), Some(t.t0 + ms(500)));
        assert!(!t.closed(id));
        t.turn(ms(500));
        assert!(t.closed(id));
    }

    #[test]
    fn a_queue_at_the_soft_cap_is_not_over_it() {
        let mut t = Table::new(limits(1 << 20, 1000, ms(200), usize::MAX));
        let (id, _peer) = t.open();
        t.fill(id, 100);
        let queued = t.pending(id);
        assert!(queued <= 1000, "one line left over: {queued}");
        // Exactly at the cap (lines of 100 bytes make up the difference).
        let short = 1000 - queued;
        for _ in 0..short / 100 {
            t.say(id, 100);
        }
        if short % 100 > "SERVER:\n".len() {
            t.say(id, short % 100);
        }
        assert_eq!(t.turn(ms(0)), None);
        assert_eq!(t.turn(ms(10_000)), None);
        assert!(!t.closed(id));
    }

    #[test]
    fn output_over_the_hard_cap_is_written_before_anyone_is_evicted() {
        let mut t = Table::new(limits(1000, 1000, ms(200), usize::MAX));
        let (id, mut peer) = t.open();
        // 1200 bytes in one batch, never flushed by the loop: the second line would
        // pass the cap, so it is written first, and the socket has room for all.
        t.say(id, 600);
        assert_eq!(t.pending(id), 600);
        t.say(id, 600);
        assert!(!t.closed(id), "evicted as {:?}", t.eviction(id));
        assert_eq!(t.pending(id), 600);
        assert_eq!(t.conns.queued, 600);
        t.turn(ms(0));
        assert_eq!(t.pending(id), 0);
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = vec![0u8; 1200];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(read_all(&mut peer), 0);
    }

    #[test]
    fn output_over_the_hard_cap_evicts_when_the_socket_takes_nothing() {
        let mut t = Table::new(limits(1000, 1000, Duration::MAX, usize::MAX));
        let (id, _peer) = t.open();
        let (other, _other_peer) = t.open();
        t.fill(id, 300);
        while t.pending(id) + 300 <= 1000 {
            t.say(id, 300);
        }
        t.say(other, 300);
        t.say(id, 300);
        assert!(t.closed(id));
        assert!(matches!(
            t.eviction(id),
            Some(Eviction::OverHardCap { queued }) if queued + 300 > 1000
        ));
        // Its queue was dropped from the total; the other's is intact.
        assert_eq!(t.conns.queued, 300);
        assert!(!t.closed(other));
    }

    #[test]
    fn a_grace_too_long_to_represent_never_evicts_and_never_spins() {
        let mut t = Table::new(limits(1 << 20, 1000, Duration::MAX, usize::MAX));
        let (id, _peer) = t.open();
        t.fill(id, 500);
        for _ in 0..3 {
            t.say(id, 500);
        }
        // Nothing to wake up for: a deadline of "now" would make the loop poll with a
        // zero timeout for as long as the reader stays stuck.
        assert_eq!(t.turn(ms(0)), None);
        assert_eq!(t.turn(ms(60_000)), None);
        assert!(!t.closed(id));
    }

    #[test]
    fn past_the_total_budget_the_largest_queues_go_first() {
        let mut t = Table::new(limits(1 << 20, 1 << 20, ms(200), 2500));
        let mut ids = Vec::new();
        let mut peers = Vec::new();
        for extra in [1000, 3000, 2000] {
            let (id, peer) = t.open();
            t.fill(id, 100);
            let base = t.pending(id);
            while t.pending(id) < base + extra {
                t.say(id, 100);
            }
            ids.push(id);
            peers.push(peer);
        }
        let sizes: Vec<usize> = ids.iter().map(|&id| t.pending(id)).collect();
        assert!(sizes[1] > sizes[2] && sizes[2] > sizes[0], "{sizes:?}");
        assert!(sizes[0] <= 2500 && sizes[0] + sizes[2] > 2500, "{sizes:?}");
        t.turn(ms(0));
        // The largest goes first and the smallest stays. (Whether the middle one must go
        // too depends on what the kernel takes in this turn's write, which a loaded
        // machine changes.)
        assert!(matches!(
            t.eviction(ids[1]),
            Some(Eviction::OverTotal { .. })
        ));
        assert!(!t.closed(ids[0]));
        assert!(
            t.conns.queued <= 2500,
            "within the budget: {}",
            t.conns.queued
        );
    }
}
