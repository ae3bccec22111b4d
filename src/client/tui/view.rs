//! Drawing the model: the message pane, the member list, the status line and the input
//! line, into a ratatui frame.
//!
//! A pure function of [`App`] and the time: nothing here changes the model or touches
//! the terminal, so the tests draw into ratatui's `TestBackend` and compare cells. The
//! rows of the message pane come from [`super::layout`] (the scrollback counts the same
//! rows); this module adds the styles, the bottom alignment and the panes' geometry.

use std::time::Instant;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use super::app::App;
use super::layout::{self, Role, Row};
use super::members::Extent;
use super::reconnect::State;

/// Columns of the member list.
const MEMBERS_WIDTH: u16 = 18;

/// Narrower terminals show no member list: the messages need the room more.
const MEMBERS_MIN_WIDTH: u16 = 60;

/// The prompt before the input.
const PROMPT: &str = "> ";

/// Nick colours, indexed by [`layout::nick_colour`]: the terminal's own palette, so
/// they suit its background, without the black and white that one of them hides.
const NICKS: [Color; layout::NICK_COLOURS as usize] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
];

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Panes {
    /// The message pane.
    pub messages: Rect,
    /// The member list and the column of its separator, if the terminal is wide enough.
    pub members: Option<(Rect, u16)>,
    /// The status line.
    pub status: Rect,
    /// The input line.
    pub input: Rect,
}

/// Splits the screen: messages (with members on the right) above, then the status
/// line, then the input line.
pub(super) fn panes(area: Rect) -> Panes {
    let line = |y: u16, height: u16| Rect { y, height, ..area };
    let input = line(area.bottom().saturating_sub(1), area.height.min(1));
    let status = line(
        area.bottom().saturating_sub(2),
        area.height.saturating_sub(1).min(1),
    );
    let body = line(area.y, area.height.saturating_sub(2));
    if area.width < MEMBERS_MIN_WIDTH {
        return Panes {
            messages: body,
            members: None,
            status,
            input,
        };
    }
    let messages = Rect {
        width: area.width - MEMBERS_WIDTH - 1,
        ..body
    };
    let separator = messages.right();
    let members = Rect {
        x: separator + 1,
        width: MEMBERS_WIDTH,
        ..body
    };
    Panes {
        messages,
        members: Some((members, separator)),
        status,
        input,
    }
}

/// Draws the whole screen as of `now`.
pub(super) fn draw(frame: &mut Frame<'_>, app: &App, now: Instant) {
    let p = panes(frame.area());
    let buf = frame.buffer_mut();
    messages(buf, p.messages, app);
    if let Some((area, separator)) = p.members {
        for y in area.top()..area.bottom() {
            buf[(separator, y)]
                .set_symbol("│")
                .set_style(Style::new().fg(Color::DarkGray));
        }
        members(buf, area, app);
    }
    status(buf, p.status, app, now);
    if let Some(cursor) = input(buf, p.input, app) {
        frame.set_cursor_position(cursor);
    }
}

fn style(role: Role) -> Style {
    let s = Style::new();
    match role {
        Role::Stamp => s.fg(Color::DarkGray),
        Role::Punct | Role::Text | Role::Raw => s,
        Role::Nick { colour, own } => {
            let s = s.fg(NICKS[usize::from(colour)]);
            if own {
                s.add_modifier(Modifier::BOLD)
            } else {
                s
            }
        }
        Role::Private => s.fg(Color::Magenta),
        Role::Presence => s.fg(Color::Gray),
        Role::Server => s.fg(Color::Cyan),
        Role::Error => s.fg(Color::LightRed).add_modifier(Modifier::BOLD),
        Role::History => s.fg(Color::DarkGray).add_modifier(Modifier::ITALIC),
        Role::HistoryNick { colour } => s
            .fg(NICKS[usize::from(colour)])
            .add_modifier(Modifier::ITALIC | Modifier::DIM),
        Role::Local => s.fg(Color::Yellow),
    }
}

/// One row as a line of spans, neighbours of one role joined.
fn row_line(row: &Row<'_>) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut text = String::new();
    let mut current: Option<Role> = None;
    for &(g, role) in row {
        if current != Some(role) {
            if let Some(r) = current {
                spans.push(Span::styled(std::mem::take(&mut text), style(r)));
            }
            current = Some(role);
        }
        text.push_str(g);
    }
    if let Some(r) = current {
        spans.push(Span::styled(text, style(r)));
    }
    Line::from(spans)
}

/// The newest rows that fit above the scroll position, at the bottom of the pane.
fn messages(buf: &mut Buffer, area: Rect, app: &App) {
    let (width, height) = (usize::from(area.width), usize::from(area.height));
    if width == 0 || height == 0 {
        return;
    }
    let offset = app.settings().utc_offset_s;
    let mut skip = app.scrollback().scroll();
    // Newest first, then reversed.
    let mut lines: Vec<Line<'static>> = Vec::with_capacity(height);
    'entries: for entry in app.scrollback().entries().iter().rev() {
        let parts = layout::parts(entry, offset);
        for row in layout::wrap(&parts, width).iter().rev() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            lines.push(row_line(row));
            if lines.len() == height {
                break 'entries;
            }
        }
    }
    let top = area.bottom() - lines.len() as u16;
    for (i, line) in lines.iter().rev().enumerate() {
        buf.set_line(area.x, top + i as u16, line, area.width);
    }
}

fn members(buf: &mut Buffer, area: Rect, app: &App) {
    if area.height == 0 {
        return;
    }
    let m = app.members();
    let me = app.identity().name();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::DarkGray);
    let mut lines: Vec<Line<'static>> = Vec::new();
    let header = match (m.room(), m.count()) {
        (Some(room), Some(n)) => format!("{room} ({n})"),
        (Some(room), None) => room.to_owned(),
        (None, _) => "no room".to_owned(),
    };
    lines.push(Line::styled(header, bold));
    let mut tail: Vec<Line<'static>> = Vec::new();
    match m.extent() {
        Extent::Unknown if m.room().is_some() => tail.push(Line::styled("…", dim)),
        Extent::Unknown | Extent::All => {}
        Extent::Some { more } => tail.push(Line::styled(format!("+{more} more"), dim)),
        Extent::Frozen { at_ms, .. } => {
            let at = layout::clock(*at_ms, app.settings().utc_offset_s);
            lines.push(Line::styled("too big to follow:", dim));
            lines.push(Line::styled(format!("list as of {at}"), dim));
            lines.push(Line::styled("/who to refresh", dim));
        }
    }
    let room_for = usize::from(area.height).saturating_sub(lines.len() + tail.len());
    let names = m.names();
    let (shown, hidden) = if names.len() > room_for {
        (
            room_for.saturating_sub(1),
            names.len() - room_for.saturating_sub(1),
        )
    } else {
        (names.len(), 0)
    };
    for name in &names[..shown] {
        let mut s = Style::new().fg(NICKS[usize::from(layout::nick_colour(name))]);
        if me.is_some_and(|me| me.eq_ignore_ascii_case(name)) {
            s = s.add_modifier(Modifier::BOLD);
        }
        lines.push(Line::styled(name.clone(), s));
    }
    if hidden > 0 {
        lines.push(Line::styled(format!("+{hidden} not shown"), dim));
    }
    lines.extend(tail);
    for (i, line) in lines.iter().take(usize::from(area.height)).enumerate() {
        buf.set_line(area.x, area.y + i as u16, line, area.width);
    }
}

/// The connection state in words, and its colour.
fn state_text(app: &App, now: Instant) -> (String, Color) {
    match app.state() {
        State::Connecting { attempt: 0 } => ("connecting…".into(), Color::Yellow),
        State::Connecting { attempt } => (format!("reconnecting (try {attempt})…"), Color::Yellow),
        State::Connected { .. } => {
            let mut s = String::from("connected");
            if !app.about().is_empty() {
                s.push_str(", TLS");
            }
            if app.identity().logged_in() {
                s.push_str(", logged in");
            }
            (s, Color::LightGreen)
        }
        State::Waiting { until, .. } => {
            let secs = until.saturating_duration_since(now).as_secs_f64().ceil();
            (format!("disconnected, retry in {secs}s"), Color::LightRed)
        }
        State::Stopped { .. } => ("disconnected (/reconnect)".into(), Color::LightRed),
        State::Leaving { .. } => ("leaving…".into(), Color::Yellow),
        State::Done => ("closed".into(), Color::LightRed),
    }
}

fn status(buf: &mut Buffer, area: Rect, app: &App, now: Instant) {
    if area.height == 0 {
        return;
    }
    let bar = Style::new().bg(Color::DarkGray).fg(Color::White);
    buf.set_style(area, bar);
    let sep = Span::styled(" │ ", bar);
    let mut spans = Vec::new();
    let sb = app.scrollback();
    if sb.scroll() > 0 {
        let note = match sb.unread() {
            0 => " ↑ scrolled".to_owned(),
            n => format!(" ↑ {n} new below"),
        };
        spans.push(Span::styled(note, bar.fg(Color::LightYellow)));
        spans.push(sep.clone());
    } else {
        spans.push(Span::styled(" ", bar));
    }
    let id = app.identity();
    let who = match (id.name(), id.room()) {
        (Some(name), Some(room)) => format!("{name} in {room}"),
        (Some(name), None) => name.to_owned(),
        (None, _) => "no name yet".to_owned(),
    };
    spans.push(Span::styled(who, bar.add_modifier(Modifier::BOLD)));
    spans.push(sep.clone());
    let (state, colour) = state_text(app, now);
    spans.push(Span::styled(
        state,
        bar.fg(colour).add_modifier(Modifier::BOLD),
    ));
    spans.push(sep);
    spans.push(Span::styled(app.settings().server.clone(), bar));
    buf.set_line(area.x, area.y, &Line::from(spans), area.width);
}

/// Draws the input line; returns where the cursor goes.
fn input(buf: &mut Buffer, area: Rect, app: &App) -> Option<Position> {
    if area.height == 0 || area.width <= PROMPT.len() as u16 {
        return None;
    }
    let prompt = PROMPT.len() as u16;
    buf.set_string(area.x, area.y, PROMPT, Style::new().fg(Color::DarkGray));
    let (text, col) = app.editor().window(usize::from(area.width - prompt));
    buf.set_stringn(
        area.x + prompt,
        area.y,
        text,
        usize::from(area.width - prompt),
        Style::new(),
    );
    Some(Position::new(area.x + prompt + col as u16, area.y))
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
