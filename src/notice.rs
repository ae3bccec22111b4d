//! Every `SERVER:` and `ERROR:` text the server sends, in one place.
//!
//! A [`Notice`] is a reply with its arguments; its `Display` is the text after the verb
//! and [`Notice::is_error`] picks the verb. The hub and the server never spell a reply
//! themselves, so the README's tables can be checked against this file (see the tests),
//! and a new kind of refusal cannot slip out without a text of its own: every `match`
//! here lists all variants, with no catch-all arm.
//!
//! The `WHO:`/`ROOMS:` answers are built by the hub (they are lists, not sentences), and
//! the parse errors keep their texts beside the parser ([`ParseError`]'s `Display`).

use std::fmt;

use crate::codec::{Event, ParseError};

/// The greeting every connection gets first: readable as text, parseable as a frame.
pub const GREETING: &str =
    "welcome to loopchat; send JOIN:<name> to pick a name, or just type (/help for commands)";

/// The text-mode help line.
pub const HELP: &str = "commands: /nick <name>, /join #<room>, /msg <name> <text>, /who, \
                        /rooms, /quit [reason]; any other line is said to your room";

/// A reply the server sends to one connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Notice<'a> {
    // ----- announcements (`SERVER:`) -----
    /// The first line on every connection.
    Greeting,
    /// The answer to `/help`.
    Help,
    /// A first name: `you are <name> in <room>`.
    YouAre {
        /// The name taken.
        name: &'a str,
        /// The room entered.
        room: &'a str,
    },
    /// `JOIN:` with the name one already has.
    AlreadyNamed(&'a str),
    /// A rename, told to the whole room.
    Renamed {
        /// The name before.
        old: &'a str,
        /// The name now.
        new: &'a str,
    },
    /// A room move.
    NowIn(&'a str),
    /// A move to the room one is in.
    AlreadyIn(&'a str),
    /// After a replay or a page of history.
    EndOfHistory(&'a str),
    /// `REGISTER:` or `AUTH:` succeeded.
    LoggedIn(&'a str),
    /// The right server password.
    PasswordAccepted,
    /// The answer to `LEAVE:`; the connection closes after it.
    Goodbye,
    /// Shutdown; the connection closes after it.
    ShuttingDown,
    // ----- errors (`ERROR:`) -----
    /// A line that did not parse.
    Parse(ParseError<'a>),
    /// A line longer than `--max-line`.
    LineTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// A name that is not 1–32 of the allowed characters.
    InvalidName(&'a str),
    /// A room name that is not `#` and a valid name.
    InvalidRoom(&'a str),
    /// Someone else has that name (in any case).
    NameTaken(&'a str),
    /// `MSG:` to a name nobody has.
    NoSuchUser(&'a str),
    /// `SAY:` or `MSG:` without text.
    EmptyMessage,
    /// A line over the connection's (or its address's) message rate.
    RateLimited {
        /// `--rate`, messages per second.
        rate: f64,
    },
    /// A line over the address's message rate (`--ip-rate`, all its connections).
    AddressRateLimited {
        /// `--ip-rate`, messages per second.
        rate: f64,
    },
    /// A private message to a recipient over `--msg-in-rate`.
    ReceivingTooFast(&'a str),
    /// Over the client cap; the connection is closed.
    ServerFull,
    /// This connection's address was banned; it is closed.
    Banned {
        /// The ban's length in whole seconds.
        seconds: u64,
    },
    /// A new connection from a banned address; it is closed.
    StillBanned {
        /// Whole seconds left.
        seconds: u64,
    },
    /// Over `--max-conns-per-ip`; the connection is closed.
    TooManyConnections,
    /// Over `--connect-rate`; the connection is closed.
    ConnectingTooFast,
    /// No complete line within `--register-timeout`.
    RegistrationTimeout,
    /// Silent for `--idle-timeout`.
    IdleTimeout,
    /// `JOIN:<name>` of a name that belongs to an account.
    NameRegistered(&'a str),
    /// `AUTH:` with an unknown name or a wrong password (the same answer for both).
    WrongLogin,
    /// `REGISTER:` with a password outside 8–128 bytes.
    PasswordLength,
    /// Another connection logged in to this one's account; this one is closed.
    LoggedInElsewhere,
    /// Cluster: two servers granted this name while Redis was unreachable, and the
    /// earlier claim, on another server, keeps it; the holder here becomes a guest.
    NameLost(&'a str),
    /// Cluster: a private message for someone on another server while Redis is
    /// unreachable.
    Unreachable(&'a str),
    /// A line before the server password (`--password-file`).
    PasswordRequired,
    /// A wrong server password; the connection is closed.
    WrongServerPassword,
    /// `JOIN:#room` of a room that has a key.
    NeedsKey(&'a str),
    /// `JOIN:#room:<key>` with the wrong key.
    WrongKey(&'a str),
    /// An operator closed this connection.
    Kicked {
        /// The operator.
        by: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// An operator banned this connection's address.
    BannedBy {
        /// The operator.
        by: &'a str,
        /// The ban's length in whole seconds.
        seconds: u64,
    },
    /// An operator command from someone who is not one, or against another operator.
    NotAllowed,
    /// Password hashing is at capacity; the request was not taken.
    Busy,
}

impl Notice<'_> {
    /// Whether this is an `ERROR:` (else a `SERVER:` line).
    pub fn is_error(&self) -> bool {
        match self {
            Notice::Greeting
            | Notice::Help
            | Notice::YouAre { .. }
            | Notice::AlreadyNamed(_)
            | Notice::Renamed { .. }
            | Notice::NowIn(_)
            | Notice::AlreadyIn(_)
            | Notice::EndOfHistory(_)
            | Notice::LoggedIn(_)
            | Notice::PasswordAccepted
            | Notice::Goodbye
            | Notice::ShuttingDown => false,
            Notice::Parse(_)
            | Notice::LineTooLong { .. }
            | Notice::InvalidName(_)
            | Notice::InvalidRoom(_)
            | Notice::NameTaken(_)
            | Notice::NoSuchUser(_)
            | Notice::EmptyMessage
            | Notice::RateLimited { .. }
            | Notice::AddressRateLimited { .. }
            | Notice::ReceivingTooFast(_)
            | Notice::ServerFull
            | Notice::Banned { .. }
            | Notice::StillBanned { .. }
            | Notice::TooManyConnections
            | Notice::ConnectingTooFast
            | Notice::RegistrationTimeout
            | Notice::IdleTimeout
            | Notice::NameRegistered(_)
            | Notice::WrongLogin
            | Notice::PasswordLength
            | Notice::LoggedInElsewhere
            | Notice::NameLost(_)
            | Notice::Unreachable(_)
            | Notice::PasswordRequired
            | Notice::WrongServerPassword
            | Notice::NeedsKey(_)
            | Notice::WrongKey(_)
            | Notice::Kicked { .. }
            | Notice::BannedBy { .. }
            | Notice::NotAllowed
            | Notice::Busy => true,
        }
    }

    /// The event that carries `text` (this notice's `Display`) to a client.
    pub fn event<'t>(&self, text: &'t str) -> Event<'t> {
        if self.is_error() {
            Event::Error(text)
        } else {
            Event::Server(text)
        }
    }
}

impl fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Greeting => f.write_str(GREETING),
            Notice::Help => f.write_str(HELP),
            Notice::YouAre { name, room } => write!(f, "you are {name} in {room}"),
            Notice::AlreadyNamed(name) => write!(f, "you are already {name}"),
            Notice::Renamed { old, new } => write!(f, "{old} is now known as {new}"),
            Notice::NowIn(room) => write!(f, "you are now in {room}"),
            Notice::AlreadyIn(room) => write!(f, "you are already in {room}"),
            Notice::EndOfHistory(room) => write!(f, "end of history for {room}"),
            Notice::LoggedIn(name) => write!(f, "logged in as {name}"),
            Notice::PasswordAccepted => f.write_str("password accepted"),
            Notice::Goodbye => f.write_str("goodbye"),
            Notice::ShuttingDown => f.write_str("server shutting down"),
            Notice::Parse(e) => write!(f, "{e}"),
            Notice::LineTooLong { max } => write!(f, "line too long (max {max} bytes)"),
            Notice::InvalidName(name) => {
                write!(f, "invalid name {name}: use 1-32 of A-Z a-z 0-9 _ - .")
            }
            Notice::InvalidRoom(room) => {
                write!(
                    f,
                    "invalid room {room}: use # and 1-32 of A-Z a-z 0-9 _ - ."
                )
            }
            Notice::NameTaken(name) => write!(f, "name {name} is taken"),
            Notice::NoSuchUser(name) => write!(f, "no such user {name}"),
            Notice::EmptyMessage => f.write_str("empty message"),
            Notice::RateLimited { rate } => {
                write!(
                    f,
                    "rate limit exceeded ({rate} messages/s), message dropped"
                )
            }
            Notice::AddressRateLimited { rate } => write!(
                f,
                "rate limit of your address exceeded ({rate} messages/s), message dropped"
            ),
            Notice::ReceivingTooFast(name) => {
                write!(f, "{name} is receiving too fast, message dropped")
            }
            Notice::ServerFull => f.write_str("server full"),
            Notice::Banned { seconds } => {
                write!(f, "banned for {seconds} seconds: too many strikes, closing")
            }
            Notice::StillBanned { seconds } => write!(f, "banned for {seconds} more seconds"),
            Notice::TooManyConnections => f.write_str("too many connections from your address"),
            Notice::ConnectingTooFast => f.write_str("connecting too fast, try again later"),
            Notice::RegistrationTimeout => f.write_str("registration timeout, closing"),
            Notice::IdleTimeout => f.write_str("idle timeout, closing"),
            Notice::NameRegistered(name) => {
                write!(f, "name {name} is registered; use AUTH:{name}:<password>")
            }
            Notice::WrongLogin => f.write_str("wrong name or password"),
            Notice::PasswordLength => f.write_str("password must be 8 to 128 bytes"),
            Notice::LoggedInElsewhere => f.write_str("logged in elsewhere, closing"),
            Notice::NameLost(name) => write!(
                f,
                "name {name} was taken on another server while the cluster was split; you are a guest now"
            ),
            Notice::Unreachable(name) => write!(
                f,
                "{name} cannot be reached now: the cluster is unavailable, message dropped"
            ),
            Notice::PasswordRequired => f.write_str("password required"),
            Notice::WrongServerPassword => f.write_str("wrong server password, closing"),
            Notice::NeedsKey(room) => write!(f, "room {room} needs a key"),
            Notice::WrongKey(room) => write!(f, "wrong key for {room}"),
            Notice::Kicked { by, reason } => write!(f, "kicked by {by}: {reason}, closing"),
            Notice::BannedBy { by, seconds } => {
                write!(f, "banned for {seconds} seconds by {by}, closing")
            }
            Notice::NotAllowed => f.write_str("not allowed"),
            Notice::Busy => f.write_str("server busy, try again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each notice with the arguments the README's tables show. The `match` in
    /// `sample_of` has no catch-all arm, so a new variant does not compile until it
    /// has a sample here, and so a README row.
    fn samples() -> Vec<Notice<'static>> {
        let all = [
            Notice::Greeting,
            Notice::Help,
            Notice::YouAre {
                name: "<name>",
                room: "#lobby",
            },
            Notice::AlreadyNamed("<name>"),
            Notice::Renamed {
                old: "<old>",
                new: "<new>",
            },
            Notice::NowIn("#<room>"),
            Notice::AlreadyIn("#<room>"),
            Notice::EndOfHistory("#<room>"),
            Notice::Goodbye,
            Notice::ShuttingDown,
            Notice::Parse(ParseError::InvalidUtf8),
            Notice::LineTooLong { max: 4096 },
            Notice::InvalidName("<name>"),
            Notice::InvalidRoom("<room>"),
            Notice::NameTaken("<name>"),
            Notice::NoSuchUser("<name>"),
            Notice::EmptyMessage,
            Notice::RateLimited { rate: 5.0 },
            Notice::AddressRateLimited { rate: 20.0 },
            Notice::ReceivingTooFast("<name>"),
            Notice::ServerFull,
            Notice::Banned { seconds: 600 },
            Notice::StillBanned { seconds: 532 },
            Notice::TooManyConnections,
            Notice::ConnectingTooFast,
            Notice::RegistrationTimeout,
            Notice::IdleTimeout,
            Notice::LoggedIn("<name>"),
            Notice::PasswordAccepted,
            Notice::NameRegistered("<name>"),
            Notice::WrongLogin,
            Notice::PasswordLength,
            Notice::LoggedInElsewhere,
            Notice::NameLost("<name>"),
            Notice::Unreachable("<name>"),
            Notice::PasswordRequired,
            Notice::WrongServerPassword,
            Notice::NeedsKey("#<room>"),
            Notice::WrongKey("#<room>"),
            Notice::Kicked {
                by: "<admin>",
                reason: "<reason>",
            },
            Notice::BannedBy {
                by: "<admin>",
                seconds: 600,
            },
            Notice::NotAllowed,
            Notice::Busy,
        ];
        all.iter().map(sample_of).collect()
    }

    fn sample_of(n: &Notice<'static>) -> Notice<'static> {
        match n {
            Notice::Greeting
            | Notice::Help
            | Notice::YouAre { .. }
            | Notice::AlreadyNamed(_)
            | Notice::Renamed { .. }
            | Notice::NowIn(_)
            | Notice::AlreadyIn(_)
            | Notice::EndOfHistory(_)
            | Notice::Goodbye
            | Notice::ShuttingDown
            | Notice::Parse(_)
            | Notice::LineTooLong { .. }
            | Notice::InvalidName(_)
            | Notice::InvalidRoom(_)
            | Notice::NameTaken(_)
            | Notice::NoSuchUser(_)
            | Notice::EmptyMessage
            | Notice::RateLimited { .. }
            | Notice::AddressRateLimited { .. }
            | Notice::ReceivingTooFast(_)
            | Notice::ServerFull
            | Notice::Banned { .. }
            | Notice::StillBanned { .. }
            | Notice::TooManyConnections
            | Notice::ConnectingTooFast
            | Notice::RegistrationTimeout
            | Notice::IdleTimeout
            | Notice::LoggedIn(_)
            | Notice::PasswordAccepted
            | Notice::NameRegistered(_)
            | Notice::WrongLogin
            | Notice::PasswordLength
            | Notice::LoggedInElsewhere
            | Notice::NameLost(_)
            | Notice::Unreachable(_)
            | Notice::PasswordRequired
            | Notice::WrongServerPassword
            | Notice::NeedsKey(_)
            | Notice::WrongKey(_)
            | Notice::Kicked { .. }
            | Notice::BannedBy { .. }
            | Notice::NotAllowed
            | Notice::Busy => *n,
        }
    }

    #[test]
    fn every_notice_is_in_the_readme() {
        let readme = include_str!("../README.md");
        for notice in samples() {
            // Help is listed command by command, not as one line.
            if notice == Notice::Help {
                continue;
            }
            let text = notice.to_string();
            assert!(
                readme.contains(&text),
                "README.md does not show the reply {text:?}"
            );
        }
    }

    #[test]
    fn errors_and_announcements_take_their_verbs() {
        let mut line = Vec::new();
        let n = Notice::NameTaken("bob");
        n.event(&n.to_string())
            .encode(crate::codec::Dialect::Frames, &mut line);
        assert_eq!(line, b"ERROR:name bob is taken\n");
        line.clear();
        let n = Notice::NowIn("#rust");
        n.event(&n.to_string())
            .encode(crate::codec::Dialect::Frames, &mut line);
        assert_eq!(line, b"SERVER:you are now in #rust\n");
    }
}
