//! Reading: each connection's input within a budget per loop turn, split into lines,
//! rate-limited, parsed and applied to the hub.
//!
//! The budget is what keeps one client from holding the loop: a connection gets so many
//! bytes and lines per turn, and what it leaves is read next turn from the ready list
//! (round-robin, without waiting for a readiness event). Bytes thrown away from an
//! over-long line cost rate-limit tokens like lines do.

use std::time::Instant;

use log::debug;

use super::history::Delivery;
use super::{READ_CHUNK, Server};
use crate::codec::{Command, LineError, ParseError};
use crate::conn::{Conn, ReadOutcome, State};
use crate::hub::{ConnId, Next, Outbox};
use crate::net::IpKey;
use crate::notice::Notice;
use crate::rate::Verdict;

/// Bytes one connection may have read per loop turn (telnet filtering and bytes thrown
/// away from over-long lines count too). One chunk: splitting it costs ~40 µs, so a
/// client blasting an endless line takes that much of a turn, not all of it.
const READ_BUDGET: usize = READ_CHUNK;

/// Lines one connection may have handled per loop turn. A line can be a broadcast to a
/// room of a thousand (~5 µs); 32 of them keep one sender's share of a turn well under
/// a millisecond, while a client that pastes a few lines is served in one turn.
const LINE_BUDGET: usize = 32;

/// TLS handshake steps served per loop turn, over all connections. A full handshake
/// (ECDHE and an ECDSA P-256 signature with ring) costs about 150 µs of CPU, so 16 keep
/// a storm of them to a few milliseconds a turn; the rest wait on the ready list.
pub(super) const HANDSHAKE_BUDGET: usize = 16;

impl Server {
    /// Reads and handles `id`'s input within one turn's budget (bytes and lines).
    /// What the budget leaves is read next turn from the ready list, without waiting
    /// for a readiness event: mio is edge-triggered, and the socket may not signal
    /// again. `exhaustive`: read on past a short read (the peer has closed, or the
    /// turn is serving left-over input), to `WouldBlock` or the end of input.
    pub(super) fn serve_input(&mut self, id: ConnId, exhaustive: bool, now: Instant) {
        if self.conns.get(id).is_some_and(Conn::is_waiting) {
            // Its input stays in the kernel until the answer it waits for comes; the
            // answer puts it on the ready list.
            return;
        }
        if self.conns.get(id).is_some_and(Conn::is_handshaking) {
            // Handshakes cost public-key operations: a storm of them shares the turn
            // with chat instead of taking all of it.
            if self.handshakes_left == 0 {
                return self.conns.schedule_read(id);
            }
            self.handshakes_left -= 1;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut bytes_left = READ_BUDGET;
        let mut lines_left = LINE_BUDGET;
        let more = loop {
            let Some(conn) = self.conns.get_mut(id) else {
                break false;
            };
            if conn.state() == State::Closed {
                break false;
            }
            // A line that waits for another thread's answer (a password check, a name
            // claim) holds the rest: a transport that hands over one message per read
            // (WebSocket) must not have its next line handled meanwhile. The answer
            // puts the connection back on the ready list.
            if conn.is_waiting() {
                break false;
            }
            let held = conn.take_unparsed();
            if !held.is_empty() {
                if !self.handle_input(id, &held, &mut lines_left, now) {
                    break true;
                }
                continue;
            }
            if bytes_left == 0 {
                break true;
            }
            let want = bytes_left.min(buf.len());
            match conn.read_into(&mut buf[..want], now) {
                ReadOutcome::Data { len, raw, drained } => {
                    // A transport may take a little more than offered (a TLS record):
                    // the budget ends at zero, never wraps.
                    bytes_left = bytes_left.saturating_sub(raw);
                    // Input the telnet filter swallowed costs tokens like an endless
                    // line: a subnegotiation that never ends is read without a line.
                    let swallowed = conn.take_swallowed(self.config.max_line);
                    self.conns.stats.bytes_in += raw as u64;
                    if swallowed > 0 {
                        self.charge(id, swallowed, now);
                    }
                    if !self.handle_input(id, &buf[..len], &mut lines_left, now) {
                        break true;
                    }
                    if drained && !exhaustive {
                        break false;
                    }
                }
                ReadOutcome::Eof => {
                    self.on_end_of_input(id, now);
                    break false;
                }
                ReadOutcome::WouldBlock => break false,
                ReadOutcome::Failed(e) => {
                    debug!("{id} read error: {e}");
                    self.conns.close(id, None);
                    break false;
                }
            }
        };
        self.read_buf = buf;
        if more {
            self.conns.schedule_read(id);
        }
        // A TLS handshake answers what it read with records of its own.
        if self.conns.get(id).is_some_and(Conn::transport_wants_write) {
            self.conns.schedule_flush(id);
        }
    }

    /// Splits `input` into lines and handles at most `lines_left` of them; the rest is
    /// held in the connection for the next turn. Returns whether all was used.
    fn handle_input(
        &mut self,
        id: ConnId,
        input: &[u8],
        lines_left: &mut usize,
        now: Instant,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return true;
        };
        let mut reader = conn.take_reader();
        let mut lines = 0;
        let used = reader.feed_some(input, self.config.max_line, *lines_left, |line| {
            lines += 1;
            self.on_line(id, line, now);
            // A line that waits for another thread (a password check) holds the rest.
            !self.conns.get(id).is_some_and(Conn::is_waiting)
        });
        *lines_left -= lines;
        let discarded = reader.take_discarded();
        if let Some(conn) = self.conns.get_mut(id) {
            conn.put_reader(reader);
            conn.keep_unparsed(&input[used..]);
        }
        if discarded > 0 {
            self.charge_discarded(id, discarded, now);
        }
        used == input.len()
    }

    /// The peer ended its input. An open connection still gets what it is owed, then
    /// closes; one that was lingering for this closes now, cleanly.
    fn on_end_of_input(&mut self, id: ConnId, now: Instant) {
        debug!("{id} closed its end");
        match self.conns.get(id).map(Conn::state) {
            Some(State::Open) if self.conns.drain(id) => {
                self.set_deadline(id, now.checked_add(self.config.linger));
            }
            Some(State::Lingering) => self.remove_now(id, now),
            _ => {}
        }
    }

    fn on_line(&mut self, id: ConnId, line: Result<&[u8], LineError>, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.state() != State::Open {
            return;
        }
        let first = conn.note_line();
        self.conns.stats.lines_in += 1;
        if first {
            // The registration window ends; the idle window starts.
            let idle = (!self.config.idle_timeout.is_zero())
                .then(|| now.checked_add(self.config.idle_timeout))
                .flatten();
            self.set_deadline(id, idle);
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if let Ok(line) = line
            && conn.ignores(line)
        {
            return;
        }
        let parsed = match line {
            Ok(line) => conn.parse(line),
            Err(LineError::TooLong) => Err(ParseError::TooLong),
        };
        // Every line but a LEAVE costs a token: renames and room hopping cannot flood a
        // room with notices, and bad lines cannot buy an error reply each for free.
        if !matches!(parsed, Ok(Command::Leave(_))) && !self.take_token(id, true, now) {
            return;
        }
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(ParseError::TooLong) => {
                let max = self.config.max_line;
                return self.conns.notice(id, Notice::LineTooLong { max });
            }
            Err(e) => return self.conns.notice(id, Notice::Parse(e)),
        };
        if self.gate(id, &cmd, now) || self.cluster_gate(id, &cmd, now) {
            return;
        }
        let mut out = Delivery::new(
            &mut self.conns,
            &mut self.history,
            &mut self.asked,
            &mut self.cluster,
        );
        let next = self.hub.apply(id, cmd, &mut out);
        self.arm_replay_timers(now);
        if next == Next::Leave {
            if let Command::Leave(reason) = cmd {
                debug!("{id} leaves: {reason:?}");
            }
            self.last_words(id, Notice::Goodbye, now);
        }
    }

    /// Takes one message token from `id`: from its own limit, then from its
    /// address's (checked in that order, so a connection's dropped lines do not use up
    /// tokens its neighbours share). Without one, the line is dropped and the sender
    /// told when `reply` is set; the first drop of an episode earns the address a
    /// strike (see [`crate::rate::MessageLimit`]), which may ban it. Returns whether
    /// the line may go on.
    fn take_token(&mut self, id: ConnId, reply: bool, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        let ip = conn.peer().ip();
        if self.abuse.is_exempt(ip) {
            return true;
        }
        let (verdict, notice) =
            match conn
                .limit_mut()
                .check(self.config.rate, self.config.burst, now)
            {
                Verdict::Pass => (
                    self.abuse.take_message(ip, now),
                    Notice::AddressRateLimited {
                        rate: self.config.ip_rate,
                    },
                ),
                drop => (
                    drop,
                    Notice::RateLimited {
                        rate: self.config.rate,
                    },
                ),
            };
        let Verdict::Drop { strike } = verdict else {
            return true;
        };
        self.conns.stats.rate_limited += 1;
        if strike && let Some(ban) = self.abuse.strike(ip, now) {
            self.ban(IpKey::of(ip), ban, now);
        } else if reply {
            self.conns.notice(id, notice);
        }
        false
    }

    /// Bytes thrown away from over-long lines cost tokens like lines do: one per
    /// `--max-line` bytes (rounded up), so an endless line runs into the rate limit and
    /// the strikes like a flood of lines would.
    fn charge_discarded(&mut self, id: ConnId, bytes: usize, now: Instant) {
        let tokens = bytes.div_ceil(self.config.max_line.max(1));
        self.charge(id, tokens, now);
    }

    /// Takes `tokens` from `id` without a reply, stopping at the first drop (which
    /// may strike).
    fn charge(&mut self, id: ConnId, tokens: usize, now: Instant) {
        for _ in 0..tokens {
            if !self.take_token(id, false, now) {
                break;
            }
        }
    }
}
