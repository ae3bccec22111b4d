//! The SQLite backend: opening (checks, lock, schema and migrations) and the three
//! statements the storage thread runs.
//!
//! Opening checks what a person would get wrong before SQLite gets a chance to hide it:
//! SQLite opens a file it cannot write read-only without a word, and creates a database
//! in any file it is pointed at. So the directory and the file are checked for writes,
//! `PATH.lock` is locked against a second server, and a file that is not a loopchat
//! database (by `PRAGMA application_id`, or tables without one) is refused rather than
//! written into. Corruption is found at open as far as the header and the schema go;
//! a full `PRAGMA integrity_check` reads the whole file, which would hold a large
//! database's server back from listening for minutes, so damage deeper down shows up
//! as a read or write error at run time (logged once per episode).
//!
//! WAL mode with `synchronous=NORMAL`: a commit is a write to the WAL without an fsync
//! (the WAL is synced at checkpoints), so group commits are cheap and a crash of the
//! process loses nothing committed; a power cut may lose the last commits.

use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};

use super::{Backend, Message, Secret, Secrets, StoreError};

/// The schema version this build writes (`PRAGMA user_version`). A later change adds a
/// step to [`SqliteBackend::migrate`] and bumps it; a database with a higher one is refused.
const SCHEMA_VERSION: i64 = 2;

/// `PRAGMA application_id` of a loopchat database ("lcdb"), so a file that belongs to
/// something else is refused instead of written into.
const APPLICATION_ID: i64 = 0x6c63_6462;

/// How long a statement waits for a lock held by another connection (an operator's
/// `sqlite3 .backup` or a checkpoint) before failing. Only the storage thread waits.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Version 1: one table of messages. `room_key` is the room folded to ASCII lower case
/// (as the hub folds names), `room` the name as created. The first index serves
/// history (newest first within a room, ties by id); the second lets retention find the
/// oldest rows without scanning the table.
const SCHEMA_V1: &str = "
    CREATE TABLE messages (
        id       INTEGER PRIMARY KEY,
        room_key TEXT NOT NULL,
        room     TEXT NOT NULL,
        at_ms    INTEGER NOT NULL,
        sender   TEXT NOT NULL,
        text     TEXT NOT NULL
    );
    CREATE INDEX messages_by_room ON messages (room_key, at_ms);
    CREATE INDEX messages_by_time ON messages (at_ms);
";

/// Version 2: accounts and room keys, as Argon2id PHC strings (never a password), keyed
/// by the folded name.
const SCHEMA_V2: &str = "
    CREATE TABLE accounts (
        name_key TEXT PRIMARY KEY,
        name     TEXT NOT NULL,
        phc      TEXT NOT NULL
    );
    CREATE TABLE room_keys (
        room_key TEXT PRIMARY KEY,
        room     TEXT NOT NULL,
        phc      TEXT NOT NULL
    );
";

const PUT_ACCOUNT: &str =
    "INSERT OR REPLACE INTO accounts (name_key, name, phc) VALUES (lower(?1), ?1, ?2)";

const PUT_ROOM_KEY: &str =
    "INSERT OR REPLACE INTO room_keys (room_key, room, phc) VALUES (lower(?1), ?1, ?2)";

const INSERT: &str =
    "INSERT INTO messages (room_key, room, at_ms, sender, text) VALUES (?1, ?2, ?3, ?4, ?5)";

const RECENT: &str = "SELECT room, at_ms, sender, text FROM messages
    WHERE room_key = ?1 AND at_ms < ?2 ORDER BY at_ms DESC, id DESC LIMIT ?3";

const PRUNE: &str = "DELETE FROM messages WHERE id IN
    (SELECT id FROM messages WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)";

/// History in SQLite, in a file or in memory.
pub struct SqliteBackend {
    // Fields drop in order: the connection closes (and checkpoints) before the lock is
    // released, so the next server never sees a half-closed database.
    conn: Connection,
    name: String,
    db: String,
    _lock: Option<File>,
    /// Reused for the folded room of every row inserted.
    key: String,
}

impl SqliteBackend {
    /// Opens the database at `path`, creating it (and its schema) if it does not exist,
    /// and takes the lock beside it for as long as this backend lives.
    pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        let db = path.display().to_string();
        let fail = |reason: String| StoreError::Open {
            db: db.clone(),
            reason,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(fail(format!("{} is not a directory", dir.display())));
            }
            Ok(m) if !writable(dir, &m) => {
                return Err(fail(format!(
                    "directory {} is read-only (the server writes {} and the WAL files beside \
                     the database)",
                    dir.display(),
                    lock_path(path).display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(format!("directory {} does not exist", dir.display())));
            }
            Err(e) => {
                return Err(fail(format!(
                    "cannot reach directory {}: {e}",
                    dir.display()
                )));
            }
        }
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(fail("it is a directory".into())),
            Ok(m) if !writable(path, &m) => return Err(fail("the file is read-only".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        let lock = take_lock(path, &db)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(explain(&e)))?;
        let mut backend = SqliteBackend {
            conn,
            name: format!("database {db}"),
            db: db.clone(),
            _lock: Some(lock),
            key: String::new(),
        };
        backend.prepare(true).map_err(|e| match e {
            Setup::Sqlite(e) => fail(explain(&e)),
            Setup::Refused(e) => e,
        })?;
        Ok(backend)
    }

    /// A database in memory only (`--db none`): the same schema and statements, gone
    /// when the store closes.
    pub fn in_memory() -> Result<SqliteBackend, StoreError> {
        let db = "memory".to_string();
        let conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            db: db.clone(),
            reason: explain(&e),
        })?;
        let mut backend = SqliteBackend {
            conn,
            name: "in-memory history".into(),
            db,
            _lock: None,
            key: String::new(),
        };
        backend.prepare(false).map_err(|e| match e {
            Setup::Sqlite(e) => StoreError::Open {
                db: backend.db.clone(),
                reason: explain(&e),
            },
            Setup::Refused(e) => e,
        })?;
        Ok(backend)
    }

    /// Pragmas, then the schema.
    fn prepare(&mut self, wal: bool) -> Result<(), Setup> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        if wal {
            // The first statement that reads the file: a file that is not a database
            // fails here.
            let mode: String =
                self.conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Setup::Refused(StoreError::Open {
                    db: self.db.clone(),
                    reason: format!("cannot use WAL mode (the journal stays in {mode} mode)"),
                }));
            }
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        self.migrate()
    }

    /// Creates the schema in a new database, or brings an older one up to date; refuses
    /// a newer one and a file that is someone else's.
    fn migrate(&mut self) -> Result<(), Setup> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let app: i64 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let objects: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        let fresh = app == 0 && version == 0 && objects == 0;
        if app != APPLICATION_ID && !fresh {
            return Err(Setup::Refused(StoreError::Open {
                db: self.db.clone(),
                reason: "it is a SQLite database, but not loopchat's".into(),
            }));
        }
        if version > SCHEMA_VERSION {
            return Err(Setup::Refused(StoreError::TooNew {
                db: self.db.clone(),
                found: version,
                known: SCHEMA_VERSION,
            }));
        }
        if version < 1 {
            tx.execute_batch(SCHEMA_V1)?;
        }
        if version < 2 {
            tx.execute_batch(SCHEMA_V2)?;
        }
        // Later versions add their steps here: `if version < 3 { ... }`.
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn write_error(&self, e: &rusqlite::Error) -> StoreError {
        StoreError::Write {
            db: self.db.clone(),
            reason: explain(e),
        }
    }

    fn append_batch(&mut self, batch: &[Message]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for m in batch {
                self.key.clear();
                self.key.push_str(&m.room);
                self.key.make_ascii_lowercase();
                insert.execute(params![self.key, m.room, m.at_ms, m.from, m.text])?;
            }
        }
        tx.commit()
    }
}

impl Backend for SqliteBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn append(&mut self, batch: &[Message]) -> Result<(), StoreError> {
        self.append_batch(batch).map_err(|e| self.write_error(&e))
    }

    fn recent(
        &mut self,
        room: &str,
        n: usize,
        before_ms: Option<i64>,
    ) -> Result<Vec<Message>, StoreError> {
        let read = |conn: &Connection| -> rusqlite::Result<Vec<Message>> {
            let mut select = conn.prepare_cached(RECENT)?;
            let rows = select.query_map(
                params![
                    room.to_ascii_lowercase(),
                    before_ms.unwrap_or(i64::MAX),
                    i64::try_from(n).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok(Message {
                        room: r.get(0)?,
                        at_ms: r.get(1)?,
                        from: r.get(2)?,
                        text: r.get(3)?,
                    })
                },
            )?;
            let mut out = rows.collect::<rusqlite::Result<Vec<Message>>>()?;
            out.reverse();
            Ok(out)
        };
        read(&self.conn).map_err(|e| StoreError::Read {
            db: self.db.clone(),
            reason: explain(&e),
        })
    }

    fn secrets(&mut self) -> Result<Secrets, StoreError> {
        let read = |conn: &Connection| -> rusqlite::Result<Secrets> {
            let pairs = |sql: &str| -> rusqlite::Result<Vec<(String, String)>> {
                let mut select = conn.prepare(sql)?;
                let rows = select.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            };
            Ok(Secrets {
                accounts: pairs("SELECT name, phc FROM accounts")?,
                room_keys: pairs("SELECT room, phc FROM room_keys")?,
            })
        };
        read(&self.conn).map_err(|e| StoreError::Read {
            db: self.db.clone(),
            reason: explain(&e),
        })
    }

    fn put_secret(&mut self, secret: &Secret) -> Result<(), StoreError> {
        let (sql, name, phc) = match secret {
            Secret::Account { name, phc } => (PUT_ACCOUNT, name, phc),
            Secret::RoomKey { room, phc } => (PUT_ROOM_KEY, room, phc),
        };
        self.conn
            .prepare_cached(sql)
            .and_then(|mut put| put.execute(params![name, phc]))
            .map(|_| ())
            .map_err(|e| self.write_error(&e))
    }

    fn prune(&mut self, older_than_ms: i64, max_rows: usize) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(PRUNE)
            .and_then(|mut delete| {
                delete.execute(params![
                    older_than_ms,
                    i64::try_from(max_rows).unwrap_or(i64::MAX)
                ])
            })
            .map_err(|e| self.write_error(&e))
    }
}

/// Opening's two ways to fail: SQLite said no (explained by [`explain`]), or loopchat
/// refuses what it found.
enum Setup {
    Sqlite(rusqlite::Error),
    Refused(StoreError),
}

impl From<rusqlite::Error> for Setup {
    fn from(e: rusqlite::Error) -> Setup {
        Setup::Sqlite(e)
    }
}

/// `PATH.lock`, beside the database.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates and locks `PATH.lock` (`flock`, exclusive, not waiting), and writes our pid
/// into it so a second server can say who holds it. The lock goes with the file handle,
/// also when the process dies; the file stays (removing it would race with a server
/// that has just opened it).
fn take_lock(path: &Path, db: &str) -> Result<File, StoreError> {
    let lock = lock_path(path);
    let fail = |reason: String| StoreError::Open {
        db: db.to_string(),
        reason,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|e| fail(format!("cannot create lock file {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&lock)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(StoreError::InUse {
                db: db.to_string(),
                lock,
                pid,
            });
        }
        Err(TryLockError::Error(e)) => {
            return Err(fail(format!("cannot lock {}: {e}", lock.display())));
        }
    }
    // Only informative: a failure here does not make the database less ours.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// Whether this process may write `path`: the mode bits (which root ignores, but a
/// server should not write where the operator said no) and `access(2)` (ownership,
/// ACLs, read-only mounts).
fn writable(path: &Path, meta: &Metadata) -> bool {
    if meta.permissions().readonly() {
        return false;
    }
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2)
    // only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// SQLite's error, with what it usually means for the person running the server.
fn explain(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!("not a SQLite database ({e})"),
        Some(ErrorCode::DatabaseCorrupt) => format!("the database is corrupt ({e})"),
        Some(ErrorCode::DiskFull) => format!("the disk is full ({e})"),
        Some(ErrorCode::ReadOnly) => format!("{e} (read-only file or file system?)"),
        Some(ErrorCode::CannotOpen) => format!("{e} (is the directory writable?)"),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("{e} (another program holds the database)")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, at_ms: i64, text: &str) -> Message {
        Message {
            room: room.into(),
            at_ms,
            from: "ann".into(),
            text: text.into(),
        }
    }

    #[test]
    fn history_reads_the_room_index_without_sorting() {
        let b = SqliteBackend::in_memory().unwrap();
        let plan: Vec<String> = b
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {RECENT}"))
            .unwrap()
            .query_map(params!["#a", 1, 20], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("messages_by_room"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn retention_deletes_at_most_max_rows_per_step_oldest_first() {
        let mut b = SqliteBackend::in_memory().unwrap();
        let old: Vec<Message> = (0..25).map(|i| msg("#a", 1000 + i, "old")).collect();
        b.append(&old).unwrap();
        b.append(&[msg("#a", 5000, "new"), msg("#b", 5001, "new")])
            .unwrap();
        assert_eq!(b.prune(2000, 10).unwrap(), 10);
        assert_eq!(b.recent("#a", 100, None).unwrap()[0].at_ms, 1010);
        assert_eq!(b.prune(2000, 10).unwrap(), 10);
        assert_eq!(b.prune(2000, 10).unwrap(), 5);
        assert_eq!(b.prune(2000, 10).unwrap(), 0);
        let left = b.recent("#a", 100, None).unwrap();
        assert_eq!(left, vec![msg("#a", 5000, "new")]);
        assert_eq!(b.recent("#b", 100, None).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_batch_stores_none_of_its_rows() {
        let mut b = SqliteBackend::in_memory().unwrap();
        b.conn
            .execute_batch(
                "CREATE TRIGGER no_bad BEFORE INSERT ON messages WHEN new.text = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let err = b
            .append(&[msg("#a", 1, "good"), msg("#a", 2, "bad")])
            .unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(b.recent("#a", 10, None).unwrap().is_empty());
    }
}
