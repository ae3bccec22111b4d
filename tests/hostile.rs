//! Hostile load against the server with its default flags: clients that are fast,
//! huge, malicious or behind one NAT must not stall the loop, evict a well-behaved user
//! or cost more than their share.
//!
//! The tests assert order, not wall-clock time: "the pinger's reply arrives while the
//! blast is still going" is proved by the blast taking more bytes after the reply. A
//! blast runs on a thread of its own ([`Blaster`]) and stops by itself.
//!
//! Different IPs are played by different loopback source addresses (Linux accepts any
//! `127.x.y.z` as a source on `lo`), so a test can keep an attacker's address apart from
//! its victims' and stay within the per-address limits it does not exercise.

mod util;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::Duration;

use loopchat::ServerConfig;
use util::{Binary, Blaster, Client, GREETING, TestServer, drain_until, start};

/// The server with its default flags, on an ephemeral port; history kept in memory
/// and not replayed (the attacks here are about the loop, not the database, and the
/// exact lines after a join stay those of the protocol tests).
fn defaults() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        db: "none".into(),
        history_replay: 0,
        ..ServerConfig::default()
    }
}

/// A loopback address that plays one IP: `127.0.<c>.<d>`.
fn ip(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, c, d))
}

/// The attacker's address in most tests.
fn attacker() -> IpAddr {
    ip(0, 1)
}

/// A well-behaved user's address.
fn bystander() -> IpAddr {
    ip(0, 3)
}

/// Bytes of a blast after which the server has surely read past the kernel's buffers:
/// from then on the blaster only makes progress while the server reads it.
const PAST_BUFFERS: u64 = 8 << 20;

/// Asserts that `pinger`'s `WHO:` is answered with `who` while `blast` is still going:
/// the blast has taken [`PAST_BUFFERS`] before the question, and takes as much again
/// after the answer.
#[track_caller]
fn who_is_answered_during(blast: &Blaster, pinger: &mut Client, who: &str) {
    blast.expect_progress(PAST_BUFFERS);
    pinger.send_line("WHO:");
    pinger.expect_line(who);
    blast.expect_progress(PAST_BUFFERS);
}

// ----- fair reading -------------------------------------------------------------------

#[test]
fn an_endless_line_does_not_delay_another_users_reply() {
    let server = start(defaults());
    let mut blaster = Client::connect_named_from(server.addr, attacker(), "blaster");
    let mut pinger = Client::connect_named_from(server.addr, bystander(), "pinger");
    blaster.expect_line("JOIN:pinger\n");
    // No newline, ever.
    let blast = Blaster::start(&blaster, b"", &[b'x'; 64 * 1024]);
    who_is_answered_during(&blast, &mut pinger, "SERVER:#lobby (2): blaster pinger\n");
    blast.stop();
    // One error for the endless line, however long it grew.
    blaster.expect_line("ERROR:line too long (max 4096 bytes)\n");
    pinger.barrier();
}

#[test]
fn an_endless_line_in_text_mode_does_not_delay_another_users_reply() {
    let server = start(defaults());
    let mut blaster = Client::connect_from(server.addr, attacker());
    blaster.send(b"/nick blaster\r\n");
    blaster.expect_line("[server] you are blaster in #lobby\r\n");
    let mut pinger = Client::connect_named_from(server.addr, bystander(), "pinger");
    blaster.expect_line("*** pinger joined\r\n");
    // Telnet negotiation inside the endless line is filtered like any other byte.
    let mut chunk = b"\xff\xfb\x01".repeat(4);
    chunk.resize(64 * 1024, b'y');
    let blast = Blaster::start(&blaster, b"", &chunk);
    who_is_answered_during(&blast, &mut pinger, "SERVER:#lobby (2): blaster pinger\n");
    blast.stop();
    blaster.expect_line("[error] line too long (max 4096 bytes)\r\n");
    pinger.barrier();
}

#[test]
fn a_flood_after_leave_does_not_delay_others_and_the_leaver_gets_goodbye_then_eof() {
    let server = start(ServerConfig {
        // Long enough that the flood is still read (and dropped) while the test looks.
        linger: Duration::from_secs(5),
        ..defaults()
    });
    let mut leaver = Client::connect_named_from(server.addr, attacker(), "leaver");
    let mut pinger = Client::connect_named_from(server.addr, bystander(), "pinger");
    leaver.expect_line("JOIN:pinger\n");
    let flood = b"SAY::after leave\n".repeat(4096);
    let blast = Blaster::start(&leaver, b"LEAVE:bye\n", &flood);
    pinger.expect_line("LEAVE:leaver\n");
    who_is_answered_during(&blast, &mut pinger, "SERVER:#lobby (1): pinger\n");
    // The goodbye, then a FIN while the flood still goes on: not a reset.
    leaver.expect_line("SERVER:goodbye\n");
    leaver.expect_eof();
    assert!(
        blast.is_running(),
        "the flood ended before the leaver's end"
    );
    blast.stop();
    pinger.barrier();
}

#[test]
fn a_rate_0_sender_blasting_a_room_does_not_delay_another_users_reply() {
    // Limits lifted, so the blaster's every line is delivered; output caps raised
    // above the whole blast, so a reader slowed by a busy machine is not evicted (it
    // is not the one under test).
    let server = start(ServerConfig {
        max_output: 256 << 20,
        max_output_soft: 256 << 20,
        ..util::config()
    });
    let mut blaster = Client::connect_named_from(server.addr, attacker(), "blaster");
    blaster.send_line("JOIN:#blast");
    blaster.expect_line("SERVER:you are now in #blast\n");
    let mut reader = Client::connect_named_from(server.addr, ip(0, 4), "reader");
    reader.send_line("JOIN:#blast");
    reader.expect_line("SERVER:you are now in #blast\n");
    blaster.expect_line("JOIN:reader\n");
    let mut pinger = Client::connect_named_from(server.addr, bystander(), "pinger");

    let lines = 600;
    let blast = Blaster::start(&blaster, b"", &util::says(0..lines, 100));
    // The reader keeps up on its own thread until the end marker.
    let reading = thread::spawn(move || {
        let n = drain_until(&reader, "SAY:blaster:end\n");
        (reader, n)
    });
    who_is_answered_during(&blast, &mut pinger, "SERVER:#lobby (1): pinger\n");
    let written = blast.stop();
    blaster.send_line("SAY::end");
    let (mut reader, n) = reading.join().unwrap();
    // Every whole line that was sent was delivered.
    let line_len = util::says(0..1, 100).len() as u64;
    assert_eq!(n as u64, written / line_len + 1);
    reader.barrier();
    blaster.barrier();
}

// ----- no targeted eviction -------------------------------------------------------------

/// The reply to a line dropped by the address's rate (`--ip-rate`, default 20/s).
const ADDRESS_LIMITED: &str =
    "ERROR:rate limit of your address exceeded (20 messages/s), message dropped\n";

/// Sixty-four senders: sixteen from each of four addresses, inside the default connect
/// burst (20) and per-address cap (64). Each sends `first` and returns its name from
/// the reply `SERVER:you are <name> in <room>`. The first lines take sixteen of each
/// address's forty tokens.
#[track_caller]
fn sixty_four_senders(
    server: &TestServer,
    first: impl Fn(usize) -> String,
) -> Vec<(Client, String)> {
    let mut out = Vec::new();
    for d in 10..14 {
        for _ in 0..16 {
            let mut c = Client::connect_from(server.addr, ip(0, d));
            c.send_line(&first(out.len()));
            let you = c.expect_prefix("SERVER:you are ");
            let name = you["SERVER:you are ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .to_string();
            out.push((c, name));
        }
    }
    out
}

/// Reads one sender's replies up to its goodbye and end of stream, and returns the
/// errors among them; room traffic and presence notices are skipped.
#[track_caller]
fn errors_until_goodbye(c: &mut Client) -> Vec<String> {
    let mut errors = Vec::new();
    loop {
        let line = c.read_line();
        if line == "SERVER:goodbye\n" {
            c.expect_eof();
            return errors;
        }
        if line.starts_with("ERROR:") {
            errors.push(line);
        }
    }
}

/// Reads `c` until `leaves` members have left, counting per sender the lines of `verb`
/// (`SAY` or `MSG`) whose text starts with a sequence number, which must increase.
/// Presence notices are skipped; anything else fails.
#[track_caller]
fn count_until_leaves(c: &mut Client, verb: &str, leaves: usize) -> HashMap<String, usize> {
    let mut got: HashMap<String, (usize, Option<usize>)> = HashMap::new();
    let mut left = 0;
    let prefix = format!("{verb}:");
    while left < leaves {
        let line = c.read_line();
        if line.starts_with("LEAVE:") {
            left += 1;
        } else if let Some(rest) = line.strip_prefix(&prefix) {
            let (from, text) = rest.split_once(':').unwrap();
            let seq: usize = text.split_once(' ').unwrap().0.parse().unwrap();
            let (count, last) = got.entry(from.to_string()).or_default();
            assert!(last.is_none_or(|l| seq > l), "{from}'s {seq} out of order");
            *count += 1;
            *last = Some(seq);
        } else {
            assert!(line.starts_with("JOIN:"), "got {line:?}");
        }
    }
    got.into_iter().map(|(k, (n, _))| (k, n)).collect()
}

/// Sends each sender `per_sender` lines of about 4 KB made by `line(k)`, then LEAVE
/// (which costs no token), each sender in one write; returns the errors each sender
/// got (one per refused line), after asserting each is one of `allowed`. The senders
/// are gone (they left) when it returns.
#[track_caller]
fn burst_and_leave(
    mut senders: Vec<(Client, String)>,
    per_sender: usize,
    line: impl Fn(usize) -> String,
    allowed: &[&str],
) -> HashMap<String, Vec<String>> {
    for (s, _) in senders.iter_mut() {
        let mut burst = String::new();
        for k in 0..per_sender {
            burst.push_str(&line(k));
        }
        burst.push_str("LEAVE:done\n");
        s.send(burst.as_bytes());
    }
    // Each sender reads on a thread of its own: one that is owed room traffic must
    // take it within the linger time after its LEAVE.
    let reading: Vec<_> = senders
        .into_iter()
        .map(|(mut s, name)| thread::spawn(move || (name, errors_until_goodbye(&mut s))))
        .collect();
    let mut dropped = HashMap::new();
    for r in reading {
        let (name, errors) = r.join().unwrap();
        for e in &errors {
            assert!(allowed.contains(&e.as_str()), "{name} got {e:?}");
        }
        dropped.insert(name, errors);
    }
    dropped
}

#[test]
fn sixty_four_senders_cannot_evict_a_private_message_recipient() {
    let server = start(defaults());
    let mut victim = Client::connect_named_from(server.addr, ip(0, 20), "victim");
    let senders = sixty_four_senders(&server, |i| format!("JOIN:s{i}"));
    let n = senders.len();
    // The victim reads as fast as it can, on its own thread, until every sender has
    // left.
    let reading = thread::spawn(move || {
        let got = count_until_leaves(&mut victim, "MSG", n);
        victim.barrier();
        (victim, got)
    });
    // Nine messages of 4 KB each: the rest of each sender's own burst of ten. The
    // addresses' rate passes 24 of each sixteen senders' 144; of those, the victim's
    // inbound rate (burst 20, 10/s) takes a few dozen and refuses the rest.
    let per_sender = 9;
    let pad = "m".repeat(3990);
    let too_fast = "ERROR:victim is receiving too fast, message dropped\n";
    let names: Vec<String> = senders.iter().map(|(_, n)| n.clone()).collect();
    let dropped = burst_and_leave(
        senders,
        per_sender,
        |k| format!("MSG:victim:{k} {pad}\n"),
        &[too_fast, ADDRESS_LIMITED],
    );
    let (mut victim, got) = reading.join().unwrap();
    // Every message was either delivered, in order, or refused with an error.
    for name in &names {
        let d = got.get(name).copied().unwrap_or(0);
        assert_eq!(d + dropped[name].len(), per_sender, "{name}");
    }
    let refused = dropped
        .values()
        .flatten()
        .filter(|e| *e == too_fast)
        .count();
    assert!(
        refused > 0,
        "no sender was told the victim receives too fast"
    );
    victim.send_line("WHO:");
    victim.expect_line("SERVER:#lobby (1): victim\n");
}

#[test]
fn sixty_four_senders_flooding_a_room_do_not_evict_readers_that_keep_up() {
    let server = start(ServerConfig {
        // The senders are in the room too, owed up to 400 KB each when they leave: on
        // a busy machine they may need more than the default 2 s to take it.
        linger: Duration::from_secs(10),
        ..defaults()
    });
    let readers: Vec<Client> = (0..2u8)
        .map(|i| {
            let mut r = Client::connect_named_from(server.addr, ip(0, 21 + i), &format!("r{i}"));
            r.send_line("JOIN:#flood");
            r.expect_line("SERVER:you are now in #flood\n");
            r
        })
        .collect();
    // The room as the first line gives each sender a guest name there.
    let senders = sixty_four_senders(&server, |_| "JOIN:#flood".to_string());
    let n = senders.len();
    // The readers read on their own threads until every sender has left.
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            thread::spawn(move || {
                let got = count_until_leaves(&mut r, "SAY", n);
                r.barrier();
                (r, got)
            })
        })
        .collect();
    // Nine lines of 4 KB each: the addresses' rate passes 96 of them, about 400 KB
    // to each member of the room.
    let per_sender = 9;
    let pad = "s".repeat(3990);
    let names: Vec<String> = senders.iter().map(|(_, n)| n.clone()).collect();
    let dropped = burst_and_leave(
        senders,
        per_sender,
        |k| format!("SAY::{k} {pad}\n"),
        &[ADDRESS_LIMITED],
    );
    let mut readers = Vec::new();
    for r in reading {
        let (r, got) = r.join().unwrap();
        for name in &names {
            let d = got.get(name).copied().unwrap_or(0);
            assert_eq!(d + dropped[name].len(), per_sender, "{name}");
        }
        readers.push(r);
    }
    for r in &mut readers {
        r.send_line("WHO:");
        r.expect_line("SERVER:#flood (2): r0 r1\n");
    }
}

// ----- eviction only of readers that really stopped ----------------------------------

#[test]
fn a_burst_twice_the_output_cap_does_not_evict_a_reader_that_keeps_up() {
    let server = start(ServerConfig {
        max_output: 64 * 1024,
        // The burst is the point here, not the message rate.
        rate: 0.0,
        ip_rate: 0.0,
        ..defaults()
    });
    let mut alice = Client::connect_named_from(server.addr, attacker(), "alice");
    let mut bob = Client::connect_named_from(server.addr, bystander(), "bob");
    alice.expect_line("JOIN:bob\n");
    // 128 KiB in one write, four times over.
    let pad = 4000;
    let per_burst = 128 * 1024 / pad + 1;
    let bursts = 4;
    let n = per_burst * bursts;
    let reading = thread::spawn(move || {
        for i in 0..n {
            bob.expect_line(&util::said("alice", i, pad));
        }
        bob.barrier();
        bob
    });
    for b in 0..bursts {
        alice.send(&util::says(b * per_burst..(b + 1) * per_burst, pad));
    }
    let mut bob = reading.join().unwrap();
    alice.send_line("WHO:");
    alice.expect_line("SERVER:#lobby (2): alice bob\n");
    bob.barrier();
}

#[test]
fn a_reader_that_stops_is_evicted_and_nobody_else() {
    let server = start(ServerConfig {
        max_output_soft: 4096,
        slow_grace: Duration::from_millis(200),
        ..defaults()
    });
    let addr = server.addr;
    let mut sloth = Client::connect_small_rcvbuf(addr, 4096);
    sloth.expect_line(GREETING);
    sloth.send_line("JOIN:sloth");
    sloth.expect_line("SERVER:you are sloth in #lobby\n");
    // Six talkers on addresses of their own, and one member who only listens.
    let mut members: Vec<Client> = Vec::new();
    let names = ["fast", "t0", "t1", "t2", "t3", "t4", "t5"];
    for (i, name) in names.iter().enumerate() {
        let c = Client::connect_named_from(addr, ip(0, 30 + i as u8), name);
        for earlier in &mut members {
            earlier.expect_line(&format!("JOIN:{name}\n"));
        }
        members.push(c);
    }
    // The talkers write through second handles to their sockets, while everyone but
    // the sloth reads on a thread of its own until the sloth is gone.
    let writers: Vec<std::net::TcpStream> = members[1..]
        .iter()
        .map(|c| c.stream().try_clone().unwrap())
        .collect();
    let reading: Vec<_> = members
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                let mut lines = Vec::new();
                loop {
                    let line = c.read_line();
                    let done = line == "LEAVE:sloth\n";
                    lines.push(line);
                    if done {
                        return (c, lines);
                    }
                }
            })
        })
        .collect();
    // Nine lines of 4 KB from each talker, inside its own and its address's bursts:
    // 216 KB to the sloth, more than its kernel buffers hold.
    let pad = "z".repeat(4000);
    let mut burst = String::new();
    for k in 0..9 {
        burst.push_str(&format!("SAY::{k} {pad}\n"));
    }
    for mut w in writers {
        w.write_all(burst.as_bytes()).unwrap();
    }
    let mut members = Vec::new();
    for r in reading {
        let (c, lines) = r.join().unwrap();
        let leaves: Vec<&String> = lines.iter().filter(|l| l.starts_with("LEAVE:")).collect();
        assert_eq!(leaves, ["LEAVE:sloth\n"], "only the sloth left");
        members.push(c);
    }
    members[0].send_line("WHO:");
    members[0].expect_line("SERVER:#lobby (7): fast t0 t1 t2 t3 t4 t5\n");
    for c in &mut members {
        c.barrier();
    }
    // The sloth's stream ends after whatever prefix it had been sent.
    let got = sloth.read_to_close();
    assert!(got.len() < 6 * 9 * 4000, "the sloth got everything");
}

// ----- clean close --------------------------------------------------------------------

/// Sends `n` private messages of about 200 bytes from `from` to `to` and returns the
/// lines `to` is owed.
#[track_caller]
fn owe(from: &mut Client, from_name: &str, to: &str, n: usize) -> Vec<String> {
    let pad = "o".repeat(200);
    let mut out = String::new();
    let mut owed = Vec::new();
    for i in 0..n {
        out.push_str(&format!("MSG:{to}:{i} {pad}\n"));
        owed.push(format!("MSG:{from_name}:{i} {pad}\n"));
    }
    from.send(out.as_bytes());
    // Processed in order: everything before the barrier is queued for `to`.
    from.barrier();
    owed
}

/// Private messages of [`owe`] for the clean-close tests: 860 KB, more than the
/// kernel holds for a reader that is not reading yet, less than the 1 MiB output cap.
const OWED: usize = 4000;

/// A named client in a room of its own, so that its chat lines go nowhere.
#[track_caller]
fn typist(server: &TestServer, name: &str) -> Client {
    let mut c = Client::connect_named_from(server.addr, attacker(), name);
    c.send_line(&format!("JOIN:#{name}"));
    c.expect_line(&format!("SERVER:you are now in #{name}\n"));
    c
}

#[test]
fn a_client_typing_on_after_leave_gets_everything_it_was_owed_then_eof() {
    // Limits lifted: the typing and the owed messages would be rate limited.
    let server = start(ServerConfig {
        linger: Duration::from_secs(5),
        ..util::config()
    });
    let mut typer = typist(&server, "typer");
    let mut owner = Client::connect_named_from(server.addr, bystander(), "owner");
    // Most of it is still queued when the LEAVE is read.
    let owed = owe(&mut owner, "owner", "typer", OWED);
    let blast = Blaster::start(&typer, b"LEAVE:bye\n", &b"SAY::typing\n".repeat(1000));
    for line in &owed {
        typer.expect_line(line);
    }
    typer.expect_line("SERVER:goodbye\n");
    typer.expect_eof();
    blast.stop();
}

#[test]
fn a_client_typing_on_during_shutdown_gets_everything_it_was_owed_then_eof() {
    let server = start(ServerConfig {
        linger: Duration::from_secs(5),
        ..util::config()
    });
    let mut typer = typist(&server, "typer");
    let mut owner = Client::connect_named_from(server.addr, bystander(), "owner");
    let blast = Blaster::start(&typer, b"", &b"SAY::typing\n".repeat(1000));
    let owed = owe(&mut owner, "owner", "typer", OWED);
    server.handle.shutdown();
    for line in &owed {
        typer.expect_line(line);
    }
    typer.expect_line("SERVER:server shutting down\n");
    typer.expect_eof();
    blast.stop();
    owner.expect_line("SERVER:server shutting down\n");
    owner.expect_eof();
    // The server waits for their ends of the connections (or the linger time).
    drop((typer, owner));
    server.wait_exit(Duration::from_secs(2));
}

#[test]
fn with_linger_0_leave_and_shutdown_still_say_their_last_line() {
    let server = start(ServerConfig {
        linger: Duration::ZERO,
        ..defaults()
    });
    let mut leaver = Client::connect_named_from(server.addr, attacker(), "leaver");
    let mut stayer = Client::connect_named_from(server.addr, bystander(), "stayer");
    leaver.expect_line("JOIN:stayer\n");
    leaver.send_line("LEAVE:bye");
    leaver.expect_line("SERVER:goodbye\n");
    leaver.expect_eof();
    stayer.expect_line("LEAVE:leaver\n");
    // Typing on after LEAVE: the input is not read for long, but the goodbye and the
    // FIN went out before the close, so the end is still clean.
    let mut typer = Client::connect_named_from(server.addr, attacker(), "typer");
    stayer.expect_line("JOIN:typer\n");
    let blast = Blaster::start(&typer, b"LEAVE:bye\n", &b"SAY::typing\n".repeat(1000));
    typer.expect_line("SERVER:goodbye\n");
    typer.expect_eof();
    blast.stop();
    stayer.expect_line("LEAVE:typer\n");
    server.handle.shutdown();
    stayer.expect_line("SERVER:server shutting down\n");
    stayer.expect_eof();
    server.wait_exit(util::TIMEOUT);
}

// ----- cheap answers --------------------------------------------------------------------

#[test]
fn who_in_a_big_room_lists_the_first_hundred_in_order_and_counts_the_rest() {
    let server = start(defaults());
    // 150 members, spread over addresses inside the default connect burst; names in
    // mixed case, connected in an order that is not the sorted one.
    let mut names: Vec<String> = (0..150)
        .map(|i| {
            let n = (i * 37) % 150;
            if n % 2 == 0 {
                format!("User{n:03}")
            } else {
                format!("user{n:03}")
            }
        })
        .collect();
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let from = ip(1, (i / 15) as u8 + 1);
        members.push(Client::connect_named_from(server.addr, from, name));
    }
    let mut asker = Client::connect_named_from(server.addr, ip(2, 1), "asker");
    names.push("asker".into());
    names.sort_by_key(|n| n.to_ascii_lowercase());
    let shown = names[..100].join(" ");
    asker.send_line("WHO:");
    asker.expect_line(&format!("SERVER:#lobby (151): {shown} …and 51 more\n"));
}

// ----- fair strikes ---------------------------------------------------------------------

#[test]
fn a_paste_behind_a_nat_bans_neither_the_paster_nor_a_quiet_neighbour() {
    let server = start(defaults());
    let nat = ip(0, 5);
    let mut watcher = Client::connect_named_from(server.addr, bystander(), "watcher");
    let mut quiet = Client::connect_named_from(server.addr, nat, "quiet");
    watcher.expect_line("JOIN:quiet\n");
    let mut paster = Client::connect_named_from(server.addr, nat, "paster");
    watcher.expect_line("JOIN:paster\n");
    quiet.expect_line("JOIN:paster\n");
    let mut paste = String::new();
    for i in 0..15 {
        paste.push_str(&format!("SAY::pasted {i}\n"));
    }
    paster.send(paste.as_bytes());
    // The name took one token of the default ten: nine lines pass, six are dropped.
    let rate_error = "ERROR:rate limit exceeded (5 messages/s), message dropped\n";
    for _ in 0..6 {
        paster.expect_line(rate_error);
    }
    for i in 0..9 {
        watcher.expect_line(&format!("SAY:paster:pasted {i}\n"));
        quiet.expect_line(&format!("SAY:paster:pasted {i}\n"));
    }
    // The quiet neighbour chats on, and the paster is still connected.
    quiet.send_line("SAY::hello");
    watcher.expect_line("SAY:quiet:hello\n");
    paster.expect_line("SAY:quiet:hello\n");
    paster.send_line("LEAVE:done");
    paster.expect_line("SERVER:goodbye\n");
    paster.expect_eof();
    watcher.expect_line("LEAVE:paster\n");
    quiet.expect_line("LEAVE:paster\n");
    quiet.barrier();
    watcher.barrier();
}

// ----- text that could forge lines, and text that must not be lost ------------------------

#[test]
fn separators_and_bidi_overrides_are_refused_like_control_characters() {
    let server = start(defaults());
    let [mut alice, mut bob] = util::named(server.addr, ["alice", "bob"]);
    for c in ['\u{2028}', '\u{2029}', '\u{202E}'] {
        alice.send_line(&format!("SAY::one{c}two"));
        alice.expect_line("ERROR:control characters are not allowed\n");
    }
    let mut text = Client::connect_from(server.addr, bystander());
    text.send(b"hello\r\n");
    text.expect_line("[server] you are guest1 in #lobby\r\n");
    alice.expect_line("JOIN:guest1\n");
    bob.expect_line("JOIN:guest1\n");
    text.send("evil\u{202E}txt.exe\r\n".as_bytes());
    text.expect_line("[error] control characters are not allowed\r\n");
    // Nothing of it reached anyone.
    bob.expect_line("SAY:guest1:hello\n");
    alice.expect_line("SAY:guest1:hello\n");
    bob.barrier();
    alice.barrier();
}

#[test]
fn say_with_a_colon_in_the_text_delivers_all_of_it() {
    let server = start(defaults());
    let [mut alice, mut bob] = util::named(server.addr, ["alice", "bob"]);
    alice.send_line("SAY:meeting at 10:30 in room 4");
    bob.expect_line("SAY:alice:meeting at 10:30 in room 4\n");
    alice.barrier();
}

#[test]
fn a_huge_register_timeout_flag_starts_a_server_that_greets() {
    let server = Binary::start(&["--register-timeout", "10000000000000000000"]);
    let mut c = Client::connect(server.addr);
    c.send_line("JOIN:alice");
    c.expect_line("SERVER:you are alice in #lobby\n");
    assert_eq!(
        loopchat::config::parse_duration("10000000000000000000"),
        Ok(loopchat::config::MAX_DURATION)
    );
}

#[test]
fn enter_in_text_mode_gets_no_reply_but_an_empty_frame_is_an_error() {
    let server = start(defaults());
    let mut person = Client::connect_from(server.addr, attacker());
    // Before anything is decided, and after text mode is.
    person.send(b"\r\n");
    person.send(b"/nick tom\r\n");
    person.expect_line("[server] you are tom in #lobby\r\n");
    person.send(b"\r\n  \r\n");
    person.text_barrier();
    let mut frames = Client::connect_named_from(server.addr, bystander(), "frames");
    person.expect_line("*** frames joined\r\n");
    frames.send(b"\n");
    frames.expect_line("ERROR:empty line\n");
    frames.barrier();
}

// ----- coalescing -----------------------------------------------------------------------

#[test]
fn with_a_long_coalesce_a_new_connection_is_still_greeted_at_once() {
    let server = start(ServerConfig {
        coalesce: Duration::from_secs(5),
        ..defaults()
    });
    let wait = Duration::from_secs(2);
    let mut first = Client::connect_raw_from(server.addr, attacker());
    assert_eq!(first.read_line_within(wait).as_deref(), Some(GREETING));
    let mut second = Client::connect_raw_from(server.addr, bystander());
    assert_eq!(second.read_line_within(wait).as_deref(), Some(GREETING));
}

#[test]
fn durations_too_long_to_represent_in_a_config_built_in_code_are_never() {
    // The flags cap durations at parse time; a ServerConfig built in code can hold
    // anything. Such a summary interval or linger is "never", not a panic or "now".
    let server = start(ServerConfig {
        summary_interval: Duration::MAX,
        linger: Duration::MAX,
        register_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        slow_grace: Duration::MAX,
        ..defaults()
    });
    let [mut alice, mut bob] = util::named(server.addr, ["alice", "bob"]);
    server.handle.shutdown();
    alice.expect_line("SERVER:server shutting down\n");
    alice.expect_eof();
    bob.expect_line("SERVER:server shutting down\n");
    bob.expect_eof();
    // The server waits for the clients' ends (there is no linger deadline), then exits.
    drop((alice, bob));
    server.wait_exit(util::TIMEOUT);
}

#[test]
fn a_refused_client_that_spoke_first_gets_its_refusal_then_a_clean_end() {
    let server = start(ServerConfig {
        max_conns_per_ip: 1,
        ..defaults()
    });
    let _first = Client::connect_from(server.addr, attacker());
    // `echo JOIN:bob | nc`: the line is on its way before the server has accepted.
    // Closing a socket with unread input resets the connection; the refusal must end
    // with a FIN instead, so the client reads it and then a clean end of stream.
    for _ in 0..5 {
        let mut c = Client::connect_raw_from(server.addr, attacker());
        c.send_line("JOIN:bob");
        c.expect_line("ERROR:too many connections from your address\n");
        c.expect_eof();
    }
}

#[test]
fn bytes_swallowed_by_telnet_negotiation_cost_tokens_like_an_endless_line() {
    // Two tokens, nothing refills, and one strike bans: the first dropped token's worth
    // of input decides.
    let server = start(ServerConfig {
        rate: 0.01,
        burst: 2.0,
        max_strikes: 1,
        ban_time: Duration::from_secs(60),
        ..defaults()
    });
    let mut talker = Client::connect_from(server.addr, attacker());
    talker.send(b"hello\r\n");
    talker.expect_line("[server] you are guest1 in #lobby\r\n");
    // A subnegotiation that never ends swallows everything, so no line ever comes of
    // it: 64 KB read and thrown away, like an endless line, sixteen tokens' worth. The
    // line after it would have the second token if the swallowed bytes were free.
    let mut sb = b"\xff\xfa\x18".to_vec();
    sb.resize(64 * 1024, b'q');
    talker.send(&sb);
    talker.send(b"\xff\xf0/who\r\n");
    talker.expect_line("[error] banned for 60 seconds: too many strikes, closing\r\n");
    talker.expect_eof();
    // A few bytes of real negotiation cost nothing: a new address negotiates, then
    // uses both its tokens.
    let mut person = Client::connect_from(server.addr, bystander());
    person.send(b"\xff\xfb\x18\xff\xfd\x01\xff\xfa\x18\x00xterm\xff\xf0hi\r\n");
    person.expect_line("[server] you are guest2 in #lobby\r\n");
    person.send(b"\xff\xfd\x03/who\r\n");
    person.expect_line("[server] #lobby (1): guest2\r\n");
}

// ----- the read budget's bookkeeping ----------------------------------------------------

#[test]
fn input_past_the_turn_budgets_is_all_handled_in_order_even_after_a_half_close() {
    // Limits lifted: every line counts. Thousands of lines of uneven length, in one
    // write and then a half-close: far more than one turn's budget of lines (32) and
    // bytes (64 KiB), so lines are held over and cut at read boundaries.
    let server = start(util::config());
    let [mut alice, mut bob] = util::named(server.addr, ["alice", "bob"]);
    let n = 3000;
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..n {
        let pad = "u".repeat(i * 7 % 301);
        input.extend_from_slice(format!("SAY::{i} {pad}\n").as_bytes());
        expected.push(format!("SAY:alice:{i} {pad}\n"));
    }
    input.extend_from_slice(b"WHO:\n");
    alice.send(&input);
    alice.stream().shutdown(std::net::Shutdown::Write).unwrap();
    for line in &expected {
        bob.expect_line(line);
    }
    bob.expect_line("LEAVE:alice\n");
    // Owed to the half-closed client, then the end.
    alice.expect_line("SERVER:#lobby (2): alice bob\n");
    alice.expect_eof();
    bob.barrier();
}

#[test]
fn text_mode_input_past_the_turn_budgets_keeps_its_telnet_state_and_line_ends() {
    let server = start(util::config());
    let mut watcher = Client::connect_named(server.addr, "watcher");
    let mut person = Client::connect(server.addr);
    person.send(b"/nick tom\r\n");
    person.expect_line("[server] you are tom in #lobby\r\n");
    watcher.expect_line("JOIN:tom\n");
    // Negotiation, NUL line ends and blank lines all through a few thousand lines.
    let n = 2000;
    let mut input: Vec<u8> = Vec::new();
    for i in 0..n {
        let text = format!("line {i}");
        match i % 4 {
            0 => input.extend_from_slice(format!("{text}\r\n").as_bytes()),
            1 => {
                input.extend_from_slice(b"\xff\xfb\x01");
                input.extend_from_slice(text.as_bytes());
                input.extend_from_slice(b"\r\0");
            }
            2 => {
                input.extend_from_slice(b"li\xff\xfd\x03");
                input.extend_from_slice(&text.as_bytes()[2..]);
                input.extend_from_slice(b"\r\n\r\n");
            }
            _ => input.extend_from_slice(format!("{text}\n").as_bytes()),
        }
    }
    person.send(&input);
    for i in 0..n {
        watcher.expect_line(&format!("SAY:tom:line {i}\n"));
    }
    person.text_barrier();
    watcher.barrier();
}
