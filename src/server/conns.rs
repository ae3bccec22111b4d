//! The connection table: the slab of connections, the lists of those to flush and to
//! close, the output buffer pool and the output cap, and the delivery counters.
//!
//! It is the server's [`Outbox`]: the hub names recipients, and this table encodes each
//! event once per dialect and appends the bytes to every recipient's queue. It knows
//! nothing of accepting, timers or chat state; the loop in `server/mod.rs` drives it.

use std::fmt::Write as _;

use log::debug;
use mio::Registry;
use slab::Slab;

use super::stats::Stats;
use crate::codec::{Dialect, Event};
use crate::conn::{Conn, State};
use crate::hub::{Audience, ConnId, Outbox};
use crate::notice::Notice;
use crate::outq::BufferPool;

/// Why a connection was evicted for its output queue (the `info` line says it).
const OVER_CAP: &str = "output queue over --max-output (not reading)";

/// All connections and their output side.
pub(super) struct Conns {
    slab: Slab<Conn>,
    /// Generation for the next connection; wraps after 2^32 connections, and only an
    /// answer that old for exactly the same slot could then be confused.
    next_generation: u32,
    /// Connections with output queued this turn; flushed before the next poll.
    flush_list: Vec<ConnId>,
    /// Connections to close or drain at the next safe point.
    close_list: Vec<ConnId>,
    pool: BufferPool,
    /// A broadcast encoded once per dialect.
    frames: Vec<u8>,
    text: Vec<u8>,
    /// A notice's text, formatted once.
    notice_text: String,
    /// `--max-output`.
    cap: usize,
    /// Counters for the summary.
    pub(super) stats: Stats,
}

impl Conns {
    /// An empty table whose queues are capped at `cap` bytes.
    pub(super) fn new(cap: usize) -> Conns {
        Conns {
            slab: Slab::new(),
            next_generation: 0,
            flush_list: Vec::new(),
            close_list: Vec::new(),
            pool: BufferPool::default(),
            frames: Vec::new(),
            text: Vec::new(),
            notice_text: String::new(),
            cap,
            stats: Stats::default(),
        }
    }

    /// Connections in the table (open, draining or about to be removed).
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether the table is empty.
    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The id a new connection would get, and a place for it. `make` builds the
    /// connection (registering its socket under the id's token); if it fails, nothing
    /// is inserted.
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
        self.get(id)?;
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

    /// Closes `id` without flushing; removed at the next safe point. `reason` makes it
    /// an eviction, logged at `info`.
    pub(super) fn close(&mut self, id: ConnId, reason: Option<&'static str>) {
        if let Some(conn) = slot(&mut self.slab, id)
            && conn.mark_closed(reason, &mut self.pool)
        {
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

    /// Whether any output is waiting for a flush.
    pub(super) fn has_output(&self) -> bool {
        !self.flush_list.is_empty()
    }

    /// Whether any connection waits to be closed.
    pub(super) fn has_closes(&self) -> bool {
        !self.close_list.is_empty()
    }

    /// One pass over the connections with queued output: write until done or
    /// `WouldBlock`, then derive interest. A draining connection that has sent
    /// everything goes on the close list.
    pub(super) fn flush_all(&mut self, registry: &Registry) {
        let mut list = std::mem::take(&mut self.flush_list);
        for &id in &list {
            let Some(conn) = slot(&mut self.slab, id) else {
                continue;
            };
            conn.delist_for_flush();
            if conn.state() == State::Closed {
                continue;
            }
            match conn.flush(&mut self.pool) {
                Ok(written) => self.stats.writes += written.calls,
                Err(e) => {
                    debug!("{id} write error: {e}");
                    self.close(id, None);
                    continue;
                }
            }
            if conn.state() == State::Draining && conn.pending() == 0 {
                self.schedule_close(id);
                continue;
            }
            if let Err(e) = conn.update_interest(registry) {
                debug!("{id} reregister: {e}");
                self.close(id, None);
            }
        }
        list.clear();
        if self.flush_list.is_empty() {
            self.flush_list = list;
        }
    }

    /// Appends already-encoded bytes, in the recipient's dialect, to its queue. A
    /// recipient whose queue would pass the cap is evicted on the spot; the others are
    /// not held up.
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
        let bytes = match conn.dialect() {
            Dialect::Text => &self.text,
            Dialect::Frames => &self.frames,
        };
        match conn.queue(bytes, self.cap, &mut self.pool) {
            Ok(()) => {
                self.stats.deliveries += 1;
                if conn.enlist_for_flush() {
                    self.flush_list.push(to);
                }
            }
            Err(_) => self.close(to, Some(OVER_CAP)),
        }
    }

    /// Sends `id` its last line and starts draining it: nothing else will be queued to
    /// it, what it is owed is flushed, then it closes. The caller sets the linger
    /// deadline.
    pub(super) fn last_words(&mut self, id: ConnId, notice: Notice<'_>) -> bool {
        self.notice(id, notice);
        if !self.get_mut(id).is_some_and(Conn::start_draining) {
            return false;
        }
        self.schedule_close(id);
        // Interest drops to WRITABLE-only, or the connection closes, after the flush.
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

    fn notice(&mut self, to: ConnId, notice: Notice<'_>) {
        let mut text = std::mem::take(&mut self.notice_text);
        text.clear();
        let _ = write!(text, "{notice}");
        self.send(to, notice.event(&text));
        self.notice_text = text;
    }
}

/// The connection with this id in `slab`, unless its slot now holds another. A free
/// function, so the table's other fields can be borrowed beside it.
fn slot(slab: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    slab.get_mut(id.index()).filter(|c| c.id() == id)
}
