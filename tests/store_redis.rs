//! The Redis store (cluster mode) against a real `redis-server`: history, paging,
//! ids across nodes with skewed clocks, the cap, retention, accounts shared between
//! nodes, and what happens when Redis is unreachable or restarts.
//!
//! Each test starts its own `redis-server` (see `util::redis`), so they run in
//! parallel without sharing keys.

mod util;

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use loopchat::store::{
    Answer, Backend, HISTORY_CAP, Message, RedisBackend, Secret, Store, StoreConfig,
};
use util::redis::RedisServer;

/// Long enough for any answer on a loaded 2-core machine; tests end as soon as it comes.
const PATIENCE: Duration = Duration::from_secs(10);

/// Tests stamp messages with small times (1970): a century of retention keeps them.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn msg(room: &str, at_ms: i64, text: &str) -> Message {
    Message {
        room: room.into(),
        at_ms,
        from: "ann".into(),
        text: text.into(),
    }
}

fn config(url: &str) -> StoreConfig {
    StoreConfig {
        path: None,
        redis: Some(url.to_string()),
        // Every message is committed as soon as the thread takes it.
        flush: Duration::ZERO,
        retain: CENTURY,
        ..StoreConfig::default()
    }
}

/// A store whose answers arrive on the returned receiver.
#[track_caller]
fn open(config: StoreConfig) -> (Store, Receiver<Answer>) {
    util::init_logging();
    let (tx, rx) = mpsc::channel();
    let store = match Store::open(config, Box::new(move |a| drop(tx.send(a)))) {
        Ok(store) => store,
        Err(e) => panic!("open: {e}"),
    };
    (store, rx)
}

/// Asks and waits for the answer, oldest first.
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

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_millis() as i64
}

/// Polls `cond` every few milliseconds, failing after [`PATIENCE`].
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The ids of a room's stream, oldest first, read straight from Redis.
#[track_caller]
fn stream_ids(redis: &RedisServer, room: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("loopchat:history:{}", room.to_ascii_lowercase()))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

/// A URL nobody listens on.
fn dead_url() -> (u16, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    (port, format!("redis://127.0.0.1:{port}"))
}

// ---- history -------------------------------------------------------------------------

#[test]
fn history_round_trips_through_redis_oldest_first_with_rooms_folded() {
    let redis = RedisServer::start();
    let (store, answers) = open(config(&redis.url));
    for t in 1..=10 {
        store.append(msg("#Rust", t, &format!("m{t}")));
    }
    store.append(msg("#b", 11, "elsewhere"));
    // Committed, so the answers come from Redis, not from the batch still waiting.
    wait_until("the commits", || store.stored() == 11);
    let newest = ask(&store, &answers, "#rust", 3, None);
    assert_eq!(times(&newest), [8, 9, 10]);
    assert_eq!(newest[2], msg("#Rust", 10, "m10"));
    assert_eq!(times(&ask(&store, &answers, "#b", 20, None)), [11]);
    assert!(ask(&store, &answers, "#empty", 20, None).is_empty());
    assert_eq!(redis.cli(&["XLEN", "loopchat:history:#rust"]), "10");
    assert_eq!(redis.cli(&["TYPE", "loopchat:history:#rust"]), "stream");
    assert_eq!(store.unsaved(), 0);
    store.close(PATIENCE);
}

#[test]
fn paging_before_a_time_is_exact() {
    let redis = RedisServer::start();
    let (store, answers) = open(config(&redis.url));
    for t in 1..=10 {
        store.append(msg("#a", t, &format!("m{t}")));
    }
    wait_until("the commits", || store.stored() == 10);
    assert_eq!(times(&ask(&store, &answers, "#a", 3, Some(8))), [5, 6, 7]);
    assert_eq!(times(&ask(&store, &answers, "#a", 100, Some(3))), [1, 2]);
    assert!(ask(&store, &answers, "#a", 5, Some(1)).is_empty());
    assert!(ask(&store, &answers, "#a", 5, Some(0)).is_empty());
    assert!(ask(&store, &answers, "#a", 5, Some(-7)).is_empty());
    // Paging back from the oldest time seen walks the whole room without a gap.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = ask(&store, &answers, "#a", 4, before);
        if page.is_empty() {
            break;
        }
        before = Some(page[0].at_ms);
        seen.splice(0..0, times(&page));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    store.close(PATIENCE);
}

#[test]
fn ids_grow_strictly_within_a_room_when_two_nodes_clocks_disagree() {
    let redis = RedisServer::start();
    let (ahead, answers) = open(config(&redis.url));
    let (behind, _) = open(config(&redis.url));
    ahead.append(msg("#a", 1000, "a1"));
    ahead.append(msg("#a", 1001, "a2"));
    ahead.append(msg("#a", 1002, "a3"));
    wait_until("the first node's commits", || ahead.stored() == 3);
    // The second node's clock is half a second behind, then collides.
    behind.append(msg("#A", 500, "b1"));
    behind.append(msg("#A", 1001, "b2"));
    wait_until("the second node's commits", || behind.stored() == 2);
    ahead.append(msg("#a", 1003, "a4"));
    wait_until("the first node's last commit", || ahead.stored() == 4);

    assert_eq!(
        stream_ids(&redis, "#a"),
        ["1000-0", "1001-0", "1002-0", "1003-0", "1004-0", "1005-0"]
    );
    let all = ask(&ahead, &answers, "#a", 10, None);
    assert_eq!(texts(&all), ["a1", "a2", "a3", "b1", "b2", "a4"]);
    assert_eq!(times(&all), [1000, 1001, 1002, 1003, 1004, 1005]);
    assert_eq!(
        all[3].room, "#A",
        "each message keeps the room as its sender wrote it"
    );
    // Every stored time is an exact cursor.
    assert_eq!(
        texts(&ask(&ahead, &answers, "#a", 2, Some(1004))),
        ["a3", "b1"]
    );
    ahead.close(PATIENCE);
    behind.close(PATIENCE);
}

#[test]
fn a_rooms_stream_is_capped_near_the_cap() {
    let redis = RedisServer::start();
    let (store, answers) = open(config(&redis.url));
    let total = HISTORY_CAP + 2_000;
    for t in 1..=total as i64 {
        store.append(msg("#busy", t, "x"));
    }
    wait_until("the commits", || store.stored() == total as u64);
    let len: usize = redis
        .cli(&["XLEN", "loopchat:history:#busy"])
        .parse()
        .unwrap();
    // `MAXLEN ~` trims whole stream nodes (100 entries by default): never below the
    // cap, at most a node above it.
    assert!(
        (HISTORY_CAP..=HISTORY_CAP + 100).contains(&len),
        "{len} entries kept"
    );
    let newest = ask(&store, &answers, "#busy", 3, None);
    assert_eq!(
        times(&newest),
        [total as i64 - 2, total as i64 - 1, total as i64]
    );
    store.close(PATIENCE);
}

#[test]
fn a_store_on_another_database_number_keeps_its_keys_there() {
    let redis = RedisServer::start();
    let (store, _answers) = open(config(&format!("{}/3", redis.url)));
    store.append(msg("#a", 1, "in db 3"));
    wait_until("the commit", || store.stored() == 1);
    assert_eq!(redis.cli(&["EXISTS", "loopchat:history:#a"]), "0");
    let keyspace = redis.cli(&["INFO", "keyspace"]);
    assert!(keyspace.contains("db3:keys=1"), "{keyspace}");
    store.close(PATIENCE);
}

#[test]
fn appends_go_on_after_redis_forgets_the_scripts() {
    let redis = RedisServer::start();
    let (store, answers) = open(config(&redis.url));
    store.append(msg("#a", 1, "before"));
    wait_until("the first commit", || store.stored() == 1);
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    store.append(msg("#a", 2, "after"));
    wait_until("the second commit", || store.stored() == 2);
    assert_eq!(store.unsaved(), 0);
    assert_eq!(
        texts(&ask(&store, &answers, "#a", 10, None)),
        ["before", "after"]
    );
    store.close(PATIENCE);
}

#[test]
fn a_stream_emptied_by_hand_still_takes_messages_with_older_times() {
    let redis = RedisServer::start();
    let (store, answers) = open(config(&redis.url));
    store.append(msg("#a", 1000, "gone"));
    wait_until("the first commit", || store.stored() == 1);
    // Empty, but Redis remembers its last id and refuses any at or below it.
    assert_eq!(
        redis.cli(&["XTRIM", "loopchat:history:#a", "MAXLEN", "0"]),
        "1"
    );
    store.append(msg("#a", 500, "late clock"));
    wait_until("the second commit", || store.stored() == 2);
    assert_eq!(store.unsaved(), 0);
    assert_eq!(stream_ids(&redis, "#a"), ["1001-0"]);
    assert_eq!(
        texts(&ask(&store, &answers, "#a", 10, None)),
        ["late clock"]
    );
    store.close(PATIENCE);
}

// ---- retention -----------------------------------------------------------------------

#[test]
fn retention_trims_old_messages_and_removes_emptied_rooms() {
    let redis = RedisServer::start();
    let (store, _answers) = open(config(&redis.url));
    let year_ago = now_ms() - 365 * 24 * 3600 * 1000;
    for t in 0..1500 {
        store.append(msg("#old", year_ago + t, "old"));
        store.append(msg("#mixed", year_ago + t, "old"));
    }
    let now = now_ms();
    for t in 0..3 {
        store.append(msg("#mixed", now + t, "new"));
    }
    store.close(PATIENCE);
    // A store keeping a month prunes what is older at once, in steps.
    let month = StoreConfig {
        retain: Duration::from_secs(30 * 24 * 3600),
        ..config(&redis.url)
    };
    let (store, answers) = open(month);
    wait_until("retention", || {
        redis.cli(&["XLEN", "loopchat:history:#mixed"]) == "3"
            && redis.cli(&["EXISTS", "loopchat:history:#old"]) == "0"
    });
    assert_eq!(
        times(&ask(&store, &answers, "#mixed", 3000, None)),
        [now, now + 1, now + 2]
    );
    assert!(ask(&store, &answers, "#old", 3000, None).is_empty());
    store.close(PATIENCE);
}

#[test]
fn a_retention_step_stops_near_its_row_budget_and_the_next_goes_on() {
    let redis = RedisServer::start();
    let mut backend = RedisBackend::open(&redis.url).unwrap();
    let rooms = 40;
    let batch: Vec<Message> = (0..rooms)
        .flat_map(|r| (1..=50).map(move |t| msg(&format!("#r{r}"), t, "old")))
        .collect();
    backend.append(&batch).unwrap();
    backend.append(&[msg("#r0", 5000, "kept")]).unwrap();
    let first = backend.prune(1000, 1000).unwrap();
    assert!((1000..2000).contains(&first), "first step trimmed {first}");
    let mut total = first;
    for _ in 0..10 {
        match backend.prune(1000, 1000).unwrap() {
            0 => break,
            n => total += n,
        }
    }
    assert_eq!(total, rooms * 50);
    assert_eq!(backend.prune(1000, 1000).unwrap(), 0);
    assert_eq!(
        backend.recent("#r0", 10, None).unwrap(),
        [msg("#r0", 5000, "kept")]
    );
    // The emptied rooms are gone, the one with a newer message stays.
    let keys = redis.cli(&["KEYS", "loopchat:history:*"]);
    assert_eq!(keys, "loopchat:history:#r0");
}

// ---- accounts ------------------------------------------------------------------------

#[test]
fn accounts_and_room_keys_are_shared_by_every_store_on_one_redis() {
    let redis = RedisServer::start();
    let (mut first, _answers) = open(config(&redis.url));
    assert_eq!(first.take_secrets(), Default::default());
    assert!(first.put_secret(Secret::Account {
        name: "Alice".into(),
        phc: "$argon2id$fake-alice".into(),
    }));
    assert!(first.put_secret(Secret::RoomKey {
        room: "#Club".into(),
        phc: "$argon2id$fake-club".into(),
    }));
    // A password change replaces the hash.
    assert!(first.put_secret(Secret::Account {
        name: "Alice".into(),
        phc: "$argon2id$fake-alice-2".into(),
    }));
    wait_until("the secrets to reach Redis", || {
        redis.cli(&["HGET", "loopchat:account:alice", "phc"]) == "$argon2id$fake-alice-2"
            && redis.cli(&["HGET", "loopchat:roomkey:#club", "phc"]) == "$argon2id$fake-club"
    });
    // Another node, opened now, reads them at open.
    let (mut second, _answers) = open(config(&redis.url));
    let secrets = second.take_secrets();
    assert_eq!(
        secrets.accounts,
        [("Alice".to_string(), "$argon2id$fake-alice-2".to_string())]
    );
    assert_eq!(
        secrets.room_keys,
        [("#Club".to_string(), "$argon2id$fake-club".to_string())]
    );
    first.close(PATIENCE);
    second.close(PATIENCE);
}

// ---- trouble -------------------------------------------------------------------------

#[test]
fn an_unreachable_redis_is_an_error_at_open_naming_the_url() {
    let (port, url) = dead_url();
    let start = Instant::now();
    let e = match Store::open(config(&url), Box::new(|_| {})) {
        Ok(_) => panic!("a store opened on {url}, where nothing listens"),
        Err(e) => e.to_string(),
    };
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.contains(&format!("redis://127.0.0.1:{port}/0")), "{e}");
    assert!(e.contains("cannot connect"), "{e}");
    assert!(e.contains("refused"), "{e}");
    // A password in the URL is never shown.
    let with_password = format!("redis://:hunter2@127.0.0.1:{port}/1");
    let e = match Store::open(config(&with_password), Box::new(|_| {})) {
        Ok(_) => panic!("a store opened on {url}, where nothing listens"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains(&format!("redis://127.0.0.1:{port}/1")), "{e}");
}

#[test]
fn a_url_that_is_not_redis_is_refused_at_open() {
    let e = match Store::open(config("http://127.0.0.1:1/"), Box::new(|_| {})) {
        Ok(_) => panic!("an http URL opened"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("http://127.0.0.1:1/"), "{e}");
    assert!(e.contains("not a usable Redis URL"), "{e}");
}

#[test]
fn a_redis_that_stops_answering_costs_messages_not_a_stuck_storage_thread() {
    let redis = RedisServer::start();
    let (store, _answers) = open(config(&redis.url));
    store.append(msg("#a", 1, "before"));
    wait_until("the first commit", || store.stored() == 1);
    redis.pause();
    let start = Instant::now();
    store.append(msg("#a", 2, "unanswered"));
    wait_until("the commit to time out", || store.unsaved() == 1);
    // The read timeout is 2 s; well before PATIENCE, the thread is free again.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    redis.resume();
    // The timed-out connection was dropped (Redis may still have run that batch: it is
    // counted as unsaved all the same); the next one works.
    let mut t = 3;
    wait_until("an append to succeed after resuming", || {
        if store.stored() == 2 {
            return true;
        }
        if store.stored() + store.unsaved() == t as u64 - 1 {
            store.append(msg("#a", t, "after"));
            t += 1;
        }
        false
    });
    store.close(PATIENCE);
}

#[test]
fn after_a_redis_restart_appends_succeed_again_and_the_lost_ones_are_counted() {
    let mut redis = RedisServer::start();
    let (store, answers) = open(config(&redis.url));
    store.append(msg("#a", 1, "before"));
    wait_until("the first commit", || store.stored() == 1);

    redis.kill();
    store.append(msg("#a", 2, "lost"));
    wait_until("the failed commit", || store.unsaved() == 1);
    // Reading fails too, and is answered as empty rather than not at all.
    assert!(ask(&store, &answers, "#a", 10, None).is_empty());

    redis.restart();
    // The store reconnects on its own, after a backoff of at most two seconds: keep
    // talking until a message gets through. Each is either stored or counted.
    let mut sent = 2;
    let mut t = 3;
    wait_until("an append to succeed after the restart", || {
        let (stored, unsaved) = (store.stored(), store.unsaved());
        if stored == 2 {
            return true;
        }
        if stored + unsaved == sent {
            store.append(msg("#a", t, "after"));
            sent += 1;
            t += 1;
        }
        false
    });
    // Only one message was ever in flight: the one stored was the last sent.
    assert_eq!(store.unsaved(), sent - 2);
    // Persistence is off: the restarted Redis holds only what came after.
    let after = ask(&store, &answers, "#a", 10, None);
    assert_eq!(texts(&after), ["after"]);
    assert_eq!(times(&after), [t - 1]);
    store.close(PATIENCE);
}
