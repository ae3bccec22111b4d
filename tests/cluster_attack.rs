//! Hostile tests of cluster mode (`--cluster`): a slow, paused or vanished Redis,
//! renames, room churn and name races across nodes, bans, and shutdown. Each test is a
//! regression test for something that went wrong, or pins down something that held.
//!
//! Like tests/cluster.rs: a real `redis-server` per test on a free loopback port, no
//! sleeping as synchronisation (a `WHO:` answer travels the same ordered queue to Redis
//! as the asker's room subscription), every wait bounded.

mod util;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use util::Client;
use util::cluster::{heard, member, node, node_with};
use util::redis::RedisServer;

/// Asks `WHO:` and returns the answer, passing over the rename notices before it.
#[track_caller]
fn who_past_renames(c: &mut Client) -> String {
    c.send_line("WHO:");
    loop {
        let line = c.read_line();
        if line.starts_with("SERVER:#") {
            return line;
        }
        assert!(line.contains(" is now known as "), "{line:?}");
    }
}

/// Renaming while alone in a room on one's node must not make the node stop hearing
/// the room for a moment: every line said on the other node arrives, in order.
#[test]
fn renames_of_a_lone_member_lose_nothing_said_on_another_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    const N: usize = 3000;
    const RENAMES: usize = 60;
    let mut flood = Vec::new();
    for i in 0..N {
        flood.extend_from_slice(format!("SAY:m{i}\n").as_bytes());
    }
    let sender = std::thread::spawn(move || {
        bob.send(&flood);
        bob
    });
    let mut next = 0;
    let mut renames = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while next < N {
        assert!(Instant::now() < deadline, "stuck at m{next}");
        if renames < RENAMES {
            renames += 1;
            // A new name, a new spelling of it, and back.
            let new = ["ally", "Ally", "alice"][(renames - 1) % 3];
            alice.send_line(&format!("JOIN:{new}"));
        }
        let Some(line) = alice.read_line_within(Duration::from_millis(2000)) else {
            panic!("nothing after m{next} (renames {renames})");
        };
        let line = line.trim_end();
        if let Some(i) = line.strip_prefix("SAY:bob:m") {
            let i: usize = i.parse().unwrap();
            assert_eq!(i, next, "a line from the other node was lost or reordered");
            next += 1;
        } else {
            assert!(line.starts_with("SERVER:"), "{line:?}");
        }
    }
    let mut bob = sender.join().unwrap();
    // Presence followed every rename: both nodes list the last name once (alice's
    // `WHO:` follows her renames to Redis).
    assert_eq!(
        who_past_renames(&mut alice),
        "SERVER:#lobby (2): alice bob\n"
    );
    assert_eq!(who_past_renames(&mut bob), "SERVER:#lobby (2): alice bob\n");
}

/// Opens `n` nameless connections to `addr` that each say something (and so take the
/// next guest name), then closes them. Returns the guest numbers they got.
#[track_caller]
fn take_guests(addr: SocketAddr, n: usize) -> Vec<u64> {
    let mut numbers = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(50);
        let mut clients: Vec<Client> = (0..batch).map(|_| Client::connect(addr)).collect();
        for c in &mut clients {
            c.send_line("SAY:x");
        }
        for c in &mut clients {
            let line = c.expect_prefix("SERVER:you are guest");
            let number = line["SERVER:you are guest".len()..]
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
            numbers.push(number);
        }
        left -= batch;
    }
    numbers
}

/// A node asks Redis for a new block of guest numbers when its block runs low. When
/// Redis could not answer, the node must ask again once Redis is back; else it never
/// gets another block and its guests take numbers from other nodes' blocks.
#[test]
fn a_block_of_guest_numbers_asked_for_during_an_outage_is_asked_for_again() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "a");
    let mut watcher = member(a.addr, "watcher");
    // Away from the guests' comings and goings.
    watcher.send_line("JOIN:#quiet");
    watcher.expect_line("SERVER:you are now in #quiet\n");
    // The first block is 1..=1000; half of it used leaves the node at the edge.
    let first = take_guests(a.addr, 500);
    assert_eq!(first.last(), Some(&500), "{first:?}");
    redis.kill();
    // The next guest brings the block below half: the node asks for a new one while
    // Redis is away. The watcher's `WHO:` is answered after that question.
    assert_eq!(take_guests(a.addr, 1), [501]);
    heard(&mut watcher);
    redis.restart();
    // Once Redis is back the node asks again and takes its guests from a new block.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let [n] = take_guests(a.addr, 1)[..] else {
            unreachable!()
        };
        if n > 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still numbering guests from the old block (guest{n})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether one of Redis's clients is held by `CLIENT PAUSE` on a script (a claim).
fn claim_held(redis: &RedisServer) -> bool {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .any(|l| l.contains(" flags=b ") && l.contains(" cmd=evalsha "))
}

/// Waits (bounded) until `until` holds, polling every few milliseconds.
#[track_caller]
fn poll(what: &str, within: Duration, mut until: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !until() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection on node a sends `line`, which claims `name` in Redis; Redis holds the
/// claim (writes paused) until the node gives up on it; meanwhile an operator kicks
/// the connection. Once Redis answers again, `name` must be free on node b: nobody
/// holds it.
fn claim_of_a_kicked_connection_is_let_go(line: &str, name: &str) {
    let redis = RedisServer::start();
    // A long TTL: no heartbeat is held by the pause instead of the claim.
    let a = node_with(&redis, "a", |c| {
        c.cluster_ttl = Duration::from_secs(30);
        c.admins = vec!["op".into()];
    });
    let b = node_with(&redis, "b", |c| c.cluster_ttl = Duration::from_secs(30));
    let mut op = Client::connect(a.addr);
    op.send_line("REGISTER:op:operator secret");
    op.expect_line("SERVER:logged in as op\n");
    op.expect_line("SERVER:you are op in #lobby\n");
    let mut victim = member(a.addr, "victim");
    let mut other = member(b.addr, "other");
    redis.cli(&["CLIENT", "PAUSE", "30000", "WRITE"]);
    victim.send_line(line);
    poll("the claim reaches Redis", Duration::from_secs(10), || {
        claim_held(&redis)
    });
    op.send_line("KICK:victim:go away");
    let said = victim.read_to_close();
    assert!(
        String::from_utf8_lossy(&said).contains("kicked"),
        "{}",
        util::show(&said)
    );
    drop(victim);
    // The node gives up on Redis (its command timeout) and answers the claim itself.
    poll(
        "the node gives up on the claim",
        Duration::from_secs(10),
        || !claim_held(&redis),
    );
    redis.cli(&["CLIENT", "UNPAUSE"]);
    // Node a is back in the cluster once its `WHO:` lists node b's member.
    poll("node a rejoins", Duration::from_secs(15), || {
        op.send_line("WHO:");
        loop {
            let line = op.read_line();
            if line.starts_with("SERVER:#lobby") {
                return line.contains(" other");
            }
        }
    });
    other.send_line(&format!("JOIN:{name}"));
    other.expect_line(&format!("SERVER:other is now known as {name}\n"));
}

/// `JOIN:<name>`: the claim of a connection gone before Redis answered is released.
#[test]
fn a_name_claimed_by_a_connection_kicked_while_redis_stalls_is_not_kept() {
    claim_of_a_kicked_connection_is_let_go("JOIN:leaky", "leaky");
}

/// `REGISTER:`: the same for the claim of a new account's name.
#[test]
fn an_account_name_claimed_by_a_connection_kicked_while_redis_stalls_is_not_kept() {
    claim_of_a_kicked_connection_is_let_go("REGISTER:leaky:some password", "leaky");
}

/// When Redis is slow the node's queue to it fills up and requests are refused. A
/// member entering a room then must still end up heard there by the node, once the
/// queue has room again: a refused subscription is not lost for good.
#[test]
fn a_room_entered_while_the_backplane_queue_is_full_is_heard_once_it_drains() {
    let redis = RedisServer::start();
    let long_ttl = |c: &mut loopchat::ServerConfig| c.cluster_ttl = Duration::from_secs(30);
    let a = node_with(&redis, "a", long_ttl);
    let b = node_with(&redis, "b", long_ttl);
    let mut bob = member(b.addr, "bob");
    bob.send_line("JOIN:#fresh");
    bob.expect_line("SERVER:you are now in #fresh\n");
    heard(&mut bob);
    let mut flooder = member(a.addr, "flooder");
    let mut alice = member(a.addr, "alice");
    flooder.expect_line("JOIN:alice\n");
    alice.send_line("JOIN:#elsewhere");
    alice.expect_line("SERVER:you are now in #elsewhere\n");
    flooder.expect_line("LEAVE:alice\n");
    let mut carol = member(a.addr, "carol");
    flooder.expect_line("JOIN:carol\n");
    carol.send_line("JOIN:#side");
    carol.expect_line("SERVER:you are now in #side\n");
    flooder.expect_line("LEAVE:carol\n");
    // Redis holds node a's next command (less than the node's 2 s command timeout)
    // while the flooder's lines fill the node's queue (65 536 requests) past full.
    redis.cli(&["CLIENT", "PAUSE", "1900", "WRITE"]);
    let mut flood = Vec::new();
    for i in 0..70_000 {
        flood.extend_from_slice(format!("SAY:{i}\n").as_bytes());
    }
    flood.extend_from_slice(b"NOPE\n");
    flooder.send(&flood);
    flooder.expect_prefix("ERROR:");
    // A private message the full queue refuses is refused to its sender, not lost
    // without a word. (On a machine so slow that the queue drained meanwhile, it is
    // delivered instead.)
    carol.send_line("MSG:bob:are you there");
    let refused = carol.read_line_within(Duration::from_secs(2));
    if let Some(line) = &refused {
        assert_eq!(
            line,
            "ERROR:bob cannot be reached now: the cluster is unavailable, message dropped\n"
        );
    }
    alice.send_line("JOIN:#fresh");
    alice.expect_line("SERVER:you are now in #fresh\n");
    carol.send_line("JOIN:caroline");
    carol.expect_line("SERVER:carol is now known as caroline\n");
    // Once the queue has drained, bob's lines reach alice.
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        bob.send_line(&format!("SAY:ping{i}"));
        match alice.read_line_within(Duration::from_millis(200)) {
            Some(line) if line.starts_with("SAY:bob:ping") => break,
            Some(line) => assert!(line.starts_with("JOIN:"), "{line:?}"),
            None => {}
        }
        assert!(Instant::now() < deadline, "node a never heard #fresh again");
    }
    // Presence and names caught up too: alice is listed in #fresh, carol's old name
    // is free and her new one held.
    bob.send_line("WHO:");
    let mut delivered = false;
    loop {
        let line = bob.read_line();
        delivered |= line == "MSG:carol:are you there\n";
        if line.starts_with("SERVER:#fresh") {
            assert_eq!(line, "SERVER:#fresh (2): alice bob\n");
            break;
        }
    }
    assert!(
        refused.is_some() || delivered,
        "the private message was lost"
    );
    let mut dave = member(b.addr, "dave");
    dave.send_line("JOIN:caroline");
    dave.expect_line("ERROR:name caroline is taken\n");
    dave.send_line("JOIN:carol");
    dave.expect_line("SERVER:dave is now known as carol\n");
}

/// Waits until `c`'s node answers `WHO:` with `want` (Redis's answer, once the node is
/// back in the cluster), passing over presence lines.
#[track_caller]
fn until_who(c: &mut Client, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        c.send_line("WHO:");
        let answer = loop {
            let line = c.read_line();
            if line.starts_with("SERVER:#") {
                break line;
            }
        };
        if answer == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "WHO: still {answer:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Redis stops answering (a stall, a network cut) and comes back with its data. What
/// a node's members gave up meanwhile (names, rooms) must be given up in Redis too
/// once the node is back, not kept there for a node that no longer holds them.
#[test]
fn names_and_rooms_given_up_while_redis_stalled_are_given_up_when_it_is_back() {
    let redis = RedisServer::start();
    // A long TTL: no node is taken for dead during the stall.
    let long_ttl = |c: &mut loopchat::ServerConfig| c.cluster_ttl = Duration::from_secs(30);
    let (a, b) = (
        node_with(&redis, "a", long_ttl),
        node_with(&redis, "b", long_ttl),
    );
    let mut carol = member(a.addr, "carol");
    let mut alice = member(a.addr, "alice");
    carol.expect_line("JOIN:alice\n");
    let mut bob = member(b.addr, "bob");
    carol.expect_line("JOIN:bob\n");
    alice.expect_line("JOIN:bob\n");
    redis.pause();
    // The node gives up on Redis (its command timeout) and answers alone.
    carol.send_line("WHO:");
    carol.expect_line("SERVER:#lobby (2): alice carol\n");
    alice.send_line("LEAVE:bye");
    alice.expect_line("SERVER:goodbye\n");
    carol.expect_line("LEAVE:alice\n");
    drop(alice);
    redis.resume();
    for c in [&mut carol, &mut bob] {
        until_who(c, "SERVER:#lobby (2): bob carol\n", Duration::from_secs(15));
    }
    bob.send_line("JOIN:alice");
    loop {
        let line = bob.read_line();
        if !line.starts_with("LEAVE:") {
            assert_eq!(line, "SERVER:bob is now known as alice\n");
            break;
        }
    }
}

/// A node's alive key can lapse while the node runs (Redis stalled past the TTL, or
/// evicted the key under memory pressure). The other nodes then take it for dead:
/// `WHO:` forgets its members and its names can be claimed. At its next heartbeat the
/// node must see that and claim its names and presence back, as after an outage.
#[test]
fn a_node_whose_alive_key_lapsed_takes_its_names_and_presence_back() {
    let redis = RedisServer::start();
    let ttl = |c: &mut loopchat::ServerConfig| c.cluster_ttl = Duration::from_secs(6);
    let (a, b) = (node_with(&redis, "a", ttl), node_with(&redis, "b", ttl));
    let mut carol = member(a.addr, "carol");
    let mut bob = member(b.addr, "bob");
    carol.expect_line("JOIN:bob\n");
    // Node b looks dead; carol's `WHO:` makes Redis forget b's member.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        redis.cli(&["DEL", "loopchat:alive:b"]);
        carol.send_line("WHO:");
        if carol.read_line() == "SERVER:#lobby (1): carol\n" {
            break;
        }
        assert!(Instant::now() < deadline, "node b never looked dead");
    }
    // Its name is free for a moment: someone on node a takes it.
    let mut dave = member(a.addr, "dave");
    carol.expect_line("JOIN:dave\n");
    dave.send_line("JOIN:bob");
    dave.expect_line("SERVER:dave is now known as bob\n");
    carol.expect_line("SERVER:dave is now known as bob\n");
    // Node b's next heartbeat (a third of the TTL) finds its key gone and takes back
    // what it holds: the earlier claim keeps the name.
    let lines = read_until_prefix(
        &mut dave,
        "ERROR:name bob was taken on another server",
        Duration::from_secs(10),
    );
    assert!(lines.is_empty(), "{lines:?}");
    let renamed = dave.expect_prefix("SERVER:bob is now known as guest");
    carol.expect_line(&renamed);
    until_who(
        &mut carol,
        &format!(
            "SERVER:#lobby (3): bob carol {}\n",
            renamed.trim_end().rsplit(' ').next().unwrap()
        ),
        Duration::from_secs(5),
    );
    bob.send_line("SAY:still here");
    carol.expect_line("SAY:bob:still here\n");
}

/// Reads lines until one starts with `prefix`, within `within`; returns those before.
#[track_caller]
fn read_until_prefix(c: &mut Client, prefix: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    while Instant::now() < deadline {
        match c.read_line_within(Duration::from_millis(200)) {
            Some(line) if line.starts_with(prefix) => return before,
            Some(line) => before.push(line),
            None => {}
        }
    }
    panic!("no line starting {prefix:?} within {within:?}; got {before:?}");
}

/// The real binary as a cluster node (default TTL, 15 s).
fn binary_node(redis: &RedisServer, id: &str) -> util::Binary {
    util::Binary::start(&["--cluster", &redis.url, "--node-id", id])
}

/// Reads `c` to its end on a thread of its own (so a shutdown is not held up by a
/// client that does not read), returning what it got.
fn read_to_close_aside(mut c: Client) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || c.read_to_close())
}

/// SIGTERM: the node's names are free on the others as soon as it has exited, not a
/// TTL (15 s) later. (Held.)
#[test]
fn a_node_stopped_by_sigterm_frees_its_names_at_once() {
    let redis = RedisServer::start();
    let mut doomed = binary_node(&redis, "doomed");
    let b = node(&redis, "b");
    let keeper = member(doomed.addr, "keeper");
    let mut other = member(b.addr, "other");
    other.send_line("JOIN:keeper");
    other.expect_line("ERROR:name keeper is taken\n");
    let keeper = read_to_close_aside(keeper);
    doomed.signal(libc::SIGTERM);
    assert!(doomed.wait(Duration::from_secs(5)).success());
    let said = keeper.join().unwrap();
    assert!(String::from_utf8_lossy(&said).contains("shutting down"));
    other.expect_line("LEAVE:keeper\n");
    other.send_line("JOIN:keeper");
    other.expect_line("SERVER:other is now known as keeper\n");
}

/// SIGTERM while Redis hangs (stopped, its connections open): the node still exits
/// within a few seconds. (Held.)
#[test]
fn a_node_exits_promptly_on_sigterm_while_redis_hangs() {
    let redis = RedisServer::start();
    let mut doomed = binary_node(&redis, "doomed");
    let members: Vec<Client> = (0..5)
        .map(|i| member(doomed.addr, &format!("m{i}")))
        .collect();
    redis.pause();
    let readers: Vec<_> = members.into_iter().map(read_to_close_aside).collect();
    let asked = Instant::now();
    doomed.signal(libc::SIGTERM);
    assert!(doomed.wait(Duration::from_secs(10)).success());
    let took = asked.elapsed();
    redis.resume();
    for r in readers {
        r.join().unwrap();
    }
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
}

/// A node restarted under the same `--node-id` is a new instance: the names of the
/// killed one are free at once, not a TTL later. (Held.)
#[test]
fn a_node_restarted_under_its_node_id_frees_the_names_of_its_past_life() {
    let redis = RedisServer::start();
    let mut first = binary_node(&redis, "same");
    let b = node(&redis, "b");
    let mut keeper = member(first.addr, "keeper");
    let mut other = member(b.addr, "other");
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(5));
    keeper.read_to_close();
    let second = binary_node(&redis, "same");
    let _newcomer = member(second.addr, "newcomer");
    other.expect_line("JOIN:newcomer\n");
    other.send_line("JOIN:keeper");
    other.expect_line("SERVER:other is now known as keeper\n");
}

/// While Redis hangs, chat on a node goes on at once, and a connection waiting for
/// Redis (a new name, `WHO:`) is answered by the node alone within the command
/// timeout; once Redis is back the nodes join up again. (Held.)
#[test]
fn while_redis_hangs_a_node_serves_its_own_without_stalling() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut amy = member(a.addr, "amy");
    alice.expect_line("JOIN:amy\n");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    amy.expect_line("JOIN:bob\n");
    redis.pause();
    let mut zed = Client::connect(a.addr);
    let asked = Instant::now();
    zed.send_line("JOIN:zed");
    // Local chat does not wait for Redis meanwhile.
    for i in 0..5 {
        alice.send_line(&format!("SAY:local {i}"));
        let line = amy.read_line_within(Duration::from_millis(500));
        assert_eq!(line.as_deref(), Some(&*format!("SAY:alice:local {i}\n")));
    }
    // Within the node's own wait for Redis (5 s), whatever its link is doing.
    zed.expect_line("SERVER:you are zed in #lobby\n");
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "{:?}",
        asked.elapsed()
    );
    for c in [&mut alice, &mut amy] {
        c.expect_line("JOIN:zed\n");
    }
    zed.send_line("WHO:");
    zed.expect_line("SERVER:#lobby (3): alice amy zed\n");
    redis.resume();
    // Both nodes are back once each one's `WHO:` comes from Redis.
    for c in [&mut zed, &mut bob] {
        until_who(
            c,
            "SERVER:#lobby (4): alice amy bob zed\n",
            Duration::from_secs(15),
        );
    }
    bob.send_line("SAY:back");
    zed.expect_line("SAY:bob:back\n");
}

/// Text that looks like the backplane's netstrings, colons, non-ASCII and lines at
/// the limit cross nodes byte for byte, in rooms and in private. (Held.)
#[test]
fn text_that_looks_like_frames_crosses_nodes_unchanged() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    let texts = [
        "3:n/1,4:room,2:#r,4:join,3:bob,".to_string(),
        "0:,".to_string(),
        "1:x,4:wake,".to_string(),
        "a:b:c::".to_string(),
        "ünïcödé 😀 ,:,".to_string(),
        "x".repeat(4096 - "MSG:BOB:\n".len()),
    ];
    for t in &texts {
        alice.send_line(&format!("SAY::{t}"));
        assert_eq!(bob.read_line(), format!("SAY:alice:{t}\n"));
        alice.send_line(&format!("MSG:BOB:{t}"));
        assert_eq!(bob.read_line(), format!("MSG:alice:{t}\n"));
    }
}

/// A member hopping in and out of a room while another node talks there gets what
/// it gets in order and never twice. (Held.)
#[test]
fn hopping_between_rooms_while_another_node_talks_neither_repeats_nor_reorders() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    const N: usize = 3000;
    let mut flood = Vec::new();
    for i in 0..N {
        flood.extend_from_slice(format!("SAY:m{i}\n").as_bytes());
    }
    let sender = std::thread::spawn(move || {
        bob.send(&flood);
        bob
    });
    let mut last: Option<usize> = None;
    for hop in 0..60 {
        alice.send_line(if hop % 2 == 0 {
            "JOIN:#side"
        } else {
            "JOIN:#lobby"
        });
        let line = alice.read_line();
        if let Some(i) = line.trim_end().strip_prefix("SAY:bob:m") {
            let i: usize = i.parse().unwrap();
            assert!(last.is_none_or(|l| i > l), "m{i} after m{last:?}");
            last = Some(i);
        }
    }
    // Back in the lobby for good (the answer to `WHO:` says the node hears it): the
    // rest comes in order, then what bob says now.
    alice.send_line("WHO:");
    let mut bob = sender.join().unwrap();
    let mut answered = false;
    loop {
        let line = alice.read_line();
        if line.starts_with("SERVER:#lobby (2)") && !answered {
            answered = true;
            bob.send_line("SAY:after");
        } else if line == "SAY:bob:after\n" {
            assert!(answered);
            break;
        } else if let Some(i) = line.trim_end().strip_prefix("SAY:bob:m") {
            let i: usize = i.parse().unwrap();
            assert!(last.is_none_or(|l| i > l), "m{i} after m{last:?}");
            last = Some(i);
        }
    }
}

/// A ban made on one node holds on a node started while it is in force, and ends
/// there on time too. (Held.)
#[test]
fn a_node_started_during_a_ban_refuses_the_address_until_it_ends() {
    let redis = RedisServer::start();
    let a = node_with(&redis, "a", |c| {
        c.rate = 1.0;
        c.burst = 3.0;
        c.max_strikes = 1;
        c.ban_time = Duration::from_secs(3);
    });
    let ip: std::net::IpAddr = "127.0.0.31".parse().unwrap();
    let mut flooder = Client::connect_named_from(a.addr, ip, "flooder");
    for i in 0..10 {
        flooder.send_line(&format!("SAY:{i}"));
    }
    let said = flooder.read_to_close();
    assert!(
        String::from_utf8_lossy(&said).contains("ERROR:banned for 3 seconds"),
        "{}",
        util::show(&said)
    );
    // The ban is in Redis once node a's queue has carried it there.
    poll("the ban reaches Redis", Duration::from_secs(5), || {
        redis.cli(&["EXISTS", "loopchat:ban:127.0.0.31"]) == "1"
    });
    let c = node(&redis, "c");
    let mut refused = Client::connect_raw_from(c.addr, ip);
    assert!(refused.read_line().starts_with("ERROR:banned for "));
    poll(
        "the ban ends on the late node",
        Duration::from_secs(6),
        || Client::connect_raw_from(c.addr, ip).read_line() == util::GREETING,
    );
}

/// Redis stops serving node a's claims (`breaks` it), then serves it again (`mends`).
/// Meanwhile a guest must not be renamed over and over, a new name must not be
/// refused as taken; once Redis serves the node again its names are held there.
fn claims_fail_without_storms_or_refusals(breaks: &[&str], mends: Option<&[&str]>) {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    redis.cli(breaks);
    let mut guest = Client::connect(a.addr);
    guest.send_line("SAY:hi");
    let line = guest.expect_prefix("SERVER:you are guest");
    let name = line["SERVER:you are ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    guest.send_line("WHO:");
    let answer = guest.read_line();
    assert!(answer.starts_with("SERVER:#lobby"), "{answer:?}");
    let mut carl = Client::connect(a.addr);
    carl.send_line("JOIN:carl");
    carl.expect_line("SERVER:you are carl in #lobby\n");
    if let Some(mends) = mends {
        redis.cli(mends);
    }
    // Both nodes serve the cluster again (their `WHO:` comes from Redis), node a's
    // names held there.
    let mut names = ["alice", "bob", "carl", name.as_str()];
    names.sort();
    for c in [&mut alice, &mut bob] {
        until_who(
            c,
            &format!("SERVER:#lobby (4): {}\n", names.join(" ")),
            Duration::from_secs(15),
        );
    }
    for taken in ["carl", name.as_str()] {
        bob.send_line(&format!("JOIN:{taken}"));
        loop {
            let line = bob.read_line();
            if !line.starts_with("JOIN:") && !line.starts_with("SAY:") {
                assert_eq!(line, format!("ERROR:name {taken} is taken\n"));
                break;
            }
        }
    }
}

/// `SCRIPT FLUSH`: Redis forgets the node's scripts.
#[test]
fn a_redis_that_forgot_the_scripts_neither_storms_renames_nor_refuses_names() {
    claims_fail_without_storms_or_refusals(&["SCRIPT", "FLUSH"], None);
}

/// A failover leaves the node on a read-only replica, promoted again later.
#[test]
fn a_read_only_redis_neither_storms_renames_nor_refuses_names() {
    claims_fail_without_storms_or_refusals(
        &["REPLICAOF", "127.0.0.1", "1"],
        Some(&["REPLICAOF", "NO", "ONE"]),
    );
}

/// Redis restarts empty (no persistence): its guest counter starts again at 0. Guest
/// numbers must stay unique across the cluster: a block handed out afterwards must
/// not overlap the blocks the running nodes still use.
#[test]
fn guest_numbers_stay_unique_after_redis_restarts_empty() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut watcher = member(a.addr, "watcher");
    let _bob = member(b.addr, "bob");
    watcher.expect_line("JOIN:bob\n");
    // Node a's first block starts at guest1.
    let mut guest = Client::connect(a.addr);
    guest.send_line("SAY:hi");
    guest.expect_line("SERVER:you are guest1 in #lobby\n");
    redis.kill();
    redis.restart();
    // Both nodes are back once a's `WHO:` comes from Redis again.
    until_who(
        &mut watcher,
        "SERVER:#lobby (3): bob guest1 watcher\n",
        Duration::from_secs(15),
    );
    let mut bob2 = member(b.addr, "bob2");
    until_who(
        &mut bob2,
        "SERVER:#lobby (4): bob bob2 guest1 watcher\n",
        Duration::from_secs(15),
    );
    // A node started now takes a block past those of a and b.
    let c = node(&redis, "c");
    let mut late = Client::connect(c.addr);
    late.send_line("SAY:hi");
    let line = late.expect_prefix("SERVER:you are guest");
    let n: u64 = line["SERVER:you are guest".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 2000, "{line:?}: a number of a block still in use");
}

/// Reads lines until one starts with `prefix`, passing over presence (`JOIN:`,
/// `LEAVE:`); returns it.
#[track_caller]
fn past_presence(c: &mut Client, prefix: &str) -> String {
    loop {
        let line = c.read_line();
        if line.starts_with(prefix) {
            return line;
        }
        assert!(
            line.starts_with("JOIN:") || line.starts_with("LEAVE:"),
            "{line:?} before {prefix:?}"
        );
    }
}

/// The subscriber's connection is cut (a proxy, `CLIENT KILL`) and comes back just as
/// a member enters a room: the node must hear that room at once, not after its next
/// heartbeat (a third of the TTL), losing what is said there until then. The two
/// meet in a window of a few round trips, so the test tries a few times.
#[test]
fn a_room_entered_while_the_subscriber_reconnects_is_heard() {
    let redis = RedisServer::start();
    // A heartbeat so rare that it cannot help within the test.
    let long_ttl = |c: &mut loopchat::ServerConfig| c.cluster_ttl = Duration::from_secs(600);
    let (a, b) = (
        node_with(&redis, "a", long_ttl),
        node_with(&redis, "b", long_ttl),
    );
    let mut alice = member(a.addr, "alice");
    let mut bob = member(b.addr, "bob");
    for round in 0..3 {
        alice.send_line(&format!("JOIN:#r{round}"));
        past_presence(&mut alice, "SERVER:you are now in");
        alice.send_line("WHO:");
        past_presence(&mut alice, "SERVER:#");
        // The subscribers lose their connection and reconnect while Redis holds
        // every command for a moment: bob's entry and b's resubscription meet.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        redis.cli(&["CLIENT", "PAUSE", "300", "ALL"]);
        bob.send_line(&format!("JOIN:#r{round}"));
        past_presence(&mut bob, "SERVER:you are now in");
        let deadline = Instant::now() + Duration::from_secs(4);
        'heard: for i in 0.. {
            alice.send_line(&format!("SAY:ping{i}"));
            while let Some(line) = bob.read_line_within(Duration::from_millis(100)) {
                if line.starts_with("SAY:alice:ping") {
                    break 'heard;
                }
                assert!(line.starts_with("LEAVE:alice"), "{line:?}");
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: node b does not hear #r{round}"
            );
        }
        // What is left of the pings.
        while bob.read_line_within(Duration::from_millis(100)).is_some() {}
    }
}
