//! What a worker counts, and how the counts of several workers add up.
//!
//! [`Tally`] holds every count a worker reports (connects, joins, failures, sends,
//! deliveries, the latency histogram). [`Tally::record`] classifies one received
//! marker against the receiver's [`Inbox`]: new, reordered, duplicate, an echo of its
//! own message, or misrouted, and updates the counts and latency. It is pure: the
//! receive time is passed in. [`Tally::merge`] adds another worker's tally, so the
//! coordinator sums workers with one call.
//!
//! It does not own sockets, phases or the drain's outstanding count (the worker's), nor
//! what is derived from the totals (loss, throughput, problems: the coordinator's).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use hdrhistogram::errors::AdditionError;

use super::contract::Layout;
use super::marker::{Marker, Seen, SeqTrack};

/// Distinct server error lines kept as samples (per worker and in the total).
const MAX_ERROR_SAMPLES: usize = 5;

/// Latency histogram bounds: 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(h) => h,
        // The bounds are constants that satisfy the constructor's rules.
        Err(e) => unreachable!("histogram bounds: {e:?}"),
    }
}

/// What one worker counted, or (after [`Tally::merge`]) all of them.
#[derive(Debug)]
pub struct Tally {
    /// Connections established.
    pub connected: u64,
    /// Connections that failed.
    pub connect_failed: u64,
    /// Clients joined.
    pub joined: u64,
    /// Clients that could not join.
    pub join_failed: u64,
    /// Measured clients closed by the server after joining.
    pub closed_by_server: u64,
    /// Reasons for failures and closes, with counts.
    pub failures: BTreeMap<String, u64>,
    /// `ERROR:` lines received.
    pub server_errors: u64,
    /// First distinct `ERROR:` lines, at most [`MAX_ERROR_SAMPLES`].
    pub server_error_samples: Vec<String>,
    /// Messages sent.
    pub sent: u64,
    /// Messages skipped.
    pub send_skipped: u64,
    /// Deliveries expected by the receivers.
    pub expected: u64,
    /// Distinct deliveries.
    pub received: u64,
    /// Duplicates.
    pub duplicated: u64,
    /// Out of order.
    pub out_of_order: u64,
    /// Misrouted.
    pub misrouted: u64,
    /// Echoes of a sender's own messages.
    pub echoes: u64,
    /// Latency histogram, microseconds.
    pub latency: Histogram<u64>,
    /// When the last distinct delivery arrived.
    pub last_delivery: Option<Instant>,
    /// Stalled clients the server evicted.
    pub stalled_evicted: u64,
    /// TLS handshakes completed, by their time from the connect's start to the
    /// handshake's end, microseconds.
    pub handshake: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            connected: 0,
            connect_failed: 0,
            joined: 0,
            join_failed: 0,
            closed_by_server: 0,
            failures: BTreeMap::new(),
            server_errors: 0,
            server_error_samples: Vec::new(),
            sent: 0,
            send_skipped: 0,
            expected: 0,
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            misrouted: 0,
            echoes: 0,
            latency: new_histogram(),
            last_delivery: None,
            stalled_evicted: 0,
            handshake: new_histogram(),
        }
    }
}

/// What one received marker turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First copy, in order (possibly after a gap).
    New,
    /// First copy, but a later one from the same sender came first.
    Reordered,
    /// A copy already received.
    Duplicate,
    /// The receiver's own message, sent back to it.
    Echo,
    /// From a client that does not send to the receiver's room.
    Misrouted,
}

impl Delivery {
    /// Whether it counts as received (a first copy).
    pub fn is_distinct(self) -> bool {
        matches!(self, Delivery::New | Delivery::Reordered)
    }
}

/// What one receiving client has had from each sender of its room.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// The receiver's global index: a marker from it is an echo.
    owner: usize,
    /// The receiver's room: a marker from a sender of another room is misrouted.
    room: usize,
    /// One tracker per sender of `room`, by its place among the room's senders.
    tracks: Vec<SeqTrack>,
    /// Distinct deliveries.
    unique: u64,
}

impl Inbox {
    /// The inbox of client `owner`. A stalled client tracks no sender: it does not
    /// measure deliveries.
    pub fn new(owner: usize, layout: &Layout) -> Inbox {
        let room = layout.room_of(owner);
        let senders = if layout.is_stalled(owner) {
            0
        } else {
            layout.senders_in(room)
        };
        Inbox {
            owner,
            room,
            tracks: vec![SeqTrack::default(); senders],
            unique: 0,
        }
    }

    /// Distinct deliveries so far.
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

impl Tally {
    /// Classifies marker `m`, received by `inbox`'s owner at `at` (`at_us`: the same
    /// instant in microseconds since the run's epoch), and counts it. A first copy
    /// also records its latency from the intended send time.
    pub fn record(
        &mut self,
        layout: &Layout,
        inbox: &mut Inbox,
        m: Marker,
        at: Instant,
        at_us: u64,
    ) -> Delivery {
        let sender = m.sender as usize;
        if sender == inbox.owner {
            self.echoes += 1;
            return Delivery::Echo;
        }
        let track = match layout.sender_slot(sender) {
            Some((room, slot)) if room == inbox.room => inbox.tracks.get_mut(slot),
            _ => None,
        };
        let Some(track) = track else {
            self.misrouted += 1;
            return Delivery::Misrouted;
        };
        let delivery = match track.record(m.seq) {
            Seen::Duplicate => {
                self.duplicated += 1;
                return Delivery::Duplicate;
            }
            Seen::OutOfOrder => {
                self.out_of_order += 1;
                Delivery::Reordered
            }
            Seen::New => Delivery::New,
        };
        inbox.unique += 1;
        self.received += 1;
        self.latency
            .saturating_record(at_us.saturating_sub(m.sent_us).max(1));
        self.last_delivery = Some(at);
        delivery
    }

    /// Counts one failure or close under `why`.
    pub fn note_failure(&mut self, why: String) {
        *self.failures.entry(why).or_default() += 1;
    }

    /// Counts an `ERROR:` line from the server and keeps it as a sample if it is new
    /// and there is room.
    pub fn server_error(&mut self, line: &[u8]) {
        self.server_errors += 1;
        // A server that refuses every message sends one of these per message: look at
        // the text only while there is room for a sample, copy it only if it is one.
        if self.server_error_samples.len() < MAX_ERROR_SAMPLES {
            self.keep_sample(String::from_utf8_lossy(line));
        }
    }

    fn keep_sample(&mut self, text: Cow<'_, str>) {
        let samples = &mut self.server_error_samples;
        if samples.len() < MAX_ERROR_SAMPLES && !samples.iter().any(|s| *s == text) {
            samples.push(text.into_owned());
        }
    }

    /// Adds `other`'s counts to these. Every count is added even if the latency
    /// histograms cannot be (never with histograms from [`new_histogram`]); that is
    /// the error.
    pub fn merge(&mut self, other: &Tally) -> Result<(), AdditionError> {
        self.connected += other.connected;
        self.connect_failed += other.connect_failed;
        self.joined += other.joined;
        self.join_failed += other.join_failed;
        self.closed_by_server += other.closed_by_server;
        for (why, n) in &other.failures {
            *self.failures.entry(why.clone()).or_default() += n;
        }
        self.server_errors += other.server_errors;
        for s in &other.server_error_samples {
            self.keep_sample(Cow::Borrowed(s));
        }
        self.sent += other.sent;
        self.send_skipped += other.send_skipped;
        self.expected += other.expected;
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.misrouted += other.misrouted;
        self.echoes += other.echoes;
        self.stalled_evicted += other.stalled_evicted;
        self.last_delivery = self.last_delivery.max(other.last_delivery);
        let handshakes = self.handshake.add(&other.handshake);
        self.latency.add(&other.latency).and(handshakes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two rooms; senders 0..4, so room 0 has senders 0 and 2, room 1 has 1 and 3.
    const LAYOUT: Layout = Layout {
        clients: 10,
        rooms: 2,
        senders: 4,
    };

    fn from(sender: u64, seq: u64, sent_us: u64) -> Marker {
        Marker {
            sender,
            seq,
            sent_us,
        }
    }

    #[test]
    fn in_order_deliveries_count_once_with_their_latency() {
        let mut t = Tally::default();
        let mut inbox = Inbox::new(6, &LAYOUT);
        let at = Instant::now();
        assert_eq!(
            t.record(&LAYOUT, &mut inbox, from(2, 1, 100), at, 350),
            Delivery::New
        );
        let later = at + Duration::from_millis(1);
        assert_eq!(
            t.record(&LAYOUT, &mut inbox, from(2, 2, 200), later, 200),
            Delivery::New
        );
        assert_eq!((t.received, inbox.unique()), (2, 2));
        assert_eq!((t.duplicated, t.out_of_order, t.misrouted), (0, 0, 0));
        // 250 µs, and a same-instant arrival counts as the 1 µs floor.
        assert_eq!(t.latency.len(), 2);
        assert_eq!((t.latency.min(), t.latency.max()), (1, 250));
        assert_eq!(t.last_delivery, Some(later));
    }

    #[test]
    fn a_second_copy_is_a_duplicate_and_not_received_again() {
        let mut t = Tally::default();
        let mut inbox = Inbox::new(4, &LAYOUT);
        let at = Instant::now();
        t.record(&LAYOUT, &mut inbox, from(0, 1, 0), at, 10);
        let late = at + Duration::from_secs(1);
        assert_eq!(
            t.record(&LAYOUT, &mut inbox, from(0, 1, 0), late, 20),
            Delivery::Duplicate
        );
        assert_eq!((t.received, t.duplicated, inbox.unique()), (1, 1, 1));
        assert_eq!(t.latency.len(), 1);
        assert_eq!(t.last_delivery, Some(at), "a duplicate is not a delivery");
    }

    #[test]
    fn a_late_first_copy_is_received_and_counted_as_reordered() {
        let mut t = Tally::default();
        let mut inbox = Inbox::new(5, &LAYOUT);
        let at = Instant::now();
        assert_eq!(
            t.record(&LAYOUT, &mut inbox, from(3, 2, 0), at, 5),
            Delivery::New
        );
        let d = t.record(&LAYOUT, &mut inbox, from(3, 1, 0), at, 6);
        assert_eq!(d, Delivery::Reordered);
        assert!(d.is_distinct());
        assert_eq!((t.received, t.out_of_order, inbox.unique()), (2, 1, 2));
        // Senders are tracked apart: sender 1's first message is new, not reordered.
        assert_eq!(
            t.record(&LAYOUT, &mut inbox, from(1, 1, 0), at, 7),
            Delivery::New
        );
    }

    #[test]
    fn markers_from_senders_the_receiver_does_not_follow_are_not_deliveries() {
        let mut t = Tally::default();
        let mut inbox = Inbox::new(2, &LAYOUT);
        let at = Instant::now();
        // Sender 1 is in room 1; client 8 is in room 0 but does not send.
        let other_room = t.record(&LAYOUT, &mut inbox, from(1, 1, 0), at, 1);
        let not_a_sender = t.record(&LAYOUT, &mut inbox, from(8, 1, 0), at, 1);
        let far_away = t.record(&LAYOUT, &mut inbox, from(u64::MAX, 1, 0), at, 1);
        assert_eq!(
            [other_room, not_a_sender, far_away],
            [Delivery::Misrouted; 3]
        );
        assert_eq!(
            t.record(&LAYOUT, &mut inbox, from(2, 1, 0), at, 1),
            Delivery::Echo
        );
        assert_eq!((t.misrouted, t.echoes, t.received), (3, 1, 0));
        assert!(!Delivery::Echo.is_distinct());
        assert_eq!(inbox.unique(), 0);
        assert!(t.latency.is_empty() && t.last_delivery.is_none());
    }

    #[test]
    fn merge_adds_counts_failures_samples_and_histograms() {
        let at = Instant::now();
        let mut a = Tally {
            connected: 3,
            sent: 10,
            received: 7,
            last_delivery: Some(at),
            ..Tally::default()
        };
        a.note_failure("connect: refused".into());
        for i in 0..4 {
            a.server_error(format!("ERROR:{i}").as_bytes());
        }
        a.latency.saturating_record(100);
        let mut b = Tally {
            connected: 2,
            joined: 2,
            expected: 9,
            duplicated: 1,
            last_delivery: Some(at + Duration::from_secs(1)),
            ..Tally::default()
        };
        b.note_failure("connect: refused".into());
        b.note_failure("join: timed out".into());
        for line in ["ERROR:3", "ERROR:9", "ERROR:10"] {
            b.server_error(line.as_bytes());
        }
        b.latency.saturating_record(300);

        let mut total = Tally::default();
        total.merge(&a).unwrap();
        total.merge(&b).unwrap();
        assert_eq!((total.connected, total.joined), (5, 2));
        assert_eq!((total.sent, total.expected, total.received), (10, 9, 7));
        assert_eq!(total.duplicated, 1);
        assert_eq!(total.failures["connect: refused"], 2);
        assert_eq!(total.failures["join: timed out"], 1);
        assert_eq!(total.server_errors, 7);
        // Distinct samples, first seen first, five at most.
        assert_eq!(
            total.server_error_samples,
            ["ERROR:0", "ERROR:1", "ERROR:2", "ERROR:3", "ERROR:9"]
        );
        assert_eq!(total.latency.len(), 2);
        assert_eq!(total.latency.max(), 300);
        assert_eq!(total.last_delivery, b.last_delivery);
    }
}
