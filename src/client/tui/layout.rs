//! How an entry of the message pane becomes text: its parts (timestamp, nick,
//! message, each with a role the view gives a style), and how those wrap into rows of
//! a given width in terminal columns.
//!
//! Pure and shared: the view draws the rows, and the scrollback counts them to keep
//! its position when new entries come, so both agree on every row. Widths are measured
//! per grapheme with `unicode-width`, as ratatui measures them when it draws, so CJK
//! and emoji take the columns the terminal gives them. Colours are the view's; this
//! module only says which nick colour (an index) a name gets.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::scrollback::{Entry, Kind};

/// Nick colours to choose from (the view maps the index to a colour).
pub(super) const NICK_COLOURS: u8 = 12;

/// Columns of the timestamp and its space (`12:34 `); continuation rows are indented
/// as far, so wrapped text lines up under the message.
pub(super) const STAMP_WIDTH: usize = 6;

/// Panes narrower than this wrap without the hanging indent, which would leave too
/// little room for text.
const INDENT_MIN_WIDTH: usize = 30;

/// What a piece of an entry is, for its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The time.
    Stamp,
    /// `<`, `>`, `*` around a nick.
    Punct,
    /// A nick in its colour; `own` for this client's.
    Nick {
        /// Index into the palette, from the name.
        colour: u8,
        /// This client's own name.
        own: bool,
    },
    /// Chat text.
    Text,
    /// A private message (either way).
    Private,
    /// `*** bob joined`.
    Presence,
    /// `[server] …`.
    Server,
    /// `[error] …`.
    Error,
    /// Anything from a history replay but the nick.
    History,
    /// The nick in a history line.
    HistoryNick {
        /// Index into the palette.
        colour: u8,
    },
    /// The client's own notes.
    Local,
    /// A line shown as it came.
    Raw,
}

/// The colour index for `name`: the same name always gets the same colour, in any
/// case, on every client (FNV-1a over the lower-cased name).
pub(super) fn nick_colour(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(NICK_COLOURS)) as u8
}

/// `HH:MM` of `at_ms` (Unix ms) at `offset_s` seconds east of UTC.
pub(super) fn clock(at_ms: i64, offset_s: i64) -> String {
    let minutes = (at_ms.div_euclid(1000) + offset_s)
        .div_euclid(60)
        .rem_euclid(24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The parts of `entry`, in order, with the time shown at `offset_s` east of UTC.
pub(super) fn parts(entry: &Entry, offset_s: i64) -> Vec<(String, Role)> {
    let stamp = format!("{} ", clock(entry.at_ms, offset_s));
    let text = entry.text.clone();
    let nick = |name: &str, own: bool| Role::Nick {
        colour: nick_colour(name),
        own,
    };
    let mut p = vec![(
        stamp,
        if matches!(entry.kind, Kind::History { .. }) {
            Role::History
        } else {
            Role::Stamp
        },
    )];
    let s = |s: &str| s.to_owned();
    match &entry.kind {
        Kind::Chat { from } => p.extend([
            (s("<"), Role::Punct),
            (from.clone(), nick(from, false)),
            (s("> "), Role::Punct),
            (text, Role::Text),
        ]),
        Kind::Own { me } => p.extend([
            (s("<"), Role::Punct),
            (me.clone(), nick(me, true)),
            (s("> "), Role::Punct),
            (text, Role::Text),
        ]),
        Kind::Private { from } => p.extend([
            (s("*"), Role::Private),
            (from.clone(), nick(from, false)),
            (s("* "), Role::Private),
            (text, Role::Private),
        ]),
        Kind::PrivateOut { to } => p.extend([
            (s("-> *"), Role::Private),
            (to.clone(), nick(to, false)),
            (s("* "), Role::Private),
            (text, Role::Private),
        ]),
        Kind::Presence => p.extend([(s("*** "), Role::Presence), (text, Role::Presence)]),
        Kind::Server => p.extend([(s("[server] "), Role::Server), (text, Role::Server)]),
        Kind::Error => p.extend([(s("[error] "), Role::Error), (text, Role::Error)]),
        Kind::History { from } => p.extend([
            (s("<"), Role::History),
            (
                from.clone(),
                Role::HistoryNick {
                    colour: nick_colour(from),
                },
            ),
            (s("> "), Role::History),
            (text, Role::History),
        ]),
        Kind::HistoryEnd => p.extend([(format!("─── {text} ───"), Role::History)]),
        Kind::Local => p.extend([(s("-- "), Role::Local), (text, Role::Local)]),
        Kind::Raw => p.push((text, Role::Raw)),
    }
    p
}

/// One screen row: graphemes with their roles.
pub(super) type Row<'a> = Vec<(&'a str, Role)>;

/// Wraps `parts` into rows of at most `width` columns, breaking after a space when the
/// row has one, else anywhere; rows after the first are indented by the timestamp's
/// width when the pane is wide enough. Zero-width graphemes are dropped (ratatui would
/// not draw them either).
pub(super) fn wrap(parts: &[(String, Role)], width: usize) -> Vec<Row<'_>> {
    let width = width.max(2);
    let indent = if width >= INDENT_MIN_WIDTH {
        STAMP_WIDTH
    } else {
        0
    };
    let mut rows = Vec::new();
    let mut row: Row<'_> = Vec::new();
    let mut col = 0;
    for (text, role) in parts {
        for g in text.graphemes(true) {
            let w = g.width();
            if w == 0 {
                continue;
            }
            if col + w > width {
                // Break after the row's last space, if any past the timestamp (first
                // row) or the indent (the others).
                let floor = if rows.is_empty() { STAMP_WIDTH } else { indent };
                let cut = row
                    .iter()
                    .rposition(|&(g, _)| g == " ")
                    .filter(|&i| i + 1 > floor && i + 1 < row.len());
                let tail = match cut {
                    Some(i) => row.split_off(i + 1),
                    None => Vec::new(),
                };
                rows.push(std::mem::take(&mut row));
                row.extend(std::iter::repeat_n((" ", Role::Raw), indent));
                col = indent + tail.iter().map(|(g, _)| g.width()).sum::<usize>();
                row.extend(tail);
                if col + w > width {
                    rows.push(std::mem::take(&mut row));
                    row.extend(std::iter::repeat_n((" ", Role::Raw), indent));
                    col = indent;
                }
            }
            row.push((g, *role));
            col += w;
        }
    }
    rows.push(row);
    rows
}

/// How many rows `entry` takes at `width` columns.
pub(super) fn rows(entry: &Entry, width: usize) -> usize {
    wrap(&parts(entry, 0), width).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_rows(entry: &Entry, width: usize) -> Vec<String> {
        let parts = parts(entry, 0);
        wrap(&parts, width)
            .iter()
            .map(|r| r.iter().map(|(g, _)| *g).collect())
            .collect()
    }

    fn chat(text: &str) -> Entry {
        Entry::new(
            (12 * 60 + 34) * 60_000,
            Kind::Chat { from: "bob".into() },
            text,
        )
    }

    #[test]
    fn entries_read_like_text_mode_with_a_time() {
        assert_eq!(text_rows(&chat("hi"), 80), ["12:34 <bob> hi"]);
        let e = Entry::new(0, Kind::Presence, "bob joined");
        assert_eq!(text_rows(&e, 80), ["00:00 *** bob joined"]);
        let e = Entry::new(0, Kind::Private { from: "bob".into() }, "psst");
        assert_eq!(text_rows(&e, 80), ["00:00 *bob* psst"]);
        let e = Entry::new(0, Kind::HistoryEnd, "end of history for #a");
        assert_eq!(text_rows(&e, 80), ["00:00 ─── end of history for #a ───"]);
    }

    #[test]
    fn clocks_follow_the_offset() {
        assert_eq!(clock(0, 0), "00:00");
        assert_eq!(clock(0, 2 * 3600 + 30 * 60), "02:30");
        assert_eq!(clock(0, -3600), "23:00");
        assert_eq!(clock(59_999, 0), "00:00");
    }

    #[test]
    fn long_lines_wrap_at_spaces_under_the_message() {
        let e = chat("the quick brown fox jumps over the lazy dog");
        assert_eq!(
            text_rows(&e, 30),
            [
                "12:34 <bob> the quick brown ",
                "      fox jumps over the lazy ",
                "      dog"
            ]
        );
        assert_eq!(rows(&e, 30), 3);
        assert_eq!(rows(&e, 200), 1);
    }

    #[test]
    fn a_word_longer_than_the_row_is_cut() {
        let e = Entry::new(0, Kind::Raw, "x".repeat(30));
        assert_eq!(
            text_rows(&e, 20),
            ["00:00 xxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxx"]
        );
    }

    #[test]
    fn wide_characters_never_straddle_the_edge() {
        let e = Entry::new(0, Kind::Raw, "日本語のテキスト🎉🎉");
        let rows = text_rows(&e, 11);
        assert_eq!(rows, ["00:00 日本", "語のテキス", "ト🎉🎉"]);
        for r in rows {
            assert!(r.as_str().width() <= 11, "{r}");
        }
    }

    #[test]
    fn the_same_name_gets_the_same_colour_in_any_case() {
        assert_eq!(nick_colour("Alice"), nick_colour("alice"));
        let colours: std::collections::HashSet<u8> = ["alice", "bob", "carol", "dave", "eve"]
            .iter()
            .map(|n| nick_colour(n))
            .collect();
        assert!(colours.len() >= 3, "{colours:?}");
        assert!(colours.iter().all(|&c| c < NICK_COLOURS));
    }
}
