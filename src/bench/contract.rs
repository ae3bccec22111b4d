//! The contract between the coordinator (`bench::run_bench`) and its workers: the
//! phases of a run, the state they share while it runs, and who is where.
//!
//! The coordinator announces a [`Phase`] in [`Shared`] and wakes the workers (token
//! [`WAKE`]); each worker does the phase's work and reports it done in its
//! [`Progress`]; when all have, the coordinator announces the next. At `Finish` each
//! worker hands back what it counted. [`Layout`] is the numbering
//! both sides rely on: which worker owns a client, which room it is in, who sends.
//!
//! This module owns no sockets and no timing: what a phase does is the worker's, when
//! it starts and how long it may take is the coordinator's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Acquire, Ordering::Release};
use std::time::{Duration, Instant};

use mio::Token;

use super::config::BenchConfig;

/// The phases of a run, in order. The coordinator moves every worker to the next one
/// when all have finished the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Not started.
    Start = 0,
    /// Open the connections.
    Connect = 1,
    /// Take names and rooms.
    Join = 2,
    /// Hold the connections (the coordinator samples server memory).
    Idle = 3,
    /// Send at the set rate.
    Steady = 4,
    /// Wait for outstanding deliveries.
    Drain = 5,
    /// Read the stalled clients to see whether the server evicted them.
    Stall = 6,
    /// Close everything and report.
    Finish = 7,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Connect,
            2 => Phase::Join,
            3 => Phase::Idle,
            4 => Phase::Steady,
            5 => Phase::Drain,
            6 => Phase::Stall,
            7 => Phase::Finish,
            _ => Phase::Start,
        }
    }

    /// Lower-case name, for progress lines and messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Connect => "connect",
            Phase::Join => "join",
            Phase::Idle => "idle",
            Phase::Steady => "load",
            Phase::Drain => "drain",
            Phase::Stall => "stalled",
            Phase::Finish => "finish",
        }
    }
}

/// The waker's token in every worker's poll; clients use their local index.
pub const WAKE: Token = Token(usize::MAX);

/// How long the stall phase reads the stalled clients at most (the coordinator bounds
/// the phase with it too).
pub const STALL_LIMIT: Duration = Duration::from_secs(3);

/// State every worker and the coordinator share.
#[derive(Debug)]
pub struct Shared {
    /// The current phase (a `Phase` as u8).
    phase: AtomicU8,
    /// Set by the coordinator to cut the run short (Ctrl-C, server gone).
    pub abort: AtomicBool,
    /// The run's time zero: send times are microseconds since this.
    pub epoch: Instant,
    /// Start of the steady phase, microseconds since `epoch` (set before the phase).
    pub steady_start_us: AtomicU64,
    /// Messages sent per room (each worker adds its senders' counts after the load).
    pub room_sent: Vec<AtomicU64>,
    /// Per-worker counters the coordinator reads for progress and phase completion.
    pub workers: Vec<Progress>,
    /// The first connect or join failure any worker saw, for the coordinator's message
    /// when nobody got in.
    pub first_failure: Mutex<Option<String>>,
}

impl Shared {
    /// Shared state for `threads` workers and `rooms` rooms.
    pub fn new(threads: usize, rooms: usize) -> Shared {
        Shared {
            phase: AtomicU8::new(Phase::Start as u8),
            abort: AtomicBool::new(false),
            epoch: Instant::now(),
            steady_start_us: AtomicU64::new(0),
            room_sent: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            workers: (0..threads).map(|_| Progress::default()).collect(),
            first_failure: Mutex::new(None),
        }
    }

    /// The current phase. Acquire pairs with [`Shared::set_phase`]: what the coordinator
    /// wrote before announcing the phase (`steady_start_us`, `room_sent`) is visible.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Acquire))
    }

    /// Announces the next phase (the caller then wakes the workers).
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Release);
    }
}

/// One worker's counters, updated once per loop iteration.
#[derive(Debug, Default)]
pub struct Progress {
    /// The last phase this worker finished.
    pub done: AtomicU8,
    /// When it finished it, microseconds since the epoch.
    pub done_at_us: AtomicU64,
    /// Connections established.
    pub connected: AtomicU64,
    /// Connections that failed.
    pub connect_failed: AtomicU64,
    /// Clients joined.
    pub joined: AtomicU64,
    /// Open connections.
    pub live: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Distinct deliveries received.
    pub received: AtomicU64,
}

impl Progress {
    /// The last phase this worker finished. Acquire pairs with the worker's release
    /// store, so `done_at_us` and its `room_sent` additions are visible.
    pub fn done_phase(&self) -> Phase {
        Phase::from_u8(self.done.load(Acquire))
    }
}

/// Who is where, by global client number.
///
/// Client `i` lives in worker `i % threads`. Measured client `i` (below `clients`) is in
/// room `i % rooms`; senders are clients `0..senders`, so sender `s` is the
/// `s / rooms`-th sender of room `s % rooms`. Stalled clients come after the measured
/// ones and are spread over the rooms the same way; they never send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Measured clients.
    pub clients: usize,
    /// Rooms (at least 1).
    pub rooms: usize,
    /// Senders (at most `clients`).
    pub senders: usize,
}

impl Layout {
    /// The layout of a run with `config`.
    pub fn of(config: &BenchConfig) -> Layout {
        Layout {
            clients: config.clients,
            rooms: config.rooms,
            senders: config.senders,
        }
    }

    /// Whether client `id` is a stalled one (joins, never reads).
    pub fn is_stalled(&self, id: usize) -> bool {
        id >= self.clients
    }

    /// The room client `id` joins.
    pub fn room_of(&self, id: usize) -> usize {
        if self.is_stalled(id) {
            (id - self.clients) % self.rooms
        } else {
            id % self.rooms
        }
    }

    /// How many senders room `room` has: `room, room + rooms, …` below `senders`.
    pub fn senders_in(&self, room: usize) -> usize {
        if room >= self.senders {
            0
        } else {
            (self.senders - room).div_ceil(self.rooms)
        }
    }

    /// Sender `id`'s room and its place among that room's senders, or `None` if `id`
    /// does not send.
    pub fn sender_slot(&self, id: usize) -> Option<(usize, usize)> {
        (id < self.senders).then(|| (id % self.rooms, id / self.rooms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_spread_over_the_rooms_in_turn() {
        let l = Layout {
            clients: 10,
            rooms: 3,
            senders: 5,
        };
        // Senders 0..5: rooms 0, 1, 2, 0, 1.
        assert_eq!(
            (l.senders_in(0), l.senders_in(1), l.senders_in(2)),
            (2, 2, 1)
        );
        assert_eq!(l.sender_slot(3), Some((0, 1)));
        assert_eq!(l.sender_slot(4), Some((1, 1)));
        assert_eq!(l.sender_slot(5), None);
        assert_eq!((l.room_of(7), l.room_of(10), l.room_of(12)), (1, 0, 2));
        assert!(l.is_stalled(10) && !l.is_stalled(9));
    }

    #[test]
    fn phases_round_trip_through_their_number() {
        for p in [
            Phase::Start,
            Phase::Connect,
            Phase::Join,
            Phase::Idle,
            Phase::Steady,
            Phase::Drain,
            Phase::Stall,
            Phase::Finish,
        ] {
            assert_eq!(Phase::from_u8(p as u8), p);
        }
    }
}
