//! The model driven as the loop drives it, with time passed in: typed lines become
//! frames, server lines become entries and member-list changes, and a lost connection
//! comes back with its name, room and login.

use super::*;
use crate::client::tui::members::Extent;

const T: i64 = 1_700_000_000_000;

fn app(name: Option<&str>) -> App {
    App::new(
        Settings {
            server: "127.0.0.1:8080".into(),
            name: name.map(str::to_owned),
            leave_timeout: Duration::from_secs(2),
            announce_limit: 1000,
            utc_offset_s: 0,
        },
        1,
    )
}

/// A model connected as generation 1 that has taken `name` in the lobby.
fn joined(name: &str, now: Instant) -> App {
    let mut a = app(Some(name));
    a.connected(1, String::new(), now, T);
    assert_eq!(sent(&mut a), [format!("JOIN:{name}")]);
    hear(&mut a, &[&format!("SERVER:you are {name} in #lobby")]);
    assert_eq!(sent(&mut a), ["WHO:"]);
    a
}

fn hear(a: &mut App, lines: &[&str]) {
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    a.lines(a.generation(), &lines, T);
}

fn sent(a: &mut App) -> Vec<String> {
    a.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn typed(a: &mut App, line: &str, now: Instant) {
    line.chars().for_each(|c| a.key(Key::Char(c), now, T));
    a.key(Key::Enter, now, T);
}

fn shown(a: &App) -> Vec<(Kind, String)> {
    let e = a.scrollback().entries();
    e.iter().map(|e| (e.kind.clone(), e.text.clone())).collect()
}

fn last(a: &App) -> (Kind, String) {
    shown(a).pop().unwrap()
}

fn members(a: &App) -> Vec<&str> {
    a.members().names().iter().map(String::as_str).collect()
}

#[test]
fn typed_lines_become_frames_and_own_lines_are_echoed() {
    let now = Instant::now();
    let mut a = joined("alice", now);
    typed(&mut a, "hello there", now);
    typed(&mut a, "/msg bob psst", now);
    typed(&mut a, "/history 5", now);
    typed(&mut a, "JOIN:#rust", now);
    assert_eq!(
        sent(&mut a),
        [
            "SAY::hello there",
            "MSG:bob:psst",
            "HISTORY:5",
            "JOIN:#rust"
        ]
    );
    let s = shown(&a);
    assert!(s.contains(&(Kind::Own { me: "alice".into() }, "hello there".into())));
    assert!(s.contains(&(Kind::PrivateOut { to: "bob".into() }, "psst".into())));
}

#[test]
fn server_lines_become_styled_entries_and_are_made_safe() {
    let now = Instant::now();
    let mut a = joined("alice", now);
    hear(
        &mut a,
        &[
            "SAY:bob:hi \u{1b}[2Jthere",
            "MSG:bob:psst",
            "ERROR:no such user zed",
            "SERVER:rooms (1): #lobby (2)",
            "PING?",
        ],
    );
    let s = shown(&a);
    let tail = &s[s.len() - 5..];
    assert_eq!(
        tail,
        [
            (Kind::Chat { from: "bob".into() }, "hi [2Jthere".into()),
            (Kind::Private { from: "bob".into() }, "psst".into()),
            (Kind::Error, "no such user zed".into()),
            (Kind::Server, "rooms (1): #lobby (2)".into()),
            (Kind::Raw, "PING?".into()),
        ]
    );
}

#[test]
fn the_member_list_follows_who_joins_leaves_and_renames() {
    let now = Instant::now();
    let mut a = joined("alice", now);
    let before = shown(&a).len();
    hear(&mut a, &["SERVER:#lobby (2): alice bob"]);
    assert_eq!(
        shown(&a).len(),
        before,
        "the client's own WHO: is not shown"
    );
    assert_eq!(members(&a), ["alice", "bob"]);
    hear(
        &mut a,
        &[
            "JOIN:carol",
            "LEAVE:bob",
            "SERVER:carol is now known as cat",
        ],
    );
    assert_eq!(members(&a), ["alice", "cat"]);
    assert_eq!(last(&a), (Kind::Server, "carol is now known as cat".into()));
    // A WHO the person asked for is shown, and refreshes the list.
    typed(&mut a, "/who", now);
    hear(&mut a, &["SERVER:#lobby (1): alice"]);
    assert_eq!(last(&a), (Kind::Server, "#lobby (1): alice".into()));
    assert_eq!(members(&a), ["alice"]);
    // A new room starts a new list.
    hear(&mut a, &["SERVER:you are now in #rust"]);
    assert_eq!(sent(&mut a), ["WHO:", "WHO:"]);
    assert_eq!(a.members().room(), Some("#rust"));
    assert_eq!(a.members().extent(), &Extent::Unknown);
}

#[test]
fn replayed_history_is_kept_apart_at_the_servers_time() {
    let now = Instant::now();
    let mut a = joined("alice", now);
    hear(
        &mut a,
        &[
            "HISTORY:#lobby:1600000000000:bob:from before",
            "SERVER:end of history for #lobby",
        ],
    );
    let e = a.scrollback().entries();
    let history = &e[e.len() - 2];
    assert_eq!(history.kind, Kind::History { from: "bob".into() });
    assert_eq!(history.at_ms, 1_600_000_000_000);
    assert_eq!(e[e.len() - 1].kind, Kind::HistoryEnd);
}

#[test]
fn an_empty_replay_says_nothing_and_an_empty_page_says_so() {
    let now = Instant::now();
    let mut a = joined("alice", now);
    let before = shown(&a).len();
    hear(&mut a, &["SERVER:end of history for #lobby"]);
    assert_eq!(shown(&a).len(), before);
    typed(&mut a, "/history", now);
    hear(&mut a, &["SERVER:end of history for #lobby"]);
    assert_eq!(
        last(&a),
        (
            Kind::Server,
            "no messages: end of history for #lobby".into()
        )
    );
}

#[test]
fn a_lost_connection_comes_back_with_name_room_and_login() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    typed(&mut a, "/login alice hunter22", t0);
    hear(
        &mut a,
        &["SERVER:logged in as alice", "SERVER:you are already alice"],
    );
    typed(&mut a, "/join #rust", t0);
    hear(&mut a, &["SERVER:you are now in #rust"]);
    sent(&mut a);

    a.closed(1, Some("connection reset"), None, t0, T);
    assert!(matches!(a.state(), State::Waiting { .. }));
    assert!(
        last(&a)
            .1
            .contains("connection lost: connection reset; trying again in")
    );
    assert_eq!(a.members().names().len(), 0);
    assert_eq!(
        a.identity().name(),
        Some("alice"),
        "the status still says who"
    );
    // Typing meanwhile sends nothing and keeps the text.
    typed(&mut a, "anyone?", t0);
    assert!(sent(&mut a).is_empty());
    assert_eq!(a.editor().text(), "anyone?");

    let due = a.deadline().unwrap();
    a.tick(due);
    assert_eq!(a.take_effects(), [Effect::Connect(2)]);
    // News from the old connection changes nothing.
    a.lines(1, &["SAY:ghost:boo".to_owned()], T);
    assert_ne!(last(&a).1, "boo");
    a.connected(2, String::new(), due, T);
    assert_eq!(sent(&mut a), ["AUTH:alice:hunter22"]);
    assert!(matches!(a.state(), State::Connected { .. }));
    // The room comes back once the lobby is done with: after the answer to its WHO.
    hear(
        &mut a,
        &[
            "SERVER:logged in as alice",
            "SERVER:you are alice in #lobby",
            "SERVER:end of history for #lobby",
        ],
    );
    assert_eq!(sent(&mut a), ["WHO:"]);
    hear(&mut a, &["SERVER:#lobby (1): alice"]);
    assert_eq!(sent(&mut a), ["JOIN:#rust"]);
    hear(&mut a, &["SERVER:you are now in #rust"]);
    assert_eq!(a.identity().room(), Some("#rust"));
}

#[test]
fn a_failed_attempt_waits_longer() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    a.closed(1, None, None, t0, T);
    let first = a.deadline().unwrap() - t0;
    let due = a.deadline().unwrap();
    a.tick(due);
    a.take_effects();
    a.connect_failed(2, "connection refused", due);
    let second = a.deadline().unwrap() - due;
    assert!(second > first, "{first:?} then {second:?}");
    let State::Waiting { why, .. } = a.state() else {
        panic!("{:?}", a.state());
    };
    assert_eq!(why, "connection refused");
    assert!(
        last(&a)
            .1
            .starts_with("the server closed the connection; trying again in")
    );
}

#[test]
fn kicked_is_not_undone_by_reconnecting() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    a.closed(1, None, Some("kicked by op: spam, closing"), t0, T);
    assert!(matches!(a.state(), State::Stopped { .. }));
    assert_eq!(a.deadline(), None);
    typed(&mut a, "/reconnect", t0);
    assert_eq!(a.take_effects(), [Effect::Connect(2)]);
}

#[test]
fn quit_sends_leave_and_ends_on_the_close() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    typed(&mut a, "/quit bye", t0);
    assert_eq!(sent(&mut a), ["LEAVE:bye"]);
    assert!(!a.is_done());
    typed(&mut a, "too late", t0);
    assert!(sent(&mut a).is_empty());
    a.closed(1, None, None, t0, T);
    assert!(a.is_done());
    assert_eq!(a.ending(), ("quit", 0));
}

#[test]
fn ctrl_d_leaves_only_on_an_empty_line() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    typed(&mut a, "", t0);
    a.key(Key::Char('x'), t0, T);
    a.key(Key::Left, t0, T);
    a.key(Key::EndOfInput, t0, T);
    assert!(a.editor().is_empty());
    assert!(sent(&mut a).is_empty());
    a.key(Key::EndOfInput, t0, T);
    assert_eq!(sent(&mut a), ["LEAVE:"]);
}

#[test]
fn ctrl_c_leaves_and_a_second_one_ends_at_once() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    a.key(Key::Interrupt, t0, T);
    assert_eq!(sent(&mut a), ["LEAVE:"]);
    a.key(Key::Interrupt, t0, T);
    assert!(a.is_done());
    assert_eq!(a.ending(), ("interrupted again", 130));
}

#[test]
fn leaving_gives_up_at_the_timeout() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    a.key(Key::Interrupt, t0, T);
    a.tick(t0 + Duration::from_secs(1));
    assert!(!a.is_done());
    a.tick(t0 + Duration::from_secs(2));
    assert!(a.is_done());
}

#[test]
fn help_and_bad_commands_stay_local() {
    let t0 = Instant::now();
    let mut a = joined("alice", t0);
    typed(&mut a, "/help", t0);
    assert!(shown(&a).iter().any(|(_, t)| t.contains("/reconnect")));
    typed(&mut a, "/dance", t0);
    assert_eq!(
        last(&a),
        (
            Kind::Local,
            "unknown command /dance (try /help); not sent".into()
        )
    );
    assert!(sent(&mut a).is_empty());
}
