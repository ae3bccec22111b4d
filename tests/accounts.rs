//! Accounts and access through real sockets: registering and logging in (Argon2id off
//! the loop), names reserved for their owners, the same answer for an unknown name and
//! a wrong password, the server password, room keys, and operators. The database lives
//! in a temporary directory.

mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use loopchat::ServerConfig;
use util::{Binary, Client, start};

const OTHER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 7));

/// A temporary directory, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("loopchat-accounts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Registers `name` on a fresh connection and asserts the replies.
#[track_caller]
fn registered(addr: SocketAddr, name: &str, password: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send_line(&format!("REGISTER:{name}:{password}"));
    c.expect_line(&format!("SERVER:logged in as {name}\n"));
    c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
    c
}

/// Logs in as `name` on a fresh connection and asserts the replies.
#[track_caller]
fn logged_in(addr: SocketAddr, name: &str, password: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send_line(&format!("AUTH:{name}:{password}"));
    c.expect_line(&format!("SERVER:logged in as {name}\n"));
    c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
    c
}

#[test]
fn register_then_log_in_again_after_leaving() {
    let server = start(util::config());
    let mut alice = registered(server.addr, "alice", "correct horse");
    alice.send_line("LEAVE:bye");
    alice.expect_line("SERVER:goodbye\n");
    alice.expect_eof();
    // The name compares without regard to case; the account keeps its own spelling.
    let mut again = Client::connect(server.addr);
    again.send_line("AUTH:ALICE:correct horse");
    again.expect_line("SERVER:logged in as alice\n");
    again.expect_line("SERVER:you are alice in #lobby\n");
    again.send_line("WHO:");
    again.expect_line("SERVER:#lobby (1): alice\n");
}

#[test]
fn a_registered_name_is_only_for_its_owner() {
    let server = start(util::config());
    let mut alice = registered(server.addr, "alice", "correct horse");
    alice.send_line("LEAVE:");
    alice.expect_line("SERVER:goodbye\n");
    let mut mallory = Client::connect(server.addr);
    mallory.send_line("JOIN:ALICE");
    mallory.expect_line("ERROR:name ALICE is registered; use AUTH:ALICE:<password>\n");
    mallory.send_line("REGISTER:alice:another password");
    mallory.expect_line("ERROR:name alice is registered; use AUTH:alice:<password>\n");
    // A name someone holds cannot be registered by another.
    let mut bob = Client::connect_named(server.addr, "bob");
    mallory.send_line("REGISTER:bob:password123");
    mallory.expect_line("ERROR:name bob is taken\n");
    bob.barrier();
}

#[test]
fn passwords_outside_8_to_128_bytes_are_refused() {
    let server = start(util::config());
    let mut c = Client::connect(server.addr);
    c.send_line("REGISTER:shorty:1234567");
    c.expect_line("ERROR:password must be 8 to 128 bytes\n");
    c.send_line(&format!("REGISTER:longy:{}", "x".repeat(129)));
    c.expect_line("ERROR:password must be 8 to 128 bytes\n");
    // Colons belong to the password.
    c.send_line("REGISTER:colon:pass:word:1");
    c.expect_line("SERVER:logged in as colon\n");
    c.expect_line("SERVER:you are colon in #lobby\n");
    let _again = {
        c.send_line("LEAVE:");
        c.expect_line("SERVER:goodbye\n");
        logged_in(server.addr, "colon", "pass:word:1")
    };
}

#[test]
fn unknown_name_and_wrong_password_get_the_same_answer_and_a_strike() {
    let server = start(ServerConfig {
        max_strikes: 3,
        ban_time: Duration::from_secs(60),
        ..util::config()
    });
    let _alice = registered(server.addr, "alice", "correct horse");
    let mut guesser = Client::connect_from(server.addr, OTHER);
    guesser.send_line("AUTH:alice:wrong password");
    guesser.expect_line("ERROR:wrong name or password\n");
    guesser.send_line("AUTH:nobody:wrong password");
    guesser.expect_line("ERROR:wrong name or password\n");
    guesser.send_line("AUTH:alice:still wrong");
    guesser.expect_line("ERROR:wrong name or password\n");
    guesser.expect_line("ERROR:banned for 60 seconds: too many strikes, closing\n");
    guesser.expect_eof();
}

#[test]
fn logging_in_elsewhere_takes_over_the_name() {
    let server = start(util::config());
    let mut first = registered(server.addr, "alice", "correct horse");
    let mut bob = Client::connect_named(server.addr, "bob");
    first.expect_line("JOIN:bob\n");
    let mut second = Client::connect(server.addr);
    second.send_line("AUTH:alice:correct horse");
    first.expect_line("ERROR:logged in elsewhere, closing\n");
    first.expect_eof();
    second.expect_line("SERVER:logged in as alice\n");
    second.expect_line("SERVER:you are alice in #lobby\n");
    bob.expect_line("LEAVE:alice\n");
    bob.expect_line("JOIN:alice\n");
}

#[test]
fn the_database_holds_argon2id_hashes_and_no_password() {
    let dir = TempDir::new("hashes");
    let db = dir.path("chat.db");
    {
        let server = start(ServerConfig {
            db: db.to_str().unwrap().into(),
            ..util::config()
        });
        let _alice = registered(server.addr, "alice", "plaintext-never-stored");
        server.shutdown_and_wait(Duration::from_secs(5));
    }
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"$argon2id$"), "a PHC string is stored");
    assert!(!has(b"plaintext-never-stored"), "the password is not");
    // And the account survives a restart.
    let server = start(ServerConfig {
        db: db.to_str().unwrap().into(),
        ..util::config()
    });
    let _back = logged_in(server.addr, "alice", "plaintext-never-stored");
}

#[test]
fn no_log_line_holds_a_password_even_at_debug() {
    let mut bin = Binary::start_debug(&[]);
    let mut c = Client::connect(bin.addr);
    c.send_line("REGISTER:alice:hunter2-secret");
    c.expect_line("SERVER:logged in as alice\n");
    c.expect_line("SERVER:you are alice in #lobby\n");
    c.send_line("AUTH:alice:hunter3-wrong");
    c.expect_line("ERROR:wrong name or password\n");
    c.send_line("LEAVE:");
    c.expect_line("SERVER:goodbye\n");
    bin.signal(libc::SIGTERM);
    bin.wait(Duration::from_secs(5));
    assert!(bin.logged("registered"), "the log has the registration");
    assert!(!bin.logged("hunter2") && !bin.logged("hunter3"));
    assert!(!bin.logged("argon2"));
}

#[test]
fn the_server_password_comes_first_and_a_wrong_one_closes() {
    let dir = TempDir::new("pass");
    let file = dir.path("password");
    std::fs::write(&file, "open sesame\n").unwrap();
    let server = start(ServerConfig {
        password_file: Some(file),
        max_strikes: 5,
        ..util::config()
    });
    let mut c = Client::connect(server.addr);
    c.send_line("JOIN:alice");
    c.expect_line("ERROR:password required\n");
    c.send_line("PASS:open sesame");
    c.expect_line("SERVER:password accepted\n");
    c.send_line("JOIN:alice");
    c.expect_line("SERVER:you are alice in #lobby\n");

    let mut wrong = Client::connect(server.addr);
    wrong.send_line("PASS:open sesame?");
    wrong.expect_line("ERROR:wrong server password, closing\n");
    wrong.expect_eof();

    let mut text = Client::connect(server.addr);
    text.send(b"/pass open sesame\r\n");
    text.expect_line("[server] password accepted\r\n");
}

#[test]
fn room_keys_are_set_by_the_first_and_asked_of_the_rest() {
    let server = start(util::config());
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send_line("JOIN:#club:letmein");
    alice.expect_line("SERVER:you are now in #club\n");
    let mut bob = Client::connect_named(server.addr, "bob");
    bob.send_line("JOIN:#club");
    bob.expect_line("ERROR:room #club needs a key\n");
    bob.send_line("JOIN:#CLUB:guess");
    bob.expect_line("ERROR:wrong key for #CLUB\n");
    bob.send_line("JOIN:#club:letmein");
    bob.expect_line("SERVER:you are now in #club\n");
    alice.expect_line("JOIN:bob\n");
    // The key outlives the room's members.
    alice.send_line("LEAVE:");
    alice.expect_line("SERVER:goodbye\n");
    bob.expect_line("LEAVE:alice\n");
    bob.send_line("JOIN:#lobby");
    bob.expect_line("SERVER:you are now in #lobby\n");
    bob.send_line("JOIN:#club");
    bob.expect_line("ERROR:room #club needs a key\n");
}

#[test]
fn operators_kick_and_ban_and_nobody_else_may() {
    let server = start(ServerConfig {
        admins: vec!["root".into()],
        ..util::config()
    });
    let mut root = registered(server.addr, "root", "operator password");
    let mut bob = Client::connect_named_from(server.addr, OTHER, "bob");
    root.expect_line("JOIN:bob\n");
    bob.send_line("KICK:root:no");
    bob.expect_line("ERROR:not allowed\n");
    root.send_line("KICK:bob:be nice");
    bob.expect_line("ERROR:kicked by root: be nice, closing\n");
    bob.expect_eof();
    root.expect_line("LEAVE:bob\n");

    let mut carol = Client::connect_named_from(server.addr, OTHER, "carol");
    root.expect_line("JOIN:carol\n");
    root.send_line("BAN:carol:1m");
    carol.expect_line("ERROR:banned for 60 seconds by root, closing\n");
    carol.expect_eof();
    root.expect_line("LEAVE:carol\n");
    let mut again = Client::connect_raw_from(server.addr, OTHER);
    again.expect_prefix("ERROR:banned for ");

    // An operator cannot kick another one; an unknown name is said so.
    root.send_line("KICK:root:self");
    root.expect_line("ERROR:not allowed\n");
    root.send_line("KICK:nobody:x");
    root.expect_line("ERROR:no such user nobody\n");
}

#[test]
fn text_mode_has_the_account_commands() {
    let server = start(util::config());
    let mut c = Client::connect(server.addr);
    c.send(b"/register dave a good password\r\n");
    c.expect_line("[server] logged in as dave\r\n");
    c.expect_line("[server] you are dave in #lobby\r\n");
    c.send(b"/quit\r\n");
    c.expect_line("[server] goodbye\r\n");
    let mut d = Client::connect(server.addr);
    d.send(b"/login dave a good password\r\n");
    d.expect_line("[server] logged in as dave\r\n");
    d.expect_line("[server] you are dave in #lobby\r\n");
}

#[test]
fn the_loop_serves_others_while_logins_are_hashed() {
    let server = start(util::config());
    let _alice = registered(server.addr, "alice", "correct horse");
    let mut waiters: Vec<Client> = (0..20)
        .map(|_| {
            let mut c = Client::connect(server.addr);
            c.send_line("AUTH:alice:not the password");
            c
        })
        .collect();
    // Twenty verifications at tens of milliseconds each take a good while on the
    // hasher's thread; a WHO round trip does not wait for them.
    let mut bob = Client::connect_named(server.addr, "bob");
    bob.send_line("WHO:");
    bob.expect_prefix("SERVER:#lobby (");
    let mut still_waiting = 0;
    for c in &mut waiters {
        if c.read_line_within(Duration::from_millis(1)).is_none() {
            still_waiting += 1;
        }
    }
    assert!(
        still_waiting > 0,
        "the WHO answer came while logins were being checked"
    );
    for c in &mut waiters {
        c.expect_line("ERROR:wrong name or password\n");
    }
}

#[test]
fn lines_after_a_login_wait_for_its_answer() {
    let server = start(util::config());
    let mut alice = registered(server.addr, "alice", "correct horse");
    alice.send_line("LEAVE:");
    alice.expect_line("SERVER:goodbye\n");
    let mut bob = Client::connect_named(server.addr, "bob");
    // Both lines in one write: the SAY is read only after the login is decided, so it
    // is said by alice, not by a guest.
    let mut c = Client::connect(server.addr);
    c.send(b"AUTH:alice:correct horse\nSAY::first words\n");
    c.expect_line("SERVER:logged in as alice\n");
    c.expect_line("SERVER:you are alice in #lobby\n");
    bob.expect_line("JOIN:alice\n");
    bob.expect_line("SAY:alice:first words\n");
}
