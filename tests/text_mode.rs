//! Text mode for telnet and nc users: decided by the first line, rendered output ending
//! `\r\n`, slash commands, telnet negotiation stripped, `\r\0` line ends, and frames and
//! text users talking to each other.

mod util;

use std::time::Duration;

use util::{Client, start_default};

/// Connects a text-mode user who takes `name` with `/nick`.
#[track_caller]
fn connect_text(addr: std::net::SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(format!("/nick {name}\r\n").as_bytes());
    c.expect_line(&format!("[server] you are {name} in #lobby\r\n"));
    c
}

#[test]
fn a_plain_first_line_is_chat_from_a_guest() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = Client::connect(server.addr);
    t.send(b"hello there\r\n");
    t.expect_line("[server] you are guest1 in #lobby\r\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:hello there\n"]);
    t.text_barrier();
    alice.barrier();
}

#[test]
fn text_user_sees_chat_rendered_for_people() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = connect_text(server.addr, "tom");
    alice.expect_line("JOIN:tom\n");

    alice.send(b"SAY::hi tom\n");
    t.expect_line("<alice> hi tom\r\n");
    alice.send(b"MSG:tom:psst\n");
    t.expect_line("*alice* psst\r\n");

    let mut bob = Client::connect_named(server.addr, "bob");
    t.expect_line("*** bob joined\r\n");
    alice.expect_line("JOIN:bob\n");
    bob.send(b"LEAVE:bye\n");
    bob.expect_line("SERVER:goodbye\n");
    t.expect_line("*** bob left\r\n");
    alice.expect_line("LEAVE:bob\n");

    alice.send(b"JOIN:alicia\n");
    alice.expect_line("SERVER:alice is now known as alicia\n");
    t.expect_line("[server] alice is now known as alicia\r\n");
    t.text_barrier();
}

#[test]
fn frame_user_sees_text_users_as_frames() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = connect_text(server.addr, "tom");
    alice.expect_line("JOIN:tom\n");
    t.send(b"plain words: with colons\r\n");
    alice.expect_line("SAY:tom:plain words: with colons\n");
    t.send(b"/msg alice just for you\r\n");
    alice.expect_line("MSG:tom:just for you\n");
    t.send(b"/nick tommy\r\n");
    t.expect_line("[server] tom is now known as tommy\r\n");
    alice.expect_line("SERVER:tom is now known as tommy\n");
    t.send(b"/quit off to bed\r\n");
    t.expect_line("[server] goodbye\r\n");
    t.expect_eof();
    alice.expect_line("LEAVE:tommy\n");
    alice.barrier();
}

#[test]
fn text_commands_work_and_errors_are_rendered() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = connect_text(server.addr, "tom");
    alice.expect_line("JOIN:tom\n");

    t.send(b"/join #rust\r\n");
    t.expect_line("[server] you are now in #rust\r\n");
    alice.expect_line("LEAVE:tom\n");
    t.send(b"/join #rust\r\n");
    t.expect_line("[server] you are already in #rust\r\n");
    t.send(b"/who\r\n");
    t.expect_line("[server] #rust (1): tom\r\n");
    t.send(b"/rooms\r\n");
    t.expect_line("[server] rooms (2): #lobby (1) #rust (1)\r\n");
    t.send(b"/msg nobody hello\r\n");
    t.expect_line("[error] no such user nobody\r\n");
    t.send(b"/nick ALICE\r\n");
    t.expect_line("[error] name ALICE is taken\r\n");
    t.send(b"/nick al ice\r\n");
    t.expect_line("[error] invalid name al ice: use 1-32 of A-Z a-z 0-9 _ - .\r\n");
    t.send(b"/x\r\n");
    t.expect_line("[error] unknown command /x (try /help)\r\n");
    t.send(b"/join rust\r\n");
    t.expect_prefix("[error] usage: ");
    t.send(b"/msg alice\r\n");
    t.expect_prefix("[error] usage: ");
    t.send(b"/join #bad!\r\n");
    t.expect_line("[error] invalid room #bad!: use # and 1-32 of A-Z a-z 0-9 _ - .\r\n");
    t.text_barrier();
    alice.barrier();
}

#[test]
fn help_lists_the_commands() {
    let server = start_default();
    let mut t = connect_text(server.addr, "tom");
    t.send(b"/help\r\n/rooms\r\n");
    let mut help = String::new();
    loop {
        let line = t.read_line();
        if line.starts_with("[server] rooms (") {
            break;
        }
        assert!(
            line.starts_with("[server] ") && line.ends_with("\r\n"),
            "help line {line:?}"
        );
        help.push_str(&line);
    }
    for cmd in ["/nick", "/join", "/msg", "/who", "/rooms", "/quit"] {
        assert!(help.contains(cmd), "/help does not mention {cmd}:\n{help}");
    }
}

#[test]
fn text_mode_lasts_for_the_connection() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = Client::connect(server.addr);
    // Looks a little like a frame, but `hello` is no verb: text mode.
    t.send(b"hello: world\r\n");
    t.expect_line("[server] you are guest1 in #lobby\r\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:hello: world\n"]);
    // Frames sent later are just chat text.
    t.send(b"SAY:mallory:x\r\nJOIN:bob\r\n");
    alice.expect_lines(&["SAY:guest1:SAY:mallory:x\n", "SAY:guest1:JOIN:bob\n"]);
    t.text_barrier();
    alice.barrier();
}

#[test]
fn frame_mode_lasts_for_the_connection() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send(b"/nick bob\n");
    alice
        .expect_line("ERROR:unknown command /nick bob (use JOIN, SAY, MSG, LEAVE, WHO, ROOMS, HISTORY, REGISTER, AUTH or PASS)\n");
    alice.barrier();
}

#[test]
fn telnet_negotiation_is_stripped() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = Client::connect(server.addr);
    // What a telnet client sends first: WILL TTYPE, DO SGA, then a TTYPE subnegotiation.
    t.send(b"\xff\xfb\x18\xff\xfd\x03\xff\xfa\x18\x00xterm\xff\xf0");
    t.send(b"hello\r\n");
    t.expect_line("[server] you are guest1 in #lobby\r\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:hello\n"]);
    // In the middle of a line, and split across writes.
    t.send(b"wo\xff\xfb\x01rld\r\n");
    alice.expect_line("SAY:guest1:world\n");
    t.send(b"sp\xff");
    t.expect_silence(Duration::from_millis(5));
    t.send(b"\xfa\x1f\x00\x50");
    t.expect_silence(Duration::from_millis(5));
    t.send(b"\x00\x18\xff\xf0lit\r\n");
    alice.expect_line("SAY:guest1:split\n");
    t.text_barrier();
    alice.barrier();
}

#[test]
fn cr_nul_and_bare_lf_end_lines() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = Client::connect(server.addr);
    t.send(b"one\r\0two\r\0");
    t.expect_line("[server] you are guest1 in #lobby\r\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:one\n", "SAY:guest1:two\n"]);
    t.send(b"three\nfour\r\n");
    alice.expect_lines(&["SAY:guest1:three\n", "SAY:guest1:four\n"]);
    t.send(b"fi");
    t.send(b"ve\r");
    t.send(b"\0");
    alice.expect_line("SAY:guest1:five\n");
    t.text_barrier();
    alice.barrier();
}

#[test]
fn text_control_characters_never_reach_others() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = connect_text(server.addr, "tom");
    alice.expect_line("JOIN:tom\n");
    for line in [
        &b"\x1b[31mred\r\n"[..],
        b"\x1b]0;title\x07\r\n",
        "csi \u{9b}2J\r\n".as_bytes(),
        b"bell\x07\r\n",
        b"/msg alice \x1b[5mblink\r\n",
    ] {
        t.send(line);
        t.expect_line("[error] control characters are not allowed\r\n");
    }
    t.send(b"tab\tok\r\n");
    alice.expect_line("SAY:tom:tab\tok\n");
    alice.barrier();
    t.text_barrier();
}

#[test]
fn text_bad_input_errors_are_rendered() {
    let server = start_default();
    let mut t = connect_text(server.addr, "tom");
    t.send(b"bad \xc3\x28 bytes\r\n");
    t.expect_line("[error] invalid UTF-8\r\n");
    t.send(format!("{}\r\n", "x".repeat(5000)).as_bytes());
    t.expect_line("[error] line too long (max 4096 bytes)\r\n");
    t.text_barrier();
}

#[test]
fn frame_and_text_users_share_a_room_both_ways() {
    let server = start_default();
    let mut t1 = connect_text(server.addr, "tess");
    let mut t2 = connect_text(server.addr, "tina");
    t1.expect_line("*** tina joined\r\n");
    let mut f = Client::connect_named(server.addr, "fred");
    t1.expect_line("*** fred joined\r\n");
    t2.expect_line("*** fred joined\r\n");
    t1.send(b"hi all\r\n");
    t2.expect_line("<tess> hi all\r\n");
    f.expect_line("SAY:tess:hi all\n");
    f.send(b"SAY::hey\n");
    t1.expect_line("<fred> hey\r\n");
    t2.expect_line("<fred> hey\r\n");
    t2.send(b"/who\r\n");
    t2.expect_line("[server] #lobby (3): fred tess tina\r\n");
    // No echo in text mode either.
    t1.text_barrier();
    f.barrier();
}

#[test]
fn a_protocol_line_after_telnet_negotiation_is_still_a_protocol_line() {
    // README: the first line decides the mode, and IAC sequences are stripped; what is
    // left here is `JOIN:vv`, a protocol line.
    let server = start_default();
    let mut c = Client::connect(server.addr);
    c.send(b"\xff\xfd\x03JOIN:vv\r\n");
    c.expect_line("SERVER:you are vv in #lobby\n");
    c.barrier();
}

#[test]
fn text_user_is_told_of_the_idle_timeout_in_text() {
    let server = util::start(loopchat::ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..util::config()
    });
    let mut t = connect_text(server.addr, "tom");
    t.expect_line("[error] idle timeout, closing\r\n");
    t.expect_eof();
}

#[test]
fn a_large_write_full_of_telnet_commands_is_read_to_the_end() {
    // More than one 64 KiB read of input in a single write, every line carrying an IAC
    // NOP: after filtering, a full read looks short, and the server must still read
    // on to the end (edge-triggered polling will not report the rest again).
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut t = Client::connect(server.addr);
    let lines = 12_000;
    let mut burst = Vec::new();
    for i in 0..lines {
        burst.extend_from_slice(i.to_string().as_bytes());
        burst.extend_from_slice(b"\xff\xf1\r\n");
    }
    assert!(burst.len() > 64 * 1024);
    t.send(&burst);
    t.expect_line("[server] you are guest1 in #lobby\r\n");
    alice.expect_line("JOIN:guest1\n");
    for i in 0..lines {
        alice.expect_line(&format!("SAY:guest1:{i}\n"));
    }
    alice.barrier();
}
