//! The storage thread: takes requests off the queue, group-commits messages, answers
//! queries and prunes old history, in that one thread, so the backend needs no lock.
//!
//! A batch is committed when its first message has waited the flush interval, when it
//! reaches [`MAX_BATCH`], and when the queue is closed. A query is answered from the
//! backend plus the batch still waiting, so it sees every message accepted before it
//! without forcing a commit (a wave of joins would otherwise cut the batches short).
//! Failures are counted and logged once per episode; nothing here panics on them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Answer, Backend, Counters, Message, StoreConfig, Tag};

/// Largest batch (messages) before a commit is done without waiting for the interval:
/// bounds the transaction, the memory held and the time a query waits behind it.
pub(super) const MAX_BATCH: usize = 10_000;

/// Rows deleted per retention step: a few milliseconds of work, so appends and queries
/// never wait long behind it.
pub(super) const PRUNE_ROWS: usize = 1000;

/// Time between retention steps while nothing is left to delete.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Time between retention steps while a step came back full (a backlog, say after
/// `--history-retain` was shortened): ten steps a second, 10 000 rows/s.
const PRUNE_BEHIND: Duration = Duration::from_millis(100);

/// What the loop asks of the thread.
pub(super) enum Request {
    Append(Message),
    /// An account or a room key, stored at once in a transaction of its own (rare, and
    /// a person is waiting to use it).
    Secret(super::Secret),
    Query {
        tag: Tag,
        room: String,
        n: usize,
        before_ms: Option<i64>,
    },
}

/// The thread's state.
pub(super) struct Worker {
    backend: Box<dyn Backend>,
    rx: Receiver<Request>,
    answer: Box<dyn Fn(Answer) + Send>,
    counters: Arc<Counters>,
    flush: Duration,
    retain_ms: i64,
    /// Accepted, not yet committed, in the order accepted.
    batch: Vec<Message>,
    /// When the batch's first message arrived; its commit is due `flush` later.
    batch_since: Option<Instant>,
    next_prune: Instant,
    /// Each set during an episode of failures, so it is logged once, not per batch.
    write_failing: bool,
    read_failing: bool,
    prune_failing: bool,
}

impl Worker {
    pub(super) fn new(
        backend: Box<dyn Backend>,
        rx: Receiver<Request>,
        answer: Box<dyn Fn(Answer) + Send>,
        counters: Arc<Counters>,
        config: &StoreConfig,
    ) -> Worker {
        Worker {
            backend,
            rx,
            answer,
            counters,
            flush: config.flush,
            retain_ms: i64::try_from(config.retain.as_millis()).unwrap_or(i64::MAX),
            batch: Vec::new(),
            batch_since: None,
            // A server restarted after a long stop prunes what expired meanwhile first.
            next_prune: Instant::now(),
            write_failing: false,
            read_failing: false,
            prune_failing: false,
        }
    }

    /// Runs until the [`super::Store`] drops its sender, then commits what is left.
    pub(super) fn run(mut self) {
        loop {
            let now = Instant::now();
            let wait = self.next_deadline().saturating_duration_since(now);
            let first = if wait.is_zero() {
                self.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                self.rx.recv_timeout(wait)
            };
            match first {
                Ok(req) => {
                    self.take(req);
                    // Take what else is queued, but not forever: deadlines are checked
                    // at least every MAX_BATCH requests.
                    for _ in 1..MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(req) => self.take(req),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Only once the queue is empty: everything accepted has been taken.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if self.batch_since.is_some_and(|t| now >= t + self.flush) {
                self.commit();
            }
            if now >= self.next_prune {
                self.prune_step(now);
            }
        }
        self.commit();
    }

    /// The earliest of the batch's commit and the next retention step.
    fn next_deadline(&self) -> Instant {
        match self.batch_since {
            Some(t) => (t + self.flush).min(self.next_prune),
            None => self.next_prune,
        }
    }

    fn take(&mut self, req: Request) {
        match req {
            Request::Append(msg) => {
                if self.batch.is_empty() {
                    self.batch_since = Some(Instant::now());
                }
                self.batch.push(msg);
                if self.batch.len() >= MAX_BATCH {
                    self.commit();
                }
            }
            Request::Secret(secret) => {
                if let Err(e) = self.backend.put_secret(&secret) {
                    log::warn!("{e}; {secret:?} is kept in memory only");
                }
            }
            Request::Query {
                tag,
                room,
                n,
                before_ms,
            } => {
                let messages = self.recent(&room, n, before_ms);
                (self.answer)(Answer {
                    tag,
                    room,
                    messages,
                });
            }
        }
    }

    /// Commits the batch in one transaction. On failure its messages are counted as
    /// unsaved and dropped: retrying would hold memory and delay newer messages for a
    /// disk that may stay full.
    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        match self.backend.append(&self.batch) {
            Ok(()) => {
                self.counters.stored.fetch_add(n, Ordering::Relaxed);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                if self.write_failing {
                    self.write_failing = false;
                    log::info!(
                        "history: saving to {} again; {} messages unsaved since start",
                        self.backend.name(),
                        self.counters.unsaved.load(Ordering::Relaxed)
                    );
                }
            }
            Err(e) => {
                self.counters.unsaved.fetch_add(n, Ordering::Relaxed);
                if !self.write_failing {
                    self.write_failing = true;
                    log::warn!(
                        "history: {e}; chat goes on, and messages are counted as unsaved \
                         until saving works again"
                    );
                }
            }
        }
        self.batch.clear();
        self.batch_since = None;
    }

    /// The backend's answer merged with the batch not yet committed.
    fn recent(&mut self, room: &str, n: usize, before_ms: Option<i64>) -> Vec<Message> {
        let mut messages = match self.backend.recent(room, n, before_ms) {
            Ok(m) => {
                if self.read_failing {
                    self.read_failing = false;
                    log::info!("history: reading {} works again", self.backend.name());
                }
                m
            }
            Err(e) => {
                if !self.read_failing {
                    self.read_failing = true;
                    log::warn!("history: {e}; history is answered as empty meanwhile");
                }
                Vec::new()
            }
        };
        let waiting = self
            .batch
            .iter()
            .filter(|m| m.room.eq_ignore_ascii_case(room) && before_ms.is_none_or(|b| m.at_ms < b));
        let before = messages.len();
        messages.extend(waiting.cloned());
        if messages.len() > before {
            // Stable, so equal times keep the order the backend and the loop gave them.
            messages.sort_by_key(|m| m.at_ms);
            let extra = messages.len().saturating_sub(n);
            messages.drain(..extra);
        }
        messages
    }

    fn prune_step(&mut self, now: Instant) {
        let cutoff = unix_ms().saturating_sub(self.retain_ms);
        match self.backend.prune(cutoff, PRUNE_ROWS) {
            Ok(deleted) => {
                if self.prune_failing {
                    self.prune_failing = false;
                    log::info!("history: retention on {} works again", self.backend.name());
                }
                if deleted > 0 {
                    log::debug!("history: retention deleted {deleted} messages");
                }
                let full = deleted >= PRUNE_ROWS;
                self.next_prune = now + if full { PRUNE_BEHIND } else { PRUNE_EVERY };
            }
            Err(e) => {
                if !self.prune_failing {
                    self.prune_failing = true;
                    log::warn!("history: retention: {e}; old messages are kept meanwhile");
                }
                self.next_prune = now + PRUNE_EVERY;
            }
        }
    }
}

/// Wall-clock time, Unix ms; retention compares it with the times the server stamped.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
