//! What every benchmark message carries, and what a receiver learns from it.
//!
//! A message text starts with a marker `lcb.<run>.<sender>.<seq>.<micros>.` and is padded
//! with letters to `--payload` bytes. `<run>` keeps two harness runs against one server
//! apart, `<micros>` is the intended send time since the run's epoch (so latency includes
//! any time the message waited in the harness: no coordinated omission). The marker is
//! found anywhere in a received line, so it survives servers that decorate lines
//! (`<bob> lcb…`, `[12:00] bob: lcb…`).
//!
//! [`SeqTrack`] follows one sender as seen by one receiver: new, duplicate or out of
//! order, in constant space while delivery is in order.

use std::io::Write;

/// Prefix of every marker; the run id follows.
const PREFIX: &[u8] = b"lcb.";

/// Padding alphabet: letters only, so it never contains a marker or a line end.
const PAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// The run-specific needle receivers look for: `lcb.<run>.`.
#[derive(Debug, Clone)]
pub struct Needle {
    bytes: Vec<u8>,
}

/// One decoded marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Global index of the sending client.
    pub sender: u64,
    /// Per-sender sequence number, from 1.
    pub seq: u64,
    /// Intended send time, microseconds since the run's epoch.
    pub sent_us: u64,
}

impl Needle {
    /// The needle for run id `run` (six hex digits are used).
    pub fn new(run: u32) -> Needle {
        Needle {
            bytes: format!("lcb.{:06x}.", run & 0xff_ffff).into_bytes(),
        }
    }

    /// Appends a message text of at least `payload` bytes (exactly `payload` when that
    /// is longer than the marker) to `out`.
    pub fn encode(&self, m: Marker, payload: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{}.{}.{}.", m.sender, m.seq, m.sent_us);
        let pad = payload.saturating_sub(out.len() - start);
        out.extend(PAD.iter().cycle().take(pad));
    }

    /// Finds and decodes this run's marker in `line`. Tries the frame position first
    /// (`SAY:<from>:<marker>`), then searches the whole line.
    pub fn find(&self, line: &[u8]) -> Option<Marker> {
        if let Some(rest) = line.strip_prefix(b"SAY:")
            && let Some(colon) = rest.iter().position(|&b| b == b':')
        {
            let text = &rest[colon + 1..];
            if let Some(after) = text.strip_prefix(&self.bytes[..]) {
                return parse_fields(after);
            }
        }
        let n = self.bytes.len();
        let mut from = 0;
        while from + n <= line.len() {
            let i = from + line[from..].iter().position(|&b| b == PREFIX[0])?;
            if line[i..].starts_with(&self.bytes) {
                return parse_fields(&line[i + n..]);
            }
            from = i + 1;
        }
        None
    }
}

/// Parses `<sender>.<seq>.<micros>.` at the start of `s`.
fn parse_fields(s: &[u8]) -> Option<Marker> {
    let (sender, s) = parse_num(s)?;
    let (seq, s) = parse_num(s)?;
    let (sent_us, _) = parse_num(s)?;
    Some(Marker {
        sender,
        seq,
        sent_us,
    })
}

/// Parses decimal digits up to a `.`; returns the value and the rest after the dot.
fn parse_num(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'0'..=b'9' if i < 20 => {
                v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            b'.' if i > 0 => return Some((v, &s[i + 1..])),
            _ => return None,
        }
    }
    None
}

/// How one delivery relates to what the receiver already had from that sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First copy, in order (possibly after a gap).
    New,
    /// First copy, but a later sequence number arrived before it.
    OutOfOrder,
    /// Already received.
    Duplicate,
}

/// Most missing ranges remembered per sender and receiver. Past this, the oldest gap is
/// forgotten (a late copy of it then counts as a duplicate): memory stays bounded even
/// when a server loses every other message.
const MAX_GAPS: usize = 256;

/// One receiver's view of one sender's sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqTrack {
    /// Highest sequence number seen (0: none yet).
    max: u64,
    /// Ranges `[a, b]` below `max` not seen yet, oldest first. Empty while in order.
    gaps: Vec<(u64, u64)>,
}

impl SeqTrack {
    /// Records `seq` (from 1) and classifies it.
    pub fn record(&mut self, seq: u64) -> Seen {
        if seq > self.max {
            if seq > self.max + 1 {
                if self.gaps.len() == MAX_GAPS {
                    self.gaps.remove(0);
                }
                self.gaps.push((self.max + 1, seq - 1));
            }
            self.max = seq;
            return Seen::New;
        }
        let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq <= b) else {
            return Seen::Duplicate;
        };
        let (a, b) = self.gaps[i];
        match (seq == a, seq == b) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].0 = seq + 1,
            (false, true) => self.gaps[i].1 = seq - 1,
            (false, false) => {
                self.gaps[i].1 = seq - 1;
                self.gaps.insert(i + 1, (seq + 1, b));
            }
        }
        Seen::OutOfOrder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_pads_to_payload() {
        let n = Needle::new(0xabc);
        let m = Marker {
            sender: 17,
            seq: 42,
            sent_us: 1_234_567,
        };
        let mut text = Vec::new();
        n.encode(m, 64, &mut text);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with(b"lcb.000abc.17.42.1234567.abc"));
        let mut frame = b"SAY:lb-1:".to_vec();
        frame.extend_from_slice(&text);
        assert_eq!(n.find(&frame), Some(m));
        let mut decorated = b"[10:00] <lb-1> ".to_vec();
        decorated.extend_from_slice(&text);
        assert_eq!(n.find(&decorated), Some(m));
    }

    #[test]
    fn other_runs_and_garbage_are_ignored() {
        let n = Needle::new(1);
        let mut text = Vec::new();
        Needle::new(2).encode(
            Marker {
                sender: 1,
                seq: 1,
                sent_us: 1,
            },
            10,
            &mut text,
        );
        assert_eq!(n.find(&text), None);
        assert_eq!(n.find(b"SAY:x:lcb.000001.1.2"), None);
        assert_eq!(n.find(b"lcb.000001.x.2.3."), None);
        assert_eq!(n.find(b""), None);
    }

    #[test]
    fn tracks_duplicates_and_reordering() {
        let mut t = SeqTrack::default();
        assert_eq!(t.record(1), Seen::New);
        assert_eq!(t.record(1), Seen::Duplicate);
        assert_eq!(t.record(4), Seen::New);
        assert_eq!(t.record(3), Seen::OutOfOrder);
        assert_eq!(t.record(3), Seen::Duplicate);
        assert_eq!(t.record(2), Seen::OutOfOrder);
        assert_eq!(t.record(5), Seen::New);
        assert!(t.gaps.is_empty());
        assert_eq!(t.record(10), Seen::New);
        assert_eq!(t.record(7), Seen::OutOfOrder);
        assert_eq!(t.gaps, vec![(6, 6), (8, 9)]);
    }
}
