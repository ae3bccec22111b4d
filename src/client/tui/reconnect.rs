//! The connection's life as the full-screen client sees it: connecting, connected,
//! waiting to try again, stopped, leaving, done; and when to try again (exponential
//! backoff with jitter).
//!
//! This module owns states and deadlines only. It opens no socket: it says when a new
//! connection is due ([`Reconnect::tick`]) and the caller starts one. Every attempt gets
//! a new generation, so news from an older connection thread can never be mistaken for
//! the current one's. Time is passed in, and the jitter comes from a seeded generator,
//! so the tests are exact and need no sleeps.

use std::time::{Duration, Instant};

/// The first wait after a loss. Short: a server restart is usually over in a moment.
pub(super) const FIRST_DELAY: Duration = Duration::from_millis(500);

/// The longest wait between attempts: a server that is down for an hour is tried about
/// twice a minute, which costs it nothing and finds it soon after it returns.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(30);

/// A connection that stayed up this long was a real session: the next loss starts the
/// backoff from [`FIRST_DELAY`] again. A server that accepts and drops at once (a ban,
/// a full server) keeps the waits growing instead.
pub(super) const STABLE: Duration = Duration::from_secs(10);

/// Where the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// A connection thread is connecting; `attempt` 0 is the first connection, then 1,
    /// 2, … since the last stable one.
    Connecting {
        /// Which try this is.
        attempt: u32,
    },
    /// Connected since `since`.
    Connected {
        /// When the connection came up.
        since: Instant,
    },
    /// Lost (or a try failed); the next try is at `until`.
    Waiting {
        /// When to try again.
        until: Instant,
        /// What happened, for the person.
        why: String,
        /// The try that comes next.
        attempt: u32,
    },
    /// Not trying again on its own: the server closed the connection and said why
    /// (kicked, banned, logged in elsewhere). `/reconnect` tries anyway.
    Stopped {
        /// The server's reason.
        why: String,
    },
    /// `LEAVE:` is sent; waiting, at most until `until`, for the server to close.
    Leaving {
        /// When to stop waiting.
        until: Instant,
    },
    /// The session is over: the client exits.
    Done,
}

/// What [`Reconnect::tick`] found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Start a connection with this generation.
    Connect(u64),
}

/// The connection state and the backoff between attempts.
#[derive(Debug)]
pub(super) struct Reconnect {
    state: State,
    /// The current connection thread's generation; news from any other is stale.
    generation: u64,
    backoff: Backoff,
}

impl Reconnect {
    /// Connecting, generation 1 (the first connection), jitter seeded with `seed`.
    pub(super) fn new(seed: u64) -> Reconnect {
        Reconnect {
            state: State::Connecting { attempt: 0 },
            generation: 1,
            backoff: Backoff::new(seed),
        }
    }

    /// Where the connection is.
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    /// The current connection's generation.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether news from connection `generation` is about the current one.
    pub(super) fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }

    /// Whether frames can be sent now.
    pub(super) fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// The current connection is up.
    pub(super) fn connected(&mut self, now: Instant) {
        if matches!(self.state, State::Connecting { .. }) {
            self.state = State::Connected { since: now };
        }
    }

    /// The current connection ended (or a try failed). `retry`: try again after a
    /// backoff; otherwise stop until `/reconnect`. While leaving, this is the end.
    pub(super) fn lost(&mut self, now: Instant, why: String, retry: bool) {
        match self.state {
            State::Leaving { .. } | State::Done => self.state = State::Done,
            _ if !retry => self.state = State::Stopped { why },
            _ => {
                if let State::Connected { since } = self.state
                    && now.saturating_duration_since(since) >= STABLE
                {
                    self.backoff.reset();
                }
                let attempt = self.backoff.attempts() + 1;
                let until = now + self.backoff.next_delay();
                self.state = State::Waiting {
                    until,
                    why,
                    attempt,
                };
            }
        }
    }

    /// `/reconnect`: try now, whether waiting or stopped. `None` if there is nothing to
    /// retry (connected, connecting or leaving).
    pub(super) fn retry_now(&mut self) -> Option<Due> {
        let attempt = match &self.state {
            State::Waiting { attempt, .. } => *attempt,
            State::Stopped { .. } => self.backoff.attempts() + 1,
            _ => return None,
        };
        Some(self.start(attempt))
    }

    /// A leave was asked for. `true`: connected, so `LEAVE:` is to be sent and the
    /// server's close awaited until `now + timeout`. `false`: not connected, so the
    /// session is over at once.
    pub(super) fn leave(&mut self, now: Instant, timeout: Duration) -> bool {
        if self.is_connected() {
            self.state = State::Leaving {
                until: now + timeout,
            };
            true
        } else {
            self.state = State::Done;
            false
        }
    }

    /// Ends the session at once (a second Ctrl-C).
    pub(super) fn abandon(&mut self) {
        self.state = State::Done;
    }

    /// Whether the session is over.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until, .. } | State::Leaving { until } => Some(until),
            _ => None,
        }
    }

    /// Moves on what is due at `now`: a wait that is over starts a connection; a leave
    /// the server did not answer in time ends the session.
    pub(super) fn tick(&mut self, now: Instant) -> Option<Due> {
        match self.state {
            State::Waiting { until, attempt, .. } if now >= until => Some(self.start(attempt)),
            State::Leaving { until } if now >= until => {
                self.state = State::Done;
                None
            }
            _ => None,
        }
    }

    fn start(&mut self, attempt: u32) -> Due {
        self.generation += 1;
        self.state = State::Connecting { attempt };
        Due::Connect(self.generation)
    }
}

/// Exponential backoff with "equal jitter": the n-th wait is a random point in the upper
/// half of `FIRST_DELAY · 2ⁿ` (capped at [`MAX_DELAY`]). Never less than half, so a
/// returning server is not hammered; random within, so clients that lost the same
/// server do not all come back in the same millisecond.
#[derive(Debug)]
pub(super) struct Backoff {
    /// Waits handed out since the last reset.
    attempts: u32,
    /// xorshift64 state (never 0).
    rng: u64,
}

impl Backoff {
    /// A backoff whose jitter is seeded with `seed`.
    pub(super) fn new(seed: u64) -> Backoff {
        // One splitmix64 step, so that nearby seeds give unrelated sequences.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Backoff {
            attempts: 0,
            rng: (z ^ (z >> 31)).max(1),
        }
    }

    /// Waits handed out since the last reset.
    pub(super) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next wait.
    pub(super) fn next_delay(&mut self) -> Duration {
        let shift = self.attempts.min(16);
        self.attempts = self.attempts.saturating_add(1);
        let full = FIRST_DELAY.saturating_mul(1 << shift).min(MAX_DELAY);
        let half = full / 2;
        half + half.mul_f64(self.jitter())
    }

    /// Starts again from [`FIRST_DELAY`].
    pub(super) fn reset(&mut self) {
        self.attempts = 0;
    }

    /// A number in `[0, 1)`.
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_within_their_upper_half_up_to_the_cap() {
        let mut b = Backoff::new(42);
        let mut full = FIRST_DELAY;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} outside {full:?}/2..{full:?}"
            );
            full = (full * 2).min(MAX_DELAY);
        }
        assert_eq!(full, MAX_DELAY);
        b.reset();
        assert!(b.next_delay() <= FIRST_DELAY);
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let a = Backoff::new(1).next_delay();
        let b = Backoff::new(2).next_delay();
        assert_ne!(a, b);
    }

    #[test]
    fn a_loss_waits_then_reconnects_with_a_new_generation() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(7);
        assert_eq!(r.state(), &State::Connecting { attempt: 0 });
        r.connected(t0);
        assert!(r.is_connected());
        r.lost(t0 + MS, "connection reset".into(), true);
        let State::Waiting { until, attempt, .. } = r.state().clone() else {
            panic!("{:?}", r.state());
        };
        assert_eq!(attempt, 1);
        assert!(until <= t0 + MS + FIRST_DELAY);
        assert_eq!(r.tick(until - MS), None);
        assert_eq!(r.tick(until), Some(Due::Connect(2)));
        assert_eq!(r.state(), &State::Connecting { attempt: 1 });
        assert!(r.is_current(2) && !r.is_current(1));
    }

    #[test]
    fn failed_tries_wait_longer_each_time_until_a_stable_connection() {
        let mut now = Instant::now();
        let mut r = Reconnect::new(3);
        r.connected(now);
        let mut waits = Vec::new();
        for _ in 0..4 {
            r.lost(now, "refused".into(), true);
            let until = r.deadline().unwrap();
            waits.push(until - now);
            now = until;
            assert!(r.tick(now).is_some());
        }
        assert!(waits[3] > waits[0] * 4, "{waits:?}");
        assert_eq!(r.state(), &State::Connecting { attempt: 4 });
        // A short connection does not reset the backoff; a stable one does.
        r.connected(now);
        r.lost(now + STABLE / 2, "dropped".into(), true);
        assert!(r.deadline().unwrap() - (now + STABLE / 2) > FIRST_DELAY);
        now = r.deadline().unwrap();
        r.tick(now);
        r.connected(now);
        r.lost(now + STABLE, "dropped".into(), true);
        assert!(r.deadline().unwrap() - (now + STABLE) <= FIRST_DELAY);
    }

    #[test]
    fn a_server_that_said_why_is_not_retried_until_asked() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(1);
        r.connected(t0);
        r.lost(t0, "kicked by op: spam, closing".into(), false);
        assert!(matches!(r.state(), State::Stopped { .. }));
        assert_eq!(r.deadline(), None);
        assert_eq!(r.tick(t0 + MAX_DELAY * 10), None);
        assert_eq!(r.retry_now(), Some(Due::Connect(2)));
        assert_eq!(r.retry_now(), None);
    }

    #[test]
    fn leaving_ends_on_the_close_or_at_the_deadline() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(1);
        r.connected(t0);
        assert!(r.leave(t0, Duration::from_secs(2)));
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(2)));
        r.lost(t0 + MS, "closed".into(), true);
        assert!(r.is_done());

        let mut r = Reconnect::new(1);
        r.connected(t0);
        r.leave(t0, Duration::from_secs(2));
        r.tick(t0 + Duration::from_secs(2));
        assert!(r.is_done());
    }

    #[test]
    fn leaving_while_disconnected_is_immediate() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(1);
        r.connected(t0);
        r.lost(t0, "reset".into(), true);
        assert!(!r.leave(t0, Duration::from_secs(2)));
        assert!(r.is_done());
    }
}
