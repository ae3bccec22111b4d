//! Many connections at once: a burst of 2 000 connects, every one of them in one room,
//! and a broadcast that must reach all of them; many rooms chatting side by side.

mod util;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use loopchat::ServerConfig;
use util::{Client, start};

/// Opens `n` connections as one burst, then names them `{prefix}0000`, … and waits for
/// every greeting and reply. Pipelined, so it costs one pass, not `n` round trips.
#[track_caller]
fn connect_many(addr: SocketAddr, prefix: &str, n: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n).map(|_| Client::connect_raw(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("JOIN:{prefix}{i:04}\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_line(util::GREETING);
        c.expect_line(&format!("SERVER:you are {prefix}{i:04} in #lobby\n"));
    }
    clients
}

#[test]
fn two_thousand_connections_all_receive_a_broadcast() {
    loopchat::net::raise_nofile_limit();
    const N: usize = 2000;
    let server = start(ServerConfig {
        // No presence notices at all: 2 000 joins would otherwise cost 2 million lines.
        announce_limit: 0,
        ..util::config()
    });
    let mut clients = connect_many(server.addr, "u", N);

    clients[0].send(b"ROOMS:\n");
    clients[0].expect_line(&format!("SERVER:rooms (1): #lobby ({N})\n"));
    clients[0].send(b"WHO:\n");
    let who = clients[0].read_line();
    let first: Vec<String> = (0..100).map(|i| format!("u{i:04}")).collect();
    let prefix = format!("SERVER:#lobby ({N}): {}", first.join(" "));
    assert!(
        who.starts_with(&prefix) && who.ends_with(&format!("and {} more\n", N - 100)),
        "WHO in a room of {N}: {who:?}"
    );

    clients[0].send(b"SAY::to everyone\n");
    for c in &mut clients[1..] {
        c.expect_line("SAY:u0000:to everyone\n");
    }
    // A second sender, to check no one got a stray notice in between.
    clients[N - 1].send(b"SAY::and back\n");
    for c in &mut clients[..N - 1] {
        c.expect_line("SAY:u1999:and back\n");
    }
    clients[0].barrier();
    clients[N - 1].barrier();

    // Half of them vanish at once (every other one, half by reset), and a broadcast
    // goes out while the server is still noticing: the rest get it all the same.
    let mut kept = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        match i % 4 {
            0 | 2 => kept.push(c),
            1 => drop(c),
            _ => c.reset(),
        }
    }
    kept[0].send(b"SAY::who is left\n");
    for c in &mut kept[1..] {
        c.expect_line("SAY:u0000:who is left\n");
    }
    // And nobody leaks: the room shrinks to the survivors.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        kept[0].send(b"ROOMS:\n");
        let line = kept[0].read_line();
        if line == format!("SERVER:rooms (1): #lobby ({})\n", N / 2) {
            break;
        }
        assert!(Instant::now() < deadline, "room never shrank: {line:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rooms_over_the_announce_limit_stay_quiet_about_presence() {
    let server = start(ServerConfig {
        announce_limit: 3,
        ..util::config()
    });
    // Up to 3 members, joins are announced.
    let mut c = util::connect_all(server.addr, &["a", "b", "c"]);
    // The fourth makes the room larger than the limit: no notice.
    let mut d = Client::connect_named(server.addr, "d");
    for x in &mut c {
        x.barrier();
    }
    // Nor is a leave from a room that is over the limit.
    d.send(b"LEAVE:bye\n");
    d.expect_line("SERVER:goodbye\n");
    d.expect_eof();
    c[0].send(b"SAY::still talking\n");
    c[1].expect_line("SAY:a:still talking\n");
    c[2].expect_line("SAY:a:still talking\n");
    c[1].barrier();
    c[2].barrier();
    // Back at 3 members, leaves are announced again.
    let b = c.remove(1);
    drop(b);
    c[0].expect_line("LEAVE:b\n");
    c[1].expect_line("LEAVE:b\n");
}

#[test]
fn a_hundred_rooms_chat_side_by_side() {
    loopchat::net::raise_nofile_limit();
    const ROOMS: usize = 100;
    const PER_ROOM: usize = 5;
    let server = start(ServerConfig {
        announce_limit: 0,
        ..util::config()
    });
    let mut clients = connect_many(server.addr, "m", ROOMS * PER_ROOM);
    for (i, c) in clients.iter_mut().enumerate() {
        let room = i % ROOMS;
        c.send(format!("JOIN:#r{room:03}\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_line(&format!("SERVER:you are now in #r{:03}\n", i % ROOMS));
    }
    // Everyone speaks once, all at the same time.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("SAY::m{i:04} here\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let room = i % ROOMS;
        let mut got: Vec<String> = (0..PER_ROOM - 1).map(|_| c.read_line()).collect();
        got.sort();
        let mut want: Vec<String> = (0..PER_ROOM)
            .map(|k| room + k * ROOMS)
            .filter(|&j| j != i)
            .map(|j| format!("SAY:m{j:04}:m{j:04} here\n"))
            .collect();
        want.sort();
        assert_eq!(got, want, "client m{i:04} in #r{room:03}");
    }
    for c in clients.iter_mut().step_by(37) {
        c.barrier();
    }
}
