//! Several servers as one chat through a real `redis-server` (`--cluster`): rooms,
//! presence, renames, private messages, `WHO:`/`ROOMS:`, unique names under a race,
//! bans, a node killed, Redis killed and back, `--reuse-port`.
//!
//! Each test starts its own Redis on a free loopback port (persistence off) and its own
//! servers, in-process or as the real binary when a process must be killed. Nothing
//! waits by sleeping: a `WHO:` goes through the same ordered queue to Redis as the
//! subscription of the asker's room, so its answer says the room is heard; other
//! waits poll with a bound.

mod util;

use std::time::{Duration, Instant};

use util::cluster::{heard, member, node, node_with, read_until};
use util::redis::RedisServer;
use util::{Binary, Client, GREETING};

/// [`heard`], passing over the presence lines that may come before the answer.
#[track_caller]
fn heard_among_presence(c: &mut Client) {
    c.send_line("WHO:");
    loop {
        let line = c.read_line();
        if line.starts_with("SERVER:#") {
            return;
        }
        assert!(line.starts_with("JOIN:"), "{line:?}");
    }
}

#[test]
fn chat_presence_and_renames_cross_nodes_byte_exact() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    alice.send_line("SAY:hello from a");
    bob.expect_line("SAY:alice:hello from a\n");
    bob.send_line("SAY:hi, from b");
    alice.expect_line("SAY:bob:hi, from b\n");
    bob.send_line("JOIN:robert");
    bob.expect_line("SERVER:bob is now known as robert\n");
    alice.expect_line("SERVER:bob is now known as robert\n");
    // A move to another room: the lobby on the other node hears the leave, even
    // though nobody is left in the lobby on this one.
    bob.send_line("JOIN:#rust");
    bob.expect_line("SERVER:you are now in #rust\n");
    alice.expect_line("LEAVE:robert\n");
    heard(&mut bob);
    alice.send_line("JOIN:#rust");
    alice.expect_line("SERVER:you are now in #rust\n");
    bob.expect_line("JOIN:alice\n");
    // A node's own publications are not delivered twice to its members.
    alice.send_line("SAY:once");
    bob.expect_line("SAY:alice:once\n");
    bob.send_line("LEAVE:bye");
    bob.expect_line("SERVER:goodbye\n");
    alice.expect_line("LEAVE:robert\n");
    alice.expect_silence(Duration::from_millis(300));
}

#[test]
fn order_per_sender_holds_across_three_nodes_without_duplicates() {
    let redis = RedisServer::start();
    let nodes = [node(&redis, "a"), node(&redis, "b"), node(&redis, "c")];
    let mut senders = vec![member(nodes[0].addr, "s1"), member(nodes[1].addr, "s2")];
    let mut readers = vec![
        member(nodes[0].addr, "r1"),
        member(nodes[1].addr, "r2"),
        member(nodes[2].addr, "r3"),
    ];
    for r in &mut readers {
        heard_among_presence(r);
    }
    for s in &mut senders {
        heard_among_presence(s);
    }
    const N: usize = 300;
    for i in 0..N {
        for (k, s) in senders.iter_mut().enumerate() {
            s.send_line(&format!("SAY:m{}-{i}", k + 1));
        }
    }
    for r in &mut readers {
        let mut next = [0usize; 2];
        while next != [N, N] {
            let line = r.read_line();
            let Some(rest) = line.trim_end().strip_prefix("SAY:s") else {
                continue; // presence of the later joiners
            };
            let (k, i) = rest.split_once(":m").unwrap();
            let k: usize = k.parse::<usize>().unwrap() - 1;
            let (_, i) = i.split_once('-').unwrap();
            let i: usize = i.parse().unwrap();
            assert_eq!(i, next[k], "sender {} out of order or duplicated", k + 1);
            next[k] += 1;
        }
        r.expect_silence(Duration::from_millis(200));
    }
}

#[test]
fn two_nodes_claiming_one_name_at_once_grant_it_exactly_once() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    for round in 0..20 {
        let name = format!("race{round}");
        let mut x = Client::connect(a.addr);
        let mut y = Client::connect(b.addr);
        x.send_line(&format!("JOIN:{name}"));
        y.send_line(&format!("JOIN:{}", name.to_uppercase()));
        let answers = [x.read_line(), y.read_line()];
        let won = answers
            .iter()
            .filter(|l| l.starts_with("SERVER:you are"))
            .count();
        let lost = answers
            .iter()
            .filter(|l| l.starts_with("ERROR:name") && l.ends_with("is taken\n"))
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {answers:?}");
    }
}

#[test]
fn private_messages_who_and_rooms_answer_for_the_whole_cluster() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    let mut carol = member(b.addr, "carol");
    alice.expect_lines(&["JOIN:bob\n", "JOIN:carol\n"]);
    bob.expect_line("JOIN:carol\n");
    carol.send_line("JOIN:#Rust");
    carol.expect_line("SERVER:you are now in #Rust\n");
    alice.expect_line("LEAVE:carol\n");
    bob.expect_line("LEAVE:carol\n");
    alice.send_line("MSG:BOB:psst, across");
    bob.expect_line("MSG:alice:psst, across\n");
    bob.send_line("MSG:alice:back");
    alice.expect_line("MSG:bob:back\n");
    alice.send_line("MSG:nobody:hello?");
    alice.expect_line("ERROR:no such user nobody\n");
    alice.send_line("WHO:");
    alice.expect_line("SERVER:#lobby (2): alice bob\n");
    alice.send_line("ROOMS:");
    alice.expect_line("SERVER:rooms (2): #lobby (2) #Rust (1)\n");
    // A room spread over both nodes is counted once, with all its members.
    alice.send_line("JOIN:#rust");
    alice.expect_line("SERVER:you are now in #rust\n");
    carol.expect_line("JOIN:alice\n");
    alice.send_line("ROOMS:");
    alice.expect_line("SERVER:rooms (2): #lobby (1) #rust (2)\n");
    carol.send_line("WHO:");
    carol.expect_line("SERVER:#Rust (2): alice carol\n");
}

#[test]
fn a_private_message_to_a_busy_recipient_on_another_node_is_refused_to_the_sender() {
    let redis = RedisServer::start();
    let a = node(&redis, "a");
    let b = node_with(&redis, "b", |c| {
        c.msg_in_rate = 0.001;
        c.msg_in_burst = 1.0;
    });
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    alice.send_line("MSG:bob:one");
    bob.expect_line("MSG:alice:one\n");
    alice.send_line("MSG:bob:two");
    alice.expect_line("ERROR:bob is receiving too fast, message dropped\n");
    bob.expect_silence(Duration::from_millis(200));
}

#[test]
fn accounts_registered_on_one_node_log_in_on_another_and_take_the_name_over() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut first = Client::connect(a.addr);
    first.send_line("REGISTER:dana:correct horse");
    first.expect_line("SERVER:logged in as dana\n");
    first.expect_line("SERVER:you are dana in #lobby\n");
    heard(&mut first);
    // The account is known on the other node: its name is reserved there.
    let mut guest = Client::connect(b.addr);
    guest.send_line("JOIN:dana");
    guest.expect_prefix("ERROR:");
    // Logging in on the other node takes the name from the first connection.
    let mut second = Client::connect(b.addr);
    second.send_line("AUTH:dana:correct horse");
    second.expect_line("SERVER:logged in as dana\n");
    second.expect_line("SERVER:you are dana in #lobby\n");
    read_until(
        &mut first,
        "ERROR:logged in elsewhere, closing",
        Duration::from_secs(5),
    );
}

#[test]
fn a_ban_on_one_node_refuses_the_address_on_the_other_and_expires_on_both() {
    let redis = RedisServer::start();
    let strict = |c: &mut loopchat::ServerConfig| {
        c.rate = 1.0;
        c.burst = 3.0;
        c.max_strikes = 1;
        c.ban_time = Duration::from_secs(2);
    };
    let a = node_with(&redis, "a", strict);
    let b = node_with(&redis, "b", strict);
    let ip: std::net::IpAddr = "127.0.0.23".parse().unwrap();
    let mut watcher = Client::connect_named_from(b.addr, ip, "watcher");
    heard(&mut watcher);
    let mut flooder = Client::connect_named_from(a.addr, ip, "flooder");
    for i in 0..10 {
        flooder.send_line(&format!("SAY:{i}"));
    }
    read_until(
        &mut flooder,
        "ERROR:banned for 2 seconds: too many strikes, closing",
        Duration::from_secs(5),
    );
    // The other node closes the address's connections there too.
    read_until(
        &mut watcher,
        "ERROR:banned for 2 seconds: too many strikes, closing",
        Duration::from_secs(5),
    );
    let mut refused = Client::connect_raw_from(b.addr, ip);
    let line = refused.read_line();
    assert!(line.starts_with("ERROR:banned for "), "{line}");
    // Expired on both nodes: both accept the address again.
    for addr in [a.addr, b.addr] {
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let mut c = Client::connect_raw_from(addr, ip);
            if c.read_line() == GREETING {
                break;
            }
            assert!(Instant::now() < deadline, "still banned on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_killed_node_frees_its_names_within_the_ttl() {
    let redis = RedisServer::start();
    let mut doomed = Binary::start(&[
        "--cluster",
        &redis.url,
        "--node-id",
        "doomed",
        "--cluster-ttl",
        "2s",
    ]);
    let b = node(&redis, "b");
    let mut holder = member(doomed.addr, "keeper");
    let mut other = member(b.addr, "other");
    other.send_line("JOIN:keeper");
    other.expect_line("ERROR:name keeper is taken\n");
    doomed.signal(libc::SIGKILL);
    doomed.wait(Duration::from_secs(5));
    holder.read_to_close();
    let killed = Instant::now();
    loop {
        other.send_line("JOIN:keeper");
        let line = other.read_line();
        if line == "SERVER:other is now known as keeper\n" {
            break;
        }
        assert_eq!(line, "ERROR:name keeper is taken\n");
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "the name was not freed within the TTL (2s)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_redis_each_node_serves_its_own_and_joins_up_again_when_it_returns() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut amy = member(a.addr, "amy");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:amy\n");
    alice.expect_line("JOIN:bob\n");
    amy.expect_line("JOIN:bob\n");
    redis.kill();
    // Local chat goes on.
    alice.send_line("SAY:still here");
    amy.expect_line("SAY:alice:still here\n");
    // Lists answer for this node; a remote user cannot be reached.
    alice.send_line("WHO:");
    alice.expect_line("SERVER:#lobby (2): alice amy\n");
    alice.send_line("MSG:bob:are you there");
    alice.expect_line(
        "ERROR:bob cannot be reached now: the cluster is unavailable, message dropped\n",
    );
    // A new member while Redis is away gets its name at once.
    let mut zed = member(b.addr, "zed");
    bob.expect_line("JOIN:zed\n");
    redis.restart();
    // Cross-node chat again, once the nodes are back (bounded polling).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        i += 1;
        let text = format!("SAY:ping{i}");
        alice.send_line(&text);
        amy.expect_line(&format!("SAY:alice:ping{i}\n"));
        if bob
            .read_line_within(Duration::from_millis(300))
            .is_some_and(|l| l.starts_with("SAY:alice:ping"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not join up again");
    }
    // Names held during the outage are claimed again: nobody else may take them.
    let mut late = Client::connect(a.addr);
    late.send_line("JOIN:zed");
    late.expect_line("ERROR:name zed is taken\n");
    zed.send_line("WHO:");
    read_until(
        &mut zed,
        "SERVER:#lobby (4): alice amy bob zed",
        Duration::from_secs(5),
    );
}

#[test]
fn a_name_granted_twice_during_an_outage_stays_with_the_earlier_claim() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut watcher = member(b.addr, "watcher");
    redis.kill();
    let mut first = member(a.addr, "twin");
    std::thread::sleep(Duration::from_millis(20));
    let mut second = member(b.addr, "twin");
    watcher.expect_line("JOIN:twin\n");
    redis.restart();
    let lines = read_until(
        &mut second,
        "ERROR:name twin was taken on another server while the cluster was split; you are a guest now",
        Duration::from_secs(15),
    );
    assert!(lines.is_empty(), "{lines:?}");
    let renamed = second.expect_prefix("SERVER:twin is now known as guest");
    assert!(renamed.len() > "SERVER:twin is now known as guest".len());
    let renamed = renamed.trim_end().replace("SERVER:", "");
    first.expect_line(&format!("SERVER:{renamed}\n"));
    first.send_line("WHO:");
    let who = first.expect_prefix("SERVER:#lobby (");
    assert!(who.contains(" twin"), "{who}");
}

#[test]
fn reuse_port_lets_two_processes_share_one_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let first = Binary::start_at(&addr, &["--reuse-port"]);
    let second = Binary::start_at(&addr, &["--reuse-port"]);
    assert_eq!(first.addr, second.addr);
    for _ in 0..20 {
        // `connect` reads the greeting: each connection was served by one of them.
        Client::connect(first.addr);
    }
    // Without the flag the port is refused to a second process.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["server", &addr, "--db", "none"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

#[test]
fn a_node_refuses_to_start_without_its_redis() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["server", "127.0.0.1:0", "--db", "none", "--cluster", &url])
        .output()
        .unwrap();
    // Not a configuration error (status 2): a service manager may try again.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot use Redis at {url}")), "{err}");
    // A node id that cannot work is one.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["server", "127.0.0.1:0", "--db", "none", "--cluster", &url])
        .args(["--node-id", "no/slashes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The text of each `HISTORY:` line until the end line, in order.
#[track_caller]
fn history_texts(c: &mut Client) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let line = c.read_line();
        if line.starts_with("SERVER:end of history") {
            return texts;
        }
        let Some(rest) = line.trim_end().strip_prefix("HISTORY:") else {
            panic!("not a history line: {line:?}");
        };
        // #room:<ms>:<from>:<text>
        let text = rest.splitn(4, ':').nth(3).expect("a text");
        texts.push(text.to_string());
    }
}

#[test]
fn history_and_accounts_live_in_redis_so_every_node_answers_the_same() {
    let redis = RedisServer::start();
    let with_history = |c: &mut loopchat::ServerConfig| c.history_replay = 5;
    let a = node_with(&redis, "a", with_history);
    let b = node_with(&redis, "b", with_history);
    let mut alice = Client::connect(a.addr);
    alice.send_line("REGISTER:alice:correct horse");
    alice.expect_line("SERVER:logged in as alice\n");
    alice.expect_line("SERVER:you are alice in #lobby\n");
    alice.expect_line("SERVER:end of history for #lobby\n");
    for i in 1..=3 {
        alice.send_line(&format!("SAY:said on a {i}"));
    }
    // Published before the other node's member comes: it is history, not live.
    heard(&mut alice);
    // The other node reads the room's history from Redis (polled: the first node
    // commits in groups, every 50 ms).
    let mut bob = Client::connect(b.addr);
    bob.send_line("JOIN:bob");
    bob.expect_line("SERVER:you are bob in #lobby\n");
    history_texts(&mut bob);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        bob.send_line("HISTORY:10");
        let texts = history_texts(&mut bob);
        if texts == ["said on a 1", "said on a 2", "said on a 3"] {
            break;
        }
        assert!(Instant::now() < deadline, "history on b: {texts:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A node started later knows the account from Redis.
    let c = node_with(&redis, "c", with_history);
    let mut thief = Client::connect(c.addr);
    thief.send_line("JOIN:alice");
    thief.expect_line("ERROR:name alice is registered; use AUTH:alice:<password>\n");
    // …and replays what was said on another node to a member entering the room.
    let mut carol = Client::connect(c.addr);
    carol.send_line("JOIN:carol");
    carol.expect_line("SERVER:you are carol in #lobby\n");
    assert_eq!(
        history_texts(&mut carol),
        ["said on a 1", "said on a 2", "said on a 3"]
    );
}
