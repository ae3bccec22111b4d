//! The frame protocol through real sockets: names, chat, rooms, private messages,
//! presence, leaving, and the ways a client can send its bytes.

mod util;

use std::thread;
use std::time::Duration;

use util::{Client, connect_all, named, start_default};

#[test]
fn greeting_is_the_first_line() {
    let server = start_default();
    let mut c = Client::connect_raw(server.addr);
    c.expect_line(util::GREETING);
}

#[test]
fn join_takes_a_name_and_announces_it_to_the_lobby() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut bob = Client::connect(server.addr);
    bob.send(b"JOIN:bob\n");
    bob.expect_line("SERVER:you are bob in #lobby\n");
    alice.expect_line("JOIN:bob\n");
    alice.barrier();
    bob.barrier();
}

#[test]
fn two_clients_chat_with_exact_bytes() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY::hello bob\n");
    bob.expect_line("SAY:alice:hello bob\n");
    bob.send(b"SAY::hi alice, 1:2 = 0.5\n");
    alice.expect_line("SAY:bob:hi alice, 1:2 = 0.5\n");
    alice.barrier();
    bob.barrier();
}

#[test]
fn three_clients_everyone_but_the_sender_gets_each_message() {
    let server = start_default();
    let mut c = connect_all(server.addr, &["alice", "bob", "carol"]);
    for from in 0..3 {
        let name = ["alice", "bob", "carol"][from];
        c[from].send(format!("SAY::from {name}\n").as_bytes());
        for (to, client) in c.iter_mut().enumerate() {
            if to != from {
                client.expect_line(&format!("SAY:{name}:from {name}\n"));
            }
        }
    }
    for client in &mut c {
        client.barrier();
    }
}

#[test]
fn sender_gets_no_echo() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY::one\nSAY::two\n");
    bob.expect_lines(&["SAY:alice:one\n", "SAY:alice:two\n"]);
    // Had the server echoed, the echo would come before the barrier's reply.
    alice.barrier();
}

#[test]
fn say_cannot_speak_as_someone_else() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY:mallory:trust me\n");
    bob.expect_line("SAY:alice:trust me\n");
    alice.send(b"SAY:bob:i am bob\n");
    bob.expect_line("SAY:alice:i am bob\n");
    bob.barrier();
}

#[test]
fn say_text_keeps_its_colons_and_one_colon_form_works() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY::a:b::c:\n");
    bob.expect_line("SAY:alice:a:b::c:\n");
    alice.send(b"SAY:plain\n");
    bob.expect_line("SAY:alice:plain\n");
    bob.barrier();
}

#[test]
fn empty_say_is_an_error_and_reaches_nobody() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY::\n");
    alice.expect_line("ERROR:empty message\n");
    alice.send(b"SAY:\n");
    alice.expect_line("ERROR:empty message\n");
    alice.send(b"SAY::after\n");
    bob.expect_line("SAY:alice:after\n");
    bob.barrier();
}

#[test]
fn same_name_again_is_acknowledged_without_announcement() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:alice\n");
    alice.expect_line("SERVER:you are already alice\n");
    bob.barrier();
    alice.barrier();
}

#[test]
fn name_is_taken_regardless_of_case() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut other = Client::connect(server.addr);
    other.send(b"JOIN:ALICE\n");
    other.expect_line("ERROR:name ALICE is taken\n");
    other.send(b"JOIN:alice\n");
    other.expect_line("ERROR:name alice is taken\n");
    // Still unnamed: it can take another name, and only then does alice hear of it.
    other.send(b"JOIN:bob\n");
    other.expect_line("SERVER:you are bob in #lobby\n");
    alice.expect_line("JOIN:bob\n");
    // A named client cannot rename onto a taken name either.
    other.send(b"JOIN:Alice\n");
    other.expect_line("ERROR:name Alice is taken\n");
    alice.barrier();
    other.barrier();
}

#[test]
fn invalid_names_are_refused() {
    let server = start_default();
    let mut c = Client::connect(server.addr);
    c.send(b"JOIN:al ice\n");
    c.expect_line("ERROR:invalid name al ice: use 1-32 of A-Z a-z 0-9 _ - .\n");
    let long = "x".repeat(33);
    c.send_line(&format!("JOIN:{long}"));
    c.expect_line(&format!(
        "ERROR:invalid name {long}: use 1-32 of A-Z a-z 0-9 _ - .\n"
    ));
    c.send("JOIN:élan\n".as_bytes());
    c.expect_line("ERROR:invalid name élan: use 1-32 of A-Z a-z 0-9 _ - .\n");
    c.send(b"JOIN:a:b\n");
    c.expect_line("ERROR:invalid name a:b: use 1-32 of A-Z a-z 0-9 _ - .\n");
    let longest = "y".repeat(32);
    c.send_line(&format!("JOIN:{longest}"));
    c.expect_line(&format!("SERVER:you are {longest} in #lobby\n"));
}

#[test]
fn join_without_argument_gets_usage() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send(b"JOIN:\n");
    alice.expect_prefix("ERROR:usage: ");
    alice.send(b"MSG:bob\n");
    alice.expect_prefix("ERROR:usage: ");
    alice.barrier();
}

#[test]
fn rename_is_announced_to_the_whole_room_including_the_renamer() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:alicia\n");
    alice.expect_line("SERVER:alice is now known as alicia\n");
    bob.expect_line("SERVER:alice is now known as alicia\n");
    alice.barrier();
    bob.barrier();
}

#[test]
fn rename_then_message_uses_the_new_name() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:alicia\nSAY::new me\n");
    alice.expect_line("SERVER:alice is now known as alicia\n");
    bob.expect_lines(&[
        "SERVER:alice is now known as alicia\n",
        "SAY:alicia:new me\n",
    ]);
    bob.send(b"MSG:alicia:found you\n");
    alice.expect_line("MSG:bob:found you\n");
    bob.send(b"MSG:alice:gone?\n");
    bob.expect_line("ERROR:no such user alice\n");
    alice.barrier();
}

#[test]
fn changing_the_case_of_ones_own_name_is_a_rename() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:Alice\n");
    alice.expect_line("SERVER:alice is now known as Alice\n");
    bob.expect_line("SERVER:alice is now known as Alice\n");
    alice.send(b"SAY::capital\n");
    bob.expect_line("SAY:Alice:capital\n");
}

#[test]
fn old_name_is_free_after_a_rename() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:alicia\n");
    alice.expect_line("SERVER:alice is now known as alicia\n");
    bob.expect_line("SERVER:alice is now known as alicia\n");
    let _new_alice = Client::connect_named(server.addr, "ALICE");
    alice.expect_line("JOIN:ALICE\n");
    bob.expect_line("JOIN:ALICE\n");
}

#[test]
fn rooms_isolate_messages_and_announce_moves() {
    let server = start_default();
    let [mut alice, mut bob, mut carol] = named(server.addr, ["alice", "bob", "carol"]);
    alice.send(b"JOIN:#rust\n");
    alice.expect_line("SERVER:you are now in #rust\n");
    bob.expect_line("LEAVE:alice\n");
    carol.expect_line("LEAVE:alice\n");

    carol.send(b"JOIN:#rust\n");
    carol.expect_line("SERVER:you are now in #rust\n");
    alice.expect_line("JOIN:carol\n");
    bob.expect_line("LEAVE:carol\n");

    alice.send(b"SAY::rust only\n");
    carol.expect_line("SAY:alice:rust only\n");
    bob.send(b"SAY::lobby only\n");
    // Neither message crossed rooms.
    bob.barrier();
    alice.barrier();
    carol.barrier();

    alice.send(b"JOIN:#lobby\n");
    alice.expect_line("SERVER:you are now in #lobby\n");
    carol.expect_line("LEAVE:alice\n");
    bob.expect_line("JOIN:alice\n");
    bob.send(b"SAY::welcome back\n");
    alice.expect_line("SAY:bob:welcome back\n");
    carol.barrier();
}

#[test]
fn joining_the_room_one_is_in_is_acknowledged() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:#lobby\n");
    alice.expect_line("SERVER:you are already in #lobby\n");
    alice.send(b"JOIN:#rust\nJOIN:#rust\n");
    alice.expect_lines(&[
        "SERVER:you are now in #rust\n",
        "SERVER:you are already in #rust\n",
    ]);
    bob.expect_line("LEAVE:alice\n");
    bob.barrier();
}

#[test]
fn invalid_rooms_are_refused() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send(b"JOIN:#bad!\n");
    alice.expect_line("ERROR:invalid room #bad!: use # and 1-32 of A-Z a-z 0-9 _ - .\n");
    alice.send(b"JOIN:#\n");
    alice.expect_line("ERROR:invalid room #: use # and 1-32 of A-Z a-z 0-9 _ - .\n");
    alice.send(b"JOIN:##x\n");
    alice.expect_line("ERROR:invalid room ##x: use # and 1-32 of A-Z a-z 0-9 _ - .\n");
    // Still in the lobby.
    alice.send(b"WHO:\n");
    alice.expect_line("SERVER:#lobby (1): alice\n");
}

#[test]
fn msg_reaches_a_user_in_any_room_and_nobody_else() {
    let server = start_default();
    let [mut alice, mut bob, mut carol] = named(server.addr, ["alice", "bob", "carol"]);
    bob.send(b"JOIN:#elsewhere\n");
    bob.expect_line("SERVER:you are now in #elsewhere\n");
    alice.expect_line("LEAVE:bob\n");
    carol.expect_line("LEAVE:bob\n");
    alice.send(b"MSG:bob:psst: a secret\n");
    bob.expect_line("MSG:alice:psst: a secret\n");
    alice.barrier();
    carol.barrier();
    bob.send(b"MSG:alice:thanks\n");
    alice.expect_line("MSG:bob:thanks\n");
    bob.barrier();
}

#[test]
fn msg_to_an_unknown_user_is_an_error() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send(b"MSG:carol:hello?\n");
    alice.expect_line("ERROR:no such user carol\n");
    alice.barrier();
}

#[test]
fn msg_to_oneself_is_delivered_or_refused_but_never_breaks_the_connection() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"MSG:alice:note to self\n");
    let line = alice.read_line();
    assert!(
        line == "MSG:alice:note to self\n" || line.starts_with("ERROR:"),
        "unexpected reply to a message to oneself: {line:?}"
    );
    alice.barrier();
    bob.barrier();
}

#[test]
fn first_say_without_a_name_gets_a_guest_name() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut anon = Client::connect(server.addr);
    anon.send(b"SAY::who am i\n");
    anon.expect_line("SERVER:you are guest1 in #lobby\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:who am i\n"]);
    anon.barrier();
}

#[test]
fn first_msg_without_a_name_gets_a_guest_name() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut anon = Client::connect(server.addr);
    anon.send(b"MSG:alice:hi\n");
    anon.expect_line("SERVER:you are guest1 in #lobby\n");
    alice.expect_lines(&["JOIN:guest1\n", "MSG:guest1:hi\n"]);
    anon.barrier();
}

#[test]
fn room_move_without_a_name_gets_a_guest_name_in_that_room() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send(b"JOIN:#rust\n");
    alice.expect_line("SERVER:you are now in #rust\n");
    let mut lobby = Client::connect_named(server.addr, "lobbyist");
    let mut anon = Client::connect(server.addr);
    anon.send(b"JOIN:#rust\n");
    anon.expect_line("SERVER:you are guest1 in #rust\n");
    alice.expect_line("JOIN:guest1\n");
    // Never a member of #lobby, so the lobby hears nothing.
    lobby.barrier();
    anon.send(b"WHO:\n");
    anon.expect_line("SERVER:#rust (2): alice guest1\n");
}

#[test]
fn guest_numbers_count_up_and_skip_taken_names() {
    let server = start_default();
    let mut squatter = Client::connect_named(server.addr, "guest1");
    let mut a = Client::connect(server.addr);
    a.send(b"SAY::a\n");
    a.expect_line("SERVER:you are guest2 in #lobby\n");
    squatter.expect_lines(&["JOIN:guest2\n", "SAY:guest2:a\n"]);
    let mut b = Client::connect(server.addr);
    b.send(b"SAY::b\n");
    b.expect_line("SERVER:you are guest3 in #lobby\n");
    squatter.expect_lines(&["JOIN:guest3\n", "SAY:guest3:b\n"]);
    a.expect_lines(&["JOIN:guest3\n", "SAY:guest3:b\n"]);
    // A guest keeps its name: no new guest name on later lines.
    a.send(b"SAY::again\n");
    b.expect_line("SAY:guest2:again\n");
    a.barrier();
}

#[test]
fn guest_can_then_take_a_name() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut anon = Client::connect(server.addr);
    anon.send(b"SAY::hi\n");
    anon.expect_line("SERVER:you are guest1 in #lobby\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:hi\n"]);
    anon.send(b"JOIN:zed\nSAY::it is me\n");
    anon.expect_line("SERVER:guest1 is now known as zed\n");
    alice.expect_lines(&["SERVER:guest1 is now known as zed\n", "SAY:zed:it is me\n"]);
    anon.barrier();
}

#[test]
fn unnamed_connection_hears_nothing_of_the_lobby() {
    let server = start_default();
    let mut lurker = Client::connect(server.addr);
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY::private lobby talk\n");
    bob.expect_line("SAY:alice:private lobby talk\n");
    bob.send(b"LEAVE:bye\n");
    bob.expect_line("SERVER:goodbye\n");
    alice.expect_line("LEAVE:bob\n");
    // No JOIN, SAY or LEAVE was queued for the unnamed connection.
    lurker.barrier();
}

#[test]
fn who_lists_the_room_sorted_without_regard_to_case() {
    let server = start_default();
    let mut c = connect_all(server.addr, &["bob", "Alice", "carol", "Dave"]);
    c[0].send(b"WHO:\n");
    c[0].expect_line("SERVER:#lobby (4): Alice bob carol Dave\n");
    c[2].send(b"JOIN:#rust\n");
    c[2].expect_line("SERVER:you are now in #rust\n");
    c[2].send(b"WHO:\n");
    c[2].expect_line("SERVER:#rust (1): carol\n");
}

#[test]
fn rooms_lists_rooms_sorted_with_member_counts_and_drops_empty_rooms() {
    let server = start_default();
    let [mut alice, mut bob, mut carol] = named(server.addr, ["alice", "bob", "carol"]);
    alice.send(b"ROOMS:\n");
    alice.expect_line("SERVER:rooms (1): #lobby (3)\n");
    bob.send(b"JOIN:#rust\n");
    bob.expect_line("SERVER:you are now in #rust\n");
    carol.expect_line("LEAVE:bob\n");
    carol.send(b"JOIN:#ada\n");
    carol.expect_line("SERVER:you are now in #ada\n");
    alice.expect_lines(&["LEAVE:bob\n", "LEAVE:carol\n"]);
    alice.send(b"ROOMS:\n");
    alice.expect_line("SERVER:rooms (3): #ada (1) #lobby (1) #rust (1)\n");
    bob.send(b"JOIN:#ada\n");
    bob.expect_line("SERVER:you are now in #ada\n");
    carol.expect_line("JOIN:bob\n");
    alice.send(b"ROOMS:\n");
    alice.expect_line("SERVER:rooms (2): #ada (2) #lobby (1)\n");
}

#[test]
fn leave_says_goodbye_closes_and_tells_the_room() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"LEAVE:bye\n");
    alice.expect_line("SERVER:goodbye\n");
    alice.expect_eof();
    bob.expect_line("LEAVE:alice\n");
    bob.send(b"WHO:\n");
    bob.expect_line("SERVER:#lobby (1): bob\n");
}

#[test]
fn leave_flushes_everything_owed_before_closing() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    // ~400 KB: more than the kernel buffers hold, less than the 1 MiB output cap, so
    // the server must still hold part of it when bob leaves.
    const N: usize = 2000;
    let pad = "p".repeat(180);
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend_from_slice(format!("SAY::{i:05} {pad}\n").as_bytes());
    }
    alice.send(&burst);
    alice.barrier(); // every message is queued for bob before he leaves
    bob.send(b"LEAVE:bye\n");
    for i in 0..N {
        bob.expect_line(&format!("SAY:alice:{i:05} {pad}\n"));
    }
    bob.expect_line("SERVER:goodbye\n");
    bob.expect_eof();
    alice.expect_line("LEAVE:bob\n");
}

#[test]
fn lines_after_leave_are_ignored() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"LEAVE:bye\nSAY::ghost\n");
    alice.expect_line("SERVER:goodbye\n");
    let rest = alice.read_to_close();
    assert!(rest.is_empty(), "after goodbye: {:?}", util::show(&rest));
    bob.expect_line("LEAVE:alice\n");
    bob.barrier();
}

#[test]
fn abrupt_close_notifies_the_room_and_frees_the_name() {
    let server = start_default();
    let [mut alice, bob] = named(server.addr, ["alice", "bob"]);
    drop(bob);
    alice.expect_line("LEAVE:bob\n");
    let _bob2 = Client::connect_named(server.addr, "bob");
    alice.expect_line("JOIN:bob\n");
    alice.send(b"ROOMS:\n");
    alice.expect_line("SERVER:rooms (1): #lobby (2)\n");
}

#[test]
fn reset_mid_line_notifies_the_room_and_frees_the_name() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    bob.send(b"JOIN:#side\n");
    bob.expect_line("SERVER:you are now in #side\n");
    alice.expect_line("LEAVE:bob\n");
    bob.send(b"JOIN:#lobby\n");
    bob.expect_line("SERVER:you are now in #lobby\n");
    alice.expect_line("JOIN:bob\n");
    bob.send(b"SAY::half a messa");
    bob.reset();
    // The unfinished line is never delivered.
    alice.expect_line("LEAVE:bob\n");
    alice.send(b"ROOMS:\n");
    alice.expect_line("SERVER:rooms (1): #lobby (1)\n");
    let _bob2 = Client::connect_named(server.addr, "BOB");
    alice.expect_line("JOIN:BOB\n");
}

#[test]
fn unnamed_connection_closing_tells_nobody() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let lurker = Client::connect(server.addr);
    lurker.reset();
    let quiet = Client::connect(server.addr);
    drop(quiet);
    alice.barrier();
    let _late = Client::connect_named(server.addr, "late");
    alice.expect_line("JOIN:late\n");
}

#[test]
fn pipelined_commands_in_one_write_run_in_order() {
    let server = start_default();
    let mut bob = Client::connect_named(server.addr, "bob");
    bob.send(b"JOIN:#rust\n");
    bob.expect_line("SERVER:you are now in #rust\n");
    let mut alice = Client::connect(server.addr);
    alice.send(b"JOIN:alice\nJOIN:#rust\nSAY::one\nWHO:\nMSG:bob:two\nJOIN:al\nSAY::three\n");
    alice.expect_lines(&[
        "SERVER:you are alice in #lobby\n",
        "SERVER:you are now in #rust\n",
        "SERVER:#rust (2): alice bob\n",
        "SERVER:alice is now known as al\n",
    ]);
    bob.expect_lines(&[
        "JOIN:alice\n",
        "SAY:alice:one\n",
        "MSG:alice:two\n",
        "SERVER:alice is now known as al\n",
        "SAY:al:three\n",
    ]);
    alice.barrier();
    bob.barrier();
}

#[test]
fn a_command_split_byte_by_byte_is_one_command() {
    let server = start_default();
    let mut bob = Client::connect_named(server.addr, "bob");
    let mut alice = Client::connect(server.addr);
    for &b in b"JOIN:alice\n" {
        alice.send(&[b]);
        if b != b'\n' {
            // A partial line gets no reply (and this gap lets the bytes arrive apart).
            alice.expect_silence(Duration::from_millis(3));
        }
    }
    alice.expect_line("SERVER:you are alice in #lobby\n");
    bob.expect_line("JOIN:alice\n");
    // Multi-byte UTF-8 split between writes, and a CRLF split between writes.
    for &b in "SAY::héllo wörld\r\n".as_bytes() {
        alice.send(&[b]);
        thread::yield_now();
    }
    bob.expect_line("SAY:alice:héllo wörld\n");
    alice.barrier();
}

#[test]
fn crlf_line_ends_are_accepted_and_replies_end_with_lf() {
    let server = start_default();
    let mut bob = Client::connect_named(server.addr, "bob");
    let mut alice = Client::connect(server.addr);
    alice.send(b"JOIN:alice\r\n");
    alice.expect_line("SERVER:you are alice in #lobby\n");
    bob.expect_line("JOIN:alice\n");
    alice.send(b"SAY::windows\r\nMSG:bob:line ends\r\n");
    bob.expect_lines(&["SAY:alice:windows\n", "MSG:alice:line ends\n"]);
    alice.send(b"WHO:\r\n");
    alice.expect_line("SERVER:#lobby (2): alice bob\n");
}

#[test]
fn unknown_verbs_get_an_error_and_the_connection_stays_usable() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"FOO:x\n");
    alice.expect_line("ERROR:unknown command FOO (use JOIN, SAY, MSG, LEAVE, WHO, ROOMS, HISTORY, REGISTER, AUTH or PASS)\n");
    alice.send(b"say::lowercase\n");
    alice.expect_line("ERROR:unknown command say (use JOIN, SAY, MSG, LEAVE, WHO, ROOMS, HISTORY, REGISTER, AUTH or PASS)\n");
    // Once in frame mode, a plain line is not chat.
    alice.send(b"hello\n");
    alice.expect_line("ERROR:unknown command hello (use JOIN, SAY, MSG, LEAVE, WHO, ROOMS, HISTORY, REGISTER, AUTH or PASS)\n");
    alice.send(b"SAY::still here\n");
    bob.expect_line("SAY:alice:still here\n");
    bob.barrier();
}

#[test]
fn empty_lines_are_errors() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    alice.send(b"\n\r\n");
    alice.expect_lines(&["ERROR:empty line\n", "ERROR:empty line\n"]);
    alice.barrier();
}

#[test]
fn a_client_vanishing_mid_broadcast_does_not_disturb_the_others() {
    let server = start_default();
    let mut c = connect_all(server.addr, &["alice", "bob", "carol", "dave"]);
    let dave = c.pop().unwrap();
    let carol = c.pop().unwrap();
    let mut bob = c.pop().unwrap();
    let mut alice = c.pop().unwrap();
    const N: usize = 1000;
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend_from_slice(format!("SAY::{i}\n").as_bytes());
    }
    alice.send(&burst);
    carol.reset();
    drop(dave);
    let mut next = 0;
    let mut left = Vec::new();
    while next < N || left.len() < 2 {
        let line = bob.read_line();
        if let Some(name) = line.strip_prefix("LEAVE:") {
            left.push(name.to_string());
        } else {
            assert_eq!(line, format!("SAY:alice:{next}\n"), "message out of order");
            next += 1;
        }
    }
    left.sort();
    assert_eq!(left, ["carol\n", "dave\n"]);
    bob.barrier();
    let mut alice_left = vec![alice.read_line(), alice.read_line()];
    alice_left.sort();
    assert_eq!(alice_left, ["LEAVE:carol\n", "LEAVE:dave\n"]);
    alice.barrier();
}

#[test]
fn many_rooms_each_keep_their_own_conversation() {
    let server = start_default();
    const ROOMS: usize = 40;
    let mut pairs = Vec::new();
    for r in 0..ROOMS {
        let mut a = Client::connect(server.addr);
        a.send(format!("JOIN:a{r}\nJOIN:#room{r:02}\n").as_bytes());
        a.expect_lines(&[
            &format!("SERVER:you are a{r} in #lobby\n"),
            &format!("SERVER:you are now in #room{r:02}\n"),
        ]);
        let mut b = Client::connect(server.addr);
        b.send(format!("JOIN:#room{r:02}\n").as_bytes());
        let guest = r + 1;
        b.expect_line(&format!("SERVER:you are guest{guest} in #room{r:02}\n"));
        a.expect_line(&format!("JOIN:guest{guest}\n"));
        pairs.push((a, b));
    }
    for (r, (a, _)) in pairs.iter_mut().enumerate() {
        a.send(format!("SAY::in room {r}\n").as_bytes());
    }
    for (r, (a, b)) in pairs.iter_mut().enumerate() {
        b.expect_line(&format!("SAY:a{r}:in room {r}\n"));
        b.barrier();
        a.barrier();
    }
    let (a, _) = &mut pairs[0];
    a.send(b"ROOMS:\n");
    let mut expected = format!("SERVER:rooms ({ROOMS}):");
    for r in 0..ROOMS {
        expected.push_str(&format!(" #room{r:02} (2)"));
    }
    expected.push('\n');
    a.expect_line(&expected);
}

#[test]
fn rename_is_not_announced_to_other_rooms() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"JOIN:#rust\n");
    alice.expect_line("SERVER:you are now in #rust\n");
    bob.expect_line("LEAVE:alice\n");
    alice.send(b"JOIN:alicia\n");
    alice.expect_line("SERVER:alice is now known as alicia\n");
    bob.barrier();
}

#[test]
fn unnamed_join_of_the_lobby_gets_a_guest_name_there() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut anon = Client::connect(server.addr);
    anon.send(b"JOIN:#lobby\n");
    anon.expect_line("SERVER:you are guest1 in #lobby\n");
    alice.expect_line("JOIN:guest1\n");
    anon.barrier();
}

#[test]
fn unnamed_leave_says_goodbye_and_tells_nobody() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut anon = Client::connect(server.addr);
    anon.send(b"LEAVE:never mind\n");
    anon.expect_line("SERVER:goodbye\n");
    anon.expect_eof();
    let _late = Client::connect_named(server.addr, "late");
    alice.expect_line("JOIN:late\n");
}

#[test]
fn lines_sent_just_before_a_half_close_are_delivered() {
    let server = start_default();
    let [mut alice, mut bob] = named(server.addr, ["alice", "bob"]);
    alice.send(b"SAY::last words\nWHO:\n");
    alice.stream().shutdown(std::net::Shutdown::Write).unwrap();
    bob.expect_lines(&["SAY:alice:last words\n", "LEAVE:alice\n"]);
    bob.barrier();
    // What it still owed the half-closed client (the WHO reply) is sent before closing.
    alice.expect_line("SERVER:#lobby (2): alice bob\n");
    let rest = alice.read_to_close();
    assert!(
        rest.is_empty(),
        "after the WHO reply: {:?}",
        util::show(&rest)
    );
}

#[test]
fn connections_reset_at_once_do_not_hurt_the_server() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    for _ in 0..50 {
        Client::connect_raw(server.addr).reset();
    }
    for i in 0..20 {
        let mut c = Client::connect_raw(server.addr);
        c.send(format!("JOIN:r{i}\nSAY::x").as_bytes());
        c.reset();
    }
    let _late = Client::connect_named(server.addr, "late");
    // Those that got named in time joined and left; nothing else reached alice.
    loop {
        let line = alice.read_line();
        if line == "JOIN:late\n" {
            break;
        }
        assert!(
            line.starts_with("JOIN:r") || line.starts_with("LEAVE:r"),
            "alice got {line:?}"
        );
    }
    alice.barrier();
}

#[test]
fn guest_numbers_are_not_reused_after_a_guest_leaves() {
    let server = start_default();
    let mut alice = Client::connect_named(server.addr, "alice");
    let mut a = Client::connect(server.addr);
    a.send(b"SAY::first\n");
    a.expect_line("SERVER:you are guest1 in #lobby\n");
    alice.expect_lines(&["JOIN:guest1\n", "SAY:guest1:first\n"]);
    drop(a);
    alice.expect_line("LEAVE:guest1\n");
    let mut b = Client::connect(server.addr);
    b.send(b"SAY::second\n");
    b.expect_line("SERVER:you are guest2 in #lobby\n");
    alice.expect_lines(&["JOIN:guest2\n", "SAY:guest2:second\n"]);
}
