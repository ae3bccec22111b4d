//! The wire format, both directions, with no I/O: bytes → lines → commands, and events →
//! bytes for each output dialect.
//!
//! - [`LineReader`] splits a byte stream into lines, enforcing the maximum line length
//!   while reading, so a line without a newline never holds more than the cap.
//! - [`TelnetFilter`] strips telnet IAC sequences and turns `\r\0` into a line end.
//! - [`decide_dialect`] picks a connection's [`Dialect`] from its first line that can
//!   decide: frames if it starts with a known verb and `:`, text otherwise.
//! - [`parse_frame`] and [`parse_text`] turn one line into a [`Command`]. Both refuse
//!   control characters and the Unicode characters that can forge lines
//!   ([`is_control`]); in text mode a blank line is nothing to do ([`is_blank`]).
//! - [`Event`] is what the server says; [`Event::encode`] writes it as a frame
//!   (`SAY:bob:hi\n`) or as text for people (`<bob> hi\r\n`), and [`Event::parse`]
//!   reads a frame back (the client uses it).
//!
//! Partial input is a normal state, not an error. Errors are small `Copy` enums. What a
//! command does (names, rooms, delivery) belongs to the hub, and sockets and buffers to
//! the connection: nothing here does I/O or keeps state beyond one stream's position.
//!
//! Its unit tests, one per edge case, sit at the end of this file beside the code they
//! pin down; they are why the file runs past 600 lines.

use std::fmt;

/// One complete line could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The line was longer than the maximum; it is discarded through its newline.
    TooLong,
}

/// Splits a byte stream into lines. Holds only the unfinished tail of the stream (and
/// nothing at all between lines, so an idle connection costs no buffer).
#[derive(Debug, Default)]
pub struct LineReader {
    /// Bytes of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// True while skipping the rest of an over-long line up to its newline.
    discarding: bool,
    /// Bytes of over-long lines thrown away and not yet reported.
    discarded: usize,
}

impl LineReader {
    /// Feeds `input` and calls `on_line` for each complete line (without `\n` and
    /// without a `\r` right before it), or with `Err(TooLong)` once per over-long line,
    /// as soon as it crosses `max` bytes. Lines of exactly `max` bytes are accepted.
    pub fn feed(
        &mut self,
        input: &[u8],
        max: usize,
        mut on_line: impl FnMut(Result<&[u8], LineError>),
    ) {
        self.feed_some(input, max, usize::MAX, |line| {
            on_line(line);
            true
        });
    }

    /// Like [`LineReader::feed`], but stops after `limit` calls of `on_line`, or after a
    /// call that returns `false`, and returns how many bytes of `input` it used; the
    /// caller keeps the rest for later. This is how a connection's parsing is bounded
    /// per loop turn, and paused while it waits for an answer from another thread.
    pub fn feed_some(
        &mut self,
        input: &[u8],
        max: usize,
        limit: usize,
        mut on_line: impl FnMut(Result<&[u8], LineError>) -> bool,
    ) -> usize {
        let mut rest = input;
        let mut calls = 0;
        while !rest.is_empty() && calls < limit {
            let newline = rest.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.discarding = false;
                        self.discarded += i + 1;
                        rest = &rest[i + 1..];
                        continue;
                    }
                    None => {
                        self.discarded += rest.len();
                        return input.len();
                    }
                }
            }
            match newline {
                Some(i) => {
                    let line = if self.partial.is_empty() {
                        &rest[..i]
                    } else {
                        self.partial.extend_from_slice(&rest[..i]);
                        &self.partial[..]
                    };
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    calls += 1;
                    let go_on = if line.len() > max {
                        self.discarded += line.len();
                        on_line(Err(LineError::TooLong))
                    } else {
                        on_line(Ok(line))
                    };
                    self.release();
                    rest = &rest[i + 1..];
                    if !go_on {
                        break;
                    }
                }
                None => {
                    // A line of `max` bytes may still be followed by its `\r\n`.
                    // Saturating: `--max-line` may be as large as `usize::MAX`.
                    if self.partial.len() + rest.len() > max.saturating_add(1) {
                        self.discarded += self.partial.len() + rest.len();
                        // Nothing is left to hold back: the rest is thrown away.
                        let _ = on_line(Err(LineError::TooLong));
                        self.release();
                        self.discarding = true;
                    } else {
                        self.partial.extend_from_slice(rest);
                    }
                    return input.len();
                }
            }
        }
        input.len() - rest.len()
    }

    /// Bytes of over-long lines thrown away since the last call (they cost the sender
    /// rate-limit tokens like lines do), and resets the count.
    pub fn take_discarded(&mut self) -> usize {
        std::mem::take(&mut self.discarded)
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn release(&mut self) {
        // Free rather than clear: between lines a connection should hold no buffer.
        self.partial = Vec::new();
    }
}

/// Telnet's "interpret as command" byte.
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Where the telnet filter is inside a command sequence; kept across reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TelnetState {
    #[default]
    Data,
    /// Saw `\r`: a following `\0` means a bare carriage return, i.e. a line end.
    Cr,
    /// Saw IAC.
    Iac,
    /// Saw IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB … IAC SE.
    Sub,
    /// Saw IAC inside a subnegotiation.
    SubIac,
}

/// Removes telnet negotiation from a byte stream in place and maps `\r\0` to a line end.
#[derive(Debug, Default, Clone, Copy)]
pub struct TelnetFilter {
    state: TelnetState,
}

impl TelnetFilter {
    /// Filters `buf` in place and returns the length of the filtered data.
    pub fn filter(&mut self, buf: &mut [u8]) -> usize {
        let mut out = 0;
        for i in 0..buf.len() {
            let b = buf[i];
            let keep = match self.state {
                TelnetState::Data | TelnetState::Cr => {
                    let after_cr = self.state == TelnetState::Cr;
                    self.state = TelnetState::Data;
                    match b {
                        IAC => {
                            self.state = TelnetState::Iac;
                            None
                        }
                        0 if after_cr => Some(b'\n'),
                        b'\r' => {
                            self.state = TelnetState::Cr;
                            Some(b)
                        }
                        _ => Some(b),
                    }
                }
                TelnetState::Iac => {
                    self.state = match b {
                        IAC => TelnetState::Data,
                        WILL..=DONT => TelnetState::Option,
                        SB => TelnetState::Sub,
                        _ => TelnetState::Data,
                    };
                    // IAC IAC is a literal 255, which is never valid UTF-8: drop it too.
                    None
                }
                TelnetState::Option => {
                    self.state = TelnetState::Data;
                    None
                }
                TelnetState::Sub => {
                    if b == IAC {
                        self.state = TelnetState::SubIac;
                    }
                    None
                }
                TelnetState::SubIac => {
                    self.state = if b == SE {
                        TelnetState::Data
                    } else {
                        TelnetState::Sub
                    };
                    None
                }
            };
            if let Some(k) = keep {
                buf[out] = k;
                out += 1;
            }
        }
        out
    }
}

/// What a client asked for, from either dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Take or change one's name (`JOIN:alice`, `/nick alice`).
    Nick(&'a str),
    /// Move to a room, with its key if it has (or is to get) one.
    Join {
        /// The room, with its leading `#`.
        room: &'a str,
        /// `JOIN:#room:<key>`.
        key: Option<Secret<'a>>,
    },
    /// Create an account for a name, and log in to it.
    Register {
        /// The name.
        name: &'a str,
        /// The password (everything after the second colon).
        password: Secret<'a>,
    },
    /// Log in to an account.
    Auth {
        /// The name.
        name: &'a str,
        /// The password (everything after the second colon).
        password: Secret<'a>,
    },
    /// The server password (`--password-file`).
    Pass(Secret<'a>),
    /// An operator closes a user's connection.
    Kick {
        /// Whose.
        name: &'a str,
        /// Why, told to them.
        reason: &'a str,
    },
    /// An operator bans a user's address.
    Ban {
        /// Whose.
        name: &'a str,
        /// For how long (a duration such as `10m`).
        duration: &'a str,
    },
    /// Chat to one's room.
    Say(&'a str),
    /// Private message.
    Msg {
        /// Recipient's name.
        to: &'a str,
        /// Message text.
        text: &'a str,
    },
    /// Leave gracefully with a reason.
    Leave(&'a str),
    /// List the members of one's room.
    Who,
    /// List the rooms.
    Rooms,
    /// The last `n` messages of one's room, strictly before `before` (Unix ms) if given.
    History {
        /// How many, 1 to [`MAX_HISTORY`].
        n: usize,
        /// Page before this time.
        before: Option<i64>,
    },
    /// Text-mode help.
    Help,
}

/// A password or key as it came in a line. Its `Debug` does not show it, so no log line
/// can print one by accident.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a>(pub &'a str);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Most messages one `HISTORY:` request may ask for.
pub const MAX_HISTORY: usize = 500;

/// Messages `/history` without a count asks for.
pub const HISTORY_DEFAULT: usize = 20;

/// The usage text of a history request.
const HISTORY_USAGE: &str = "HISTORY:<n> or HISTORY:<n>:<before_unix_ms>, n from 1 to 500";

/// Why a line is not a command. Its `Display` is the text of the `ERROR:` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// The line was empty (in text mode: blank, which is not answered; see [`is_blank`]).
    Empty,
    /// The line was not valid UTF-8.
    InvalidUtf8,
    /// The line holds a control character (other than tab) or a character that can
    /// forge lines; see [`is_control`].
    ControlChar,
    /// A frame whose verb we do not know.
    UnknownVerb(&'a str),
    /// A text-mode `/command` we do not know.
    UnknownCommand(&'a str),
    /// A command without its required argument.
    Usage(&'static str),
    /// The line was longer than the maximum (the server adds the limit to the text).
    TooLong,
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty line"),
            ParseError::InvalidUtf8 => f.write_str("invalid UTF-8"),
            ParseError::ControlChar => f.write_str("control characters are not allowed"),
            ParseError::UnknownVerb(v) => write!(
                f,
                "unknown command {v} (use JOIN, SAY, MSG, LEAVE, WHO, ROOMS, HISTORY, REGISTER, AUTH or PASS)"
            ),
            ParseError::UnknownCommand(c) => write!(f, "unknown command /{c} (try /help)"),
            ParseError::Usage(u) => write!(f, "usage: {u}"),
            ParseError::TooLong => f.write_str("line too long"),
        }
    }
}

/// The verbs a protocol line may start with (followed by `:`).
const VERBS: [&str; 12] = [
    "JOIN", "SAY", "MSG", "LEAVE", "WHO", "ROOMS", "HISTORY", "REGISTER", "AUTH", "PASS", "KICK",
    "BAN",
];

/// Whether `line` starts like a protocol frame: a known verb, in capitals, then `:`.
/// Says nothing about the rest of the line; [`decide_dialect`] also checks it is text.
pub fn is_frame(line: &[u8]) -> bool {
    VERBS
        .iter()
        .any(|v| line.len() > v.len() && line.starts_with(v.as_bytes()) && line[v.len()] == b':')
}

/// Decides a connection's dialect from one of its lines, for its lifetime.
///
/// - `Some(Dialect::Frames)`: valid text that starts with a known verb and `:`.
/// - `Some(Dialect::Text)`: any other valid text (a chat line or a `/command`).
/// - `None`: the line cannot decide, and the connection stays undecided: it is not
///   valid text ([`check_text`] fails: empty, invalid UTF-8, control characters), or it
///   is blank ([`is_blank`]), which neither dialect sends on purpose. So a person who
///   presses Enter, or a stray byte, does not lock a frames client into text mode.
pub fn decide_dialect(line: &[u8]) -> Option<Dialect> {
    if is_blank(line) || check_text(line).is_err() {
        return None;
    }
    Some(if is_frame(line) {
        Dialect::Frames
    } else {
        Dialect::Text
    })
}

/// Checks that a line is non-empty UTF-8 without control characters (as
/// [`is_control`] defines them, which includes the characters that can forge lines).
pub fn check_text(line: &[u8]) -> Result<&str, ParseError<'static>> {
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    let text = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    if text.chars().any(is_control) {
        return Err(ParseError::ControlChar);
    }
    Ok(text)
}

/// Whether `c` may never reach another person, in either dialect:
///
/// - C0, DEL and C1 control characters, except tab: nothing that moves a cursor or
///   starts an escape sequence may reach another person's terminal;
/// - U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR, which some clients render
///   as a line break, so one message could show a second, made-up line;
/// - the bidirectional marks and controls U+200E, U+200F, U+202A–U+202E and
///   U+2066–U+2069, and U+061C ARABIC LETTER MARK (with them, Unicode's whole
///   Bidi_Control set), which reorder what follows them, so text could appear to come
///   from someone else or say something other than what was sent.
///
/// One predicate for all of them, so every place that refuses or strips control
/// characters treats these the same way (and says the same thing about them).
pub fn is_control(c: char) -> bool {
    (c != '\t' && c.is_control())
        || matches!(
            c,
            '\u{2028}'..='\u{2029}'
                | '\u{061C}'
                | '\u{200E}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Parses one line of the frame dialect.
pub fn parse_frame(line: &[u8]) -> Result<Command<'_>, ParseError<'_>> {
    let line = check_text(line)?;
    let (verb, rest) = line.split_once(':').unwrap_or((line, ""));
    match verb {
        "JOIN" if rest.starts_with('#') => Ok(match rest.split_once(':') {
            Some((room, key)) => Command::Join {
                room,
                key: Some(Secret(key)),
            },
            None => Command::Join {
                room: rest,
                key: None,
            },
        }),
        "JOIN" if rest.is_empty() => Err(ParseError::Usage("JOIN:<name> or JOIN:#<room>")),
        "JOIN" => Ok(Command::Nick(rest)),
        "SAY" => Ok(Command::Say(say_text(rest))),
        "MSG" => match rest.split_once(':') {
            Some((to, text)) if !to.is_empty() => Ok(Command::Msg { to, text }),
            _ => Err(ParseError::Usage("MSG:<name>:<text>")),
        },
        "LEAVE" => Ok(Command::Leave(rest)),
        "REGISTER" | "AUTH" => {
            let (name, password) = rest.split_once(':').ok_or(ParseError::Usage(
                "REGISTER:<name>:<password> or AUTH:<name>:<password>",
            ))?;
            let password = Secret(password);
            Ok(if verb == "AUTH" {
                Command::Auth { name, password }
            } else {
                Command::Register { name, password }
            })
        }
        "PASS" => Ok(Command::Pass(Secret(rest))),
        "KICK" => match rest.split_once(':') {
            Some((name, reason)) if !name.is_empty() => Ok(Command::Kick { name, reason }),
            None if !rest.is_empty() => Ok(Command::Kick {
                name: rest,
                reason: "",
            }),
            _ => Err(ParseError::Usage("KICK:<name>:<reason>")),
        },
        "BAN" => match rest.split_once(':') {
            Some((name, duration)) if !name.is_empty() && !duration.is_empty() => {
                Ok(Command::Ban { name, duration })
            }
            _ => Err(ParseError::Usage("BAN:<name>:<duration>")),
        },
        "WHO" => Ok(Command::Who),
        "ROOMS" => Ok(Command::Rooms),
        "HISTORY" => {
            let (n, before) = match rest.split_once(':') {
                Some((n, before)) => (n, Some(before)),
                None => (rest, None),
            };
            let n = history_count(n)?;
            let before = match before {
                None => None,
                Some(b) => Some(
                    b.parse::<i64>()
                        .map_err(|_| ParseError::Usage(HISTORY_USAGE))?,
                ),
            };
            Ok(Command::History { n, before })
        }
        _ => Err(ParseError::UnknownVerb(verb)),
    }
}

/// The text of a `SAY:` frame, given what follows `SAY:`.
///
/// The middle field of `SAY:<from>:<text>` names the sender in the tcp-chat lineage;
/// the server ignores it and uses its own record. It counts as that field only when it
/// is empty or a valid name; otherwise the `:` is part of the message and all of it is
/// the text, so `SAY:meeting at 10:30` delivers `meeting at 10:30` rather than `30`.
fn say_text(rest: &str) -> &str {
    match rest.split_once(':') {
        Some((from, text)) if from.is_empty() || valid_name(from) => text,
        _ => rest,
    }
}

/// Whether `line` is blank: empty, or only spaces and tabs.
///
/// In text mode a blank line is nothing to do, not an error (a person pressed Enter):
/// the server drops it without a reply before parsing. [`parse_text`] reports it as
/// [`ParseError::Empty`] so it can never become a chat line. Frames mode keeps
/// `ERROR:empty line`. Other control characters are not blank: they stay errors.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

/// Parses one line of text mode: a `/command` or a chat message.
///
/// A blank line ([`is_blank`]) is `Err(ParseError::Empty)`; callers ignore it rather
/// than answer it.
pub fn parse_text(line: &[u8]) -> Result<Command<'_>, ParseError<'_>> {
    if is_blank(line) {
        return Err(ParseError::Empty);
    }
    let line = check_text(line)?;
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(Command::Say(line));
    };
    let (name, arg) = cmd.split_once([' ', '\t']).unwrap_or((cmd, ""));
    let arg = arg.trim();
    let name_is = |n: &str| name == n;
    match name {
        "nick" | "name" if !arg.is_empty() => Ok(Command::Nick(arg)),
        "nick" | "name" => Err(ParseError::Usage("/nick <name>")),
        "join" if arg.starts_with('#') => Ok(match arg.split_once([' ', '\t']) {
            Some((room, key)) => Command::Join {
                room,
                key: Some(Secret(key.trim_start())),
            },
            None => Command::Join {
                room: arg,
                key: None,
            },
        }),
        "join" => Err(ParseError::Usage("/join #<room> [key]")),
        "register" | "login" => match arg.split_once([' ', '\t']) {
            Some((name, password)) if !password.trim().is_empty() => {
                let password = Secret(password.trim_start());
                Ok(if name_is("login") {
                    Command::Auth { name, password }
                } else {
                    Command::Register { name, password }
                })
            }
            _ => Err(ParseError::Usage(
                "/register <name> <password> or /login <name> <password>",
            )),
        },
        "pass" if !arg.is_empty() => Ok(Command::Pass(Secret(arg))),
        "pass" => Err(ParseError::Usage("/pass <password>")),
        "kick" => match arg.split_once([' ', '\t']) {
            Some((name, reason)) => Ok(Command::Kick {
                name,
                reason: reason.trim_start(),
            }),
            None if !arg.is_empty() => Ok(Command::Kick {
                name: arg,
                reason: "",
            }),
            None => Err(ParseError::Usage("/kick <name> [reason]")),
        },
        "ban" => match arg.split_once([' ', '\t']) {
            Some((name, duration)) => Ok(Command::Ban {
                name,
                duration: duration.trim(),
            }),
            None => Err(ParseError::Usage("/ban <name> <duration>")),
        },
        "msg" => match arg.split_once([' ', '\t']) {
            Some((to, text)) if !text.trim().is_empty() => Ok(Command::Msg {
                to,
                text: text.trim_start(),
            }),
            _ => Err(ParseError::Usage("/msg <name> <text>")),
        },
        "who" => Ok(Command::Who),
        "rooms" => Ok(Command::Rooms),
        "history" if arg.is_empty() => Ok(Command::History {
            n: HISTORY_DEFAULT,
            before: None,
        }),
        "history" => Ok(Command::History {
            n: history_count(arg)?,
            before: None,
        }),
        "help" => Ok(Command::Help),
        "quit" => Ok(Command::Leave(arg)),
        _ => Err(ParseError::UnknownCommand(name)),
    }
}

/// A history count: 1 to [`MAX_HISTORY`], never clamped.
fn history_count(n: &str) -> Result<usize, ParseError<'static>> {
    match n.parse::<usize>() {
        Ok(n) if (1..=MAX_HISTORY).contains(&n) => Ok(n),
        _ => Err(ParseError::Usage(HISTORY_USAGE)),
    }
}

/// Longest name or room name (the room's `#` not counted).
pub const MAX_NAME: usize = 32;

/// Whether `name` is 1–32 characters of `A-Z a-z 0-9 _ - .`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `room` is `#` followed by a valid name.
pub fn valid_room(room: &str) -> bool {
    room.strip_prefix('#').is_some_and(valid_name)
}

/// How a connection wants its output written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Protocol frames: `SAY:bob:hi\n`.
    #[default]
    Frames,
    /// Rendered for people: `<bob> hi\r\n`.
    Text,
}

/// Something the server tells a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Chat in the recipient's room.
    Say {
        /// Sender's name.
        from: &'a str,
        /// Message text.
        text: &'a str,
    },
    /// A private message.
    Msg {
        /// Sender's name.
        from: &'a str,
        /// Message text.
        text: &'a str,
    },
    /// Someone joined the recipient's room.
    Join(&'a str),
    /// Someone left the recipient's room.
    Leave(&'a str),
    /// An announcement.
    Server(&'a str),
    /// What was wrong with the recipient's last line.
    Error(&'a str),
    /// A message from a room's history: `HISTORY:#room:<unix_ms>:<from>:<text>`.
    History {
        /// The room, with its `#`.
        room: &'a str,
        /// When the server accepted it, Unix milliseconds.
        at_ms: i64,
        /// Sender's name.
        from: &'a str,
        /// Message text.
        text: &'a str,
    },
}

impl<'a> Event<'a> {
    /// Appends this event to `out` in `dialect`.
    pub fn encode(&self, dialect: Dialect, out: &mut Vec<u8>) {
        match dialect {
            Dialect::Frames => {
                if let Event::History {
                    room,
                    at_ms,
                    from,
                    text,
                } = *self
                {
                    use std::io::Write as _;
                    let _ = write!(out, "HISTORY:{room}:{at_ms}:{from}:{text}");
                    out.push(b'\n');
                    return;
                }
                let (verb, a, b) = match *self {
                    Event::Say { from, text } => ("SAY:", from, Some(text)),
                    Event::Msg { from, text } => ("MSG:", from, Some(text)),
                    Event::Join(name) => ("JOIN:", name, None),
                    Event::Leave(name) => ("LEAVE:", name, None),
                    Event::Server(text) => ("SERVER:", text, None),
                    Event::Error(text) => ("ERROR:", text, None),
                    Event::History { .. } => return,
                };
                out.extend_from_slice(verb.as_bytes());
                out.extend_from_slice(a.as_bytes());
                if let Some(b) = b {
                    out.push(b':');
                    out.extend_from_slice(b.as_bytes());
                }
                out.push(b'\n');
            }
            Dialect::Text => {
                self.render(out);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends the human rendering (`<bob> hi`, `*** bob joined`, …) without a line end.
    pub fn render(&self, out: &mut Vec<u8>) {
        if let Event::History {
            at_ms, from, text, ..
        } = *self
        {
            // `[HH:MM] <from> text`, in UTC.
            use std::io::Write as _;
            let minutes = at_ms.div_euclid(60_000).rem_euclid(24 * 60);
            let _ = write!(
                out,
                "[{:02}:{:02}] <{from}> {text}",
                minutes / 60,
                minutes % 60
            );
            return;
        }
        let parts: [&str; 4] = match *self {
            Event::Say { from, text } => ["<", from, "> ", text],
            Event::Msg { from, text } => ["*", from, "* ", text],
            Event::Join(name) => ["*** ", name, " joined", ""],
            Event::Leave(name) => ["*** ", name, " left", ""],
            Event::Server(text) => ["[server] ", text, "", ""],
            Event::Error(text) => ["[error] ", text, "", ""],
            Event::History { .. } => return,
        };
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
    }

    /// Reads a frame line (without its line end) back into an event.
    pub fn parse(line: &'a str) -> Option<Event<'a>> {
        let (verb, rest) = line.split_once(':')?;
        Some(match verb {
            "SAY" => {
                let (from, text) = rest.split_once(':')?;
                Event::Say { from, text }
            }
            "MSG" => {
                let (from, text) = rest.split_once(':')?;
                Event::Msg { from, text }
            }
            "JOIN" => Event::Join(rest),
            "LEAVE" => Event::Leave(rest),
            "SERVER" => Event::Server(rest),
            "ERROR" => Event::Error(rest),
            "HISTORY" => {
                let (room, rest) = rest.split_once(':')?;
                let (at_ms, rest) = rest.split_once(':')?;
                let (from, text) = rest.split_once(':')?;
                Event::History {
                    room,
                    at_ms: at_ms.parse().ok()?,
                    from,
                    text,
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader, input: &[u8], max: usize) -> Vec<Result<Vec<u8>, LineError>> {
        let mut got = Vec::new();
        reader.feed(input, max, |l| got.push(l.map(|l| l.to_vec())));
        got
    }

    fn ok(s: &str) -> Result<Vec<u8>, LineError> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn account_commands_keep_colons_in_passwords() {
        assert_eq!(
            parse_frame(b"REGISTER:alice:pa:ss:word"),
            Ok(Command::Register {
                name: "alice",
                password: Secret("pa:ss:word")
            })
        );
        assert_eq!(
            parse_frame(b"AUTH:alice:x"),
            Ok(Command::Auth {
                name: "alice",
                password: Secret("x")
            })
        );
        assert_eq!(
            parse_frame(b"PASS:open:sesame"),
            Ok(Command::Pass(Secret("open:sesame")))
        );
        assert_eq!(
            parse_frame(b"JOIN:#club:k:e:y"),
            Ok(Command::Join {
                room: "#club",
                key: Some(Secret("k:e:y"))
            })
        );
        assert!(matches!(
            parse_frame(b"AUTH:alice"),
            Err(ParseError::Usage(_))
        ));
        assert_eq!(
            parse_text(b"/login alice pass word"),
            Ok(Command::Auth {
                name: "alice",
                password: Secret("pass word")
            })
        );
        assert_eq!(
            parse_text(b"/join #club key"),
            Ok(Command::Join {
                room: "#club",
                key: Some(Secret("key"))
            })
        );
    }

    #[test]
    fn operator_commands_parse_in_both_dialects() {
        assert_eq!(
            parse_frame(b"KICK:bob:spam: again"),
            Ok(Command::Kick {
                name: "bob",
                reason: "spam: again"
            })
        );
        assert_eq!(
            parse_frame(b"BAN:bob:10m"),
            Ok(Command::Ban {
                name: "bob",
                duration: "10m"
            })
        );
        assert!(matches!(parse_frame(b"BAN:bob"), Err(ParseError::Usage(_))));
        assert_eq!(
            parse_text(b"/kick bob be nice"),
            Ok(Command::Kick {
                name: "bob",
                reason: "be nice"
            })
        );
        assert_eq!(
            parse_text(b"/ban bob 1h"),
            Ok(Command::Ban {
                name: "bob",
                duration: "1h"
            })
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let cmd = parse_frame(b"AUTH:alice:hunter22").unwrap();
        assert!(!format!("{cmd:?}").contains("hunter22"));
    }

    #[test]
    fn history_requests_parse_in_both_dialects() {
        assert_eq!(
            parse_frame(b"HISTORY:50"),
            Ok(Command::History {
                n: 50,
                before: None
            })
        );
        assert_eq!(
            parse_frame(b"HISTORY:5:1764460800000"),
            Ok(Command::History {
                n: 5,
                before: Some(1_764_460_800_000)
            })
        );
        assert_eq!(
            parse_text(b"/history"),
            Ok(Command::History {
                n: 20,
                before: None
            })
        );
        assert_eq!(
            parse_text(b"/history 3"),
            Ok(Command::History { n: 3, before: None })
        );
    }

    #[test]
    fn history_counts_outside_one_to_five_hundred_are_errors_not_clamped() {
        for bad in [
            &b"HISTORY:0"[..],
            b"HISTORY:501",
            b"HISTORY:x",
            b"HISTORY:",
            b"HISTORY:5:soon",
        ] {
            assert_eq!(
                parse_frame(bad),
                Err(ParseError::Usage(HISTORY_USAGE)),
                "{}",
                bad.escape_ascii()
            );
        }
        assert_eq!(
            parse_text(b"/history 0"),
            Err(ParseError::Usage(HISTORY_USAGE))
        );
    }

    #[test]
    fn history_events_encode_as_frames_and_render_in_utc() {
        let e = Event::History {
            room: "#rust",
            at_ms: 1_764_462_300_000, // 2025-11-30 00:25:00 UTC
            from: "bob",
            text: "a:b",
        };
        let mut frame = Vec::new();
        e.encode(Dialect::Frames, &mut frame);
        assert_eq!(frame, b"HISTORY:#rust:1764462300000:bob:a:b\n");
        assert_eq!(Event::parse("HISTORY:#rust:1764462300000:bob:a:b"), Some(e));
        let mut text = Vec::new();
        e.encode(Dialect::Text, &mut text);
        assert_eq!(text, b"[00:25] <bob> a:b\r\n");
    }

    #[test]
    fn feed_some_stops_after_the_limit_and_says_how_far_it_got() {
        let mut r = LineReader::default();
        let mut got = Vec::new();
        let input = b"a\nbb\ncc";
        let used = r.feed_some(input, 10, 1, |l| {
            got.push(l.map(|l| l.to_vec()));
            true
        });
        assert_eq!((used, got.clone()), (2, vec![ok("a")]));
        let used = r.feed_some(&input[used..], 10, 5, |l| {
            got.push(l.map(|l| l.to_vec()));
            true
        });
        assert_eq!(used, 5, "the unfinished tail is taken into the reader");
        assert_eq!(got, vec![ok("a"), ok("bb")]);
        assert_eq!(r.pending(), 2);
    }

    #[test]
    fn feed_some_stops_after_a_line_that_says_so() {
        let mut r = LineReader::default();
        let mut got = Vec::new();
        let used = r.feed_some(b"AUTH:x\nSAY::hi\n", 100, usize::MAX, |l| {
            got.push(l.map(|l| l.to_vec()));
            false
        });
        assert_eq!((used, got), (7, vec![ok("AUTH:x")]));
    }

    #[test]
    fn feed_some_with_a_zero_limit_uses_nothing() {
        let mut r = LineReader::default();
        assert_eq!(r.feed_some(b"a\n", 10, 0, |_| panic!("no line")), 0);
    }

    #[test]
    fn discarded_bytes_of_over_long_lines_are_counted() {
        let mut r = LineReader::default();
        assert_eq!(
            lines(&mut r, b"0123456789", 4),
            vec![Err(LineError::TooLong)]
        );
        assert_eq!(r.take_discarded(), 10);
        assert_eq!(lines(&mut r, b"abcdef", 4), vec![]);
        assert_eq!(r.take_discarded(), 6);
        assert_eq!(lines(&mut r, b"xy\nok\n", 4), vec![ok("ok")]);
        assert_eq!(r.take_discarded(), 3, "through the newline");
        assert_eq!(
            lines(&mut r, b"toolong\n", 4),
            vec![Err(LineError::TooLong)]
        );
        assert_eq!(r.take_discarded(), 7);
        assert_eq!(r.take_discarded(), 0);
    }

    #[test]
    fn splits_complete_lines() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"a\nbc\n", 10), vec![ok("a"), ok("bc")]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn partial_line_waits_for_its_newline() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"hel", 10), vec![]);
        assert_eq!(r.pending(), 3);
        assert_eq!(lines(&mut r, b"lo\nwor", 10), vec![ok("hello")]);
        assert_eq!(lines(&mut r, b"ld\n", 10), vec![ok("world")]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn crlf_drops_the_cr_only_before_newline() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"a\r\nb\rc\n", 10), vec![ok("a"), ok("b\rc")]);
    }

    #[test]
    fn cr_and_lf_split_across_reads() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"ab\r", 10), vec![]);
        assert_eq!(lines(&mut r, b"\n", 10), vec![ok("ab")]);
    }

    #[test]
    fn empty_line_is_a_line() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"\n\r\n", 10), vec![ok(""), ok("")]);
    }

    #[test]
    fn line_of_exactly_max_is_accepted() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"abcd\n", 4), vec![ok("abcd")]);
        assert_eq!(lines(&mut r, b"abcd\r\n", 4), vec![ok("abcd")]);
        assert_eq!(lines(&mut r, b"ab", 4), vec![]);
        assert_eq!(lines(&mut r, b"cd\r", 4), vec![]);
        assert_eq!(lines(&mut r, b"\n", 4), vec![ok("abcd")]);
    }

    #[test]
    fn over_max_in_one_read_is_rejected_and_the_next_line_survives() {
        let mut r = LineReader::default();
        assert_eq!(
            lines(&mut r, b"abcde\nok\n", 4),
            vec![Err(LineError::TooLong), ok("ok")]
        );
    }

    #[test]
    fn over_max_without_newline_is_rejected_once_and_memory_stays_bounded() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"abcdef", 4), vec![Err(LineError::TooLong)]);
        assert_eq!(r.pending(), 0);
        assert_eq!(lines(&mut r, &[b'x'; 10_000], 4), vec![]);
        assert_eq!(r.pending(), 0);
        assert_eq!(lines(&mut r, b"xx\nnext\n", 4), vec![ok("next")]);
    }

    #[test]
    fn over_max_across_reads_is_rejected() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"abc", 4), vec![]);
        assert_eq!(lines(&mut r, b"de", 4), vec![]);
        assert_eq!(lines(&mut r, b"f", 4), vec![Err(LineError::TooLong)]);
        assert_eq!(lines(&mut r, b"\nok\n", 4), vec![ok("ok")]);
    }

    #[test]
    fn max_plus_cr_without_newline_then_other_byte_is_too_long() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"abcd\r", 4), vec![]);
        assert_eq!(lines(&mut r, b"\n", 4), vec![ok("abcd")]);
        assert_eq!(lines(&mut r, b"abcdx\n", 4), vec![Err(LineError::TooLong)]);
    }

    #[test]
    fn invalid_utf8_is_reported() {
        assert_eq!(parse_frame(b"SAY::\xc3\x28"), Err(ParseError::InvalidUtf8));
        assert_eq!(parse_text(b"\xff"), Err(ParseError::InvalidUtf8));
    }

    #[test]
    fn control_characters_are_refused_but_tab_is_fine() {
        assert_eq!(parse_frame(b"SAY::\x1b[2J"), Err(ParseError::ControlChar));
        assert_eq!(
            parse_text("hi \u{9b}1m".as_bytes()),
            Err(ParseError::ControlChar)
        );
        assert_eq!(parse_text(b"a\x7f"), Err(ParseError::ControlChar));
        assert_eq!(parse_text(b"a\tb"), Ok(Command::Say("a\tb")));
    }

    #[test]
    fn frames_parse() {
        assert_eq!(parse_frame(b"JOIN:alice"), Ok(Command::Nick("alice")));
        assert_eq!(
            parse_frame(b"JOIN:#rust"),
            Ok(Command::Join {
                room: "#rust",
                key: None
            })
        );
        assert_eq!(parse_frame(b"SAY::hi"), Ok(Command::Say("hi")));
        assert_eq!(parse_frame(b"SAY:mallory:a:b"), Ok(Command::Say("a:b")));
        assert_eq!(parse_frame(b"SAY:hi"), Ok(Command::Say("hi")));
        assert_eq!(
            parse_frame(b"MSG:bob:hi:there"),
            Ok(Command::Msg {
                to: "bob",
                text: "hi:there"
            })
        );
        assert!(matches!(parse_frame(b"MSG:bob"), Err(ParseError::Usage(_))));
        assert_eq!(parse_frame(b"LEAVE:bye"), Ok(Command::Leave("bye")));
        assert_eq!(parse_frame(b"LEAVE"), Ok(Command::Leave("")));
        assert_eq!(parse_frame(b"WHO:"), Ok(Command::Who));
        assert_eq!(parse_frame(b"ROOMS:"), Ok(Command::Rooms));
        assert_eq!(parse_frame(b"FOO:x"), Err(ParseError::UnknownVerb("FOO")));
        assert_eq!(parse_frame(b""), Err(ParseError::Empty));
    }

    #[test]
    fn text_commands_parse() {
        assert_eq!(parse_text(b"hello"), Ok(Command::Say("hello")));
        assert_eq!(parse_text(b"/nick bob"), Ok(Command::Nick("bob")));
        assert_eq!(
            parse_text(b"/join #x"),
            Ok(Command::Join {
                room: "#x",
                key: None
            })
        );
        assert_eq!(
            parse_text(b"/msg bob hi there"),
            Ok(Command::Msg {
                to: "bob",
                text: "hi there"
            })
        );
        assert_eq!(parse_text(b"/quit"), Ok(Command::Leave("")));
        assert_eq!(parse_text(b"/who"), Ok(Command::Who));
        assert_eq!(
            parse_text(b"/dance"),
            Err(ParseError::UnknownCommand("dance"))
        );
        assert!(matches!(parse_text(b"/msg bob"), Err(ParseError::Usage(_))));
        assert!(matches!(parse_text(b"/join x"), Err(ParseError::Usage(_))));
    }

    #[test]
    fn first_line_decides_dialect() {
        assert!(is_frame(b"JOIN:alice"));
        assert!(is_frame(b"SAY::hi"));
        assert!(!is_frame(b"JOIN"));
        assert!(!is_frame(b"hello: world"));
        assert!(!is_frame(b"/nick bob"));
    }

    #[test]
    fn dialect_of_a_known_verb_and_colon_is_frames() {
        assert_eq!(decide_dialect(b"JOIN:alice"), Some(Dialect::Frames));
        assert_eq!(decide_dialect(b"SAY::hi"), Some(Dialect::Frames));
        assert_eq!(decide_dialect(b"WHO:"), Some(Dialect::Frames));
    }

    #[test]
    fn dialect_of_a_chat_line_is_text() {
        assert_eq!(decide_dialect(b"hello everyone"), Some(Dialect::Text));
    }

    #[test]
    fn dialect_of_a_slash_command_is_text() {
        assert_eq!(decide_dialect(b"/nick bob"), Some(Dialect::Text));
    }

    #[test]
    fn dialect_of_a_verb_without_colon_is_text() {
        assert_eq!(decide_dialect(b"JOIN"), Some(Dialect::Text));
        assert_eq!(decide_dialect(b"JOIN alice"), Some(Dialect::Text));
    }

    #[test]
    fn dialect_of_a_lowercase_verb_is_text() {
        assert_eq!(decide_dialect(b"join:alice"), Some(Dialect::Text));
    }

    #[test]
    fn dialect_of_an_unknown_verb_with_colon_is_text() {
        assert_eq!(decide_dialect(b"hello: world"), Some(Dialect::Text));
    }

    #[test]
    fn empty_line_leaves_dialect_undecided() {
        assert_eq!(decide_dialect(b""), None);
    }

    #[test]
    fn blank_line_leaves_dialect_undecided() {
        assert_eq!(decide_dialect(b"   "), None);
        assert_eq!(decide_dialect(b" \t"), None);
    }

    #[test]
    fn invalid_utf8_leaves_dialect_undecided() {
        assert_eq!(decide_dialect(b"JOIN:\xff"), None);
        assert_eq!(decide_dialect(b"\xc3\x28"), None);
    }

    #[test]
    fn control_characters_leave_dialect_undecided() {
        assert_eq!(decide_dialect(b"SAY::\x1b[2J"), None);
        assert_eq!(decide_dialect("hi\u{202E}".as_bytes()), None);
    }

    #[test]
    fn telnet_line_with_negotiation_stripped_is_text() {
        let mut f = TelnetFilter::default();
        let mut buf = b"\xff\xfd\x01\xff\xfb\x18hello there\r\0".to_vec();
        let n = f.filter(&mut buf);
        let mut r = LineReader::default();
        let mut got = None;
        r.feed(&buf[..n], 100, |l| got = Some(l.map(decide_dialect)));
        assert_eq!(got, Some(Ok(Some(Dialect::Text))));
    }

    #[track_caller]
    fn assert_refused(c: char) {
        let text = format!("a{c}b");
        let frame = format!("SAY::{text}");
        assert!(is_control(c), "{c:?} should count as a control character");
        assert_eq!(parse_text(text.as_bytes()), Err(ParseError::ControlChar));
        assert_eq!(parse_frame(frame.as_bytes()), Err(ParseError::ControlChar));
    }

    #[track_caller]
    fn assert_allowed(c: char) {
        let text = format!("a{c}b");
        let frame = format!("SAY::{text}");
        assert!(!is_control(c), "{c:?} should be allowed");
        assert_eq!(parse_text(text.as_bytes()), Ok(Command::Say(&text)));
        assert_eq!(parse_frame(frame.as_bytes()), Ok(Command::Say(&text)));
    }

    #[test]
    fn line_and_paragraph_separators_are_refused() {
        assert_refused('\u{2028}');
        assert_refused('\u{2029}');
    }

    #[test]
    fn character_before_line_separator_is_allowed() {
        assert_allowed('\u{2027}');
    }

    #[test]
    fn left_to_right_and_right_to_left_marks_are_refused() {
        assert_refused('\u{200E}');
        assert_refused('\u{200F}');
    }

    #[test]
    fn zero_width_joiner_before_the_marks_is_allowed() {
        // Emoji sequences are built with it.
        assert_allowed('\u{200D}');
    }

    #[test]
    fn character_after_the_marks_is_allowed() {
        assert_allowed('\u{2010}');
    }

    #[test]
    fn bidi_embeddings_and_overrides_are_refused() {
        assert_refused('\u{202A}');
        assert_refused('\u{202C}');
        assert_refused('\u{202E}');
    }

    #[test]
    fn narrow_no_break_space_after_the_overrides_is_allowed() {
        assert_allowed('\u{202F}');
    }

    #[test]
    fn the_arabic_letter_mark_is_refused_like_the_other_bidi_marks() {
        // U+061C is the one character of Unicode's Bidi_Control set outside the
        // U+200E–U+2069 block: it reorders neutral text like U+200F does.
        assert_refused('\u{061C}');
        assert_allowed('\u{061B}');
        assert_allowed('\u{061D}');
    }

    #[test]
    fn bidi_isolates_are_refused() {
        assert_refused('\u{2066}');
        assert_refused('\u{2069}');
    }

    #[test]
    fn characters_around_the_isolates_are_allowed() {
        assert_allowed('\u{2065}');
        assert_allowed('\u{206A}');
    }

    #[test]
    fn forging_characters_get_the_control_character_error_text() {
        let err = parse_text("\u{202E}evil".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "control characters are not allowed");
    }

    #[test]
    fn say_with_empty_sender_field_is_the_rest() {
        assert_eq!(parse_frame(b"SAY::hi"), Ok(Command::Say("hi")));
    }

    #[test]
    fn say_with_a_name_in_the_sender_field_drops_it() {
        assert_eq!(parse_frame(b"SAY:bob:hi"), Ok(Command::Say("hi")));
    }

    #[test]
    fn say_with_a_colon_inside_the_text_keeps_all_of_it() {
        assert_eq!(
            parse_frame(b"SAY:meeting at 10:30 in room 4"),
            Ok(Command::Say("meeting at 10:30 in room 4"))
        );
    }

    #[test]
    fn say_without_a_second_colon_is_all_text() {
        assert_eq!(parse_frame(b"SAY:hello"), Ok(Command::Say("hello")));
    }

    #[test]
    fn say_with_a_name_keeps_later_colons_in_the_text() {
        assert_eq!(parse_frame(b"SAY:a:b:c"), Ok(Command::Say("b:c")));
    }

    #[test]
    fn say_with_a_too_long_name_in_the_sender_field_is_all_text() {
        let line = format!("SAY:{}:hi", "x".repeat(MAX_NAME + 1));
        assert_eq!(
            parse_frame(line.as_bytes()),
            Ok(Command::Say(&line["SAY:".len()..]))
        );
    }

    #[test]
    fn empty_line_is_blank() {
        assert!(is_blank(b""));
    }

    #[test]
    fn spaces_and_tabs_are_blank() {
        assert!(is_blank(b"  \t "));
    }

    #[test]
    fn a_line_with_text_is_not_blank() {
        assert!(!is_blank(b"  x "));
    }

    #[test]
    fn a_line_of_control_characters_is_not_blank() {
        assert!(!is_blank(b"\x0c"));
        assert!(!is_blank(b"\r"));
    }

    #[test]
    fn blank_text_line_never_becomes_chat() {
        assert_eq!(parse_text(b""), Err(ParseError::Empty));
        assert_eq!(parse_text(b"   "), Err(ParseError::Empty));
        assert_eq!(parse_text(b"\t"), Err(ParseError::Empty));
    }

    #[test]
    fn text_with_surrounding_spaces_is_chat_unchanged() {
        assert_eq!(parse_text(b"  hi  "), Ok(Command::Say("  hi  ")));
    }

    #[test]
    fn empty_frame_is_an_error() {
        assert_eq!(parse_frame(b""), Err(ParseError::Empty));
        assert_eq!(ParseError::Empty.to_string(), "empty line");
    }

    #[test]
    fn line_cap_of_usize_max_does_not_overflow() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"abc", usize::MAX), vec![]);
        assert_eq!(lines(&mut r, b"def\n", usize::MAX), vec![ok("abcdef")]);
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("alice"));
        assert!(valid_name("A.b-c_9"));
        assert!(valid_name(&"x".repeat(32)));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(!valid_name(""));
        assert!(!valid_name("al ice"));
        assert!(!valid_name("al:ice"));
        assert!(!valid_name("élan"));
        assert!(valid_room("#lobby"));
        assert!(!valid_room("lobby"));
        assert!(!valid_room("#"));
    }

    #[test]
    fn events_encode_as_frames_and_text() {
        let mut f = Vec::new();
        let mut t = Vec::new();
        for e in [
            Event::Say {
                from: "bob",
                text: "hi",
            },
            Event::Msg {
                from: "bob",
                text: "psst",
            },
            Event::Join("bob"),
            Event::Leave("bob"),
            Event::Server("hello"),
            Event::Error("bad"),
        ] {
            e.encode(Dialect::Frames, &mut f);
            e.encode(Dialect::Text, &mut t);
        }
        assert_eq!(
            f,
            b"SAY:bob:hi\nMSG:bob:psst\nJOIN:bob\nLEAVE:bob\nSERVER:hello\nERROR:bad\n"
        );
        assert_eq!(
            t,
            b"<bob> hi\r\n*bob* psst\r\n*** bob joined\r\n*** bob left\r\n[server] hello\r\n[error] bad\r\n"
        );
    }

    #[test]
    fn frames_parse_back_into_events() {
        assert_eq!(
            Event::parse("SAY:bob:a:b"),
            Some(Event::Say {
                from: "bob",
                text: "a:b"
            })
        );
        assert_eq!(Event::parse("JOIN:bob"), Some(Event::Join("bob")));
        assert_eq!(Event::parse("SERVER:x:y"), Some(Event::Server("x:y")));
        assert_eq!(Event::parse("nonsense"), None);
    }

    #[test]
    fn telnet_negotiation_is_stripped() {
        let mut f = TelnetFilter::default();
        let mut buf = b"\xff\xfb\x01hi\xff\xfa\x18\x01\xff\xf0 there\r\n".to_vec();
        let n = f.filter(&mut buf);
        assert_eq!(&buf[..n], b"hi there\r\n");
    }

    #[test]
    fn telnet_sequence_split_across_reads() {
        let mut f = TelnetFilter::default();
        let mut a = b"a\xff".to_vec();
        let mut b = b"\xfd\x03b\n".to_vec();
        let na = f.filter(&mut a);
        let nb = f.filter(&mut b);
        assert_eq!([&a[..na], &b[..nb]].concat(), b"ab\n");
    }

    #[test]
    fn telnet_cr_nul_is_a_line_end() {
        let mut f = TelnetFilter::default();
        let mut a = b"hi\r".to_vec();
        let mut b = b"\0next".to_vec();
        let na = f.filter(&mut a);
        let nb = f.filter(&mut b);
        let mut r = LineReader::default();
        let joined = [&a[..na], &b[..nb]].concat();
        assert_eq!(lines(&mut r, &joined, 10), vec![ok("hi")]);
    }

    mod chunking {
        use super::*;
        use proptest::prelude::*;

        fn split_all(input: &[u8], cuts: &[usize], max: usize) -> Vec<Result<Vec<u8>, LineError>> {
            let mut r = LineReader::default();
            let mut got = Vec::new();
            let mut start = 0;
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.sort_unstable();
            points.push(input.len());
            for end in points {
                r.feed(&input[start..end], max, |l| got.push(l.map(|l| l.to_vec())));
                start = end;
            }
            got
        }

        proptest! {
            /// However the stream is cut into reads, the same lines come out.
            #[test]
            fn any_chunking_yields_the_same_lines(
                input in proptest::collection::vec(
                    prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b'b'), any::<u8>()],
                    0..300,
                ),
                cuts in proptest::collection::vec(any::<usize>(), 0..20),
                max in 1usize..40,
            ) {
                let whole = split_all(&input, &[], max);
                let chunked = split_all(&input, &cuts, max);
                prop_assert_eq!(chunked, whole);
            }

            /// Memory held for an unfinished line never passes the cap (plus a `\r`).
            #[test]
            fn pending_never_exceeds_the_cap(
                input in proptest::collection::vec(any::<u8>(), 0..2000),
                max in 1usize..64,
            ) {
                let mut r = LineReader::default();
                for chunk in input.chunks(7) {
                    r.feed(chunk, max, |_| {});
                    prop_assert!(r.pending() <= max + 1);
                }
            }
        }
    }
}
