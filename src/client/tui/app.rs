//! The full-screen client's state and what changes it: keys, lines from the server, a
//! connection coming up or going away, time passing.
//!
//! [`App`] is the model of the interface. It owns the scrollback, the input line, the
//! member list, the identity to take back after a reconnect and the connection state,
//! and it draws nothing and touches no socket: what it wants done goes out as
//! [`Effect`]s (send a frame, start a connection, clear the screen), which the loop in
//! [`super`] carries out. Time comes in as arguments (an `Instant` for deadlines, Unix
//! milliseconds for timestamps), so every behaviour here is tested without a terminal,
//! a server or a sleep.

use std::time::{Duration, Instant};

use super::editor::Editor;
use super::identity::{Heard, Identity};
use super::members::{Members, parse_who};
use super::reconnect::{Due, Reconnect, State};
use super::scrollback::{Entry, Kind, Scrollback, sanitize};
use crate::client::text::{Input, translate};
use crate::codec::{self, Command, Event};
use zeroize::Zeroizing;

/// Rows the mouse wheel scrolls per notch.
const WHEEL_ROWS: usize = 3;

/// Shown for `/help`.
const HELP: &str = "\
commands:
  /nick NAME               take or change your name
  /join #ROOM [KEY]        move to a room (with its key, if it has one)
  /msg NAME TEXT           private message
  /who, /rooms             who is in your room, which rooms exist
  /history [N]             the last N messages of your room (default 20)
  /register NAME PASSWORD  create an account and log in
  /login NAME PASSWORD     log in (again by itself after a reconnect)
  /pass PASSWORD           the server's password
  /reconnect               connect again now
  /clear                   empty the message pane
  /quit [REASON]           leave (also Ctrl-C, or Ctrl-D on an empty line)
keys: PgUp/PgDn or the mouse wheel scroll, Esc goes back to the newest line,
  Up/Down recall sent lines, Ctrl-W/Ctrl-U/Ctrl-K cut, Ctrl-L redraws
any other line is said to your room; a line that is already a frame is sent as it is";

/// A key (or paste, or wheel turn), already read from the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    /// A character to insert.
    Char(char),
    /// Pasted text.
    Paste(String),
    /// Send the line.
    Enter,
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character under the cursor.
    Delete,
    /// Cursor left.
    Left,
    /// Cursor right.
    Right,
    /// Cursor to the start (Home, Ctrl-A).
    Home,
    /// Cursor to the end (End, Ctrl-E).
    End,
    /// Earlier sent line.
    Up,
    /// Later sent line.
    Down,
    /// Ctrl-W.
    DeleteWord,
    /// Ctrl-U.
    KillToStart,
    /// Ctrl-K.
    KillToEnd,
    /// Scroll a page back.
    PageUp,
    /// Scroll a page on.
    PageDown,
    /// Mouse wheel up.
    WheelUp,
    /// Mouse wheel down.
    WheelDown,
    /// Esc: back to the newest line.
    Bottom,
    /// Ctrl-L: redraw the whole screen.
    Redraw,
    /// Ctrl-C (or SIGINT/SIGTERM): leave; a second time, at once.
    Interrupt,
    /// Ctrl-D: leave on an empty line, else delete under the cursor.
    EndOfInput,
}

/// What the model wants done outside it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Effect {
    /// Send this frame (without its line end) on the current connection.
    Send(String),
    /// Start connection generation `n`.
    Connect(u64),
    /// Clear and redraw the whole terminal.
    Redraw,
}

/// What the model is told at start.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// The server's address, as given.
    pub server: String,
    /// `--name`.
    pub name: Option<String>,
    /// `--leave-timeout`.
    pub leave_timeout: Duration,
    /// `--announce-limit`.
    pub announce_limit: usize,
    /// The local time zone, seconds east of UTC, for timestamps.
    pub utc_offset_s: i64,
}

/// The interface's state.
pub(super) struct App {
    settings: Settings,
    scrollback: Scrollback,
    editor: Editor,
    members: Members,
    identity: Identity,
    reconnect: Reconnect,
    /// ` over TLS 1.3 (…)` for the current connection; empty for plain TCP.
    about: String,
    /// `WHO:` sent by the client itself: their answers fill the list unshown.
    quiet_who: usize,
    /// The room to go back to after a reconnect, once the name is back.
    pending_room: Option<Zeroizing<String>>,
    /// `HISTORY:` requests the person sent and the server has not ended yet.
    history_asked: usize,
    /// History lines since the last end of history.
    history_lines: usize,
    effects: Vec<Effect>,
    /// Why the session ended, for the last message.
    farewell: &'static str,
    /// The exit status.
    status: u8,
}

impl App {
    /// A model about to make its first connection; `seed` seeds the reconnect jitter.
    pub(super) fn new(settings: Settings, seed: u64) -> App {
        App {
            members: Members::new(settings.announce_limit),
            identity: Identity::new(settings.name.as_deref()),
            settings,
            scrollback: Scrollback::default(),
            editor: Editor::default(),
            reconnect: Reconnect::new(seed),
            about: String::new(),
            quiet_who: 0,
            pending_room: None,
            history_asked: 0,
            history_lines: 0,
            effects: Vec::new(),
            farewell: "quit",
            status: 0,
        }
    }

    /// The settings it was started with.
    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The message pane's entries and position.
    pub(super) fn scrollback(&self) -> &Scrollback {
        &self.scrollback
    }

    /// The input line.
    pub(super) fn editor(&self) -> &Editor {
        &self.editor
    }

    /// The current room's members.
    pub(super) fn members(&self) -> &Members {
        &self.members
    }

    /// Name, room and login.
    pub(super) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection's state.
    pub(super) fn state(&self) -> &State {
        self.reconnect.state()
    }

    /// The current connection generation.
    pub(super) fn generation(&self) -> u64 {
        self.reconnect.generation()
    }

    /// What the current connection runs over (` over TLS …`, or empty).
    pub(super) fn about(&self) -> &str {
        &self.about
    }

    /// Whether the session is over.
    pub(super) fn is_done(&self) -> bool {
        self.reconnect.is_done()
    }

    /// Why the session ended (`quit`, `interrupted`) and the exit status.
    pub(super) fn ending(&self) -> (&'static str, u8) {
        (self.farewell, self.status)
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.reconnect.deadline()
    }

    /// What is to be done, in order.
    pub(super) fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The message pane's size, from the last layout.
    pub(super) fn set_viewport(&mut self, width: usize, height: usize) {
        self.scrollback.set_viewport(width, height);
    }

    /// Adds a line of the client's own (`at_ms`: now).
    pub(super) fn note(&mut self, at_ms: i64, text: impl Into<String>) {
        self.scrollback.push(Entry::new(at_ms, Kind::Local, text));
    }

    /// Connection `generation` is up: take back name, room and login.
    pub(super) fn connected(&mut self, generation: u64, about: String, now: Instant, at_ms: i64) {
        if !self.reconnect.is_current(generation) {
            return;
        }
        self.reconnect.connected(now);
        self.note(
            at_ms,
            format!("connected to {}{about}", self.settings.server),
        );
        self.about = about;
        let restore = self.identity.restore();
        for frame in restore.first.iter() {
            self.send(frame.to_string());
        }
        match restore.room {
            Some(room) if restore.named => self.pending_room = Some(room),
            Some(room) => self.send(room.to_string()),
            None => {}
        }
    }

    /// A connection attempt failed.
    pub(super) fn connect_failed(&mut self, generation: u64, why: &str, now: Instant) {
        // Only the status line follows the tries: a server that is down for an hour
        // must not fill the pane.
        if self.reconnect.is_current(generation) {
            self.reconnect.lost(now, why.to_owned(), true);
        }
    }

    /// Connection `generation` ended: broken (`Some(error)`) or closed by the server,
    /// whose last line may have been an `ERROR:`.
    pub(super) fn closed(
        &mut self,
        generation: u64,
        broken: Option<&str>,
        last_error: Option<&str>,
        now: Instant,
        at_ms: i64,
    ) {
        if !self.reconnect.is_current(generation) {
            return;
        }
        self.identity.disconnected();
        self.members.reset(self.identity.room());
        self.history_asked = 0;
        self.history_lines = 0;
        self.pending_room = None;
        self.quiet_who = 0;
        self.about.clear();
        // The server closed after saying why (kicked, banned, logged in elsewhere):
        // coming straight back would undo what it did.
        let said_why = last_error.filter(|e| e.ends_with("closing"));
        let why = match (broken, said_why) {
            (_, Some(error)) => format!("the server closed the connection: {error}"),
            (Some(e), None) => format!("connection lost: {e}"),
            (None, None) => "the server closed the connection".to_owned(),
        };
        self.reconnect.lost(now, why.clone(), said_why.is_none());
        match self.reconnect.state() {
            State::Stopped { .. } => self.note(at_ms, format!("{why}; /reconnect to try again")),
            State::Waiting { .. } => self.note_wait(at_ms, &why, now),
            _ => {}
        }
    }

    /// Lines from connection `generation`.
    pub(super) fn lines(&mut self, generation: u64, lines: &[String], at_ms: i64) {
        if !self.reconnect.is_current(generation) {
            return;
        }
        for line in lines {
            self.server_line(line, at_ms);
        }
    }

    /// `count` lines from the server were too long to keep.
    pub(super) fn skipped(&mut self, count: usize, at_ms: i64) {
        self.note(at_ms, format!("skipped {count} line(s) too long to show"));
    }

    /// Moves on what time makes due: a reconnect, the end of a leave.
    pub(super) fn tick(&mut self, now: Instant) {
        if let Some(Due::Connect(generation)) = self.reconnect.tick(now) {
            self.effects.push(Effect::Connect(generation));
        }
    }

    /// A key.
    pub(super) fn key(&mut self, key: Key, now: Instant, at_ms: i64) {
        let e = &mut self.editor;
        match key {
            Key::Char(c) => e.insert(c),
            Key::Paste(s) => e.paste(&s),
            Key::Backspace => e.backspace(),
            Key::Delete => e.delete(),
            Key::Left => e.left(),
            Key::Right => e.right(),
            Key::Home => e.home(),
            Key::End => e.end(),
            Key::Up => e.up(),
            Key::Down => e.down(),
            Key::DeleteWord => e.delete_word(),
            Key::KillToStart => e.kill_to_start(),
            Key::KillToEnd => e.kill_to_end(),
            Key::PageUp => self.scrollback.page_up(),
            Key::PageDown => self.scrollback.page_down(),
            Key::WheelUp => self.scrollback.up(WHEEL_ROWS),
            Key::WheelDown => self.scrollback.down(WHEEL_ROWS),
            Key::Bottom => self.scrollback.jump_to_bottom(),
            Key::Redraw => self.effects.push(Effect::Redraw),
            Key::EndOfInput if e.is_empty() => self.leave("LEAVE:".to_owned(), "quit", now),
            Key::EndOfInput => e.delete(),
            Key::Interrupt if matches!(self.state(), State::Leaving { .. }) => {
                self.reconnect.abandon();
                self.farewell = "interrupted again";
                self.status = crate::client::EXIT_INTERRUPTED;
            }
            Key::Interrupt => self.leave("LEAVE:".to_owned(), "interrupted", now),
            Key::Enter => {
                let line = self.editor.take();
                self.submit(&line, now, at_ms);
            }
        }
    }

    /// A line typed and entered.
    fn submit(&mut self, line: &str, now: Instant, at_ms: i64) {
        let command = line.trim();
        match command {
            "/help" => return HELP.lines().for_each(|l| self.note(at_ms, l)),
            "/clear" => return self.scrollback.clear(),
            "/reconnect" => {
                return match self.reconnect.retry_now() {
                    Some(Due::Connect(generation)) => {
                        self.effects.push(Effect::Connect(generation));
                        self.note(at_ms, format!("reconnecting to {}…", self.settings.server));
                    }
                    None => self.note(at_ms, "already connected or connecting"),
                };
            }
            _ => {}
        }
        match translate(line.as_bytes()) {
            Input::Nothing => {}
            Input::Local(message) => message.lines().for_each(|l| self.note(at_ms, l)),
            Input::Leave(frame) => self.leave(frame, "quit", now),
            Input::Send(_) if !self.reconnect.is_connected() => {
                // Keep what was typed, so it can be sent once the connection is back.
                self.editor.set(line);
                self.note(at_ms, "not connected; not sent (/reconnect tries now)");
            }
            Input::Send(frame) => {
                self.scrollback.jump_to_bottom();
                self.echo(&frame, at_ms);
                self.send(frame);
            }
        }
    }

    /// Shows what this client said (the server echoes nothing back).
    fn echo(&mut self, frame: &str, at_ms: i64) {
        let me = self.identity.name().unwrap_or("you").to_owned();
        let (kind, text) = match codec::parse_frame(frame.as_bytes()) {
            Ok(Command::Say(text)) => (Kind::Own { me }, text),
            Ok(Command::Msg { to, text }) => (Kind::PrivateOut { to: to.to_owned() }, text),
            _ => return,
        };
        self.scrollback.push(Entry::new(at_ms, kind, text));
    }

    fn send(&mut self, frame: String) {
        self.identity.sent(&frame);
        if frame.starts_with("HISTORY:") {
            self.history_asked += 1;
        }
        self.effects.push(Effect::Send(frame));
    }

    fn leave(&mut self, frame: String, why: &'static str, now: Instant) {
        self.farewell = why;
        if self.reconnect.leave(now, self.settings.leave_timeout) {
            self.effects.push(Effect::Send(frame));
        }
    }

    fn note_wait(&mut self, at_ms: i64, why: &str, now: Instant) {
        // The first loss is told in the pane; the tries after it only in the status.
        if let State::Waiting { until, .. } = self.reconnect.state() {
            let wait = until.saturating_duration_since(now).as_secs_f64();
            self.note(at_ms, format!("{why}; trying again in {wait:.1}s"));
        }
    }

    /// One line from the server: made safe, read, and added.
    fn server_line(&mut self, line: &str, at_ms: i64) {
        let clean = sanitize(line);
        let Some(event) = Event::parse(&clean) else {
            if !clean.is_empty() {
                self.scrollback.push(Entry::new(at_ms, Kind::Raw, clean));
            }
            return;
        };
        match self.identity.heard(&event) {
            Heard::Entered(room) => {
                self.members.reset(Some(room));
                self.quiet_who += 1;
                self.send("WHO:".to_owned());
            }
            Heard::Renamed { old, new } => self.members.renamed(old, new),
            Heard::Nothing => {}
        }
        let (kind, text) = match event {
            Event::Say { from, text } => (Kind::Chat { from: from.into() }, text.to_owned()),
            Event::Msg { from, text } => (Kind::Private { from: from.into() }, text.to_owned()),
            Event::Join(name) => {
                self.members.joined(name, at_ms);
                (Kind::Presence, format!("{name} joined"))
            }
            Event::Leave(name) => {
                self.members.left(name);
                (Kind::Presence, format!("{name} left"))
            }
            Event::Server(text) => {
                if let Some(who) = parse_who(text) {
                    self.members.who(&who, at_ms);
                    if let Some(room) = self.pending_room.take() {
                        self.send(room.to_string());
                    }
                    if self.quiet_who > 0 {
                        self.quiet_who -= 1;
                        return;
                    }
                }
                if text.starts_with("end of history for ") {
                    // The end of an empty replay on entering a room says nothing; the
                    // end of an empty page the person asked for says there is none.
                    let asked = self.history_asked > 0;
                    self.history_asked = self.history_asked.saturating_sub(1);
                    let lines = std::mem::take(&mut self.history_lines);
                    match (lines, asked) {
                        (0, false) => return,
                        (0, true) => (Kind::Server, format!("no messages: {text}")),
                        _ => (Kind::HistoryEnd, text.to_owned()),
                    }
                } else {
                    (Kind::Server, text.to_owned())
                }
            }
            Event::Error(text) => (Kind::Error, text.to_owned()),
            Event::History {
                at_ms, from, text, ..
            } => {
                self.history_lines += 1;
                let entry = Entry::new(at_ms, Kind::History { from: from.into() }, text);
                return self.scrollback.push(entry);
            }
        };
        self.scrollback.push(Entry::new(at_ms, kind, text));
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
