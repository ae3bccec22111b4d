//! Graceful shutdown: through the in-process handle and through SIGTERM on the real
//! binary. Everyone is told, output is flushed within the linger deadline, the process
//! exits 0, and a second signal does not wait.

mod util;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use loopchat::ServerConfig;
use util::{Binary, Client, named, start, start_default};

const NOTICE: &str = "SERVER:server shutting down\n";
const TEXT_NOTICE: &str = "[server] server shutting down\r\n";

#[test]
fn shutdown_tells_everyone_then_closes_and_stops_listening() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    let mut tom = Client::connect(server.addr);
    tom.send(b"/nick tom\r\n");
    tom.expect_line("[server] you are tom in #lobby\r\n");
    alice.expect_line("JOIN:tom\n");
    bob.expect_line("JOIN:tom\n");
    let mut lurker = Client::connect(server.addr);

    server.shutdown_and_wait(Duration::from_secs(2));
    for c in [&mut alice, &mut bob, &mut lurker] {
        c.expect_line(NOTICE);
        c.expect_eof();
    }
    tom.expect_line(TEXT_NOTICE);
    tom.expect_eof();
    let err = TcpStream::connect(server.addr).expect_err("still accepting after shutdown");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn shutdown_of_an_idle_server_is_prompt() {
    let server = start_default();
    let begin = Instant::now();
    server.shutdown_and_wait(Duration::from_secs(2));
    assert!(
        begin.elapsed() < Duration::from_millis(500),
        "took {:?}",
        begin.elapsed()
    );
}

#[test]
fn shutdown_flushes_what_is_owed_before_the_notice() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    const N: usize = 1000;
    let pad = "s".repeat(150);
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend_from_slice(format!("SAY::{i:04} {pad}\n").as_bytes());
    }
    alice.send(&burst);
    alice.barrier();
    server.handle.shutdown();
    for i in 0..N {
        bob.expect_line(&format!("SAY:alice:{i:04} {pad}\n"));
    }
    bob.expect_line(NOTICE);
    bob.expect_eof();
    alice.expect_line(NOTICE);
    alice.expect_eof();
    server.wait_exit(Duration::from_secs(2));
}

/// Joins alice and a reader that never reads, and has alice say more than the kernel
/// holds for the reader, so the server is left owing it output. Both stay connected
/// while the returned clients live.
#[track_caller]
fn stuck_reader_with_output_owed(addr: std::net::SocketAddr) -> (Client, Client) {
    let mut alice = Client::connect_named(addr, "alice");
    let mut slow = Client::connect_small_rcvbuf(addr, 4096);
    slow.expect_line(util::GREETING);
    slow.send(b"JOIN:slowpoke\n");
    slow.expect_line("SERVER:you are slowpoke in #lobby\n");
    alice.expect_line("JOIN:slowpoke\n");
    // More than the kernel holds for slowpoke, under the (raised) output cap.
    alice.send(&util::says(0..2700, 3000));
    alice.barrier();
    (alice, slow)
}

#[test]
fn shutdown_gives_up_on_a_client_that_never_reads_after_the_linger() {
    let server = start(ServerConfig {
        linger: Duration::from_millis(300),
        max_output: 16 << 20,
        ..util::config()
    });
    let (mut alice, _slow) = stuck_reader_with_output_owed(server.addr);

    let begin = Instant::now();
    server.shutdown_and_wait(Duration::from_secs(3));
    let took = begin.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "did not linger: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "lingered too long: {took:?}");
    alice.expect_line(NOTICE);
    alice.expect_eof();
}

#[test]
fn sigterm_tells_everyone_and_the_binary_exits_zero() {
    let mut bin = Binary::start(&[]);
    let mut alice = Client::connect_named(bin.addr, "alice");
    let mut tom = Client::connect(bin.addr);
    tom.send(b"/nick tom\r\n");
    tom.expect_line("[server] you are tom in #lobby\r\n");
    alice.expect_line("JOIN:tom\n");

    bin.signal(libc::SIGTERM);
    alice.expect_line(NOTICE);
    alice.expect_eof();
    tom.expect_line(TEXT_NOTICE);
    tom.expect_eof();
    let status = bin.wait(Duration::from_secs(3));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigint_also_shuts_down_gracefully() {
    let mut bin = Binary::start(&[]);
    let mut alice = Client::connect_named(bin.addr, "alice");
    bin.signal(libc::SIGINT);
    alice.expect_line(NOTICE);
    alice.expect_eof();
    let status = bin.wait(Duration::from_secs(3));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut bin = Binary::start(&[
        "--linger",
        "30s",
        "--rate",
        "0",
        "--ip-rate",
        "0",
        "--max-strikes",
        "0",
        "--max-output",
        "16777216",
    ]);
    let (mut alice, _slow) = stuck_reader_with_output_owed(bin.addr);

    bin.signal(libc::SIGTERM);
    alice.expect_line(NOTICE);
    alice.expect_eof();
    // Still flushing to slowpoke, who does not read: the linger is 30 s.
    assert!(
        bin.child.try_wait().unwrap().is_none(),
        "exited before the linger with output still owed to a client"
    );
    let begin = Instant::now();
    bin.signal(libc::SIGTERM);
    bin.wait(Duration::from_secs(2));
    assert!(begin.elapsed() < Duration::from_secs(2));
}
