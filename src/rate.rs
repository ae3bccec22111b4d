//! Rate limiting with time passed in: the [`TokenBucket`]; the limits built on it that
//! also say which refusals earn a strike ([`MessageLimit`] for messages,
//! [`ConnectLimit`] for new connections); and [`Strikes`] that wear off with good
//! behaviour.
//!
//! This module owns the arithmetic and the rule that turns refusals into strikes (one
//! per episode of an empty bucket, not one per refusal). Who gets a limit, what a
//! strike costs and when strikes become a ban belong to the server and to `abuse`.
//!
//! Its unit tests, one per edge case, sit at the end of this file beside the code they
//! pin down; they are why the file runs past 600 lines.

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

/// What a limit says about one message (or connection attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// There was a token: let it through.
    Pass,
    /// No token: drop it (or refuse the connection). `strike` is true for the drops
    /// that earn the address a strike under the episode rule of [`MessageLimit`] or
    /// [`ConnectLimit`]; the caller then reports it through `Abuse::strike`.
    Drop {
        /// Whether this drop earns a strike.
        strike: bool,
    },
}

/// A token bucket whose refusals are counted by episode of an empty bucket.
///
/// An episode starts with a refusal and lasts until the bucket is full again (the
/// sender has stayed within the rate for as long as a whole burst takes to refill). A
/// refusal earns a strike once the episode has seen more than `free` refusals, and
/// after that at most one more per refill time (`burst / rate`) while the episode
/// lasts. The refill time is what a sender that backs off at once would have to wait
/// anyway; one that keeps pushing is struck at that pace, so it is still banned.
///
/// A limiter whose bucket is full is the same as a new one: the episode is closed
/// lazily, by the next check (which passes), so nothing has to run when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limiter {
    bucket: TokenBucket,
    /// Refusals in the current episode.
    refusals: u32,
    /// When a refusal of the current episode last earned a strike.
    struck_at: Option<Instant>,
}

impl Limiter {
    fn new(now: Instant) -> Self {
        Limiter {
            bucket: TokenBucket::new(now),
            refusals: 0,
            struck_at: None,
        }
    }

    fn check(&mut self, rate: f64, burst: f64, free: u32, now: Instant) -> Verdict {
        let was_full = self.bucket.full_at() <= now;
        if self.bucket.take(rate, burst, now) {
            if was_full {
                // Full again: whatever episode there was is over.
                self.refusals = 0;
                self.struck_at = None;
            }
            return Verdict::Pass;
        }
        // A full bucket refuses only at a rate so low that one token would take
        // centuries (see `TokenBucket::take`); that is one long episode, not a new one
        // per refusal.
        self.refusals = self.refusals.saturating_add(1);
        let period = refill_time(rate, burst);
        let due = match self.struck_at {
            None => true,
            // A refill time too long to represent: one strike per episode.
            Some(t) => t.checked_add(period).is_some_and(|at| now >= at),
        };
        let strike = self.refusals > free && due;
        if strike {
            self.struck_at = Some(now);
        }
        Verdict::Drop { strike }
    }
}

/// How long an empty bucket takes to fill: `burst / rate` (a `burst` below 1 counts as
/// 1, as in [`TokenBucket::take`]). Saturates at [`Duration::MAX`].
fn refill_time(rate: f64, burst: f64) -> Duration {
    if !(rate > 0.0 && rate.is_finite()) {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(burst.max(1.0) / rate).unwrap_or(Duration::MAX)
}

/// One connection's message limit: a token bucket, and which of its drops earn a
/// strike.
///
/// **The rule (fair strikes).** Drops are struck by episode, not one each. An episode
/// starts with a drop and lasts until the bucket is full again. Its first drop earns
/// one strike; while it lasts, a further drop earns one only when a refill time
/// (`burst / rate`, 2 s at the default 10 and 5/s) has passed since the episode's last
/// strike. So:
///
/// - a paste that overflows the bucket costs one strike, however many lines drop;
/// - a paste after the bucket has refilled is a new episode and another strike;
/// - a sender that never lets the bucket refill earns one strike per refill time, so
///   with the default 5 strikes it is banned about 8 s (4 refill times) after its
///   first drop, unless strikes wear off faster than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimit {
    limiter: Limiter,
}

impl MessageLimit {
    /// A full bucket and no episode.
    pub fn new(now: Instant) -> Self {
        MessageLimit {
            limiter: Limiter::new(now),
        }
    }

    /// Takes a token for one message at `now` (refilling at `rate` per second up to
    /// `burst`), or says it is dropped and whether the drop earns a strike. `rate <= 0`
    /// means unlimited: always [`Verdict::Pass`].
    pub fn check(&mut self, rate: f64, burst: f64, now: Instant) -> Verdict {
        self.limiter.check(rate, burst, 0, now)
    }

    /// The instant from which this limit is the same as a new one (already past if it
    /// is): its bucket is full and any episode is over.
    pub fn idle_at(&self) -> Instant {
        self.limiter.bucket.full_at()
    }
}

/// One address's connect-rate throttle: a token bucket per address, and which of its
/// refusals earn a strike.
///
/// **The rule (restart storms are free).** Like [`MessageLimit`], refusals are counted
/// by episode of an empty bucket (until it is full again), but the first `burst`
/// refusals of an episode earn nothing: a restart storm of up to twice the burst at
/// once (one burst admitted, one refused) is no offence. Past them a refusal earns a
/// strike, and after that one more per refill time (`burst / rate`) while the episode
/// lasts. At the defaults (10/s, burst 20, 5 strikes) an address that keeps connecting
/// faster than the rate is struck on its 21st refusal and banned 8 s later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectLimit {
    limiter: Limiter,
}

impl ConnectLimit {
    /// A full bucket and no episode.
    pub fn new(now: Instant) -> Self {
        ConnectLimit {
            limiter: Limiter::new(now),
        }
    }

    /// Takes a token for one connection attempt at `now`, or says it is refused
    /// ([`Verdict::Drop`]) and whether the refusal earns a strike. `rate <= 0` means
    /// unlimited.
    pub fn check(&mut self, rate: f64, burst: f64, now: Instant) -> Verdict {
        // Saturating cast: a burst beyond u32 lets every refusal go free.
        let free = burst.max(1.0) as u32;
        self.limiter.check(rate, burst, free, now)
    }

    /// The instant from which this limit is the same as a new one (already past if it
    /// is): its bucket is full and any episode is over.
    pub fn idle_at(&self) -> Instant {
        self.limiter.bucket.full_at()
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

    /// Sends `n` messages at `now`; returns (drops, strikes).
    fn paste(
        limit: &mut MessageLimit,
        n: usize,
        rate: f64,
        burst: f64,
        now: Instant,
    ) -> (usize, usize) {
        let mut drops = 0;
        let mut strikes = 0;
        for _ in 0..n {
            if let Verdict::Drop { strike } = limit.check(rate, burst, now) {
                drops += 1;
                strikes += usize::from(strike);
            }
        }
        (drops, strikes)
    }

    #[test]
    fn a_paste_over_the_burst_is_one_strike_not_one_per_dropped_line() {
        let t0 = Instant::now();
        let (rate, burst) = (5.0, 10.0);
        let mut m = MessageLimit::new(t0);
        assert_eq!(paste(&mut m, 15, rate, burst, t0), (5, 1));
        // The strike is the first drop's.
        let mut m = MessageLimit::new(t0);
        paste(&mut m, 10, rate, burst, t0);
        assert_eq!(m.check(rate, burst, t0), Verdict::Drop { strike: true });
        assert_eq!(m.check(rate, burst, t0), Verdict::Drop { strike: false });
    }

    #[test]
    fn a_paste_after_the_bucket_refilled_is_a_new_strike() {
        let t0 = Instant::now();
        let (rate, burst) = (5.0, 10.0);
        let mut m = MessageLimit::new(t0);
        assert_eq!(paste(&mut m, 15, rate, burst, t0), (5, 1));
        // Ten tokens at 5/s: full again 2 s after the burst was taken.
        assert_eq!(m.idle_at(), t0 + ms(2000));
        let t1 = t0 + ms(2000);
        assert_eq!(paste(&mut m, 15, rate, burst, t1), (5, 1));
    }

    #[test]
    fn a_second_paste_before_the_bucket_refilled_is_the_same_episode() {
        let t0 = Instant::now();
        let (rate, burst) = (5.0, 10.0);
        let mut m = MessageLimit::new(t0);
        assert_eq!(paste(&mut m, 15, rate, burst, t0), (5, 1));
        // A line a second later passes (five tokens back) but the bucket is not full.
        assert_eq!(m.check(rate, burst, t0 + ms(1000)), Verdict::Pass);
        assert_eq!(paste(&mut m, 15, rate, burst, t0 + ms(1500)), (9, 0));
    }

    #[test]
    fn a_steady_blaster_is_struck_once_per_refill_time() {
        let t0 = Instant::now();
        let (rate, burst) = (5.0, 10.0);
        let mut m = MessageLimit::new(t0);
        // 100 lines a second for 10 s, never letting the bucket refill.
        let mut passed = 0;
        let mut struck = Vec::new();
        for i in 0..1000u64 {
            let now = t0 + ms(i * 10);
            match m.check(rate, burst, now) {
                Verdict::Pass => passed += 1,
                Verdict::Drop { strike: true } => struck.push(now - t0),
                Verdict::Drop { strike: false } => {}
            }
        }
        // The burst, then the rate: 10 + 5/s over 10 s (the last token is due at 10 s).
        assert_eq!(passed, 10 + 49);
        // The refill time is 2 s: the first drop (the 11th line, at 100 ms), then one
        // every 2 s. Five strikes by 8.1 s: banned at the default --max-strikes 5.
        let expected: Vec<Duration> = [100, 2100, 4100, 6100, 8100].map(ms).to_vec();
        assert_eq!(struck, expected);
    }

    #[test]
    fn a_sender_just_over_the_rate_is_struck_at_the_same_pace() {
        let t0 = Instant::now();
        let (rate, burst) = (5.0, 10.0);
        let mut m = MessageLimit::new(t0);
        // Six lines a second: the burst lasts 10 s, then one line in six is dropped.
        let mut struck = Vec::new();
        for i in 0..180u64 {
            let now = t0 + Duration::from_micros(i * 166_667);
            if m.check(rate, burst, now) == (Verdict::Drop { strike: true }) {
                struck.push(now - t0);
            }
        }
        assert!(struck.len() >= 9, "{struck:?}");
        for pair in struck.windows(2) {
            assert!(pair[1] - pair[0] >= ms(2000), "{struck:?}");
            assert!(pair[1] - pair[0] < ms(2500), "{struck:?}");
        }
    }

    #[test]
    fn a_full_bucket_ends_the_episode_even_within_a_refill_time() {
        let t0 = Instant::now();
        let (rate, burst) = (1.0, 2.0);
        let mut m = MessageLimit::new(t0);
        assert_eq!(paste(&mut m, 2, rate, burst, t0), (0, 0));
        assert_eq!(
            m.check(rate, burst, t0 + ms(900)),
            Verdict::Drop { strike: true }
        );
        assert_eq!(m.idle_at(), t0 + ms(2000));
        // One instant short of full, a paste is the same episode: no strike.
        let mut early = m;
        let almost = t0 + ms(2000) - Duration::from_nanos(1);
        assert_eq!(paste(&mut early, 3, rate, burst, almost), (1, 0));
        // Full again 1.1 s after the strike (less than the 2 s refill time): a new
        // episode, and its first drop is a strike.
        assert_eq!(paste(&mut m, 3, rate, burst, t0 + ms(2000)), (1, 1));
    }

    #[test]
    fn unlimited_message_rate_always_passes_and_never_strikes() {
        let t0 = Instant::now();
        let mut m = MessageLimit::new(t0);
        assert_eq!(paste(&mut m, 10_000, 0.0, 1.0, t0), (0, 0));
        assert_eq!(paste(&mut m, 10, f64::NAN, 1.0, t0), (0, 0));
        assert_eq!(m.idle_at(), t0);
    }

    #[test]
    fn a_rate_too_low_to_refill_still_strikes_once() {
        let t0 = Instant::now();
        let mut m = MessageLimit::new(t0);
        // One token would take longer than an Instant can say: nothing passes, and it
        // is all one episode.
        assert_eq!(paste(&mut m, 5, 1e-300, 1.0, t0), (5, 1));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(paste(&mut m, 5, 1e-300, 1.0, later), (5, 0));
    }

    /// Connection attempts at `now`; returns (refusals, strikes).
    fn connects(
        limit: &mut ConnectLimit,
        n: usize,
        rate: f64,
        burst: f64,
        now: Instant,
    ) -> (usize, usize) {
        let mut refusals = 0;
        let mut strikes = 0;
        for _ in 0..n {
            if let Verdict::Drop { strike } = limit.check(rate, burst, now) {
                refusals += 1;
                strikes += usize::from(strike);
            }
        }
        (refusals, strikes)
    }

    #[test]
    fn a_restart_storm_within_twice_the_connect_burst_earns_no_strike() {
        let t0 = Instant::now();
        let (rate, burst) = (10.0, 20.0);
        let mut c = ConnectLimit::new(t0);
        assert_eq!(connects(&mut c, 30, rate, burst, t0), (10, 0));
        // The refused ones retry a second later: ten tokens are back.
        assert_eq!(connects(&mut c, 10, rate, burst, t0 + ms(1000)), (0, 0));
        // Twice the burst at once is still free; one more is not.
        let mut c = ConnectLimit::new(t0);
        assert_eq!(connects(&mut c, 40, rate, burst, t0), (20, 0));
        assert_eq!(c.check(rate, burst, t0), Verdict::Drop { strike: true });
    }

    #[test]
    fn a_sustained_connect_flood_is_struck_once_per_refill_time() {
        let t0 = Instant::now();
        let (rate, burst) = (10.0, 20.0);
        let mut c = ConnectLimit::new(t0);
        // 200 attempts a second for 10 s.
        let mut struck = Vec::new();
        let mut admitted = 0;
        for i in 0..2000u64 {
            let now = t0 + ms(i * 5);
            match c.check(rate, burst, now) {
                Verdict::Pass => admitted += 1,
                Verdict::Drop { strike: true } => struck.push(now - t0),
                Verdict::Drop { strike: false } => {}
            }
        }
        assert!((118..=121).contains(&admitted), "{admitted}");
        // The 20 free refusals run out within a fifth of a second; then one strike per
        // refill time (20 / 10/s = 2 s): five by 8.2 s.
        assert_eq!(struck.len(), 5, "{struck:?}");
        assert!(struck[0] < ms(250), "{struck:?}");
        for pair in struck.windows(2) {
            assert!(pair[1] - pair[0] >= ms(2000), "{struck:?}");
            assert!(pair[1] - pair[0] < ms(2010), "{struck:?}");
        }
    }

    #[test]
    fn a_full_connect_bucket_forgives_the_free_refusals_again() {
        let t0 = Instant::now();
        let (rate, burst) = (10.0, 20.0);
        let mut c = ConnectLimit::new(t0);
        assert_eq!(connects(&mut c, 40, rate, burst, t0), (20, 0));
        assert_eq!(c.idle_at(), t0 + ms(2000));
        // Not full yet: the episode goes on and its free refusals are spent.
        let t1 = t0 + ms(1900);
        assert_eq!(connects(&mut c, 20, rate, burst, t1), (1, 1));
        // Full again: a new storm is free.
        let t2 = c.idle_at();
        assert_eq!(connects(&mut c, 40, rate, burst, t2), (20, 0));
    }

    #[test]
    fn limits_are_small() {
        assert!(std::mem::size_of::<MessageLimit>() <= 40);
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
