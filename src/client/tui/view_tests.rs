//! Snapshots of the screen, drawn into ratatui's `TestBackend`: a room with members,
//! a narrow terminal, a history replay, the disconnected state, scrolling, and wide
//! characters in the input line. Rows are compared as text (a wide character's
//! covered cell left out, so a row reads as the terminal shows it), plus the styles
//! that carry meaning.

use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::super::app::{Key, Settings};
use super::*;

/// 12:34 UTC on some day, in Unix ms.
const T: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + (12 * 60 + 34) * 60_000;

fn app() -> App {
    App::new(
        Settings {
            server: "127.0.0.1:8080".into(),
            name: Some("alice".into()),
            leave_timeout: Duration::from_secs(2),
            announce_limit: 1000,
            utc_offset_s: 0,
        },
        1,
    )
}

fn hear(a: &mut App, lines: &[&str]) {
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    a.lines(a.generation(), &lines, T);
}

/// Alice in the lobby with bob and carol, after a little chat.
fn chatting(now: Instant) -> App {
    let mut a = app();
    a.connected(1, String::new(), now, T);
    hear(
        &mut a,
        &[
            "SERVER:welcome to loopchat",
            "SERVER:you are alice in #lobby",
            "SERVER:#lobby (2): alice bob",
            "JOIN:carol",
            "SAY:bob:hi alice",
            "MSG:carol:psst",
            "ERROR:no such user zed",
        ],
    );
    a.take_effects();
    a
}

fn draw(a: &mut App, width: u16, height: u16, now: Instant) -> Terminal<TestBackend> {
    let p = panes(Rect::new(0, 0, width, height));
    a.set_viewport(
        usize::from(p.messages.width),
        usize::from(p.messages.height),
    );
    let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
    t.draw(|f| super::draw(f, a, now)).unwrap();
    t
}

/// The screen's rows as text.
fn rows(t: &Terminal<TestBackend>) -> Vec<String> {
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            let mut row = String::new();
            let mut x = 0;
            while x < buf.area.width {
                let symbol = buf[(x, y)].symbol();
                row.push_str(symbol);
                x += u16::try_from(symbol.width().max(1)).unwrap();
            }
            row.trim_end().to_owned()
        })
        .collect()
}

fn style_at(t: &Terminal<TestBackend>, x: u16, y: u16) -> Style {
    t.backend().buffer()[(x, y)].style()
}

use unicode_width::UnicodeWidthStr;

#[test]
fn a_room_with_members() {
    let now = Instant::now();
    let mut a = chatting(now);
    let t = draw(&mut a, 70, 9, now);
    assert_eq!(
        rows(&t),
        [
            "12:34 -- connected to 127.0.0.1:8080               │#lobby (3)",
            "12:34 [server] welcome to loopchat                 │alice",
            "12:34 [server] you are alice in #lobby             │bob",
            "12:34 *** carol joined                             │carol",
            "12:34 <bob> hi alice                               │",
            "12:34 *carol* psst                                 │",
            "12:34 [error] no such user zed                     │",
            " alice in #lobby │ connected │ 127.0.0.1:8080",
            ">",
        ]
    );
    let bob = NICKS[usize::from(layout::nick_colour("bob"))];
    assert_eq!(style_at(&t, 7, 4).fg, Some(bob), "bob's nick in his colour");
    assert_eq!(style_at(&t, 52, 2).fg, Some(bob), "and in the member list");
    assert!(
        style_at(&t, 52, 1).add_modifier.contains(Modifier::BOLD),
        "me"
    );
    assert_eq!(style_at(&t, 6, 6).fg, Some(Color::LightRed), "errors apart");
    assert_eq!(
        style_at(&t, 6, 1).fg,
        Some(Color::Cyan),
        "server lines apart"
    );
    assert_eq!(style_at(&t, 6, 5).fg, Some(Color::Magenta), "private apart");
    assert_eq!(
        style_at(&t, 0, 4).fg,
        Some(Color::DarkGray),
        "timestamps dim"
    );
}

#[test]
fn a_narrow_terminal_drops_the_member_list_and_wraps() {
    let now = Instant::now();
    let mut a = chatting(now);
    hear(&mut a, &["SAY:bob:a longer line that has to wrap here"]);
    let t = draw(&mut a, 40, 7, now);
    assert_eq!(
        rows(&t),
        [
            "12:34 <bob> hi alice",
            "12:34 *carol* psst",
            "12:34 [error] no such user zed",
            "12:34 <bob> a longer line that has to",
            "      wrap here",
            " alice in #lobby │ connected │ 127.0.0.1",
            ">",
        ]
    );
}

#[test]
fn history_replay_is_shown_as_such() {
    let now = Instant::now();
    let mut a = chatting(now);
    hear(
        &mut a,
        &[
            "SERVER:you are now in #rust",
            "HISTORY:#rust:1600000000000:dave:earlier",
            "HISTORY:#rust:1600000060000:erin:and later",
            "SERVER:end of history for #rust",
            "SAY:dave:now live",
        ],
    );
    let t = draw(&mut a, 59, 7, now);
    assert_eq!(
        rows(&t),
        [
            "12:34 [server] you are now in #rust",
            "12:26 <dave> earlier",
            "12:27 <erin> and later",
            "12:34 ─── end of history for #rust ───",
            "12:34 <dave> now live",
            " alice in #rust │ connected │ 127.0.0.1:8080",
            ">",
        ]
    );
    assert!(style_at(&t, 14, 1).add_modifier.contains(Modifier::ITALIC));
    assert_eq!(style_at(&t, 0, 1).fg, Some(Color::DarkGray));
    assert_eq!(style_at(&t, 0, 4).fg, Some(Color::DarkGray));
    assert!(!style_at(&t, 14, 4).add_modifier.contains(Modifier::ITALIC));
}

#[test]
fn disconnected_says_so_and_counts_down() {
    let now = Instant::now();
    let mut a = chatting(now);
    a.closed(1, Some("connection reset by peer"), None, now, T);
    let t = draw(&mut a, 70, 5, now);
    let r = rows(&t);
    assert_eq!(
        r[0],
        "12:34 [error] no such user zed                     │#lobby"
    );
    assert_eq!(
        r[1],
        "12:34 -- connection lost: connection reset by      │…"
    );
    assert!(
        r[2].starts_with("      peer; trying again in 0."),
        "{}",
        r[2]
    );
    assert_eq!(
        r[3],
        " alice in #lobby │ disconnected, retry in 1s │ 127.0.0.1:8080"
    );
    assert_eq!(style_at(&t, 19, 3).fg, Some(Color::LightRed));
    // Kicked: no countdown, the way back is named.
    let mut a = chatting(now);
    a.closed(1, None, Some("kicked by op: spam, closing"), now, T);
    let r = rows(&draw(&mut a, 70, 5, now));
    assert_eq!(
        r[3],
        " alice in #lobby │ disconnected (/reconnect) │ 127.0.0.1:8080"
    );
}

#[test]
fn scrolled_up_the_status_counts_what_is_below() {
    let now = Instant::now();
    let mut a = chatting(now);
    for i in 0..20 {
        hear(&mut a, &[&format!("SAY:bob:line {i}")]);
    }
    draw(&mut a, 60, 6, now);
    a.key(Key::PageUp, now, T);
    hear(&mut a, &["SAY:bob:new one", "SAY:bob:and another"]);
    let r = rows(&draw(&mut a, 60, 6, now));
    assert_eq!(
        r,
        [
            "12:34 <bob> line 13                      │#lobby (3)",
            "12:34 <bob> line 14                      │alice",
            "12:34 <bob> line 15                      │bob",
            "12:34 <bob> line 16                      │carol",
            " ↑ 2 new below │ alice in #lobby │ connected │ 127.0.0.1:808",
            ">",
        ]
    );
    a.key(Key::Bottom, now, T);
    assert!(rows(&draw(&mut a, 60, 6, now))[3].starts_with("12:34 <bob> and another"));
}

#[test]
fn wide_input_keeps_the_cursor_where_it_is_drawn() {
    let now = Instant::now();
    let mut a = chatting(now);
    for c in "日本語 🎉 ok".chars() {
        a.key(Key::Char(c), now, T);
    }
    a.key(Key::Left, now, T);
    a.key(Key::Left, now, T);
    let mut t = draw(&mut a, 40, 4, now);
    assert_eq!(rows(&t)[3], "> 日本語 🎉 ok");
    // "> " (2) + 日本語 (6) + space + 🎉 (2) + space = column 12, before "ok".
    t.backend_mut().assert_cursor_position((12, 3));
}

#[test]
fn a_room_over_the_announce_limit_is_not_listed_as_live() {
    let now = Instant::now();
    let mut a = App::new(
        Settings {
            announce_limit: 2,
            ..app().settings().clone()
        },
        1,
    );
    a.connected(1, String::new(), now, T);
    hear(
        &mut a,
        &[
            "SERVER:you are alice in #lobby",
            "SERVER:#lobby (5): alice bob carol dave erin",
        ],
    );
    let r = rows(&draw(&mut a, 70, 8, now));
    let members: Vec<&str> = r[..6]
        .iter()
        .map(|r| r.split_once('│').map_or("", |(_, m)| m))
        .collect();
    assert_eq!(
        members,
        [
            "#lobby (5)",
            "too big to follow:",
            "list as of 12:34",
            "/who to refresh",
            "alice",
            "+4 not shown"
        ]
    );
}
