//! The store through its public face: a real thread, real files in temp directories,
//! and test backends for what a disk will not do on demand.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use super::*;

/// Long enough for any answer on a loaded 2-core machine; tests end as soon as it comes.
const PATIENCE: Duration = Duration::from_secs(5);

/// Keeps every commit waiting for `close`, so a test controls when batches land.
const NEVER: Duration = Duration::from_secs(3600);

fn msg(room: &str, at_ms: i64, text: &str) -> Message {
    Message {
        room: room.into(),
        at_ms,
        from: "ann".into(),
        text: text.into(),
    }
}

/// Tests stamp messages with small times (1970): a century of retention keeps them.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn config(path: Option<PathBuf>, flush: Duration) -> StoreConfig {
    StoreConfig {
        path,
        flush,
        retain: CENTURY,
        ..StoreConfig::default()
    }
}

/// A store whose answers arrive on the returned receiver.
#[track_caller]
fn open(config: StoreConfig) -> (Store, Receiver<Answer>) {
    let (tx, rx) = mpsc::channel();
    let store = Store::open(config, Box::new(move |a| drop(tx.send(a)))).unwrap();
    (store, rx)
}

/// Asks and waits for the answer; the texts, oldest first.
#[track_caller]
fn ask(
    store: &Store,
    answers: &Receiver<Answer>,
    room: &str,
    n: usize,
    before: Option<i64>,
) -> Vec<Message> {
    assert!(store.query(7, room, n, before), "the queue refused a query");
    let a = answers.recv_timeout(PATIENCE).expect("no answer");
    assert_eq!((a.tag, a.room.as_str()), (7, room));
    a.messages
}

fn times(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.at_ms).collect()
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_millis() as i64
}

#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[track_caller]
fn open_error(path: &Path) -> String {
    match Store::open(config(Some(path.into()), DEFAULT_FLUSH), Box::new(|_| {})) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

// ---- logs ----------------------------------------------------------------------------

/// Every log record of the test binary, for counting warnings per episode.
static LOGGED: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = record.args().to_string();
        if let Ok(mut all) = LOGGED.lock() {
            all.push((record.level(), line));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("another logger is installed");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Records at `level` that mention `tag`.
fn logged(level: log::Level, tag: &str) -> usize {
    let all = LOGGED.lock().unwrap();
    all.iter()
        .filter(|(l, line)| *l == level && line.contains(tag))
        .count()
}

// ---- test backends -------------------------------------------------------------------

/// Stores in memory; its appends fail while `fail` is set, like a full disk.
struct Flaky {
    name: String,
    fail: Arc<AtomicBool>,
    rows: Vec<Message>,
}

impl Backend for Flaky {
    fn name(&self) -> &str {
        &self.name
    }
    fn append(&mut self, batch: &[Message]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Write {
                db: self.name.clone(),
                reason: "the disk is full".into(),
            });
        }
        self.rows.extend_from_slice(batch);
        Ok(())
    }
    fn recent(&mut self, _: &str, _: usize, _: Option<i64>) -> Result<Vec<Message>, StoreError> {
        Ok(Vec::new())
    }
    fn prune(&mut self, _: i64, _: usize) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Its first append says so on `entered`, then waits for `go`: a stalled disk.
struct Stalled {
    name: String,
    entered: mpsc::Sender<()>,
    go: Receiver<()>,
}

impl Backend for Stalled {
    fn name(&self) -> &str {
        &self.name
    }
    fn append(&mut self, _: &[Message]) -> Result<(), StoreError> {
        let _ = self.entered.send(());
        let _ = self.go.recv();
        Ok(())
    }
    fn recent(&mut self, _: &str, _: usize, _: Option<i64>) -> Result<Vec<Message>, StoreError> {
        Ok(Vec::new())
    }
    fn prune(&mut self, _: i64, _: usize) -> Result<usize, StoreError> {
        Ok(0)
    }
}

#[test]
fn a_store_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
}

// ---- history -------------------------------------------------------------------------

#[test]
fn recent_is_oldest_first_and_pages_strictly_before_a_time() {
    let dir = temp();
    let (store, answers) = open(config(Some(dir.path().join("h.db")), Duration::ZERO));
    for t in 1..=10 {
        store.append(msg("#a", t, &format!("m{t}")));
    }
    store.append(msg("#b", 11, "elsewhere"));
    let newest = ask(&store, &answers, "#a", 3, None);
    assert_eq!(times(&newest), [8, 9, 10]);
    assert_eq!(newest[2], msg("#a", 10, "m10"));
    assert_eq!(times(&ask(&store, &answers, "#a", 3, Some(8))), [5, 6, 7]);
    assert_eq!(times(&ask(&store, &answers, "#a", 100, Some(3))), [1, 2]);
    assert!(ask(&store, &answers, "#a", 5, Some(1)).is_empty());
    assert_eq!(times(&ask(&store, &answers, "#b", 20, None)), [11]);
    assert!(ask(&store, &answers, "#empty", 20, None).is_empty());
    store.close(PATIENCE);
}

#[test]
fn rooms_are_looked_up_without_regard_to_ascii_case() {
    let (store, answers) = open(config(None, Duration::ZERO));
    store.append(msg("#Rust", 1, "hello"));
    store.append(msg("#rust", 2, "again"));
    let got = ask(&store, &answers, "#rUST", 10, None);
    assert_eq!(got, [msg("#Rust", 1, "hello"), msg("#rust", 2, "again")]);
    wait_until("the commit", || store.stored() == 2);
    // The same from the database, once nothing is waiting to be merged.
    assert_eq!(ask(&store, &answers, "#RUST", 10, None), got);
    store.close(PATIENCE);
}

#[test]
fn a_query_sees_the_messages_appended_before_it_before_they_are_committed() {
    let dir = temp();
    let (store, answers) = open(config(Some(dir.path().join("h.db")), NEVER));
    for t in 1..=5 {
        store.append(msg("#a", t, "x"));
    }
    assert_eq!(times(&ask(&store, &answers, "#a", 3, None)), [3, 4, 5]);
    assert_eq!(times(&ask(&store, &answers, "#A", 10, Some(3))), [1, 2]);
    assert_eq!(store.commits(), 0);
    store.close(PATIENCE);
}

#[test]
fn a_query_merges_committed_and_waiting_messages() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let (store, _answers) = open(config(Some(path.clone()), NEVER));
    for t in 1..=4 {
        store.append(msg("#a", t, "x"));
    }
    store.close(PATIENCE);
    // 1-4 are in the database; 5-6 wait for a commit that only close will do.
    let (store, answers) = open(config(Some(path), NEVER));
    store.append(msg("#a", 5, "x"));
    store.append(msg("#b", 6, "x"));
    store.append(msg("#a", 7, "x"));
    assert_eq!(times(&ask(&store, &answers, "#a", 3, None)), [4, 5, 7]);
    assert_eq!(
        times(&ask(&store, &answers, "#a", 10, Some(7))),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(times(&ask(&store, &answers, "#a", 2, Some(3))), [1, 2]);
    assert_eq!(store.commits(), 0);
    store.close(PATIENCE);
}

// ---- group commit --------------------------------------------------------------------

#[test]
fn many_appends_are_committed_in_few_transactions() {
    let dir = temp();
    let (store, _answers) = open(config(
        Some(dir.path().join("h.db")),
        Duration::from_millis(200),
    ));
    for t in 0..5000 {
        store.append(msg("#a", t, "x"));
    }
    wait_until("the group commit", || store.stored() == 5000);
    assert!(store.commits() <= 2, "{} commits", store.commits());
    assert_eq!(store.unsaved(), 0);
    store.close(PATIENCE);
}

#[test]
fn a_large_batch_is_committed_without_waiting_for_the_interval() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let (store, _answers) = open(config(Some(path.clone()), NEVER));
    for t in 0..25_000 {
        store.append(msg("#a", t, "x"));
    }
    wait_until("two full batches", || store.stored() == 20_000);
    assert_eq!(store.commits(), 2);
    store.close(PATIENCE);
    let (store, answers) = open(config(Some(path), NEVER));
    assert_eq!(ask(&store, &answers, "#a", 30_000, None).len(), 25_000);
    store.close(PATIENCE);
}

// ---- lifetime ------------------------------------------------------------------------

#[test]
fn history_survives_a_restart_and_close_commits_everything_queued() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let (store, _answers) = open(config(Some(path.clone()), NEVER));
    store.append(msg("#a", 1, "before"));
    store.append(msg("#a", 2, "the restart"));
    store.close(PATIENCE);
    let (store, answers) = open(config(Some(path), NEVER));
    assert_eq!(
        ask(&store, &answers, "#a", 10, None),
        [msg("#a", 1, "before"), msg("#a", 2, "the restart")]
    );
    store.close(PATIENCE);
}

#[test]
fn in_memory_history_works_and_belongs_to_its_store() {
    let (one, answers_one) = open(config(None, Duration::ZERO));
    let (two, answers_two) = open(config(None, Duration::ZERO));
    one.append(msg("#a", 1, "one"));
    assert_eq!(times(&ask(&one, &answers_one, "#a", 5, None)), [1]);
    wait_until("the commit", || one.stored() == 1);
    assert_eq!(times(&ask(&one, &answers_one, "#a", 5, None)), [1]);
    assert!(ask(&two, &answers_two, "#a", 5, None).is_empty());
    one.close(PATIENCE);
    two.close(PATIENCE);
}

// ---- opening -------------------------------------------------------------------------

#[test]
fn a_missing_directory_is_named() {
    let dir = temp();
    let path = dir.path().join("nope").join("h.db");
    let e = open_error(&path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = temp();
    let path = dir.path().join("h.db");
    fs::write(&path, "this is a chat log, not a database\n".repeat(100)).unwrap();
    let e = open_error(&path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("not a SQLite database"), "{e}");
}

#[test]
fn someone_elses_sqlite_database_is_refused() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE accounts (x)").unwrap();
    drop(other);
    let e = open_error(&path);
    assert!(e.contains("not loopchat's"), "{e}");
}

#[test]
fn a_database_from_a_newer_loopchat_is_refused() {
    let dir = temp();
    let path = dir.path().join("h.db");
    open(config(Some(path.clone()), NEVER)).0.close(PATIENCE);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let e = open_error(&path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("schema version 99 is newer"), "{e}");
}

#[test]
fn a_second_store_on_the_same_file_is_refused_while_the_first_runs() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let (first, _answers) = open(config(Some(path.clone()), NEVER));
    let e = open_error(&path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("in use"), "{e}");
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    first.close(PATIENCE);
    open(config(Some(path), NEVER)).0.close(PATIENCE);
}

#[test]
fn a_backup_can_be_taken_while_the_store_runs() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let (store, _answers) = open(config(Some(path.clone()), Duration::ZERO));
    store.append(msg("#a", 1, "kept"));
    wait_until("the commit", || store.stored() == 1);
    let live = rusqlite::Connection::open(&path).unwrap();
    let copy = dir.path().join("copy.db");
    live.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    drop(live);
    store.close(PATIENCE);
    let copy = rusqlite::Connection::open(&copy).unwrap();
    let n: i64 = copy
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_read_only_file_is_refused() {
    let dir = temp();
    let path = dir.path().join("h.db");
    open(config(Some(path.clone()), NEVER)).0.close(PATIENCE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    let e = open_error(&path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("read-only"), "{e}");
}

#[test]
fn a_read_only_directory_is_refused() {
    let dir = temp();
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let path = ro.join("h.db");
    let e = open_error(&path);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("read-only"), "{e}");
}

// ---- retention -----------------------------------------------------------------------

#[test]
fn retention_deletes_old_messages_in_steps_and_keeps_the_rest() {
    let dir = temp();
    let path = dir.path().join("h.db");
    let (store, _answers) = open(config(Some(path.clone()), NEVER));
    // Two and a half steps of messages from a year ago, and a few from now.
    let year_ago = now_ms() - 365 * 24 * 3600 * 1000;
    for t in 0..2500 {
        store.append(msg("#a", year_ago + t, "old"));
    }
    let now = now_ms();
    for t in 0..3 {
        store.append(msg("#a", now + t, "new"));
    }
    store.close(PATIENCE);
    let month = StoreConfig {
        retain: Duration::from_secs(30 * 24 * 3600),
        ..config(Some(path), NEVER)
    };
    let (store, answers) = open(month);
    wait_until("retention", || {
        ask(&store, &answers, "#a", 3000, None).len() == 3
    });
    assert_eq!(
        times(&ask(&store, &answers, "#a", 3000, None)),
        [now, now + 1, now + 2]
    );
    store.close(PATIENCE);
}

// ---- trouble -------------------------------------------------------------------------

#[test]
fn a_full_queue_counts_messages_as_unsaved_without_blocking() {
    capture_logs();
    let tag = "stalled-backend-for-the-full-queue-test";
    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let backend = Stalled {
        name: tag.into(),
        entered: entered_tx,
        go: go_rx,
    };
    let cfg = StoreConfig {
        queue: 4,
        ..config(None, Duration::ZERO)
    };
    let store = Store::with_backend(Box::new(backend), &cfg, Box::new(|_| {})).unwrap();
    store.append(msg("#a", 0, "x"));
    entered.recv_timeout(PATIENCE).unwrap();
    // The thread is stuck in its commit: four fit in the queue, the rest do not.
    let start = Instant::now();
    for t in 1..=10 {
        store.append(msg("#a", t, "x"));
    }
    assert!(!store.query(1, "#a", 5, None));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(store.unsaved(), 6);
    assert_eq!(logged(log::Level::Warn, tag), 1);
    go.send(()).unwrap();
    go.send(()).unwrap();
    wait_until("the queue to drain", || store.stored() == 5);
    store.append(msg("#a", 11, "x"));
    assert_eq!(logged(log::Level::Info, tag), 1);
    go.send(()).unwrap();
    store.close(PATIENCE);
}

#[test]
fn failing_commits_warn_once_per_episode_and_count_unsaved() {
    capture_logs();
    let tag = "flaky-backend-for-the-episode-test";
    let fail = Arc::new(AtomicBool::new(true));
    let backend = Flaky {
        name: tag.into(),
        fail: Arc::clone(&fail),
        rows: Vec::new(),
    };
    let store = Store::with_backend(
        Box::new(backend),
        &config(None, Duration::ZERO),
        Box::new(|_| {}),
    )
    .unwrap();
    let warns = || logged(log::Level::Warn, tag);
    let infos = || logged(log::Level::Info, tag);
    // Three failed batches: one episode.
    for t in 1..=3 {
        store.append(msg("#a", t, "x"));
        wait_until("a failed batch", || store.unsaved() == t as u64);
    }
    assert_eq!((warns(), infos()), (1, 0));
    fail.store(false, Ordering::SeqCst);
    store.append(msg("#a", 4, "x"));
    wait_until("a good batch", || store.stored() == 1);
    assert_eq!((warns(), infos()), (1, 1));
    fail.store(true, Ordering::SeqCst);
    store.append(msg("#a", 5, "x"));
    wait_until("a failed batch", || store.unsaved() == 4);
    assert_eq!((warns(), infos()), (2, 1));
    assert_eq!(store.commits(), 1);
    store.close(PATIENCE);
}

#[test]
fn a_database_with_a_broken_schema_page_is_refused_as_corrupt() {
    let dir = temp();
    let path = dir.path().join("h.db");
    open(config(Some(path.clone()), NEVER)).0.close(PATIENCE);
    let mut bytes = fs::read(&path).unwrap();
    // Page 1 after the 100-byte file header holds the schema's b-tree.
    for b in &mut bytes[100..4096] {
        *b = 0xA5;
    }
    fs::write(&path, bytes).unwrap();
    let e = open_error(&path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("corrupt"), "{e}");
}

#[test]
fn accounts_and_room_keys_come_back_after_a_restart() {
    let dir = temp();
    let path = dir.path().join("chat.db");
    let (mut store, _answers) = open(config(Some(path.clone()), NEVER));
    assert_eq!(store.take_secrets(), Secrets::default());
    assert!(store.put_secret(Secret::Account {
        name: "Alice".into(),
        phc: "$argon2id$fake-alice".into(),
    }));
    assert!(store.put_secret(Secret::RoomKey {
        room: "#Club".into(),
        phc: "$argon2id$fake-club".into(),
    }));
    store.close(PATIENCE);
    let (mut store, _answers) = open(config(Some(path), NEVER));
    let secrets = store.take_secrets();
    assert_eq!(
        secrets.accounts,
        [("Alice".to_string(), "$argon2id$fake-alice".to_string())]
    );
    assert_eq!(
        secrets.room_keys,
        [("#Club".to_string(), "$argon2id$fake-club".to_string())]
    );
    let shown = format!(
        "{:?}",
        Secret::Account {
            name: "a".into(),
            phc: "$argon2id$secret".into()
        }
    );
    assert!(!shown.contains("argon2id"), "{shown}");
    store.close(PATIENCE);
}
