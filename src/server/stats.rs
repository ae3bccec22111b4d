//! The server's counters and the periodic summary line: its format **and** its parser,
//! in one place, so the bench (which reads the line from a server's log) and the
//! server (which writes it) cannot drift apart. A round-trip test holds them together.

use std::fmt;
use std::time::Duration;

/// Monotonic counters since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections taken.
    pub accepted: u64,
    /// Connections refused (full, banned, per-IP limits).
    pub refused: u64,
    /// Connections removed.
    pub closed: u64,
    /// Complete lines read (including bad ones).
    pub lines_in: u64,
    /// Events queued to a recipient.
    pub deliveries: u64,
    /// `write` calls on client sockets.
    pub writes: u64,
    /// Connections closed by the server for a reason worth an `info` line.
    pub evictions: u64,
    /// Lines dropped by a rate limit.
    pub rate_limited: u64,
    /// Bytes read from client sockets.
    pub bytes_in: u64,
    /// Bytes of output written to client sockets (before TLS).
    pub bytes_out: u64,
}

impl Stats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            accepted: self.accepted - earlier.accepted,
            refused: self.refused - earlier.refused,
            closed: self.closed - earlier.closed,
            lines_in: self.lines_in - earlier.lines_in,
            deliveries: self.deliveries - earlier.deliveries,
            writes: self.writes - earlier.writes,
            evictions: self.evictions - earlier.evictions,
            rate_limited: self.rate_limited - earlier.rate_limited,
            bytes_in: self.bytes_in - earlier.bytes_in,
            bytes_out: self.bytes_out - earlier.bytes_out,
        }
    }
}

/// One summary line: the state now and the counters over the last interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Connections open.
    pub clients: usize,
    /// Connections with a name.
    pub named: usize,
    /// Rooms that exist.
    pub rooms: usize,
    /// The interval `delta` covers.
    pub interval: Duration,
    /// Counters over the interval.
    pub delta: Stats,
    /// Bans held.
    pub bans: usize,
    /// Room messages accepted but not stored since start (store queue full, failed
    /// commits).
    pub unsaved: u64,
}

/// What every summary line starts with (after the logger's prefix).
pub const SUMMARY_TAG: &str = "summary: ";

impl Summary {
    /// `write` calls per delivery over the interval (0 without deliveries).
    pub fn writes_per_delivery(&self) -> f64 {
        if self.delta.deliveries == 0 {
            0.0
        } else {
            self.delta.writes as f64 / self.delta.deliveries as f64
        }
    }

    /// Reads a summary back from a log line that contains one (anything may precede
    /// [`SUMMARY_TAG`]); `None` if the line holds none. The interval is read as whole
    /// milliseconds.
    pub fn parse(line: &str) -> Option<Summary> {
        let body = &line[line.find(SUMMARY_TAG)? + SUMMARY_TAG.len()..];
        let mut nums = Numbers(body);
        let clients = nums.next_before(" clients (")?;
        let named = nums.next_before(" named), ")?;
        let rooms = nums.next_before(" rooms; last ")?;
        let interval_ms = nums.next_before("ms: ")?;
        let accepted = nums.next_before(" accepted, ")?;
        let refused = nums.next_before(" refused, ")?;
        let closed = nums.next_before(" closed, ")?;
        let lines_in = nums.next_before(" lines in, ")?;
        let deliveries = nums.next_before(" deliveries, ")?;
        let writes = nums.next_before(" writes (")?;
        nums.skip_past(" per delivery), ")?;
        let rate_limited = nums.next_before(" rate-limited, ")?;
        let evictions = nums.next_before(" evicted; ")?;
        let bans = nums.next_before(" bans; ")?;
        let unsaved = nums.next_before(" unsaved")?;
        Some(Summary {
            clients: clients as usize,
            named: named as usize,
            rooms: rooms as usize,
            interval: Duration::from_millis(interval_ms),
            delta: Stats {
                accepted,
                refused,
                closed,
                lines_in,
                deliveries,
                writes,
                evictions,
                rate_limited,
                // The summary line leaves bytes to the metrics endpoint.
                ..Stats::default()
            },
            bans: bans as usize,
            unsaved,
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.delta;
        write!(
            f,
            "{SUMMARY_TAG}{} clients ({} named), {} rooms; last {}ms: {} accepted, {} refused, \
             {} closed, {} lines in, {} deliveries, {} writes ({:.3} per delivery), \
             {} rate-limited, {} evicted; {} bans; {} unsaved",
            self.clients,
            self.named,
            self.rooms,
            self.interval.as_millis(),
            d.accepted,
            d.refused,
            d.closed,
            d.lines_in,
            d.deliveries,
            d.writes,
            self.writes_per_delivery(),
            d.rate_limited,
            d.evictions,
            self.bans,
            self.unsaved,
        )
    }
}

/// A cursor over a summary line: each call takes the number that stands right before
/// the next occurrence of a literal.
struct Numbers<'a>(&'a str);

impl Numbers<'_> {
    fn next_before(&mut self, literal: &str) -> Option<u64> {
        let at = self.0.find(literal)?;
        let value = self.0[..at].trim().parse().ok()?;
        self.0 = &self.0[at + literal.len()..];
        Some(value)
    }

    fn skip_past(&mut self, literal: &str) -> Option<()> {
        let at = self.0.find(literal)?;
        self.0 = &self.0[at + literal.len()..];
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_as_written() {
        let summary = Summary {
            clients: 1000,
            named: 990,
            rooms: 3,
            interval: Duration::from_secs(60),
            delta: Stats {
                accepted: 10,
                refused: 2,
                closed: 4,
                lines_in: 5000,
                deliveries: 4_995_000,
                writes: 220_000,
                evictions: 1,
                rate_limited: 7,
                ..Stats::default()
            },
            bans: 2,
            unsaved: 3,
        };
        let logged = format!("[2026-11-30T08:00:00Z INFO  loopchat::server] {summary}");
        assert_eq!(Summary::parse(&logged), Some(summary));
        assert!(logged.contains("(0.044 per delivery)"));
    }

    #[test]
    fn lines_without_a_summary_read_as_none() {
        assert_eq!(Summary::parse("INFO listening on 127.0.0.1:8080"), None);
        assert_eq!(Summary::parse("summary: garbled"), None);
    }

    #[test]
    fn since_subtracts_field_by_field() {
        let a = Stats {
            writes: 5,
            deliveries: 9,
            ..Stats::default()
        };
        let b = Stats {
            writes: 7,
            deliveries: 19,
            ..a
        };
        assert_eq!(b.since(&a).writes, 2);
        assert_eq!(b.since(&a).deliveries, 10);
    }
}
