//! Limits and bad input: over-long lines, invalid UTF-8, control characters, slow
//! consumers, the client cap and the registration and idle deadlines. Each gets a clear
//! error, loses nothing it accepted, and hurts nobody else.

mod util;

use std::thread;
use std::time::{Duration, Instant};

use loopchat::ServerConfig;
use loopchat::bench::server_proc::{self, LIFT_LIMITS};
use util::{Client, named, start, start_default};

/// Builds a line of exactly `len` bytes: `SAY::` and padding.
fn say_of_len(len: usize) -> String {
    format!("SAY::{}", "x".repeat(len - "SAY::".len()))
}

#[test]
fn line_of_exactly_max_is_accepted_and_max_plus_one_is_refused() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    let max = say_of_len(4096);
    alice.send_line(&max);
    bob.expect_line(&format!("SAY:alice:{}\n", &max[5..]));
    // CRLF does not count towards the limit.
    alice.send(format!("{max}\r\n").as_bytes());
    bob.expect_line(&format!("SAY:alice:{}\n", &max[5..]));
    alice.send_line(&say_of_len(4097));
    alice.expect_line("ERROR:line too long (max 4096 bytes)\n");
    alice.send(b"SAY::next\n");
    bob.expect_line("SAY:alice:next\n");
    alice.barrier();
    bob.barrier();
}

#[test]
fn line_limit_in_the_error_is_the_configured_one() {
    let server = start(ServerConfig {
        max_line: 100,
        ..util::config()
    });
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(format!("{}\n{}\n", say_of_len(101), say_of_len(100)).as_bytes());
    alice.expect_line("ERROR:line too long (max 100 bytes)\n");
    bob.expect_line(&format!("SAY:alice:{}\n", &say_of_len(100)[5..]));
    alice.barrier();
}

#[test]
fn over_long_line_split_across_writes_gets_one_error() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(say_of_len(3000).as_bytes());
    alice.expect_silence(Duration::from_millis(20));
    alice.send(&[b'y'; 3000]);
    alice.expect_line("ERROR:line too long (max 4096 bytes)\n");
    alice.send(&[b'z'; 3000]);
    alice.send(b"\nSAY::after\n");
    bob.expect_line("SAY:alice:after\n");
    // Exactly one error for the whole line: the barrier's reply comes next.
    alice.barrier();
    bob.barrier();
}

#[test]
fn one_mib_line_without_newline_is_refused_once_and_the_connection_keeps_working() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    let mut huge = b"SAY::".to_vec();
    huge.resize(1 << 20, b'a');
    alice.send(&huge);
    alice.expect_line("ERROR:line too long (max 4096 bytes)\n");
    alice.send(&huge);
    alice.send(b"\nSAY::survived\n");
    bob.expect_line("SAY:alice:survived\n");
    alice.barrier();
    bob.barrier();
}

#[test]
fn invalid_utf8_is_an_error_and_reaches_nobody() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    let bad: [&[u8]; 5] = [
        b"SAY::\xc3\x28\n",           // broken two-byte sequence
        b"SAY::\xc0\xaf\n",           // overlong encoding of '/'
        b"SAY::\xed\xa0\x80\n",       // UTF-16 surrogate
        b"SAY::cut short \xe2\x82\n", // truncated at the line end
        b"MSG:bob:\xff\n",
    ];
    for line in bad {
        alice.send(line);
        alice.expect_line("ERROR:invalid UTF-8\n");
    }
    alice.send("SAY::ünïcödé ✓\n".as_bytes());
    bob.expect_line("SAY:alice:ünïcödé ✓\n");
    bob.barrier();
    alice.barrier();
}

#[test]
fn control_characters_never_reach_other_users() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    let bad: [&[u8]; 9] = [
        b"SAY::\x1b[2J\x1b[Hcleared\n", // ESC: clear screen
        b"SAY::\x1b]0;owned\x07\n",     // OSC title + BEL
        b"SAY::ring\x07\n",
        b"SAY::back\x08\x08\n",
        b"SAY::nul\x00byte\n",
        b"SAY::bare\rreturn\n",
        b"SAY::del\x7f\n",
        "SAY::c1 \u{9b}31m red\n".as_bytes(), // CSI as a C1 control
        b"MSG:bob:\x1b[31mred\n",
    ];
    for line in bad {
        alice.send(line);
        alice.expect_line("ERROR:control characters are not allowed\n");
    }
    alice.send(b"JOIN:\x1b[1mbold\n");
    alice.expect_line("ERROR:control characters are not allowed\n");
    alice.send(b"SAY::tab\tis fine\n");
    bob.expect_line("SAY:alice:tab\tis fine\n");
    bob.barrier();
    alice.barrier();
}

#[test]
fn slow_readers_are_evicted_and_the_others_get_everything_in_order() {
    let server = start(ServerConfig {
        max_output: 64 * 1024,
        ..util::config()
    });
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    // Two readers that never read: the second one's eviction (and its LEAVE notice)
    // happens while the first one's is being handled, or right after.
    let mut slow: Vec<Client> = Vec::new();
    for name in ["slowpoke", "sloth"] {
        let mut c = Client::connect_small_rcvbuf(server.addr, 4096);
        c.expect_line(util::GREETING);
        c.send_line(&format!("JOIN:{name}"));
        c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
        alice.expect_line(&format!("JOIN:{name}\n"));
        bob.expect_line(&format!("JOIN:{name}\n"));
        if name == "sloth" {
            slow[0].expect_line("JOIN:sloth\n");
        }
        slow.push(c);
    }

    // The slow ones must fall behind by the kernel's buffers plus the cap: ~8.5 MB.
    const PAD: usize = 3000;
    const PER_BATCH: usize = 5;
    const BATCHES: usize = (util::KERNEL_ABSORBS * 2 + (64 << 10)) / (PAD * PER_BATCH) + 1;
    const N: usize = BATCHES * PER_BATCH;

    // Bob reads as fast as he can, on his own thread.
    let reader = thread::spawn(move || {
        let mut next = 0;
        let mut leaves = Vec::new();
        while next < N {
            let line = bob.read_line();
            if let Some(name) = line.strip_prefix("LEAVE:") {
                leaves.push(name.to_string());
            } else {
                assert!(
                    line == util::said("alice", next, PAD),
                    "bob lost order at {next}: {:?}",
                    util::show(line.as_bytes())
                );
                next += 1;
            }
        }
        bob.barrier();
        leaves.sort();
        (bob, leaves)
    });

    // Alice sends in batches of ~15 KB and waits for each to be processed, so no single
    // event batch queues more than that to anyone: only the clients that do not read
    // can reach the 64 KiB cap.
    let mut alice_leaves = Vec::new();
    for batch in 0..BATCHES {
        alice.send(&util::says(batch * PER_BATCH..(batch + 1) * PER_BATCH, PAD));
        alice.send(b"ROOMS:\n");
        loop {
            let line = alice.read_line();
            if let Some(name) = line.strip_prefix("LEAVE:") {
                alice_leaves.push(name.to_string());
            } else {
                assert!(line.starts_with("SERVER:rooms ("), "alice got {line:?}");
                break;
            }
        }
    }
    alice_leaves.sort();
    let (mut bob, bob_leaves) = reader.join().expect("bob's reader");
    assert_eq!(bob_leaves, ["sloth\n", "slowpoke\n"], "bob's LEAVE notices");
    assert_eq!(
        alice_leaves,
        ["sloth\n", "slowpoke\n"],
        "alice's LEAVE notices"
    );

    // What a slow reader did get is an in-order prefix, then the connection ends.
    for mut c in slow {
        let got = c.read_to_close();
        let text = String::from_utf8_lossy(&got);
        let mut next = 0;
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            if line.starts_with("SAY:") {
                assert!(line == util::said("alice", next, PAD), "order at {next}");
                next += 1;
            }
        }
        assert!(next < N, "got all {N} messages: it was never evicted");
    }

    // The names are free again.
    let _again = Client::connect_named(server.addr, "slowpoke");
    alice.expect_line("JOIN:slowpoke\n");
    bob.expect_line("JOIN:slowpoke\n");
    alice.send(b"WHO:\n");
    alice.expect_line("SERVER:#lobby (3): alice bob slowpoke\n");
}

#[test]
fn a_fast_reader_of_a_big_burst_is_not_evicted() {
    let server = start(ServerConfig {
        max_output: 64 * 1024,
        ..util::config()
    });
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    // Each message is well under the cap; bob reads them as they come.
    let pad = "r".repeat(1000);
    for i in 0..300 {
        alice.send(format!("SAY::{i} {pad}\n").as_bytes());
        bob.expect_line(&format!("SAY:alice:{i} {pad}\n"));
    }
    bob.barrier();
    alice.barrier();
}

#[test]
fn client_cap_answers_server_full_and_frees_the_slot_on_leave() {
    let server = start(ServerConfig {
        max_clients: 2,
        ..util::config()
    });
    let mut alice = Client::connect_named(server.addr, "alice");
    let _unnamed = Client::connect(server.addr);
    let mut third = Client::connect_raw(server.addr);
    third.expect_line("ERROR:server full\n");
    third.expect_eof();

    alice.send(b"LEAVE:bye\n");
    alice.expect_line("SERVER:goodbye\n");
    alice.expect_eof();
    drop(alice);
    let mut c = util::connect_when_free(server.addr);
    c.send(b"JOIN:alice\n");
    c.expect_line("SERVER:you are alice in #lobby\n");
}

#[test]
fn registration_timeout_closes_a_silent_connection() {
    let server = start(ServerConfig {
        register_timeout: Duration::from_millis(300),
        ..util::config()
    });
    let begin = Instant::now();
    let mut silent = Client::connect(server.addr);
    let mut partial = Client::connect(server.addr);
    partial.send(b"JOIN:almost"); // no newline: not a complete line
    silent.expect_line("ERROR:registration timeout, closing\n");
    silent.expect_eof();
    partial.expect_line("ERROR:registration timeout, closing\n");
    partial.expect_eof();
    let elapsed = begin.elapsed();
    assert!(
        elapsed >= Duration::from_millis(290),
        "closed after {elapsed:?}, before the 300 ms window"
    );
    assert!(elapsed < Duration::from_secs(2), "closed late: {elapsed:?}");
}

#[test]
fn a_complete_line_in_time_ends_the_registration_window() {
    let server = start(ServerConfig {
        register_timeout: Duration::from_millis(200),
        ..util::config()
    });
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut asked = Client::connect(server.addr);
    asked.send(b"ROOMS:\n");
    asked.expect_line("SERVER:rooms (1): #lobby (1)\n");
    alice.expect_silence(Duration::from_millis(500));
    asked.expect_silence(Duration::from_millis(10));
    alice.barrier();
    asked.barrier();
}

#[test]
fn idle_timeout_closes_a_silent_member_and_tells_the_room() {
    let server = start(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..util::config()
    });
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    // Bob keeps talking; alice says nothing.
    let begin = Instant::now();
    let mut alice_closed = false;
    while begin.elapsed() < Duration::from_millis(700) {
        bob.send(b"WHO:\n");
        loop {
            let line = bob.read_line();
            if line == "LEAVE:alice\n" {
                alice_closed = true;
            } else {
                assert!(line.starts_with("SERVER:#lobby ("), "bob got {line:?}");
                break;
            }
        }
        if let Some(line) = bob.read_line_within(Duration::from_millis(50)) {
            assert_eq!(line, "LEAVE:alice\n");
            alice_closed = true;
        }
    }
    assert!(alice_closed, "bob never saw alice leave");
    alice.expect_line("ERROR:idle timeout, closing\n");
    alice.expect_eof();
    bob.barrier();
}

/// How a connection to a server at its file-descriptor limit was answered.
enum Answer {
    Greeted(Client),
    Full,
    Pending(Client),
}

/// Reads a new connection's first line, waiting at most `wait`.
#[track_caller]
fn answer(mut c: Client, wait: Duration) -> Answer {
    match c.read_line_within(wait).as_deref() {
        Some(util::GREETING) => Answer::Greeted(c),
        Some("ERROR:server full\n") => {
            c.expect_eof();
            Answer::Full
        }
        Some(other) => panic!("unexpected first line {other:?}"),
        None => Answer::Pending(c),
    }
}

/// CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    server_proc::cpu_seconds(pid).expect("read /proc/<pid>/stat")
}

#[test]
fn client_cap_is_derived_from_the_open_files_limit() {
    let bin = util::Binary::start_with_nofile(&LIFT_LIMITS, Some(64));
    let clients: Vec<Client> = (0..70).map(|_| Client::connect_raw(bin.addr)).collect();
    let mut greeted = Vec::new();
    let mut full = 0;
    for c in clients {
        match answer(c, util::TIMEOUT) {
            Answer::Greeted(c) => greeted.push(c),
            Answer::Full => full += 1,
            Answer::Pending(_) => panic!("a connection got no answer at all"),
        }
    }
    assert!(
        !greeted.is_empty() && greeted.len() < 64,
        "{} clients admitted with 64 file descriptors",
        greeted.len()
    );
    assert_eq!(greeted.len() + full, 70);
    let first = &mut greeted[0];
    first.send(b"JOIN:alice\n");
    first.expect_line("SERVER:you are alice in #lobby\n");
}

#[test]
fn a_server_at_its_file_descriptor_limit_neither_spins_nor_stalls() {
    let mut args = LIFT_LIMITS.to_vec();
    args.extend(["--max-clients", "1000"]);
    let bin = util::Binary::start_with_nofile(&args, Some(64));
    let clients: Vec<Client> = (0..80).map(|_| Client::connect_raw(bin.addr)).collect();
    let mut greeted = Vec::new();
    let mut pending = Vec::new();
    let mut wait = Duration::from_millis(300);
    for c in clients {
        match answer(c, wait) {
            Answer::Greeted(c) => greeted.push(c),
            Answer::Full => {}
            Answer::Pending(c) => {
                pending.push(c);
                // The first silent one took the long wait; the rest had it too.
                wait = Duration::from_millis(5);
            }
        }
    }
    // The server may refuse (`server full`) or leave the rest in the backlog until it
    // has descriptors again (retrying from a timer). Either way the loop must sleep, not
    // spin, meanwhile.
    let before = cpu_seconds(bin.child.id());
    thread::sleep(Duration::from_millis(500));
    let used = cpu_seconds(bin.child.id()) - before;
    assert!(
        used < 0.25,
        "server used {used:.2} s of CPU in 0.5 s while out of fds"
    );

    // Free descriptors: every waiting connection is then answered.
    let keep = greeted.split_off(greeted.len().min(5));
    drop(keep);
    let mut late = Vec::new();
    for c in pending {
        match answer(c, util::TIMEOUT) {
            Answer::Greeted(c) => late.push(c),
            Answer::Full => {}
            Answer::Pending(_) => panic!("accepting stalled after descriptors were freed"),
        }
    }
    if let Some(c) = late.first_mut() {
        c.send(b"JOIN:late\n");
        c.expect_line("SERVER:you are late in #lobby\n");
    }
    let mut c = util::connect_when_free(bin.addr);
    c.send(b"JOIN:later\n");
    c.expect_line("SERVER:you are later in #lobby\n");
}

#[test]
fn a_closed_connections_deadline_does_not_hit_the_next_one_in_its_slot() {
    // One slot, so the second connection reuses the first one's slot (and key).
    let server = start(ServerConfig {
        max_clients: 1,
        register_timeout: Duration::from_millis(300),
        ..util::config()
    });
    let mut first = Client::connect(server.addr);
    first.expect_silence(Duration::from_millis(200));
    drop(first);
    let mut second = util::connect_when_free(server.addr);
    let begin = Instant::now();
    // The first one's deadline would have fired about 100 ms from now.
    second.expect_line("ERROR:registration timeout, closing\n");
    let elapsed = begin.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed {elapsed:?} after connecting: the previous connection's deadline fired"
    );
    second.expect_eof();
}

#[test]
fn coalesced_output_arrives_complete_and_in_order() {
    // At most one flush per 50 ms: 200 lines sent back to back reach the reader in a
    // few large writes, all of them, in order.
    let server = start(ServerConfig {
        coalesce: Duration::from_millis(50),
        ..util::config()
    });
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    for i in 0..200 {
        alice.send_line(&format!("SAY::{i}"));
    }
    for i in 0..200 {
        bob.expect_line(&format!("SAY:alice:{i}\n"));
    }
    bob.barrier();
}
