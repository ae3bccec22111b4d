//! The input line: the text being typed, the cursor, the edits a shell has taught
//! people (←/→, Home/End, Ctrl-W, Ctrl-U, Ctrl-K, Backspace/Delete), and the history of
//! sent lines (↑/↓).
//!
//! The cursor moves by grapheme (what a person sees as one character: an accented
//! letter, a flag, an emoji with its modifiers), and [`Editor::window`] measures in
//! terminal columns, so wide CJK and emoji keep the cursor where it is drawn. A line
//! that holds a password or a key never enters the history. This module draws nothing.

use std::collections::VecDeque;

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::codec;

/// Longest input line, in bytes: far above any server's line limit, only so that a
/// runaway paste cannot grow memory without bound.
pub(super) const MAX_INPUT: usize = 64 * 1024;

/// Sent lines kept for ↑/↓.
pub(super) const HISTORY: usize = 500;

/// The line being edited and the lines sent before it.
#[derive(Debug, Default)]
pub(super) struct Editor {
    text: String,
    /// Byte offset of the cursor, always on a grapheme boundary.
    cursor: usize,
    /// Sent lines, oldest first.
    history: VecDeque<String>,
    /// While browsing the history with ↑/↓: which entry is shown.
    browsing: Option<usize>,
    /// What was being typed when browsing started, given back by ↓ past the newest.
    draft: String,
}

impl Editor {
    /// The text as typed.
    #[cfg(test)]
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// Whether nothing is typed.
    pub(super) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Inserts a typed character at the cursor. Control characters (which could never
    /// be sent) are ignored.
    pub(super) fn insert(&mut self, c: char) {
        if codec::is_control(c) || self.text.len() + c.len_utf8() > MAX_INPUT {
            return;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts pasted text: line ends and tabs become spaces, other control characters
    /// are dropped, and what does not fit under [`MAX_INPUT`] is cut.
    pub(super) fn paste(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '\r' | '\n' | '\t' => self.insert(' '),
                c => self.insert(c),
            }
        }
    }

    /// Replaces the whole line (the cursor goes to its end).
    pub(super) fn set(&mut self, text: &str) {
        self.text.clear();
        self.cursor = 0;
        self.browsing = None;
        self.paste(text);
    }

    /// ←: one grapheme back.
    pub(super) fn left(&mut self) {
        self.cursor = self.prev_boundary(self.cursor);
    }

    /// →: one grapheme on.
    pub(super) fn right(&mut self) {
        self.cursor = self.next_boundary(self.cursor);
    }

    /// Home (Ctrl-A).
    pub(super) fn home(&mut self) {
        self.cursor = 0;
    }

    /// End (Ctrl-E).
    pub(super) fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Backspace: the grapheme before the cursor.
    pub(super) fn backspace(&mut self) {
        let start = self.prev_boundary(self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Delete: the grapheme under the cursor.
    pub(super) fn delete(&mut self) {
        let end = self.next_boundary(self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    /// Ctrl-W: the word before the cursor, and the spaces after it.
    pub(super) fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(char::is_whitespace);
        let start = trimmed.rfind(char::is_whitespace).map_or(0, |i| {
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Ctrl-U: everything before the cursor.
    pub(super) fn kill_to_start(&mut self) {
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
    }

    /// Ctrl-K: everything from the cursor on.
    pub(super) fn kill_to_end(&mut self) {
        self.text.truncate(self.cursor);
    }

    /// Enter: takes the line, and remembers it for ↑ unless it is blank, repeats the
    /// last one, or carries a secret.
    pub(super) fn take(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        let repeat = self.history.back().is_some_and(|last| *last == line);
        if !line.trim().is_empty() && !repeat && !has_secret(&line) {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(line.clone());
        }
        line
    }

    /// ↑: the previous sent line (the line being typed is kept for ↓).
    pub(super) fn up(&mut self) {
        let i = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.text);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(i);
        self.show(self.history[i].clone());
    }

    /// ↓: the next sent line, then back to what was being typed.
    pub(super) fn down(&mut self) {
        let Some(i) = self.browsing else { return };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            self.show(self.history[i + 1].clone());
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.show(draft);
        }
    }

    /// What fits in `width` columns: the visible part of the line and the cursor's
    /// column within it. The view scrolls sideways so the cursor is always visible,
    /// with the text before it shown as far as it fits.
    pub(super) fn window(&self, width: usize) -> (&str, usize) {
        let width = width.max(1);
        let before = &self.text[..self.cursor];
        let mut start = 0;
        let mut col = before.width();
        // Keep one column for the cursor itself.
        while col >= width {
            let next = self.next_boundary(start);
            col -= self.text[start..next].width();
            start = next;
        }
        let mut end = self.cursor;
        let mut used = col;
        for g in self.text[self.cursor..].graphemes(true) {
            let w = g.width();
            if used + w > width {
                break;
            }
            used += w;
            end += g.len();
        }
        (&self.text[start..end], col)
    }

    fn show(&mut self, text: String) {
        self.text = text;
        self.cursor = self.text.len();
    }

    fn prev_boundary(&self, at: usize) -> usize {
        self.text[..at]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, at: usize) -> usize {
        self.text[at..]
            .graphemes(true)
            .next()
            .map_or(at, |g| at + g.len())
    }
}

/// Whether a typed line carries a password or a room key, and so must not be kept.
pub(super) fn has_secret(line: &str) -> bool {
    let line = line.trim_start();
    let word = |prefix: &str| {
        line.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    if ["/login", "/register", "/pass"].into_iter().any(word) {
        return true;
    }
    if ["AUTH:", "REGISTER:", "PASS:"]
        .into_iter()
        .any(|p| line.starts_with(p))
    {
        return true;
    }
    // A room key: `/join #room KEY` or `JOIN:#room:KEY`.
    if let Some(rest) = line.strip_prefix("/join") {
        return rest.split_whitespace().count() > 1;
    }
    line.strip_prefix("JOIN:#").is_some_and(|r| r.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Editor {
        let mut e = Editor::default();
        s.chars().for_each(|c| e.insert(c));
        e
    }

    fn cursor(e: &Editor) -> usize {
        e.window(1000).1
    }

    #[test]
    fn typing_and_moving_the_cursor() {
        let mut e = typed("helo");
        e.left();
        e.insert('l');
        assert_eq!(e.text(), "hello");
        e.home();
        e.insert('>');
        e.end();
        e.insert('!');
        assert_eq!(e.text(), ">hello!");
        e.home();
        e.right();
        e.delete();
        assert_eq!(e.text(), ">ello!");
        e.end();
        e.backspace();
        assert_eq!(e.text(), ">ello");
        e.home();
        e.backspace();
        e.left();
        assert_eq!((e.text(), cursor(&e)), (">ello", 0));
        e.end();
        e.delete();
        e.right();
        assert_eq!((e.text(), cursor(&e)), (">ello", 5));
    }

    #[test]
    fn ctrl_w_u_and_k_cut_words_and_ends() {
        let mut e = typed("say hello  world ");
        e.delete_word();
        assert_eq!(e.text(), "say hello  ");
        e.delete_word();
        assert_eq!(e.text(), "say ");
        e.insert('x');
        e.left();
        e.kill_to_end();
        assert_eq!(e.text(), "say ");
        e.left();
        e.kill_to_start();
        assert_eq!((e.text(), cursor(&e)), (" ", 0));
        let mut e = typed("one");
        e.delete_word();
        assert!(e.is_empty());
    }

    #[test]
    fn wide_and_combined_characters_move_as_one() {
        // CJK is two columns; the flag and the family are one grapheme each.
        let mut e = typed("日本🇫🇷👨‍👩‍👧e\u{301}");
        assert_eq!(cursor(&e), 2 + 2 + 2 + 2 + 1);
        e.left();
        e.left();
        assert_eq!(cursor(&e), 6);
        e.backspace();
        assert_eq!(e.text(), "日本👨‍👩‍👧e\u{301}");
        e.delete();
        assert_eq!(e.text(), "日本e\u{301}");
        e.backspace();
        assert_eq!((e.text(), cursor(&e)), ("日e\u{301}", 2));
    }

    #[test]
    fn control_characters_never_enter_the_line() {
        let mut e = typed("a\u{1b}[2J\u{7}b\u{202e}");
        assert_eq!(e.text(), "a[2Jb");
        e.paste("x\r\ny\tz\u{9b}");
        assert_eq!(e.text(), "a[2Jbx  y z");
    }

    #[test]
    fn history_walks_back_and_returns_to_the_draft() {
        let mut e = Editor::default();
        for line in ["one", "two", "two", "  ", "three"] {
            e.set(line);
            e.take();
        }
        e.set("draft");
        e.up();
        assert_eq!(e.text(), "three");
        e.up();
        e.up();
        assert_eq!(e.text(), "one");
        e.up();
        assert_eq!(e.text(), "one");
        e.down();
        e.down();
        assert_eq!(e.text(), "three");
        e.down();
        assert_eq!(e.text(), "draft");
        e.down();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn history_is_bounded() {
        let mut e = Editor::default();
        for i in 0..HISTORY + 10 {
            e.set(&format!("line {i}"));
            e.take();
        }
        for _ in 0..HISTORY + 10 {
            e.up();
        }
        assert_eq!(e.text(), "line 10");
    }

    #[test]
    fn secrets_are_not_remembered() {
        let mut e = Editor::default();
        for line in [
            "/login bob hunter22",
            "/register bob hunter22",
            "/pass sesame",
            "AUTH:bob:hunter22",
            "PASS:x",
            "/join #vault key",
            "JOIN:#vault:key",
        ] {
            assert!(has_secret(line), "{line}");
            e.set(line);
            e.take();
        }
        e.up();
        assert!(e.is_empty());
        assert!(!has_secret("/join #rust"));
        assert!(!has_secret("JOIN:#rust"));
        assert!(!has_secret("/passage is fine"));
    }

    #[test]
    fn the_window_scrolls_to_keep_the_cursor_visible() {
        let mut e = typed("abcdefghij");
        assert_eq!(e.window(5), ("ghij", 4));
        e.home();
        assert_eq!(e.window(5), ("abcde", 0));
        let e = typed("日本語です");
        // Ten columns of text and the cursor after them: the last two characters fit.
        assert_eq!(e.window(5), ("です", 4));
    }

    #[test]
    fn input_is_bounded() {
        let mut e = Editor::default();
        e.paste(&"x".repeat(MAX_INPUT + 10));
        assert_eq!(e.text().len(), MAX_INPUT);
    }
}
