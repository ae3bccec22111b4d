//! History through real sockets: replay on entering a room, the end line, paging,
//! what is never stored, `--db none`, persistence across a clean restart and a kill,
//! and each way the database can fail at start. Databases live in temporary
//! directories, never in the working directory.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use loopchat::ServerConfig;
use util::{Binary, Client, start};

/// A temporary directory, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("loopchat-history-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("chat.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test defaults with history replayed on entry (in memory unless `db` is given).
fn with_history(db: Option<&Path>) -> ServerConfig {
    ServerConfig {
        db: db.map_or("none".into(), |p| p.to_str().unwrap().to_string()),
        history_replay: 20,
        db_flush: Duration::from_millis(10),
        ..util::config()
    }
}

/// One `HISTORY:` line split into (room, time, from, text).
#[track_caller]
fn history_line(line: &str) -> (String, i64, String, String) {
    let rest = line
        .strip_prefix("HISTORY:")
        .unwrap_or_else(|| panic!("not a history line: {line:?}"))
        .trim_end_matches('\n');
    let mut parts = rest.splitn(4, ':');
    let room = parts.next().unwrap().to_string();
    let at: i64 = parts.next().unwrap().parse().unwrap();
    let from = parts.next().unwrap().to_string();
    let text = parts.next().unwrap().to_string();
    (room, at, from, text)
}

/// Reads `n` history lines and the end line for `room`; returns (from, text) pairs and
/// asserts that the times strictly increase.
#[track_caller]
fn read_replay(c: &mut Client, room: &str, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let mut last = i64::MIN;
    for _ in 0..n {
        let (r, at, from, text) = history_line(&c.read_line());
        assert_eq!(r, room);
        assert!(at > last, "times strictly increase: {at} after {last}");
        last = at;
        got.push((from, text));
    }
    c.expect_line(&format!("SERVER:end of history for {room}\n"));
    got
}

/// Connects, takes `name`, and reads the replay of the lobby (`n` messages).
#[track_caller]
fn join_with_replay(
    addr: std::net::SocketAddr,
    name: &str,
    n: usize,
) -> (Client, Vec<(String, String)>) {
    let mut c = Client::connect(addr);
    c.send_line(&format!("JOIN:{name}"));
    c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
    let replay = read_replay(&mut c, "#lobby", n);
    (c, replay)
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn entering_a_room_replays_its_last_messages_then_the_end_line() {
    let server = start(with_history(None));
    let (mut alice, empty) = join_with_replay(server.addr, "alice", 0);
    assert!(empty.is_empty());
    for i in 0..3 {
        alice.send_line(&format!("SAY::message {i}"));
    }
    alice.barrier();
    let (mut bob, replay) = join_with_replay(server.addr, "bob", 3);
    assert_eq!(
        replay,
        pairs(&[
            ("alice", "message 0"),
            ("alice", "message 1"),
            ("alice", "message 2")
        ])
    );
    alice.expect_line("JOIN:bob\n");
    alice.send_line("SAY::live");
    bob.expect_line("SAY:alice:live\n");
}

#[test]
fn the_replay_is_capped_and_a_room_move_replays_that_room() {
    let server = start(ServerConfig {
        history_replay: 2,
        ..with_history(None)
    });
    let (mut alice, _) = join_with_replay(server.addr, "alice", 0);
    alice.send_line("JOIN:#rust");
    alice.expect_line("SERVER:you are now in #rust\n");
    read_replay(&mut alice, "#rust", 0);
    for text in ["one", "two", "three"] {
        alice.send_line(&format!("SAY::{text}"));
    }
    alice.barrier();
    let (mut bob, _) = join_with_replay(server.addr, "bob", 0);
    bob.send_line("JOIN:#RUST");
    bob.expect_line("SERVER:you are now in #rust\n");
    let replay = read_replay(&mut bob, "#rust", 2);
    assert_eq!(replay, pairs(&[("alice", "two"), ("alice", "three")]));
}

#[test]
fn paging_goes_back_with_before() {
    let server = start(with_history(None));
    let (mut alice, _) = join_with_replay(server.addr, "alice", 0);
    for i in 0..5 {
        alice.send_line(&format!("SAY::m{i}"));
    }
    alice.send_line("HISTORY:2");
    let last_two = (0..2)
        .map(|_| history_line(&alice.read_line()))
        .collect::<Vec<_>>();
    alice.expect_line("SERVER:end of history for #lobby\n");
    assert_eq!(last_two[0].3, "m3");
    assert_eq!(last_two[1].3, "m4");
    alice.send_line(&format!("HISTORY:10:{}", last_two[0].1));
    let earlier: Vec<String> = (0..3).map(|_| history_line(&alice.read_line()).3).collect();
    assert_eq!(earlier, ["m0", "m1", "m2"]);
    alice.expect_line("SERVER:end of history for #lobby\n");
    alice.send_line("HISTORY:0");
    alice
        .expect_line("ERROR:usage: HISTORY:<n> or HISTORY:<n>:<before_unix_ms>, n from 1 to 500\n");
    alice.send_line("HISTORY:501");
    alice.expect_prefix("ERROR:usage: HISTORY:");
}

#[test]
fn text_mode_renders_history_for_people() {
    let server = start(with_history(None));
    let (mut alice, _) = join_with_replay(server.addr, "alice", 0);
    alice.send_line("SAY::hello there");
    alice.barrier();
    let mut carol = Client::connect(server.addr);
    carol.send(b"/nick carol\r\n");
    carol.expect_line("[server] you are carol in #lobby\r\n");
    let line = carol.read_line();
    let shown = line.trim_end();
    assert!(
        shown.len() == "[HH:MM] <alice> hello there".len()
            && shown.starts_with('[')
            && shown[3..4] == *":"
            && shown.ends_with("] <alice> hello there"),
        "{line:?}"
    );
    carol.expect_line("[server] end of history for #lobby\r\n");
    carol.send(b"/history 1\r\n");
    assert!(carol.read_line().ends_with("] <alice> hello there\r\n"));
    carol.expect_line("[server] end of history for #lobby\r\n");
}

#[test]
fn private_messages_are_never_stored() {
    let dir = TempDir::new("private");
    {
        let server = start(with_history(Some(&dir.db())));
        let (mut alice, _) = join_with_replay(server.addr, "alice", 0);
        let (mut bob, _) = join_with_replay(server.addr, "bob", 0);
        alice.expect_line("JOIN:bob\n");
        alice.send_line("MSG:bob:the-secret-word-xyzzy");
        bob.expect_line("MSG:alice:the-secret-word-xyzzy\n");
        alice.send_line("SAY::public words");
        bob.expect_line("SAY:alice:public words\n");
        server.shutdown_and_wait(Duration::from_secs(5));
    }
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"public words"), "the room message is in the database");
    assert!(!has(b"xyzzy"), "the private message is nowhere on disk");
}

#[test]
fn without_a_database_history_lives_in_memory_only() {
    let server = start(with_history(None));
    let (mut alice, _) = join_with_replay(server.addr, "alice", 0);
    alice.send_line("SAY::kept in memory");
    alice.barrier();
    let (_bob, replay) = join_with_replay(server.addr, "bob", 1);
    assert_eq!(replay, pairs(&[("alice", "kept in memory")]));
}

#[test]
fn history_survives_a_clean_restart() {
    let dir = TempDir::new("restart");
    let db = dir.db();
    let db = db.to_str().unwrap();
    let mut first = Binary::start(&["--db", db, "--history-replay", "20"]);
    let (mut alice, _) = join_with_replay(first.addr, "alice", 0);
    for i in 0..3 {
        alice.send_line(&format!("SAY::before restart {i}"));
    }
    alice.barrier();
    first.signal(libc::SIGTERM);
    assert!(first.wait(Duration::from_secs(5)).success());

    let second = Binary::start(&["--db", db, "--history-replay", "20"]);
    let (_bob, replay) = join_with_replay(second.addr, "bob", 3);
    assert_eq!(
        replay,
        pairs(&[
            ("alice", "before restart 0"),
            ("alice", "before restart 1"),
            ("alice", "before restart 2")
        ])
    );
}

#[test]
fn a_kill_after_a_flush_loses_nothing_flushed() {
    let dir = TempDir::new("kill");
    let db = dir.db();
    let db = db.to_str().unwrap();
    let mut first = Binary::start(&["--db", db, "--db-flush", "10ms", "--history-replay", "20"]);
    let (mut alice, _) = join_with_replay(first.addr, "alice", 0);
    alice.send_line("SAY::committed");
    // Wait, through a reader of the database file, for the group commit to happen.
    let deadline = std::time::Instant::now() + util::TIMEOUT;
    while !committed(db, "committed") {
        assert!(
            std::time::Instant::now() < deadline,
            "not committed within the flush interval"
        );
        alice.barrier();
    }
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(5));

    let second = Binary::start(&["--db", db, "--history-replay", "20"]);
    let (_bob, replay) = join_with_replay(second.addr, "bob", 1);
    assert_eq!(replay, pairs(&[("alice", "committed")]));
}

/// Whether a message with `text` is committed in the database at `db`, as another
/// reader of the file sees it.
fn committed(db: &str, text: &str) -> bool {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, flags) else {
        return false;
    };
    conn.query_row(
        "SELECT count(*) FROM messages WHERE text = ?1",
        [text],
        |row| row.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// Runs `loopchat server` with `args` and expects it to exit 1 before listening, with
/// `needle` in what it says.
#[track_caller]
fn fails_to_start(args: &[&str], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["server", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(needle), "expected {needle:?} in: {said}");
    assert!(
        !said.contains("listening on"),
        "it must fail before listening: {said}"
    );
}

#[test]
fn a_database_that_cannot_be_used_stops_the_server_before_it_listens() {
    let dir = TempDir::new("fail");
    let missing = dir.0.join("no/such/dir/chat.db");
    fails_to_start(&["--db", missing.to_str().unwrap()], "no/such/dir/chat.db");

    let garbage = dir.0.join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    fails_to_start(&["--db", garbage.to_str().unwrap()], "garbage.db");

    let db = dir.db();
    let db = db.to_str().unwrap();
    let _holder = Binary::start(&["--db", db]);
    fails_to_start(&["--db", db], "chat.db");
}

#[test]
fn what_is_said_while_a_replay_loads_comes_after_the_end_line() {
    let dir = TempDir::new("hold");
    let server = start(with_history(Some(&dir.db())));
    let (mut alice, _) = join_with_replay(server.addr, "alice", 0);
    alice.send_line("JOIN:#quiet");
    alice.expect_line("SERVER:you are now in #quiet\n");
    read_replay(&mut alice, "#quiet", 0);
    for i in 0..3 {
        alice.send_line(&format!("SAY::old {i}"));
    }
    // The room empties, so its tail leaves memory: the next entry asks the store.
    alice.send_line("JOIN:#lobby");
    alice.expect_line("SERVER:you are now in #lobby\n");
    read_replay(&mut alice, "#lobby", 0);
    alice.barrier();

    let (mut bob, _) = join_with_replay(server.addr, "bob", 0);
    let (mut carol, _) = join_with_replay(server.addr, "carol", 0);
    bob.expect_line("JOIN:carol\n");
    bob.send_line("JOIN:#quiet");
    bob.expect_line("SERVER:you are now in #quiet\n");
    // Whether or not bob's replay has loaded yet, what carol does now reaches bob
    // after it.
    carol.send_line("JOIN:#quiet");
    carol.send_line("SAY::live");
    let old = read_replay(&mut bob, "#quiet", 3);
    assert_eq!(
        old,
        pairs(&[("alice", "old 0"), ("alice", "old 1"), ("alice", "old 2")])
    );
    bob.expect_line("JOIN:carol\n");
    bob.expect_line("SAY:carol:live\n");
    carol.expect_line("LEAVE:bob\n");
    carol.expect_line("SERVER:you are now in #quiet\n");
    assert_eq!(read_replay(&mut carol, "#quiet", 3), old);
}

#[test]
fn a_move_before_the_first_replay_loads_holds_nothing_back_for_good() {
    let dir = TempDir::new("move");
    let server = start(with_history(Some(&dir.db())));
    // A first name and a move at once, on a fresh server: the lobby's replay is still
    // being loaded when the lobby empties again.
    let mut c = Client::connect(server.addr);
    c.send(b"JOIN:alice\nJOIN:#rust\nWHO:\n");
    c.expect_line("SERVER:you are alice in #lobby\n");
    let mut rest = Vec::new();
    while rest
        .last()
        .is_none_or(|l: &String| !l.starts_with("SERVER:#rust (1)"))
    {
        rest.push(c.read_line());
    }
    assert!(
        rest.contains(&"SERVER:you are now in #rust\n".to_string()),
        "{rest:?}"
    );
    assert!(
        rest.contains(&"SERVER:end of history for #rust\n".to_string()),
        "{rest:?}"
    );
}
