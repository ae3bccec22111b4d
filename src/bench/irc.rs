//! The IRC dialect (`--dialect irc`): what the harness sends to an IRC daemon and what
//! it makes of the lines that come back. Pure: no sockets, no state; the worker decides
//! what an [`Event`] means for a client.
//!
//! A client registers with `NICK`/`USER`, waits for `001` (RPL_WELCOME), joins its
//! room's channel and counts as joined on the `JOIN` echo of its own nick or on `366`
//! (RPL_ENDOFNAMES) for that channel. It sends `PRIVMSG #room :<marker>`, answers every
//! `PING` with a `PONG`, and finds deliveries in `:nick!user@host PRIVMSG #room :…` by
//! their marker (the worker looks for the marker before it asks this module).
//!
//! Names are short because RFC 2812 allows nine characters for a nick (ngIRCd's
//! default): `l` + four hex digits of the run id + the client's index in base 36 fits
//! nine characters up to 1.6 million clients. Channels are `#<prefix><room>`, the same
//! names the frames dialect joins.

use std::io::Write;

/// Longest text the IRC dialect sends. RFC 2812 caps a line at 512 bytes with CRLF, and
/// the relayed line also carries `:nick!user@host PRIVMSG #channel :`, which can take
/// 150 bytes or more; a longer text would be cut by the server and its marker kept, but
/// its padding lost.
pub const MAX_PAYLOAD: usize = 300;

/// What a line from an IRC server means to the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `PING`: answer with `PONG` and these parameters (as sent, e.g. `:irc.example`).
    Ping(&'a [u8]),
    /// `001`: registration is complete, the client may join.
    Welcome,
    /// Its own `JOIN` echo, or `366` for its channel: it is in the room.
    Joined,
    /// An error numeric (400–599) or `ERROR`: the whole line, for the report.
    Error,
    /// Anything else (notices, MOTD, names, other members' joins).
    Other,
}

/// The nick of client `id` in run `run`.
pub fn nick(run: u32, id: usize) -> String {
    let mut n = format!("l{:04x}", run & 0xffff);
    let mut digits = Vec::new();
    let mut v = id;
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[v % 36]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    n.extend(digits.iter().rev().map(|&d| char::from(d)));
    n
}

/// Appends the registration lines of a client called `nick`.
pub fn register(nick: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "NICK {nick}\r\nUSER lcb 0 * :loopchat bench\r\n");
}

/// Appends the line that joins `channel`.
pub fn join(channel: &str, out: &mut Vec<u8>) {
    let _ = write!(out, "JOIN {channel}\r\n");
}

/// Appends the start of a message to `channel`; the text and `\r\n` follow.
pub fn privmsg_prefix(channel: &str, out: &mut Vec<u8>) {
    let _ = write!(out, "PRIVMSG {channel} :");
}

/// Appends the answer to a `PING` whose parameters were `params`.
pub fn pong(params: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG ");
    out.extend_from_slice(params);
    out.extend_from_slice(b"\r\n");
}

/// Classifies `line` (without its line end) for a client called `nick` that joins
/// `channel`. Nicks and channels compare without regard to ASCII case, as IRC servers
/// treat them.
pub fn classify<'a>(line: &'a [u8], nick: &str, channel: &str) -> Event<'a> {
    let (prefix, command, params) = split(line);
    if command == b"PING" {
        return Event::Ping(params);
    }
    if command == b"ERROR" {
        return Event::Error;
    }
    if command == b"001" {
        return Event::Welcome;
    }
    if command == b"JOIN" {
        let own = prefix.is_some_and(|p| {
            let from = p.split(|&b| b == b'!').next().unwrap_or(p);
            from.eq_ignore_ascii_case(nick.as_bytes())
        });
        let target = params.strip_prefix(b":").unwrap_or(params);
        let target = target.split(|&b| b == b' ').next().unwrap_or(target);
        if own && target.eq_ignore_ascii_case(channel.as_bytes()) {
            return Event::Joined;
        }
        return Event::Other;
    }
    if command == b"366" {
        // `366 <nick> <channel> :End of NAMES list`
        let mut words = params.split(|&b| b == b' ');
        let _ = words.next();
        if words
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(channel.as_bytes()))
        {
            return Event::Joined;
        }
        return Event::Other;
    }
    if let [b'4' | b'5', b, c] = command
        && b.is_ascii_digit()
        && c.is_ascii_digit()
    {
        return Event::Error;
    }
    Event::Other
}

/// An error line in words that are the same for every client (no nick): the command
/// and the trailing text, e.g. `433 Nickname is already in use`.
pub fn describe(line: &[u8]) -> String {
    let (_, command, params) = split(line);
    let text = match params.windows(2).position(|w| w == b" :") {
        Some(i) => &params[i + 2..],
        None => params.strip_prefix(b":").unwrap_or(params),
    };
    format!(
        "{} {}",
        String::from_utf8_lossy(command),
        String::from_utf8_lossy(text)
    )
}

/// Splits a line into its prefix (without the `:`), command and the rest (the
/// parameters as sent).
fn split(line: &[u8]) -> (Option<&[u8]>, &[u8], &[u8]) {
    let (prefix, rest) = match line.strip_prefix(b":") {
        Some(after) => match after.iter().position(|&b| b == b' ') {
            Some(i) => (Some(&after[..i]), &after[i + 1..]),
            None => (Some(after), &[][..]),
        },
        None => (None, line),
    };
    let rest = trim_start(rest);
    match rest.iter().position(|&b| b == b' ') {
        Some(i) => (prefix, &rest[..i], trim_start(&rest[i + 1..])),
        None => (prefix, rest, &[][..]),
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NICK: &str = "l00ab1z";
    const CHAN: &str = "#lb0000ab-1";

    fn event(line: &str) -> Event<'_> {
        classify(line.as_bytes(), NICK, CHAN)
    }

    #[test]
    fn nicks_fit_nine_characters_up_to_a_million_clients() {
        assert_eq!(nick(0xabcdef, 0), "lcdef0");
        assert_eq!(nick(0xab, 71), "l00ab1z");
        assert!(nick(u32::MAX, 1_000_000).len() <= 9);
        assert_ne!(nick(1, 36), nick(1, 1));
    }

    #[test]
    fn encodes_registration_join_message_and_pong() {
        let mut out = Vec::new();
        register(NICK, &mut out);
        join(CHAN, &mut out);
        privmsg_prefix(CHAN, &mut out);
        out.extend_from_slice(b"hi\r\n");
        pong(b":irc.example", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NICK l00ab1z\r\nUSER lcb 0 * :loopchat bench\r\nJOIN #lb0000ab-1\r\n\
             PRIVMSG #lb0000ab-1 :hi\r\nPONG :irc.example\r\n"
        );
    }

    #[test]
    fn pings_are_answered_with_their_parameters() {
        assert_eq!(event("PING :irc.example"), Event::Ping(b":irc.example"));
        assert_eq!(event("PING 12345"), Event::Ping(b"12345"));
        assert_eq!(event(":srv PING :tok"), Event::Ping(b":tok"));
    }

    #[test]
    fn own_join_echo_or_end_of_names_means_joined() {
        assert_eq!(event(":srv 001 l00ab1z :Welcome"), Event::Welcome);
        assert_eq!(
            event(":l00ab1z!~lcb@127.0.0.1 JOIN :#lb0000ab-1"),
            Event::Joined
        );
        assert_eq!(
            event(":L00AB1Z!lcb@localhost JOIN #LB0000AB-1"),
            Event::Joined
        );
        assert_eq!(
            event(":srv 366 l00ab1z #lb0000ab-1 :End of NAMES list"),
            Event::Joined
        );
        // Someone else joining, or another channel, is not our join.
        assert_eq!(event(":other!u@h JOIN :#lb0000ab-1"), Event::Other);
        assert_eq!(event(":l00ab1z!u@h JOIN :#lb0000ab-2"), Event::Other);
        assert_eq!(event(":srv 366 l00ab1z #lb0000ab-2 :End"), Event::Other);
    }

    #[test]
    fn error_numerics_and_error_lines_are_errors() {
        assert_eq!(
            event(":srv 433 * l00ab1z :Nickname already in use"),
            Event::Error
        );
        assert_eq!(event(":srv 404 l00ab1z #x :Cannot send"), Event::Error);
        assert_eq!(event("ERROR :Closing connection"), Event::Error);
        assert_eq!(event(":srv 372 l00ab1z :- motd"), Event::Other);
        assert_eq!(
            event(":srv NOTICE * :*** Looking up your hostname"),
            Event::Other
        );
        assert_eq!(event(""), Event::Other);
        assert_eq!(event(":"), Event::Other);
    }

    #[test]
    fn errors_are_described_without_the_nick() {
        let d = |l: &str| describe(l.as_bytes());
        assert_eq!(
            d(":srv 433 * l1 :Nickname is already in use"),
            "433 Nickname is already in use"
        );
        assert_eq!(
            d(":srv 433 * l2 :Nickname is already in use"),
            "433 Nickname is already in use"
        );
        assert_eq!(d("ERROR :Closing connection"), "ERROR Closing connection");
        assert_eq!(d(":srv 471 l1 #c"), "471 l1 #c");
    }
}
