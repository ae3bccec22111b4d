//! The message pane's contents: a bounded list of entries, each a line as the client
//! will show it, and where the pane is scrolled to.
//!
//! What arrives from a server is made safe on the way in ([`sanitize`]): nothing a
//! server sends can reach the terminal as a control sequence. The list keeps at most
//! [`CAPACITY`] entries, dropping the oldest, so a flood costs bounded memory. The
//! scroll position counts screen rows up from the bottom; while it is above the bottom,
//! new entries do not move the view and are counted as unread. How an entry becomes
//! rows is [`super::layout`]'s; this module knows only how many.

use std::collections::VecDeque;

use super::layout;
use crate::codec;

/// Entries kept. A flood of ten thousand lines fits; older ones are dropped.
pub(super) const CAPACITY: usize = 10_000;

/// What an entry is, which decides how it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// `<from> text`: chat in the room.
    Chat {
        /// The sender.
        from: String,
    },
    /// `<me> text`: this client's own chat line (the server sends no echo).
    Own {
        /// This client's name when it was said.
        me: String,
    },
    /// `*from* text`: a private message to this client.
    Private {
        /// The sender.
        from: String,
    },
    /// `-> *to* text`: a private message this client sent.
    PrivateOut {
        /// The recipient.
        to: String,
    },
    /// `*** bob joined`, `*** bob left`.
    Presence,
    /// A `SERVER:` announcement.
    Server,
    /// An `ERROR:` from the server.
    Error,
    /// A message replayed from the room's history, at the server's time.
    History {
        /// The sender.
        from: String,
    },
    /// `end of history for #room`: the line under a replay.
    HistoryEnd,
    /// Something the client itself says (connection state, help, refusals).
    Local,
    /// A line the client does not understand, shown as it came.
    Raw,
}

/// One line of the message pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// When it happened, Unix ms: arrival, or the server's time for history.
    pub at_ms: i64,
    /// What it is.
    pub kind: Kind,
    /// Its text, already safe to draw.
    pub text: String,
}

impl Entry {
    /// An entry of `kind` with `text` at `at_ms`.
    pub(super) fn new(at_ms: i64, kind: Kind, text: impl Into<String>) -> Entry {
        Entry {
            at_ms,
            kind,
            text: text.into(),
        }
    }
}

/// Makes text from a server safe to draw: control characters (as
/// [`codec::is_control`] defines them, so escape sequences, line breaks and the
/// bidirectional overrides) are removed, and a tab becomes a space, because a tab
/// would move the terminal's cursor past cells the layout counted.
pub(super) fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|&c| !codec::is_control(c))
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect()
}

/// The entries and the scroll position.
#[derive(Debug)]
pub(super) struct Scrollback {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Rows hidden below the pane's bottom edge; 0 follows new entries.
    scroll: usize,
    /// Entries that came while scrolled up.
    unread: usize,
    /// The pane's size at the last draw, in cells.
    width: usize,
    height: usize,
}

impl Default for Scrollback {
    fn default() -> Scrollback {
        Scrollback::with_capacity(CAPACITY)
    }
}

impl Scrollback {
    /// A scrollback that keeps at most `capacity` entries.
    pub(super) fn with_capacity(capacity: usize) -> Scrollback {
        Scrollback {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            scroll: 0,
            unread: 0,
            width: 80,
            height: 20,
        }
    }

    /// The entries, oldest first.
    pub(super) fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    /// Rows hidden below the pane (0: at the bottom, following).
    pub(super) fn scroll(&self) -> usize {
        self.scroll
    }

    /// Entries that came while scrolled up.
    pub(super) fn unread(&self) -> usize {
        self.unread
    }

    /// Adds an entry; the oldest goes if full. Scrolled up, the view stays put.
    pub(super) fn push(&mut self, entry: Entry) {
        if self.scroll > 0 {
            self.scroll += layout::rows(&entry, self.width);
            self.unread += 1;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Forgets every entry (`/clear`).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.jump_to_bottom();
    }

    /// The pane's size, given at each draw; keeps the scroll position in range.
    pub(super) fn set_viewport(&mut self, width: usize, height: usize) {
        if (width, height) != (self.width, self.height) {
            self.width = width.max(1);
            self.height = height.max(1);
            self.clamp();
        }
    }

    /// PgUp: a page back, keeping one row of the last page in view.
    pub(super) fn page_up(&mut self) {
        self.up(self.height.saturating_sub(1).max(1));
    }

    /// PgDn: a page on.
    pub(super) fn page_down(&mut self) {
        self.down(self.height.saturating_sub(1).max(1));
    }

    /// `rows` back (the mouse wheel).
    pub(super) fn up(&mut self, rows: usize) {
        self.scroll += rows;
        self.clamp();
    }

    /// `rows` on; at the bottom, the unread count is cleared.
    pub(super) fn down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
        if self.scroll == 0 {
            self.unread = 0;
        }
    }

    /// Back to the newest entry.
    pub(super) fn jump_to_bottom(&mut self) {
        self.scroll = 0;
        self.unread = 0;
    }

    /// Scrolling stops where the oldest entry's first row is at the top.
    fn clamp(&mut self) {
        if self.scroll == 0 {
            return;
        }
        let mut total = 0;
        let limit = self.scroll + self.height;
        for e in self.entries.iter().rev() {
            total += layout::rows(e, self.width);
            if total >= limit {
                return;
            }
        }
        self.scroll = total.saturating_sub(self.height);
        if self.scroll == 0 {
            self.unread = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> Entry {
        Entry::new(0, Kind::Raw, format!("line {i}"))
    }

    fn filled(n: usize) -> Scrollback {
        let mut s = Scrollback::default();
        s.set_viewport(40, 10);
        (0..n).for_each(|i| s.push(line(i)));
        s
    }

    #[test]
    fn the_oldest_entries_go_past_the_capacity() {
        let mut s = Scrollback::with_capacity(3);
        (0..5).for_each(|i| s.push(line(i)));
        let texts: Vec<_> = s.entries().iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
    }

    #[test]
    fn a_flood_keeps_memory_bounded() {
        let s = filled(CAPACITY + 5_000);
        assert_eq!(s.entries().len(), CAPACITY);
        assert_eq!(s.entries()[0].text, "line 5000");
    }

    #[test]
    fn pages_move_by_the_pane_height_and_stop_at_the_ends() {
        let mut s = filled(30);
        s.page_up();
        assert_eq!(s.scroll(), 9);
        s.page_up();
        s.page_up();
        assert_eq!(s.scroll(), 20, "the oldest row stops at the top");
        s.page_down();
        assert_eq!(s.scroll(), 11);
        s.page_down();
        s.page_down();
        assert_eq!(s.scroll(), 0);
        let mut short = filled(3);
        short.page_up();
        assert_eq!(short.scroll(), 0);
    }

    #[test]
    fn scrolled_up_the_view_stays_and_counts_what_is_new() {
        let mut s = filled(30);
        s.up(5);
        s.push(line(30));
        s.push(Entry::new(0, Kind::Raw, "x".repeat(50)));
        assert_eq!((s.scroll(), s.unread()), (5 + 1 + 2, 2));
        s.jump_to_bottom();
        assert_eq!((s.scroll(), s.unread()), (0, 0));
        s.push(line(31));
        assert_eq!((s.scroll(), s.unread()), (0, 0));
    }

    #[test]
    fn servers_cannot_reach_the_terminal() {
        assert_eq!(sanitize("a\u{1b}[2Jb\u{7}\u{9b}c\td\r\n"), "a[2Jbc d");
        assert_eq!(sanitize("x\u{202e}y\u{2028}z"), "xyz");
        assert_eq!(sanitize("日本 🎉"), "日本 🎉");
    }
}
