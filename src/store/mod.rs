//! Room history and accounts: a storage thread that owns the database, so the loop
//! never touches the disk or the network for them.
//!
//! The loop hands messages and history questions to a [`Store`] and gets on with its
//! work: [`Store::append`] and [`Store::query`] only try to push onto a bounded queue,
//! and never block. The storage thread takes that queue, group-commits the messages
//! (one batch at a time, at most [`StoreConfig::flush`] apart), answers queries
//! through the callback given at [`Store::open`] (the server's forwards them into its
//! inbox and wakes the loop), and deletes what is older than [`StoreConfig::retain`] in
//! small steps.
//!
//! This module owns the queue, the thread, the counters and the [`Backend`] seam. Two
//! backends sit behind it: SQLite in `sqlite` (one server, a file or memory) and Redis
//! in `redis` (cluster mode: every node shares the same history and accounts); the
//! thread's loop is in `worker`. It does not own what is stored or when history is
//! asked for (the hub and the server decide), nor the times in a [`Message`]: the
//! server stamps them, strictly increasing within a room, so a time is an exact paging
//! cursor (Redis keeps that across nodes by bumping a time that is not past the room's
//! last one).
//!
//! # What is promised
//!
//! - Everything opening can find wrong is found by [`Store::open`], before the server
//!   listens: each [`StoreError`] names the file (or the Redis URL) and the reason. A
//!   Redis that does not answer at open is such an error.
//! - A query sees every message appended before it, committed or not.
//! - [`Store::close`] commits everything accepted (SIGTERM loses nothing); a SIGKILL
//!   loses at most the last flush interval.
//! - A full queue, a failing disk or an unreachable Redis costs history, never chat:
//!   the messages are counted in [`Store::unsaved`] and one `warn` is logged per
//!   episode, not per message. The Redis backend connects again by itself.
//! - SQLite: one server per database, so the file `PATH.lock` beside it is locked
//!   (`flock`) for the store's lifetime. SQLite's own locking stays normal, so
//!   `sqlite3 loopchat.db ".backup copy.db"` works while the server runs. Redis is
//!   shared by design: no lock.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

mod redis;
mod sqlite;
mod worker;

pub use self::redis::{HISTORY_CAP, RedisBackend};
pub use sqlite::SqliteBackend;

use worker::{Request, Worker};

/// Default for [`StoreConfig::flush`] (`--db-flush`): a SIGKILL loses at most this
/// much chat, and at 100 000 messages/s a batch is ~5 000 rows, well amortised.
pub const DEFAULT_FLUSH: Duration = Duration::from_millis(50);

/// Default for [`StoreConfig::retain`] (`--history-retain`): 30 days.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default for [`StoreConfig::queue`]: more than a second of traffic at the storage
/// thread's rate, so only a stalled disk fills it; ~6 MiB of slots.
pub const DEFAULT_QUEUE: usize = 65_536;

/// One stored room message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The room's name as created, with its `#`. Lookups fold ASCII case, as the hub
    /// does, so `#Rust` and `#rust` are one room.
    pub room: String,
    /// Server time when the line was accepted, Unix milliseconds.
    pub at_ms: i64,
    /// The sender's name.
    pub from: String,
    /// The text as said.
    pub text: String,
}

/// Opaque to the store: the server encodes who asked and why, and gets it back in the
/// [`Answer`].
pub type Tag = u64;

/// The storage thread's answer to one [`Store::query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The tag given with the query.
    pub tag: Tag,
    /// The room as named in the query.
    pub room: String,
    /// At most the `n` asked for, oldest first. Empty if the room has no history, or if
    /// reading failed (that is logged; the server still sends its end line).
    pub messages: Vec<Message>,
}

/// How the store is opened and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The database file; `None` keeps history in memory only (`--db none`). Not
    /// looked at when [`StoreConfig::redis`] is set.
    pub path: Option<PathBuf>,
    /// Cluster mode (`--cluster`): the Redis URL (`redis://HOST:PORT[/DB]`) that holds
    /// history and accounts for every node, instead of the SQLite file. No lock file is
    /// taken: the nodes share it on purpose.
    pub redis: Option<String>,
    /// Group-commit interval (`--db-flush`): the longest a message waits for its
    /// commit. A batch that reaches 10 000 messages is committed at once.
    pub flush: Duration,
    /// Messages older than this are deleted in the background (`--history-retain`),
    /// at most 1 000 a step, a step a second (ten while behind). Zero keeps nothing.
    pub retain: Duration,
    /// Requests the queue holds before [`Store::append`] counts messages as unsaved and
    /// [`Store::query`] refuses (at least 1).
    pub queue: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            path: Some(PathBuf::from("loopchat.db")),
            redis: None,
            flush: DEFAULT_FLUSH,
            retain: DEFAULT_RETAIN,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// Where history is kept. The storage thread owns it and calls nothing else: SQLite is
/// [`SqliteBackend`], Redis (cluster mode) is [`RedisBackend`].
pub trait Backend: Send {
    /// What the logs call it, such as `database /var/lib/loopchat/loopchat.db`.
    fn name(&self) -> &str;
    /// Stores `batch`: SQLite in one transaction, all of it or none; Redis in one round
    /// trip, each room's part atomically (a connection lost midway may store part).
    fn append(&mut self, batch: &[Message]) -> Result<(), StoreError>;
    /// The last `n` messages of `room` (ASCII case folded) strictly before `before_ms`,
    /// or the newest if `None`; oldest first.
    fn recent(
        &mut self,
        room: &str,
        n: usize,
        before_ms: Option<i64>,
    ) -> Result<Vec<Message>, StoreError>;
    /// Deletes at most `max_rows` messages older than `older_than_ms` (Unix ms), oldest
    /// first, and says how many went.
    fn prune(&mut self, older_than_ms: i64, max_rows: usize) -> Result<usize, StoreError>;
    /// Every account and room key (read once, at open).
    fn secrets(&mut self) -> Result<Secrets, StoreError> {
        Ok(Secrets::default())
    }
    /// Stores (or replaces) an account's or a room's PHC string.
    fn put_secret(&mut self, secret: &Secret) -> Result<(), StoreError> {
        let _ = secret;
        Ok(())
    }
}

/// Accounts and room keys as stored: `(name, PHC string)` pairs. The server keeps them
/// in memory, so a login needs no disk read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Account names (as registered) and their password hashes.
    pub accounts: Vec<(String, String)>,
    /// Room names (as created) and their key hashes.
    pub room_keys: Vec<(String, String)>,
}

/// One account or room key to store. Its `Debug` hides the hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// An account: its name and its password's PHC string.
    Account {
        /// The name as registered.
        name: String,
        /// The Argon2id PHC string.
        phc: String,
    },
    /// A room key: the room and the key's PHC string.
    RoomKey {
        /// The room as created, with its `#`.
        room: String,
        /// The Argon2id PHC string.
        phc: String,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Account { name, .. } => write!(f, "Account({name:?}, ..)"),
            Secret::RoomKey { room, .. } => write!(f, "RoomKey({room:?}, ..)"),
        }
    }
}

/// Why the store cannot open, read or write. Each names the database and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be opened or used: missing directory, read-only file or
    /// directory, not a (loopchat) database, corrupt; or Redis cannot be reached.
    Open {
        /// The file, `memory`, or the Redis URL (without credentials).
        db: String,
        /// Why, in words.
        reason: String,
    },
    /// Another server holds the database's lock file.
    InUse {
        /// The file.
        db: String,
        /// The lock file beside it.
        lock: PathBuf,
        /// The holder's process id, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The database was written by a newer loopchat, whose schema this one does not
    /// know.
    TooNew {
        /// The file.
        db: String,
        /// Its schema version (`PRAGMA user_version`).
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// Storing or deleting failed at run time (disk full, I/O error, Redis gone).
    Write {
        /// The file, `memory`, or the Redis URL (without credentials).
        db: String,
        /// Why, in words.
        reason: String,
    },
    /// Reading history failed at run time.
    Read {
        /// The file, `memory`, or the Redis URL (without credentials).
        db: String,
        /// Why, in words.
        reason: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { db, reason } => write!(f, "cannot open database {db}: {reason}"),
            StoreError::InUse { db, lock, pid } => {
                write!(
                    f,
                    "cannot open database {db}: in use by another loopchat server"
                )?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(f, ", which holds the lock on {}", lock.display())
            }
            StoreError::TooNew { db, found, known } => write!(
                f,
                "cannot open database {db}: its schema version {found} is newer than this \
                 loopchat knows ({known}); run a newer loopchat or choose another --db"
            ),
            StoreError::Write { db, reason } => {
                write!(f, "cannot write to database {db}: {reason}")
            }
            StoreError::Read { db, reason } => write!(f, "cannot read database {db}: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What the loop and the storage thread both count.
#[derive(Debug, Default)]
struct Counters {
    unsaved: AtomicU64,
    stored: AtomicU64,
    commits: AtomicU64,
    /// Set while the queue is refusing messages, so that is logged once per episode.
    queue_full: AtomicBool,
}

/// The loop's handle on the storage thread.
pub struct Store {
    tx: SyncSender<Request>,
    counters: Arc<Counters>,
    thread: JoinHandle<()>,
    /// Disconnected once the thread has ended (its sender is dropped with it), so
    /// [`Store::close`] can wait with a timeout. In a mutex only so a `Store` is `Sync`.
    ended: Mutex<Receiver<()>>,
    name: String,
    queue: usize,
    /// Read at open, handed to the server once.
    secrets: Secrets,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database (creating or migrating it), or connects to Redis and checks it
    /// answers, *synchronously*, so every failure is reported before the server listens;
    /// then starts the storage thread.
    ///
    /// `answer` runs on the storage thread, once per query; it must not block for long
    /// (the server's forwards into its bounded inbox and wakes the loop).
    pub fn open(
        config: StoreConfig,
        answer: Box<dyn Fn(Answer) + Send>,
    ) -> Result<Store, StoreError> {
        let backend: Box<dyn Backend> = match (&config.redis, &config.path) {
            (Some(url), _) => Box::new(RedisBackend::open(url)?),
            (None, Some(path)) => Box::new(SqliteBackend::open(path)?),
            (None, None) => Box::new(SqliteBackend::in_memory()?),
        };
        Store::with_backend(backend, &config, answer)
    }

    /// The accounts and room keys read at open (empty after the first call).
    pub fn take_secrets(&mut self) -> Secrets {
        std::mem::take(&mut self.secrets)
    }

    /// Queues an account or a room key to be stored. Never blocks; `false` if the
    /// queue is full (the server then keeps it in memory only, and says so in the log).
    pub fn put_secret(&self, secret: Secret) -> bool {
        self.tx.try_send(Request::Secret(secret)).is_ok()
    }

    /// Starts the storage thread over an already open `backend`; `config.path` and
    /// `config.redis` are not looked at.
    pub fn with_backend(
        mut backend: Box<dyn Backend>,
        config: &StoreConfig,
        answer: Box<dyn Fn(Answer) + Send>,
    ) -> Result<Store, StoreError> {
        // A zero-length sync_channel is a rendezvous: every append would be refused.
        let queue = config.queue.max(1);
        let (tx, rx) = mpsc::sync_channel(queue);
        let (ended_tx, ended) = mpsc::channel::<()>();
        let counters = Arc::new(Counters::default());
        let name = backend.name().to_string();
        let secrets = backend.secrets()?;
        let worker = Worker::new(backend, rx, answer, Arc::clone(&counters), config);
        let thread = std::thread::Builder::new()
            .name("loopchat-store".into())
            .spawn(move || {
                let _ended = ended_tx;
                worker.run();
            })
            .map_err(|e| StoreError::Open {
                db: name.clone(),
                reason: format!("cannot start the storage thread: {e}"),
            })?;
        Ok(Store {
            tx,
            counters,
            thread,
            ended: Mutex::new(ended),
            name,
            queue,
            secrets,
        })
    }

    /// Queues `msg` for the next group commit. Never blocks: if the queue is full the
    /// message is counted as unsaved, and a `warn` is logged once per episode.
    pub fn append(&self, msg: Message) {
        match self.tx.try_send(Request::Append(msg)) {
            Ok(()) => {
                // A plain load first: the swap is only paid at the end of an episode.
                if self.counters.queue_full.load(Ordering::Relaxed)
                    && self.counters.queue_full.swap(false, Ordering::Relaxed)
                {
                    log::info!(
                        "history: the queue to {} takes messages again; {} unsaved since start",
                        self.name,
                        self.unsaved()
                    );
                }
            }
            Err(TrySendError::Full(_)) => {
                self.counters.unsaved.fetch_add(1, Ordering::Relaxed);
                if !self.counters.queue_full.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "history: the queue to {} is full ({} requests); messages go unsaved \
                         until it drains",
                        self.name,
                        self.queue
                    );
                }
            }
            // The thread has ended (it never does before close, short of a bug).
            Err(TrySendError::Disconnected(_)) => {
                self.counters.unsaved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks for the last `n` messages of `room` strictly before `before_ms` (or the
    /// newest); the answer comes through the callback, tagged with `tag`. Never blocks:
    /// `false` means the queue is full and no answer will come (the caller answers with
    /// what it has).
    pub fn query(&self, tag: Tag, room: &str, n: usize, before_ms: Option<i64>) -> bool {
        let req = Request::Query {
            tag,
            room: room.to_string(),
            n,
            before_ms,
        };
        self.tx.try_send(req).is_ok()
    }

    /// Messages accepted by the loop but not stored (queue full, or a failed commit),
    /// since start.
    pub fn unsaved(&self) -> u64 {
        self.counters.unsaved.load(Ordering::Relaxed)
    }

    /// Messages stored since start.
    pub fn stored(&self) -> u64 {
        self.counters.stored.load(Ordering::Relaxed)
    }

    /// Commits done since start; `stored() / commits()` is the mean batch.
    pub fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Commits everything queued and stops the thread (the SIGTERM path), waiting at
    /// most `within`. Past that it gives up with a `warn`; the thread goes on until the
    /// process exits. The database's lock is released once the thread has ended.
    pub fn close(self, within: Duration) {
        let Store {
            tx,
            counters,
            thread,
            ended,
            name,
            ..
        } = self;
        // The thread drains what is queued, commits it and ends when the queue is
        // disconnected: no message is needed, so a full queue cannot delay the request.
        drop(tx);
        let ended = match ended.into_inner() {
            Ok(rx) => rx,
            Err(poisoned) => poisoned.into_inner(),
        };
        match ended.recv_timeout(within) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log::warn!(
                    "history: gave up after {within:?} waiting for the last commit to {name}"
                );
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    log::error!("history: the storage thread for {name} panicked");
                }
                log::info!(
                    "history: closed {name}: {} messages stored in {} commits, {} unsaved",
                    counters.stored.load(Ordering::Relaxed),
                    counters.commits.load(Ordering::Relaxed),
                    counters.unsaved.load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
