//! What a person types becoming protocol frames ([`translate`]), and what the server
//! sends becoming lines for people ([`render`]).
//!
//! Both faces of the client share it: the line client prints [`render`]'s lines, and
//! the full-screen client ([`super::tui`]) sends what [`translate`] makes of a typed
//! line. The protocol itself belongs to [`crate::codec`]; rendering goes through
//! [`codec::Event`](crate::codec::Event), so the client and the server's text mode look
//! alike.

use crate::codec::{self, Command, Event, ParseError};

/// Shown for `/help`.
pub(super) const HELP: &str = "\
commands:
  /nick NAME         take or change your name
  /join #ROOM        move to a room
  /msg NAME TEXT     private message
  /who               who is in your room
  /rooms             list rooms
  /history [N]       the last N messages of your room (default 20)
  /register NAME PW  create an account and log in
  /login NAME PW     log in
  /quit [REASON]     leave
  /help              this list
any other line is said to your room; a line that is already a frame (JOIN:..., SAY::...)
is sent as it is";

/// Checks `--name` before connecting, so a bad name is a usage error and never reaches
/// the wire (a newline in it would smuggle in a second frame).
pub(super) fn parse_name(s: &str) -> Result<String, String> {
    if codec::valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err("use 1-32 of A-Z a-z 0-9 _ - .".to_owned())
    }
}

/// What one line of input asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Input {
    /// Send this frame (without its line end).
    Send(String),
    /// Send this `LEAVE:` frame, stop reading input and wait for the server to close.
    Leave(String),
    /// Tell the person this; nothing is sent.
    Local(String),
    /// Nothing to do (an empty or blank line).
    Nothing,
}

/// Turns one line a person typed (without its line end) into what to do with it.
///
/// A line that already is a frame passes through unchanged, so habits from the
/// tcp-chat client and netcat work; `/commands` are read by the codec's text-mode
/// parser (the same commands a telnet user has); anything else is chat.
pub(super) fn translate(line: &[u8]) -> Input {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Input::Nothing;
    }
    if codec::is_frame(line) {
        return match std::str::from_utf8(line) {
            Ok(frame) if frame.starts_with("LEAVE:") => Input::Leave(frame.to_owned()),
            Ok(frame) => Input::Send(frame.to_owned()),
            Err(_) => Input::Local("invalid UTF-8; not sent".to_owned()),
        };
    }
    let command = match codec::parse_text(line) {
        Ok(command) => command,
        Err(ParseError::Empty) => return Input::Nothing,
        Err(e) => return Input::Local(format!("{e}; not sent")),
    };
    match command {
        Command::Nick(name) => Input::Send(format!("JOIN:{name}")),
        Command::Join { room, key: None } => Input::Send(format!("JOIN:{room}")),
        Command::Join {
            room,
            key: Some(key),
        } => Input::Send(format!("JOIN:{room}:{}", key.0)),
        Command::Register { name, password } => {
            Input::Send(format!("REGISTER:{name}:{}", password.0))
        }
        Command::Auth { name, password } => Input::Send(format!("AUTH:{name}:{}", password.0)),
        Command::Pass(password) => Input::Send(format!("PASS:{}", password.0)),
        Command::Kick { name, reason } => Input::Send(format!("KICK:{name}:{reason}")),
        Command::Ban { name, duration } => Input::Send(format!("BAN:{name}:{duration}")),
        Command::Say(text) => Input::Send(format!("SAY::{text}")),
        // A `:` in the name would move the split between name and text on the wire.
        Command::Msg { to, .. } if !codec::valid_name(to) => {
            Input::Local(format!("invalid name {to}: use 1-32 of A-Z a-z 0-9 _ - ."))
        }
        Command::Msg { to, text } => Input::Send(format!("MSG:{to}:{text}")),
        Command::Who => Input::Send("WHO:".to_owned()),
        Command::Rooms => Input::Send("ROOMS:".to_owned()),
        Command::History { n, .. } => Input::Send(format!("HISTORY:{n}")),
        Command::Leave(reason) => Input::Leave(format!("LEAVE:{reason}")),
        Command::Help => Input::Local(HELP.to_owned()),
    }
}

/// Appends one line from the server, rendered for people and ended with `\n`, to `out`.
///
/// Frames are rendered exactly as the server's text mode renders them; anything else is
/// printed as it came, never dropped. Control characters (all of C0 and C1 except tab)
/// are removed first: a hostile server must not be able to drive the terminal.
pub(super) fn render(line: &[u8], out: &mut Vec<u8>) {
    let clean: String = String::from_utf8_lossy(line)
        .chars()
        .filter(|&c| !codec::is_control(c))
        .collect();
    match Event::parse(&clean) {
        Some(event) => event.render(out),
        None => out.extend_from_slice(clean.as_bytes()),
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(s: &str) -> Input {
        Input::Send(s.to_owned())
    }

    fn rendered(line: &[u8]) -> String {
        let mut out = Vec::new();
        render(line, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn commands_become_frames() {
        assert_eq!(translate(b"/nick bob"), send("JOIN:bob"));
        assert_eq!(translate(b"/join #rust"), send("JOIN:#rust"));
        assert_eq!(translate(b"/msg bob hi there"), send("MSG:bob:hi there"));
        assert_eq!(translate(b"/who"), send("WHO:"));
        assert_eq!(translate(b"/rooms"), send("ROOMS:"));
        assert_eq!(translate(b"/quit"), Input::Leave("LEAVE:".to_owned()));
        assert_eq!(
            translate(b"/quit see you"),
            Input::Leave("LEAVE:see you".to_owned())
        );
    }

    #[test]
    fn frames_pass_through_unchanged() {
        assert_eq!(translate(b"JOIN:alice"), send("JOIN:alice"));
        assert_eq!(translate(b"SAY:x:hi"), send("SAY:x:hi"));
        assert_eq!(translate(b"MSG:bob:a:b"), send("MSG:bob:a:b"));
        assert_eq!(
            translate(b"LEAVE:bye"),
            Input::Leave("LEAVE:bye".to_owned())
        );
    }

    #[test]
    fn plain_lines_are_chat() {
        assert_eq!(translate(b"hello"), send("SAY::hello"));
        assert_eq!(translate(b"hello: world"), send("SAY::hello: world"));
        assert_eq!(translate(b"JOIN"), send("SAY::JOIN"));
    }

    #[test]
    fn empty_and_blank_lines_send_nothing() {
        assert_eq!(translate(b""), Input::Nothing);
        assert_eq!(translate(b"  \t"), Input::Nothing);
    }

    #[test]
    fn unknown_and_malformed_commands_stay_local() {
        assert!(matches!(translate(b"/dance"), Input::Local(m) if m.contains("/dance")));
        assert!(matches!(translate(b"/msg bob"), Input::Local(m) if m.contains("usage")));
        assert!(matches!(translate(b"/join lobby"), Input::Local(_)));
        assert!(matches!(translate(b"/msg a:b hi"), Input::Local(m) if m.contains("invalid name")));
        assert!(matches!(translate(b"/help"), Input::Local(m) if m.contains("/quit")));
        assert!(matches!(translate(b"hi \x1b[2J"), Input::Local(_)));
        assert!(matches!(translate(b"\xff"), Input::Local(_)));
    }

    #[test]
    fn frames_render_like_text_mode() {
        assert_eq!(rendered(b"SAY:bob:hi"), "<bob> hi\n");
        assert_eq!(rendered(b"MSG:bob:psst"), "*bob* psst\n");
        assert_eq!(rendered(b"JOIN:bob"), "*** bob joined\n");
        assert_eq!(rendered(b"LEAVE:bob"), "*** bob left\n");
        assert_eq!(rendered(b"SERVER:hello"), "[server] hello\n");
        assert_eq!(rendered(b"ERROR:bad"), "[error] bad\n");
    }

    #[test]
    fn unknown_lines_are_printed_raw() {
        assert_eq!(rendered(b"PING:x"), "PING:x\n");
        assert_eq!(rendered(b"just text"), "just text\n");
        assert_eq!(rendered(b""), "\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(rendered(b"SAY:bob:\x1b[2Jhi\x07"), "<bob> [2Jhi\n");
        assert_eq!(rendered("SAY:bob:a\u{9b}31mb".as_bytes()), "<bob> a31mb\n");
        assert_eq!(rendered(b"SAY:bob:a\tb\r\x7f"), "<bob> a\tb\n");
        assert_eq!(rendered(b"\xffoops"), "\u{fffd}oops\n");
    }

    #[test]
    fn names_are_checked_before_connecting() {
        assert!(parse_name("bob").is_ok());
        assert!(parse_name("bob\nSAY::x").is_err());
        assert!(parse_name("").is_err());
    }
}
