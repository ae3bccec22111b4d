//! The hashed timer wheel that holds every deadline the server keeps: registration and
//! idle timeouts, the shutdown deadline, accept retries, the periodic summary, ban
//! expiry and abuse-record cleanup.
//!
//! This module owns scheduling, cancelling and expiring timers. It does not own what a
//! timer means (that is the `T` the caller stores) or the clock: time is passed in, so
//! tests never sleep.
//!
//! # How it works
//!
//! Time since the wheel's creation is cut into ticks of a fixed resolution; tick `t`
//! lives in slot `t mod slots`. Each slot is an intrusive doubly-linked list threaded
//! through the keys of one [`Slab`], so insert and cancel are O(1) and memory follows
//! the number of live timers (the slab keeps its peak capacity). A deadline more than
//! one rotation away simply waits in its slot: every entry remembers its absolute tick,
//! and only entries whose deadline has passed are taken out.
//!
//! Firing is exact, not rounded to the tick: [`TimerWheel::poll`] moves out precisely
//! the timers whose deadline is `<= now`. The tick only decides which slots a poll has
//! to look at.
//!
//! Each slot also keeps a lower bound of the ticks it holds (exact after the slot was
//! last walked), so a slot whose timers are all rotations away is skipped without
//! walking it, both by `poll` and when [`TimerWheel::next_deadline`] is recomputed.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use slab::Slab;

/// "No entry" in the intrusive lists.
const NIL: usize = usize::MAX;

/// Largest wheel accepted (slots): 2^20 slots of 16 bytes each is already 16 MiB.
const MAX_SLOTS: usize = 1 << 20;

/// Names one scheduled timer. It carries a generation, so cancelling a timer that has
/// already fired or been cancelled (even if its slab key was reused since) is a
/// harmless no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    generation: u64,
}

/// One scheduled timer, linked into the list of its slot.
struct Entry<T> {
    value: T,
    deadline: Instant,
    /// Absolute tick the entry is filed under: its deadline's tick, or the wheel's
    /// current tick if the deadline had already passed at insert.
    tick: u64,
    generation: u64,
    prev: usize,
    next: usize,
}

/// A hashed timer wheel of values `T`. See the module documentation.
pub struct TimerWheel<T> {
    entries: Slab<Entry<T>>,
    /// First entry of each slot's list, or `NIL`.
    heads: Vec<usize>,
    /// Per slot, a lower bound of the ticks of its entries (`u64::MAX` when empty). It
    /// only rises when the slot is walked; `Cell` lets `next_deadline` (`&self`) refresh it.
    floors: Vec<Cell<u64>>,
    /// `slots - 1`; the slot count is a power of two.
    mask: u64,
    /// Resolution in nanoseconds (at least 1).
    tick_ns: u64,
    /// Tick 0 starts here.
    base: Instant,
    /// Every tick before this one has been fully expired; no entry is filed earlier.
    current: u64,
    /// Generation for the next insert; never reused.
    next_generation: u64,
    /// Cached answer of `next_deadline`: `None` when it must be recomputed.
    next: Cell<Option<Option<Instant>>>,
    /// Timers fired by one poll, sorted before they are handed out (kept for its capacity).
    fired: Vec<(Instant, u64, T)>,
}

impl<T> TimerWheel<T> {
    /// A wheel with resolution `tick` (the server uses 10 ms) and `slots` slots, rounded
    /// up to a power of two (e.g. 1024; between 1 and 2^20). One rotation covers
    /// `tick * slots`; deadlines further away cost nothing extra to hold but are walked
    /// past when their slot comes round, so size the rotation to cover the common ones.
    pub fn new(tick: Duration, slots: usize, now: Instant) -> Self {
        let slots = slots.clamp(1, MAX_SLOTS).next_power_of_two();
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        TimerWheel {
            entries: Slab::new(),
            heads: vec![NIL; slots],
            floors: (0..slots).map(|_| Cell::new(u64::MAX)).collect(),
            mask: slots as u64 - 1,
            tick_ns,
            base: now,
            current: 0,
            next_generation: 0,
            next: Cell::new(Some(None)),
            fired: Vec::new(),
        }
    }

    /// Schedules `value` for `deadline`. A deadline in the past fires on the next poll.
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerId {
        let tick = self.tick_of(deadline).max(self.current);
        let slot = self.slot_of(tick);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let head = self.heads[slot];
        let key = self.entries.insert(Entry {
            value,
            deadline,
            tick,
            generation,
            prev: NIL,
            next: head,
        });
        if head != NIL {
            self.entries[head].prev = key;
        }
        self.heads[slot] = key;
        let floor = &self.floors[slot];
        floor.set(floor.get().min(tick));
        match self.next.get() {
            Some(Some(earliest)) if earliest <= deadline => {}
            // Known (possibly empty) and later: this one is the new earliest.
            Some(_) => self.next.set(Some(Some(deadline))),
            None => {}
        }
        TimerId { key, generation }
    }

    /// Cancels a pending timer and returns its value; `None` if it already fired or was
    /// cancelled. O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        match self.entries.get(id.key) {
            Some(e) if e.generation == id.generation => {}
            _ => return None,
        }
        self.unlink(id.key);
        let entry = self.entries.try_remove(id.key)?;
        if self.entries.is_empty() {
            self.next.set(Some(None));
        } else if let Some(Some(earliest)) = self.next.get()
            && entry.deadline <= earliest
        {
            // It was the earliest: recompute on demand (several cancels in one loop
            // turn then cost one recomputation).
            self.next.set(None);
        }
        Some(entry.value)
    }

    /// The deadline of a pending timer, or `None` if it fired or was cancelled.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.entries
            .get(id.key)
            .filter(|e| e.generation == id.generation)
            .map(|e| e.deadline)
    }

    /// Moves every timer whose deadline is `<= now` into `out` (appended), in deadline
    /// order; timers with equal deadlines come out in insertion order.
    ///
    /// After a long gap it looks at each slot at most once, not at every tick missed.
    /// `now` earlier than a previous poll is harmless: only timers already due fire.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<T>) {
        let now_tick = self.tick_of(now);
        // Due entries are filed at a tick <= `last`: a deadline's own tick is <= now's,
        // and one filed late (deadline already past at insert) sits at `current`.
        let last = now_tick.max(self.current);
        let visits = (last - self.current)
            .saturating_add(1)
            .min(self.heads.len() as u64);
        for i in 0..visits {
            let slot = self.slot_of(self.current.wrapping_add(i));
            if self.floors[slot].get() > last {
                continue;
            }
            let mut floor = u64::MAX;
            let mut key = self.heads[slot];
            while key != NIL {
                let entry = &self.entries[key];
                let next = entry.next;
                if entry.deadline <= now {
                    self.unlink(key);
                    if let Some(e) = self.entries.try_remove(key) {
                        self.fired.push((e.deadline, e.generation, e.value));
                    }
                } else {
                    floor = floor.min(entry.tick);
                }
                key = next;
            }
            self.floors[slot].set(floor);
        }
        // Every entry left at a tick < now_tick would have been due, so none is left.
        self.current = last;
        if self.fired.is_empty() {
            return;
        }
        self.next.set(if self.entries.is_empty() {
            Some(None)
        } else {
            None
        });
        // Generations grow with insertion, so ties keep insertion order.
        self.fired
            .sort_unstable_by_key(|&(deadline, generation, _)| (deadline, generation));
        out.extend(self.fired.drain(..).map(|(_, _, value)| value));
    }

    /// The earliest pending deadline, exactly (a poll at that instant fires it), or
    /// `None` when no timer is pending. Cached: insert keeps the cache up to date, and
    /// it is recomputed only after the earliest timer fired or was cancelled, at most
    /// once per such change, by looking for the first slot of this rotation that holds a
    /// timer due in it.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(cached) = self.next.get() {
            return cached;
        }
        let next = self.compute_next();
        self.next.set(Some(next));
        next
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn tick_of(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since / u128::from(self.tick_ns)).unwrap_or(u64::MAX)
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick & self.mask) as usize
    }

    /// Takes `key` out of its slot's list (the entry stays in the slab).
    fn unlink(&mut self, key: usize) {
        let (prev, next, slot) = {
            let e = &self.entries[key];
            (e.prev, e.next, self.slot_of(e.tick))
        };
        if prev == NIL {
            self.heads[slot] = next;
        } else {
            self.entries[prev].next = next;
        }
        if next != NIL {
            self.entries[next].prev = prev;
        }
        if self.heads[slot] == NIL {
            self.floors[slot].set(u64::MAX);
        }
    }

    /// Walks one slot: the smallest tick in it, and the earliest deadline filed at `tick`.
    fn scan(&self, slot: usize, tick: u64) -> (u64, Option<Instant>) {
        let mut floor = u64::MAX;
        let mut earliest: Option<Instant> = None;
        let mut key = self.heads[slot];
        while key != NIL {
            let e = &self.entries[key];
            floor = floor.min(e.tick);
            if e.tick == tick && earliest.is_none_or(|d| e.deadline < d) {
                earliest = Some(e.deadline);
            }
            key = e.next;
        }
        self.floors[slot].set(floor);
        (floor, earliest)
    }

    fn compute_next(&self) -> Option<Instant> {
        if self.entries.is_empty() {
            return None;
        }
        // Ticks are ordered like deadlines, so the first tick of this rotation that
        // holds an entry holds the earliest one. A slot whose floor is past the tick we
        // are looking at holds only later rotations: skip it without walking.
        for i in 0..self.heads.len() as u64 {
            let tick = self.current.wrapping_add(i);
            let slot = self.slot_of(tick);
            if self.heads[slot] == NIL || self.floors[slot].get() > tick {
                continue;
            }
            if let (_, Some(earliest)) = self.scan(slot, tick) {
                return Some(earliest);
            }
        }
        // Everything is at least a rotation away. Walk the slot with the lowest floor
        // until that floor proves exact; each walk raises a stale floor, so this ends.
        loop {
            let (slot, floor) = self
                .floors
                .iter()
                .enumerate()
                .map(|(slot, f)| (slot, f.get()))
                .filter(|&(slot, _)| self.heads[slot] != NIL)
                .min_by_key(|&(_, f)| f)?;
            let (exact, earliest) = self.scan(slot, floor);
            if exact == floor {
                return earliest;
            }
        }
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.entries.len())
            .field("slots", &self.heads.len())
            .field("tick_ns", &self.tick_ns)
            .field("current", &self.current)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const TICK: Duration = Duration::from_millis(10);
    /// Nothing fired.
    const NONE: Vec<u32> = Vec::new();

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn wheel(t0: Instant) -> TimerWheel<u32> {
        TimerWheel::new(TICK, 1024, t0)
    }

    #[track_caller]
    fn poll(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        w.poll(now, &mut out);
        out
    }

    #[test]
    fn timer_fires_at_its_deadline_not_before() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        w.insert(t0 + ms(25), 1);
        assert_eq!(w.len(), 1);
        assert_eq!(poll(&mut w, t0 + ms(24)), NONE);
        // Same tick as the deadline but a nanosecond short: still pending.
        assert_eq!(poll(&mut w, t0 + ms(25) - Duration::from_nanos(1)), NONE);
        assert_eq!(poll(&mut w, t0 + ms(25)), vec![1]);
        assert!(w.is_empty());
        assert_eq!(poll(&mut w, t0 + ms(100)), NONE);
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        let a = w.insert(t0 + ms(50), 1);
        w.insert(t0 + ms(50), 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        assert_eq!(poll(&mut w, t0 + ms(60)), vec![2]);
    }

    #[test]
    fn cancelling_a_stale_id_after_key_reuse_is_a_no_op() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        let old = w.insert(t0 + ms(10), 1);
        assert_eq!(poll(&mut w, t0 + ms(10)), vec![1]);
        // The slab hands the same key to the next insert.
        let new = w.insert(t0 + ms(20), 2);
        assert_eq!(old.key, new.key);
        assert_eq!(w.cancel(old), None);
        assert_eq!(w.deadline(old), None);
        assert_eq!(w.len(), 1);
        assert_eq!(poll(&mut w, t0 + ms(20)), vec![2]);
    }

    #[test]
    fn expiry_is_in_deadline_order_across_slots() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        w.insert(t0 + ms(95), 5);
        w.insert(t0 + ms(12), 2);
        w.insert(t0 + ms(300), 7);
        w.insert(t0 + ms(11), 1);
        w.insert(t0 + ms(40), 3);
        w.insert(t0 + ms(40), 4); // tie: insertion order
        w.insert(t0 + ms(95), 6);
        assert_eq!(poll(&mut w, t0 + ms(100)), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(poll(&mut w, t0 + ms(1000)), vec![7]);
    }

    #[test]
    fn far_deadline_fires_exactly_when_due_not_a_rotation_early() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        // 10 minutes is ~58 rotations of 1024 × 10 ms.
        let due = t0 + Duration::from_secs(600);
        w.insert(due, 9);
        w.insert(t0 + ms(10_240), 1); // exactly one rotation: same slot as tick 0
        let mut fired = Vec::new();
        let mut now = t0;
        while now < due {
            w.poll(now, &mut fired);
            if now < t0 + ms(10_240) {
                assert!(fired.is_empty(), "fired early at {:?}", now - t0);
            }
            now += TICK;
        }
        assert_eq!(fired, vec![1]);
        assert_eq!(w.next_deadline(), Some(due));
        assert_eq!(poll(&mut w, due - Duration::from_nanos(1)), NONE);
        assert_eq!(poll(&mut w, due), vec![9]);
    }

    #[test]
    fn past_deadline_fires_on_next_poll() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(poll(&mut w, now), NONE);
        w.insert(t0 + Duration::from_secs(1), 1);
        w.insert(t0, 2); // even before the wheel's base
        assert_eq!(w.next_deadline(), Some(t0));
        assert_eq!(poll(&mut w, now), vec![2, 1]);
    }

    #[test]
    fn next_deadline_follows_insert_cancel_and_poll() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        assert_eq!(w.next_deadline(), None);
        let a = w.insert(t0 + ms(500), 1);
        assert_eq!(w.next_deadline(), Some(t0 + ms(500)));
        let b = w.insert(t0 + ms(123), 2);
        assert_eq!(w.next_deadline(), Some(t0 + ms(123)));
        let far = t0 + Duration::from_secs(3600);
        w.insert(far, 3);
        assert_eq!(w.cancel(b), Some(2));
        assert_eq!(w.next_deadline(), Some(t0 + ms(500)));
        assert_eq!(poll(&mut w, t0 + ms(500)), vec![1]);
        assert_eq!(w.next_deadline(), Some(far));
        let c = w.insert(t0 + ms(700), 4);
        assert_eq!(w.next_deadline(), Some(t0 + ms(700)));
        w.cancel(c);
        assert_eq!(w.next_deadline(), Some(far));
        assert_eq!(w.cancel(a), None);
        assert_eq!(poll(&mut w, far), vec![3]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn a_long_gap_between_polls_fires_everything_due_in_order() {
        let t0 = Instant::now();
        let mut w = wheel(t0);
        for i in 0..5000u32 {
            // Spread over ~14 hours, several rotations per timer.
            w.insert(t0 + Duration::from_secs(u64::from(i) * 10), i);
        }
        let later = t0 + Duration::from_secs(10 * 2500);
        let fired = poll(&mut w, later);
        assert_eq!(fired, (0..=2500).collect::<Vec<_>>());
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(25_010)));
        let fired = poll(&mut w, t0 + Duration::from_secs(100_000));
        assert_eq!(fired, (2501..5000).collect::<Vec<_>>());
        assert!(w.is_empty());
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_fire_early() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = wheel(t0);
        w.insert(t0 + ms(100), 1);
        assert_eq!(poll(&mut w, t0 + ms(50)), NONE);
        assert_eq!(poll(&mut w, t0 - Duration::from_secs(5)), NONE);
        assert_eq!(poll(&mut w, t0 + ms(100)), vec![1]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at `now + offset - 200ms` (so some deadlines are in the past).
        Insert(u64),
        /// Cancel the n-th id handed out (maybe stale).
        Cancel(usize),
        /// Advance by this many ms (or go back 30 ms when 0) and poll.
        Poll(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..30_000).prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            3 => prop_oneof![0u64..50, 0u64..40_000].prop_map(Op::Poll),
        ]
    }

    proptest! {
        #[test]
        fn wheel_matches_an_ordered_map(ops in proptest::collection::vec(op(), 1..300)) {
            let t0 = Instant::now() + Duration::from_secs(1);
            // 64 slots of 10 ms: 640 ms rotation, so most deadlines are several away.
            let mut w: TimerWheel<u32> = TimerWheel::new(TICK, 64, t0);
            let mut model: BTreeMap<(Instant, u32), TimerId> = BTreeMap::new();
            let mut ids: Vec<(TimerId, Instant, u32)> = Vec::new();
            let mut now = t0;
            for op in ops {
                match op {
                    Op::Insert(offset) => {
                        let deadline = (now + ms(offset)).checked_sub(ms(200)).unwrap_or(now);
                        let value = ids.len() as u32;
                        let id = w.insert(deadline, value);
                        model.insert((deadline, value), id);
                        ids.push((id, deadline, value));
                    }
                    Op::Cancel(n) if !ids.is_empty() => {
                        let (id, deadline, value) = ids[n % ids.len()];
                        let expected = model.remove(&(deadline, value)).map(|_| value);
                        prop_assert_eq!(w.cancel(id), expected);
                    }
                    Op::Cancel(_) => {}
                    Op::Poll(step) => {
                        now = if step == 0 { now - ms(30) } else { now + ms(step) };
                        let mut out = Vec::new();
                        w.poll(now, &mut out);
                        let due: Vec<(Instant, u32)> =
                            model.range(..=(now, u32::MAX)).map(|(k, _)| *k).collect();
                        for k in &due {
                            model.remove(k);
                        }
                        let expected: Vec<u32> = due.iter().map(|&(_, v)| v).collect();
                        prop_assert_eq!(out, expected);
                    }
                }
                prop_assert_eq!(w.len(), model.len());
                prop_assert_eq!(w.next_deadline(), model.keys().next().map(|&(d, _)| d));
            }
        }
    }
}
