//! Rate limiting with time passed in: the per-connection [`TokenBucket`] that limits
//! messages (and, per IP, new connections), and [`Strikes`] that wear off with good
//! behaviour.
//!
//! This module owns the arithmetic only. Who gets a bucket, what a refusal costs and
//! when strikes become a ban belong to the server and to `abuse`.

use std::time::{Duration, Instant};

/// Tolerance in tokens for float rounding (an interval of `1/rate` is rounded to whole
/// nanoseconds), so that exactly one refill period later a token is really there.
const EPSILON_TOKENS: f64 = 1e-6;

/// A token bucket: holds up to `burst` tokens, refills at `rate` tokens per second,
/// and each message takes one.
///
/// Stored as a single instant (16 bytes), in the style of GCRA: `full_at`, the moment
/// the bucket will be full again. The tokens it holds at `now` are
/// `burst - (full_at - now) * rate`, never more than `burst`. Taking a token pushes
/// `full_at` forward by `1/rate` seconds. Rate and burst are passed to every call, so
/// they are not stored in each of thousands of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. Full means no tokens owed, whatever the size, so it needs
    /// neither rate nor burst.
    pub fn new(now: Instant) -> Self {
        TokenBucket { full_at: now }
    }

    /// The same as [`TokenBucket::new`]: `burst` is ignored. Kept only so that callers
    /// written against it build until they move to `new`.
    pub fn full(burst: f64, now: Instant) -> Self {
        let _ = burst;
        TokenBucket::new(now)
    }

    /// Refills at `rate` per second up to `burst`, then takes one token if there is
    /// one. `rate <= 0` (or not finite) means unlimited: always true, nothing changes.
    /// A `burst` below 1 counts as 1, or nothing could ever pass.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        if !(rate > 0.0 && rate.is_finite()) {
            return true;
        }
        let burst = burst.max(1.0);
        let start = self.full_at.max(now);
        let owed = start.saturating_duration_since(now).as_secs_f64() * rate;
        if owed > burst - 1.0 + EPSILON_TOKENS {
            return false;
        }
        let interval = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::MAX);
        match start.checked_add(interval) {
            Some(full_at) => {
                self.full_at = full_at;
                true
            }
            // A rate so low one token takes centuries: treat it as empty.
            None => false,
        }
    }

    /// Tokens available at `now` (at most `burst`; 0 to `burst` when limited).
    pub fn tokens(&self, rate: f64, burst: f64, now: Instant) -> f64 {
        if !(rate > 0.0 && rate.is_finite()) {
            return burst;
        }
        let owed = self.full_at.saturating_duration_since(now).as_secs_f64() * rate;
        (burst.max(1.0) - owed).max(0.0)
    }

    /// The instant from which the bucket is full again (already past if it is full).
    pub fn full_at(&self) -> Instant {
        self.full_at
    }
}

/// Strikes that wear off with good behaviour.
///
/// The rule: every full `decay` since the **last** strike removes one strike. A new
/// strike first applies the decay so far, adds one, and restarts the clock. So with a
/// 30 s decay, three strikes at t = 0 s are two at 30 s, one at 60 s and none at 90 s;
/// a fourth strike at 45 s makes it three (2 + 1) that start wearing off at 75 s.
/// A zero `decay` wears a strike off at once: `add` returns 1 and `current` 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strikes {
    count: u32,
    /// When the last strike was added.
    last: Option<Instant>,
}

impl Strikes {
    /// No strikes.
    pub fn new() -> Self {
        Strikes::default()
    }

    /// Adds one strike at `now` and returns the count after adding.
    pub fn add(&mut self, now: Instant, decay: Duration) -> u32 {
        let count = self.current(now, decay).saturating_add(1);
        *self = Strikes {
            count,
            last: Some(now),
        };
        count
    }

    /// Strikes standing at `now`.
    pub fn current(&self, now: Instant, decay: Duration) -> u32 {
        let Some(last) = self.last else { return 0 };
        if decay.is_zero() {
            return 0;
        }
        let worn = now.saturating_duration_since(last).as_nanos() / decay.as_nanos();
        let worn = u32::try_from(worn).unwrap_or(u32::MAX);
        self.count.saturating_sub(worn)
    }

    /// The instant from which no strike is left (`None` if there are none to wear off
    /// or it is too far away to represent).
    pub fn clear_at(&self, decay: Duration) -> Option<Instant> {
        let last = self.last.filter(|_| self.count > 0)?;
        last.checked_add(decay.checked_mul(self.count)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_allows_a_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let (rate, burst) = (5.0, 10.0);
        let mut b = TokenBucket::new(t0);
        for i in 0..10 {
            assert!(b.take(rate, burst, t0), "token {i} of the burst");
        }
        assert!(!b.take(rate, burst, t0));
        // One token per 200 ms.
        assert!(!b.take(rate, burst, t0 + ms(199)));
        assert!(b.take(rate, burst, t0 + ms(200)));
        assert!(!b.take(rate, burst, t0 + ms(200)));
        assert!(b.take(rate, burst, t0 + ms(400)));
        // A second later: five more.
        let t1 = t0 + ms(1400);
        for _ in 0..5 {
            assert!(b.take(rate, burst, t1));
        }
        assert!(!b.take(rate, burst, t1));
    }

    #[test]
    fn bucket_never_holds_more_than_burst() {
        let t0 = Instant::now();
        let (rate, burst) = (3.0, 4.0);
        let mut b = TokenBucket::new(t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.tokens(rate, burst, later), burst);
        let taken = (0..100).filter(|_| b.take(rate, burst, later)).count();
        assert_eq!(taken, 4);
        assert!(b.tokens(rate, burst, later) < 1.0);
    }

    #[test]
    fn refusals_cost_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        assert!(b.take(1.0, 1.0, t0));
        for i in 1..10 {
            assert!(!b.take(1.0, 1.0, t0 + ms(i * 100 - 1)));
        }
        assert!(b.take(1.0, 1.0, t0 + ms(1000)));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        assert!((0..10_000).all(|_| b.take(0.0, 1.0, t0)));
        assert!(b.take(-1.0, 0.0, t0));
        assert_eq!(b.full_at(), t0);
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(t0);
        assert!(b.take(1.0, 2.0, t0));
        assert!(b.take(1.0, 2.0, t0));
        assert!(!b.take(1.0, 2.0, t0 - Duration::from_secs(5)));
    }

    #[test]
    fn bucket_is_small() {
        assert!(std::mem::size_of::<TokenBucket>() <= 16);
    }

    #[test]
    fn strikes_accumulate_and_decay() {
        let t0 = Instant::now();
        let decay = Duration::from_secs(30);
        let mut s = Strikes::new();
        assert_eq!(s.current(t0, decay), 0);
        assert_eq!(s.clear_at(decay), None);
        assert_eq!(s.add(t0, decay), 1);
        assert_eq!(s.add(t0, decay), 2);
        assert_eq!(s.add(t0, decay), 3);
        assert_eq!(s.clear_at(decay), Some(t0 + Duration::from_secs(90)));
        assert_eq!(s.current(t0 + Duration::from_secs(29), decay), 3);
        assert_eq!(s.current(t0 + Duration::from_secs(30), decay), 2);
        assert_eq!(s.current(t0 + Duration::from_secs(60), decay), 1);
        assert_eq!(s.current(t0 + Duration::from_secs(90), decay), 0);
        // A new strike applies the decay so far and restarts the clock.
        let t1 = t0 + Duration::from_secs(45);
        assert_eq!(s.add(t1, decay), 3);
        assert_eq!(s.current(t1 + Duration::from_secs(29), decay), 3);
        assert_eq!(s.current(t1 + Duration::from_secs(30), decay), 2);
        assert_eq!(s.clear_at(decay), Some(t1 + Duration::from_secs(90)));
    }

    #[test]
    fn zero_decay_wears_strikes_off_at_once() {
        let t0 = Instant::now();
        let mut s = Strikes::new();
        assert_eq!(s.add(t0, Duration::ZERO), 1);
        assert_eq!(s.add(t0, Duration::ZERO), 1);
        assert_eq!(s.current(t0, Duration::ZERO), 0);
    }
}
