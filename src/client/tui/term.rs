//! The terminal: taking it over (raw mode, the alternate screen, mouse wheel, bracketed
//! paste), giving it back on every way out, panics included, and reading its events as
//! the model's [`Key`]s.
//!
//! [`Screen`] restores the terminal when dropped, and a panic hook restores it before
//! the panic message is printed (so the message is readable) and ends the process: a
//! client whose connection thread died would otherwise sit there looking connected.
//! Restoring twice is harmless.

use std::fmt;
use std::io::{self, Stdout};
use std::sync::Once;

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, Event, KeyCode, KeyEventKind,
    KeyModifiers, MouseEventKind,
};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{Command, cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use super::app::Key;

/// The terminal as ratatui draws on it.
pub(super) type Term = Terminal<CrosstermBackend<Stdout>>;

/// Exit status after a panic (what Rust's own panic exit uses).
const PANIC_EXIT: i32 = 101;

/// Mouse reports for buttons and the wheel only, in SGR form. crossterm's
/// `EnableMouseCapture` also asks for every motion, a stream of events nobody here
/// wants; its `DisableMouseCapture` turns both off again.
struct EnableWheel;

impl Command for EnableWheel {
    fn write_ansi(&self, f: &mut impl fmt::Write) -> fmt::Result {
        f.write_str("\x1b[?1000h\x1b[?1006h")
    }
}

/// The terminal, taken over; given back when dropped.
pub(super) struct Screen {
    /// Where ratatui draws.
    pub terminal: Term,
}

impl Screen {
    /// Takes the terminal over. On failure it is given back before the error returns.
    pub(super) fn enter() -> io::Result<Screen> {
        install_panic_hook();
        enable_raw_mode()?;
        let mut out = io::stdout();
        let entered = execute!(
            out,
            EnterAlternateScreen,
            EnableWheel,
            EnableBracketedPaste,
            cursor::Show
        )
        .and_then(|()| Terminal::new(CrosstermBackend::new(out)));
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back: raw mode off, the alternate screen left, mouse and paste
/// reports off, the cursor shown. Best effort: there is nobody to tell if it fails.
pub(super) fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal before any panic message, then ends the process.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
            std::process::exit(PANIC_EXIT);
        }));
    });
}

/// What a terminal event means to the model, if anything. Resizes mean only a redraw,
/// which every event gets.
pub(super) fn key(event: &Event) -> Option<Key> {
    let key = match event {
        Event::Key(key) => key,
        Event::Paste(text) => return Some(Key::Paste(text.clone())),
        Event::Mouse(mouse) => {
            return match mouse.kind {
                MouseEventKind::ScrollUp => Some(Key::WheelUp),
                MouseEventKind::ScrollDown => Some(Key::WheelDown),
                _ => None,
            };
        }
        _ => return None,
    };
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') => Some(Key::Interrupt),
            KeyCode::Char('d') => Some(Key::EndOfInput),
            KeyCode::Char('w') | KeyCode::Backspace => Some(Key::DeleteWord),
            KeyCode::Char('u') => Some(Key::KillToStart),
            KeyCode::Char('k') => Some(Key::KillToEnd),
            KeyCode::Char('a') => Some(Key::Home),
            KeyCode::Char('e') => Some(Key::End),
            KeyCode::Char('l') => Some(Key::Redraw),
            KeyCode::Char('h') => Some(Key::Backspace),
            KeyCode::End => Some(Key::Bottom),
            _ => None,
        };
    }
    if key.modifiers.contains(KeyModifiers::ALT) {
        return None;
    }
    Some(match key.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Delete => Key::Delete,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Esc => Key::Bottom,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyEvent, MouseEvent};

    fn press(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
        key(&Event::Key(KeyEvent::new(code, modifiers)))
    }

    #[test]
    fn keys_map_to_edits_and_commands() {
        let none = KeyModifiers::NONE;
        let ctrl = KeyModifiers::CONTROL;
        assert_eq!(press(KeyCode::Char('x'), none), Some(Key::Char('x')));
        assert_eq!(
            press(KeyCode::Char('X'), KeyModifiers::SHIFT),
            Some(Key::Char('X'))
        );
        assert_eq!(press(KeyCode::Char('c'), ctrl), Some(Key::Interrupt));
        assert_eq!(press(KeyCode::Char('d'), ctrl), Some(Key::EndOfInput));
        assert_eq!(press(KeyCode::Char('w'), ctrl), Some(Key::DeleteWord));
        assert_eq!(press(KeyCode::Char('u'), ctrl), Some(Key::KillToStart));
        assert_eq!(press(KeyCode::PageUp, none), Some(Key::PageUp));
        assert_eq!(press(KeyCode::Char('x'), KeyModifiers::ALT), None);
        assert_eq!(press(KeyCode::F(1), none), None);
        let wheel = Event::Mouse(MouseEvent {
            kind: MouseEventKind::ScrollUp,
            column: 0,
            row: 0,
            modifiers: none,
        });
        assert_eq!(key(&wheel), Some(Key::WheelUp));
        assert_eq!(
            key(&Event::Paste("hi".into())),
            Some(Key::Paste("hi".into()))
        );
        assert_eq!(key(&Event::Resize(80, 24)), None);
    }
}
