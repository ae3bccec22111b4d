//! Passwords: Argon2id hashing and verification on worker threads, so the loop never
//! spends tens of milliseconds on a login; plus the server password's file and its
//! constant-time comparison.
//!
//! The loop hands work to a [`Hasher`] and gets on with its work: [`Hasher::hash`] and
//! [`Hasher::verify`] only try to push onto a bounded queue, never block, and answer
//! [`Busy`] when it is full. Worker threads take the queue and answer through the
//! callback given at [`Hasher::start`] (the server's forwards into its inbox and wakes
//! the loop), tagged with the caller's [`Tag`].
//!
//! This module owns the Argon2id parameters ([`PARAMS`]), the queue, the threads and
//! the dummy hash. It does not own accounts, where hashes are stored, or the length
//! rules' enforcement ([`MIN_PASSWORD`], [`MAX_PASSWORD`]: the server checks them before
//! it asks for a hash); the worker threads themselves are in `worker`.
//!
//! # What is promised
//!
//! - New hashes are Argon2id PHC strings with a fresh 16-byte salt from the OS's
//!   random source. Verification reads the parameters from the PHC string it is given,
//!   so [`PARAMS`] can change without invalidating stored hashes.
//! - An unknown name ([`Hasher::verify`] with no hash) costs the same work as a wrong
//!   password: it is verified against a dummy hash of the same parameters, computed
//!   once on a worker thread at start, and always answers `false`. So does a stored
//!   hash that cannot be used (it is logged, without its content).
//! - Memory is bounded: at most [`HasherConfig::threads`] hashes run at once, each
//!   taking `m` KiB; at most [`HasherConfig::queue`] jobs wait.
//! - Passwords are copied once into a buffer that is wiped when the job is done or
//!   dropped; they are never logged, and no `Debug` here shows a password or a hash.
//! - No input makes a worker panic: a malformed hash verifies as `false`.
//!
//! # Cost, measured
//!
//! On this project's 2-core machine, with other builds running beside it, one hash or
//! verification with [`PARAMS`] takes about 24 ms in a release build (the first in a
//! process 30–45 ms, while the allocator gets its memory from the OS), so one worker
//! thread does about 40 verifications per second. Debug builds optimise the Argon2
//! crates too (see `Cargo.toml`) and are within a few milliseconds of that. `cargo test
//! --release --lib auth::tests::real_cost -- --ignored --nocapture` measures it again.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

mod worker;

/// Argon2 memory cost, KiB: 19 MiB, OWASP's recommended minimum for Argon2id. Memory
/// is what makes guessing on GPUs and ASICs expensive; more would cost every worker
/// thread as much again, for a chat server's accounts.
pub const M_COST_KIB: u32 = 19 * 1024;

/// Argon2 passes over that memory: 2, OWASP's pairing with 19 MiB. About 24 ms per hash
/// on this project's machine (see the module doc): slow for a guesser, quick enough
/// that a login is not noticed.
pub const T_COST: u32 = 2;

/// Argon2 lanes: 1. Each hash runs on one thread; parallelism comes from
/// [`HasherConfig::threads`] instead, so one login never takes every core.
pub const P_COST: u32 = 1;

/// The Argon2id parameters of new hashes ([`M_COST_KIB`], [`T_COST`], [`P_COST`],
/// 32-byte output). Checked when the crate compiles.
pub const PARAMS: Params = match Params::new(M_COST_KIB, T_COST, P_COST, None) {
    Ok(p) => p,
    Err(_) => panic!("invalid Argon2 parameters"),
};

/// Shortest password accepted for an account, bytes (§12).
pub const MIN_PASSWORD: usize = 8;

/// Longest password accepted for an account, bytes (§12): enough for any passphrase,
/// short enough that a line holding one stays small.
pub const MAX_PASSWORD: usize = 128;

/// Default for [`HasherConfig::queue`]: under two seconds of work for one thread at
/// ~24 ms a job. A wave of logins beyond that is refused at once rather than made to
/// wait longer.
pub const DEFAULT_QUEUE: usize = 64;

/// Opaque to the hasher: the server encodes who asked, and gets it back in the
/// [`Answer`].
pub type Tag = u64;

/// A worker thread's answer to one job.
#[derive(Clone, PartialEq, Eq)]
pub enum Answer {
    /// A new password's PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    Hashed {
        /// The tag given with [`Hasher::hash`].
        tag: Tag,
        /// What to store for the account.
        phc: String,
    },
    /// Whether the password matched. Always `false` for an unknown name or a hash that
    /// cannot be used.
    Verified {
        /// The tag given with [`Hasher::verify`].
        tag: Tag,
        /// The password matched the hash.
        ok: bool,
    },
    /// A new password could not be hashed: the OS's random source failed (logged as an
    /// `error`). Only [`Hasher::hash`] answers this; nothing is to be stored.
    Failed {
        /// The tag given with [`Hasher::hash`].
        tag: Tag,
    },
}

impl Answer {
    /// The tag given with the job, whatever the answer.
    pub fn tag(&self) -> Tag {
        match self {
            Answer::Hashed { tag, .. } | Answer::Verified { tag, .. } | Answer::Failed { tag } => {
                *tag
            }
        }
    }
}

impl fmt::Debug for Answer {
    /// Leaves the hash out: no hash is ever logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Hashed { tag, .. } => f
                .debug_struct("Hashed")
                .field("tag", tag)
                .finish_non_exhaustive(),
            Answer::Verified { tag, ok } => f
                .debug_struct("Verified")
                .field("tag", tag)
                .field("ok", ok)
                .finish(),
            Answer::Failed { tag } => f.debug_struct("Failed").field("tag", tag).finish(),
        }
    }
}

/// How many workers, and how much may wait for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HasherConfig {
    /// Worker threads (at least 1). Each running hash holds [`M_COST_KIB`] of memory, so
    /// this bounds memory too. Default: one less than the cores, at least 1, so the loop
    /// keeps a core to itself.
    pub threads: usize,
    /// Jobs waiting beyond those running (at least 1) before [`Hasher::hash`] and
    /// [`Hasher::verify`] answer [`Busy`]. Default [`DEFAULT_QUEUE`].
    pub queue: usize,
}

impl Default for HasherConfig {
    fn default() -> HasherConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HasherConfig {
            threads: cores.saturating_sub(1).max(1),
            queue: DEFAULT_QUEUE,
        }
    }
}

/// The queue was full (or the workers are gone): the job was not taken and no answer
/// will come. The server answers the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the password hasher is busy")
    }
}

impl std::error::Error for Busy {}

/// What the loop and the workers both count.
#[derive(Debug, Default)]
struct Counters {
    refused: AtomicU64,
    hashed: AtomicU64,
    verified: AtomicU64,
    /// Verifications against the dummy hash: unknown names and unreadable hashes.
    dummies: AtomicU64,
}

/// The Argon2 context and the dummy hash, shared by the workers.
struct Engine {
    argon2: Argon2<'static>,
    /// The PHC string unknown names are verified against: computed once, by the first
    /// worker at start, or by whichever needs it first.
    dummy: OnceLock<String>,
}

/// Stands in for the password of a name that has no account. Its value does not
/// matter: an unknown name never verifies, whatever its password.
const DUMMY_PASSWORD: &[u8] = b"loopchat dummy password";

/// The dummy hash's salt. It need not be random: the dummy guards no account.
const DUMMY_SALT: &[u8] = b"loopchat dummy salt";

impl Engine {
    fn new(params: Params) -> Engine {
        Engine {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            dummy: OnceLock::new(),
        }
    }

    /// A new PHC string for `password`, with a fresh salt from the OS.
    fn hash(&self, password: &[u8]) -> Result<String, password_hash::Error> {
        self.argon2.hash_password(password).map(|h| h.to_string())
    }

    /// Whether `password` matches `phc`; `None` (an unknown name) and a `phc` that
    /// cannot be used cost a dummy verification and are `false`.
    fn verify(&self, password: &[u8], phc: Option<&str>, counters: &Counters) -> bool {
        let Some(phc) = phc else {
            self.verify_dummy(password, counters);
            return false;
        };
        let why = match PasswordHash::new(phc) {
            // argon2 would call this a wrong password, without the work.
            Ok(hash) if hash.salt.is_none() || hash.hash.is_none() => {
                "no salt or no hash".to_string()
            }
            Ok(hash) => match self.argon2.verify_password(password, &hash) {
                Ok(()) => return true,
                Err(password_hash::Error::PasswordInvalid) => return false,
                // Parameters out of range, another algorithm, out of memory.
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        // The errors name what is wrong, never the string's content.
        log::warn!("auth: a stored password hash cannot be used ({why}); it matches nothing");
        self.verify_dummy(password, counters);
        false
    }

    /// The work of a verification, whose result is thrown away.
    fn verify_dummy(&self, password: &[u8], counters: &Counters) {
        counters.dummies.fetch_add(1, Ordering::Relaxed);
        if let Ok(hash) = PasswordHash::new(self.dummy()) {
            let _ = self.argon2.verify_password(password, &hash);
        }
    }

    /// The dummy PHC string, computed on first use. It cannot fail short of a bug in
    /// the parameters; then it is empty, every dummy verification is quick, and that is
    /// logged.
    fn dummy(&self) -> &str {
        self.dummy.get_or_init(|| {
            match self
                .argon2
                .hash_password_with_salt(DUMMY_PASSWORD, DUMMY_SALT)
            {
                Ok(h) => h.to_string(),
                Err(e) => {
                    log::error!(
                        "auth: cannot compute the dummy hash ({e}); unknown names are answered \
                         faster than wrong passwords"
                    );
                    String::new()
                }
            }
        })
    }
}

/// What a job asks for.
enum Work {
    Hash,
    /// The stored hash, or `None` for a name without an account.
    Verify(Option<String>),
}

/// One queued job. The password is wiped when the job is dropped, done or not.
struct Job {
    tag: Tag,
    password: Zeroizing<Vec<u8>>,
    work: Work,
}

impl fmt::Debug for Job {
    /// Shows neither the password nor the hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Job");
        d.field("tag", &self.tag);
        match &self.work {
            Work::Hash => d.field("work", &"hash"),
            Work::Verify(phc) => d
                .field("work", &"verify")
                .field("known_name", &phc.is_some()),
        };
        d.finish_non_exhaustive()
    }
}

/// What the [`Hasher`] and its workers share.
struct Shared {
    engine: Engine,
    counters: Counters,
    /// Set by [`Hasher::stop`]: jobs still queued are dropped unanswered.
    stopping: AtomicBool,
    answer: Box<dyn Fn(Answer) + Send + Sync>,
}

/// The loop's handle on the worker threads.
pub struct Hasher {
    /// `None` once stopping.
    tx: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    queue: usize,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("threads", &self.threads.len())
            .field("queue", &self.queue)
            .field("counters", &self.shared.counters)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// Starts the worker threads with [`PARAMS`]. Quick: the dummy hash is computed on
    /// a worker.
    ///
    /// `answer` runs on a worker thread, once per job taken; it must not block for long
    /// (the server's forwards into its bounded inbox and wakes the loop).
    ///
    /// Fails only if not one thread can be started; fewer than asked is a `warn`.
    pub fn start(
        config: HasherConfig,
        answer: Box<dyn Fn(Answer) + Send + Sync>,
    ) -> io::Result<Hasher> {
        Hasher::with_params(config, PARAMS, answer)
    }

    /// [`Hasher::start`] with other parameters for new hashes (tests use tiny ones).
    pub fn with_params(
        config: HasherConfig,
        params: Params,
        answer: Box<dyn Fn(Answer) + Send + Sync>,
    ) -> io::Result<Hasher> {
        // A zero-length sync_channel is a rendezvous: every job would be refused.
        let queue = config.queue.max(1);
        let wanted = config.threads.max(1);
        let (tx, rx) = mpsc::sync_channel(queue);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            engine: Engine::new(params),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            answer,
        });
        let mut threads = Vec::with_capacity(wanted);
        let mut last_error = None;
        for i in 0..wanted {
            let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
            let spawned = std::thread::Builder::new()
                .name(format!("loopchat-auth-{i}"))
                // The first worker computes the dummy hash before taking jobs.
                .spawn(move || worker::run(&shared, &rx, i == 0));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            if threads.is_empty() {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot start a password hashing thread: {e}"),
                ));
            }
            log::warn!(
                "auth: started {} of {wanted} password hashing threads: {e}",
                threads.len()
            );
        }
        Ok(Hasher {
            tx: Some(tx),
            shared,
            threads,
            queue,
        })
    }

    /// Queues hashing a new password; the answer is [`Answer::Hashed`] (or
    /// [`Answer::Failed`]). Never blocks. The length rules are the caller's to check.
    pub fn hash(&self, tag: Tag, password: &str) -> Result<(), Busy> {
        self.submit(tag, password, Work::Hash)
    }

    /// Queues verifying `password` against `phc`, or against the dummy hash when `None`
    /// (a name without an account); the answer is [`Answer::Verified`]. Never blocks.
    pub fn verify(&self, tag: Tag, password: &str, phc: Option<&str>) -> Result<(), Busy> {
        self.submit(tag, password, Work::Verify(phc.map(str::to_string)))
    }

    fn submit(&self, tag: Tag, password: &str, work: Work) -> Result<(), Busy> {
        let job = Job {
            tag,
            password: Zeroizing::new(password.as_bytes().to_vec()),
            work,
        };
        // Full, or every worker gone: the job comes back and is dropped here, which
        // wipes its password.
        let sent = match &self.tx {
            Some(tx) => tx.try_send(job).map_err(|_| Busy),
            None => Err(Busy),
        };
        if sent.is_err() {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// How many jobs may wait at once.
    pub fn capacity(&self) -> usize {
        self.queue
    }

    /// Jobs refused with [`Busy`] since start.
    pub fn refused(&self) -> u64 {
        self.shared.counters.refused.load(Ordering::Relaxed)
    }

    /// Stops the workers and waits for them. Jobs still queued are dropped unanswered
    /// (their passwords wiped); jobs already running finish and answer, so this waits
    /// at most one hash per thread. Dropping the [`Hasher`] does the same.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        self.shared.stopping.store(true, Ordering::Relaxed);
        // Workers drain what is queued (dropping it) and end once it is empty.
        drop(tx);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("auth: a password hashing thread panicked");
            }
        }
        let c = &self.shared.counters;
        log::info!(
            "auth: stopped: {} passwords hashed, {} verified ({} against the dummy), {} refused",
            c.hashed.load(Ordering::Relaxed),
            c.verified.load(Ordering::Relaxed),
            c.dummies.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed)
        );
    }
}

/// Compares two secrets in time that depends only on their lengths: every byte of the
/// longer is looked at, with no early exit on the first difference.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        // black_box keeps the optimiser from turning the loop into an early exit.
        diff = std::hint::black_box(diff | (x ^ y));
    }
    diff == 0
}

/// Reads a server password file (`--password-file`): its content without one trailing
/// `"\n"` or `"\r\n"`. Inner whitespace is kept. Errors name the file: it cannot be
/// read, the password is empty, or it holds a line break no client could send.
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.display();
    // Wiped on every way out but the success one, which hands the buffer over.
    let mut buf = Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read password file {name}: {e}"))?,
    );
    let line = buf
        .strip_suffix(b"\r\n")
        .or_else(|| buf.strip_suffix(b"\n"))
        .unwrap_or(&buf);
    let len = line.len();
    buf.truncate(len);
    if buf.is_empty() {
        return Err(format!("password file {name} holds an empty password"));
    }
    if buf.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(format!(
            "password file {name} holds more than one line; a password is one line"
        ));
    }
    Ok(std::mem::take(&mut *buf))
}

#[cfg(test)]
mod tests;
