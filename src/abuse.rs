//! Per-IP abuse control, the defence against one address flooding the server with
//! connections or messages: connection counts, the connect-rate throttle, the message
//! rate of all an address's connections together, strikes, and the ban table with its
//! own timer wheel.
//!
//! This module owns what is kept per address ([`IpKey`]: an IPv4 address or an IPv6
//! /64) and when that state is dropped. It does not own connections: the server asks
//! [`Abuse::admit`] before it takes one, calls [`Abuse::release`] when a counted one
//! closes, keeps each connection's own [`MessageLimit`], asks
//! [`Abuse::take_message`] for every message that limit passed, and reports each drop
//! whose [`Verdict`] carries a strike through [`Abuse::strike`]. Closing the
//! connections of a banned address is also the server's job.
//!
//! Memory is bounded: a record lives only while its address has connections, strikes
//! that have not worn off, or a connect or message bucket that is not full again (a
//! cleanup timer drops it at that moment); bans leave at their deadline, actively, and
//! the table is capped at `max_bans`.
//!
//! Its unit tests, one per edge case, sit at the end of this file beside the code they
//! pin down; they are why the file runs past 600 lines.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::ServerConfig;
use crate::net::{Cidr, IpKey, Redacted};
use crate::rate::{ConnectLimit, MessageLimit, Strikes, Verdict};
use crate::timer::{TimerId, TimerWheel};

/// Resolution of the abuse wheel. Firing is exact whatever the tick (see
/// [`crate::timer`]); the tick only spreads timers over slots.
const WHEEL_TICK: Duration = Duration::from_millis(250);

/// Slots of the abuse wheel: 4096 × 250 ms ≈ 17 minutes per rotation, so the default
/// 10-minute ban and the cleanup timers (seconds to minutes away) are all within one
/// rotation, where finding the next deadline is cheapest.
const WHEEL_SLOTS: usize = 4096;

/// Least time between two warnings that the ban table is full (one per burst, not per ban).
const FULL_TABLE_WARN_EVERY: Duration = Duration::from_secs(60);

/// Stand-in for a deadline too far away to represent (a ban of `u64::MAX` seconds).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Take it; it is counted until [`Abuse::release`].
    Allowed,
    /// The address is banned for `remaining` more. This may be the result of this very
    /// attempt: a refusal for the rate may earn a strike (see [`Abuse::admit`]), which
    /// may be the one that bans. Then the address may still have open connections
    /// ([`Abuse::connections`] > 0) that the server should close as after a ban from
    /// [`Abuse::strike`].
    Banned {
        /// Time left on the ban.
        remaining: Duration,
    },
    /// The address already has `max_conns_per_ip` connections. Never a strike by
    /// itself, but the attempt took a connect token.
    TooManyConnections,
    /// The address opens connections faster than `connect_rate`; a strike only as
    /// [`Abuse::admit`] describes.
    TooFast,
}

/// The limits, copied from the configuration.
#[derive(Debug, Clone)]
struct Limits {
    max_strikes: u32,
    strike_decay: Duration,
    ban_time: Duration,
    max_bans: usize,
    max_conns_per_ip: usize,
    connect_rate: f64,
    connect_burst: f64,
    ip_rate: f64,
    ip_burst: f64,
    exempt: Vec<Cidr>,
    redact_ips: bool,
}

impl Limits {
    fn of(config: &ServerConfig) -> Limits {
        Limits {
            max_strikes: config.max_strikes,
            strike_decay: config.strike_decay,
            ban_time: config.ban_time,
            max_bans: config.max_bans,
            max_conns_per_ip: config.max_conns_per_ip,
            connect_rate: config.connect_rate,
            connect_burst: config.connect_burst,
            ip_rate: config.ip_rate,
            ip_burst: config.ip_burst,
            exempt: config.exempt.clone(),
            redact_ips: config.redact_ips,
        }
    }
}

/// What is known about one address.
#[derive(Debug)]
struct Record {
    /// Counted connections open now.
    conns: u32,
    strikes: Strikes,
    /// New-connection throttle, and which of its refusals earn a strike.
    connect: ConnectLimit,
    /// Messages of all the address's connections together. Kept after the last one
    /// closes until the bucket is full again, so reconnecting does not refill it.
    messages: MessageLimit,
    /// Pending cleanup, set only while `conns == 0`.
    cleanup: Option<TimerId>,
}

impl Record {
    /// A fresh record: no connections, no strikes, full buckets.
    fn new(now: Instant) -> Record {
        Record {
            conns: 0,
            strikes: Strikes::new(),
            connect: ConnectLimit::new(now),
            messages: MessageLimit::new(now),
            cleanup: None,
        }
    }
}

/// One ban.
#[derive(Debug)]
struct Ban {
    until: Instant,
    timer: TimerId,
}

/// What an abuse timer is for.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// The ban on this address ends.
    BanEnds(IpKey),
    /// This address's record may hold nothing worth keeping any more.
    Cleanup(IpKey),
}

/// Per-IP accounting and the ban table. Exempt addresses are never tracked.
#[derive(Debug)]
pub struct Abuse {
    limits: Limits,
    records: HashMap<IpKey, Record>,
    bans: HashMap<IpKey, Ban>,
    /// The bans ordered by expiry, to find the one nearest to expiry at the cap.
    ban_order: BTreeSet<(Instant, IpKey)>,
    wheel: TimerWheel<Due>,
    /// Bans dropped at the cap since the last warning, and when that warning was.
    dropped_bans: u64,
    last_full_warning: Option<Instant>,
    /// Scratch for polling the wheel (kept for its capacity).
    fired: Vec<Due>,
}

impl Abuse {
    /// Empty accounting with the limits of `config`.
    pub fn new(config: &ServerConfig, now: Instant) -> Self {
        Abuse {
            limits: Limits::of(config),
            records: HashMap::new(),
            bans: HashMap::new(),
            ban_order: BTreeSet::new(),
            wheel: TimerWheel::new(WHEEL_TICK, WHEEL_SLOTS, now),
            dropped_bans: 0,
            last_full_warning: None,
            fired: Vec::new(),
        }
    }

    /// Takes on the limits of a reloaded `config`. Bans, strikes and buckets stay as
    /// they are and are judged by the new limits from now on (a shorter `ban_time`
    /// applies to the next ban, not to those in force).
    ///
    /// `open` is the peer address of every connection the server holds. An address
    /// that becomes exempt has its connections uncounted, and one that stops being
    /// exempt has them counted, so each later [`Abuse::release`] matches.
    pub fn set_limits(&mut self, config: &ServerConfig, open: &[IpAddr], now: Instant) {
        let was_exempt = std::mem::replace(&mut self.limits, Limits::of(config)).exempt;
        for &ip in open {
            let before = was_exempt.iter().any(|c| c.contains(ip));
            let key = IpKey::of(ip);
            match (before, self.is_exempt(ip)) {
                (false, true) => {
                    if let Some(record) = self.records.get_mut(&key) {
                        record.conns = record.conns.saturating_sub(1);
                    }
                }
                (true, false) => {
                    let record = self.records.entry(key).or_insert_with(|| Record::new(now));
                    record.conns = record.conns.saturating_add(1);
                }
                _ => continue,
            }
            self.settle(key, now);
        }
    }

    /// Whether `ip` is exempt: never limited, capped, struck or banned.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.limits.exempt.iter().any(|c| c.contains(ip))
    }

    /// A new connection from `ip`: checks the ban, then the connect-rate throttle, then
    /// the per-IP connection cap, and counts the connection when it is allowed. Exempt
    /// addresses are always allowed and not counted.
    ///
    /// **Which refusals earn a strike.** A restart storm (a NAT gateway or a client
    /// host coming back, all its clients reconnecting at once) is bad luck, not abuse;
    /// an address that keeps connecting faster than the throttle allows is abuse. So:
    ///
    /// - Every attempt that is not banned takes a token from the address's connect
    ///   bucket (`connect_burst` tokens, refilled at `connect_rate` per second), even
    ///   one then refused for the cap, so hammering at the cap runs into the throttle.
    /// - [`Admit::TooManyConnections`] never earns a strike by itself.
    /// - [`Admit::TooFast`] refusals are counted by episode of an empty connect bucket
    ///   (an episode lasts until the bucket is full again). The first `connect_burst`
    ///   refusals of an episode are free; the next one earns a strike, and after that
    ///   one more per refill time (`connect_burst / connect_rate`) while the episode
    ///   lasts (see [`ConnectLimit`]).
    ///
    /// At the defaults (10/s, burst 20, 5 strikes): 40 connects at once are 20 admitted
    /// and 20 refused, and no strike; an address connecting 200 times a second is struck
    /// within a fifth of a second and banned about 8 s later. With `connect_rate` 0 no
    /// connect refusal ever strikes.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admit {
        if self.is_exempt(ip) {
            return Admit::Allowed;
        }
        let key = IpKey::of(ip);
        if let Some(remaining) = self.ban_remaining(key, now) {
            return Admit::Banned { remaining };
        }
        let limits = &self.limits;
        let record = self.records.entry(key).or_insert_with(|| Record::new(now));
        let verdict = record
            .connect
            .check(limits.connect_rate, limits.connect_burst, now);
        let result = match verdict {
            Verdict::Drop { strike: false } => Admit::TooFast,
            Verdict::Drop { strike: true } => match self.strike_key(key, now) {
                Some(remaining) => Admit::Banned { remaining },
                None => Admit::TooFast,
            },
            Verdict::Pass
                if limits.max_conns_per_ip > 0
                    && record.conns as usize >= limits.max_conns_per_ip =>
            {
                Admit::TooManyConnections
            }
            Verdict::Pass => {
                record.conns = record.conns.saturating_add(1);
                Admit::Allowed
            }
        };
        self.settle(key, now);
        result
    }

    /// A counted connection from `ip` closed.
    pub fn release(&mut self, ip: IpAddr, now: Instant) {
        if self.is_exempt(ip) {
            return;
        }
        let key = IpKey::of(ip);
        if let Some(record) = self.records.get_mut(&key) {
            record.conns = record.conns.saturating_sub(1);
            self.settle(key, now);
        }
    }

    /// One message from `ip`, against the message rate of all the address's connections
    /// together (`ip_rate` per second, burst `ip_burst`), so that many connections of
    /// one address cannot do what one may not.
    ///
    /// Ask only for a message that its connection's own [`MessageLimit`] passed: a line
    /// the connection drops itself must not use up tokens its neighbours share. A
    /// [`Verdict::Drop`] drops the message; its `strike` follows the episode rule of
    /// [`MessageLimit`] (the first drop while the address's bucket is empty, then one
    /// per refill time `ip_burst / ip_rate`), and the caller reports it through
    /// [`Abuse::strike`]. Exempt addresses and `ip_rate` 0 always pass.
    pub fn take_message(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let (rate, burst) = (self.limits.ip_rate, self.limits.ip_burst);
        if !(rate > 0.0 && rate.is_finite()) || self.is_exempt(ip) {
            return Verdict::Pass;
        }
        let key = IpKey::of(ip);
        let record = self.records.entry(key).or_insert_with(|| Record::new(now));
        let verdict = record.messages.check(rate, burst, now);
        if record.conns == 0 {
            // Not a counted connection's message (the server counts every one it
            // admits), but the record must still leave on time.
            self.settle(key, now);
        }
        verdict
    }

    /// One strike for `ip`: a dropped message whose [`Verdict`] (from a connection's
    /// [`MessageLimit`] or from [`Abuse::take_message`]) says it earns one; connect
    /// refusals are struck inside [`Abuse::admit`]. Returns the ban duration if this
    /// strike banned the address; the server then closes its connections. An address
    /// already banned, or exempt, is not struck.
    pub fn strike(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.is_exempt(ip) {
            return None;
        }
        let key = IpKey::of(ip);
        let banned = self.strike_key(key, now);
        self.settle(key, now);
        banned
    }

    /// Time left on the ban of `ip`, if it is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.is_exempt(ip) {
            return None;
        }
        self.ban_remaining(IpKey::of(ip), now)
    }

    /// Counted connections open from `ip`'s address (or /64).
    pub fn connections(&self, ip: IpAddr) -> usize {
        self.records
            .get(&IpKey::of(ip))
            .map_or(0, |r| r.conns as usize)
    }

    /// Strikes standing against `ip`'s address at `now`.
    pub fn strikes(&self, ip: IpAddr, now: Instant) -> u32 {
        self.records
            .get(&IpKey::of(ip))
            .map_or(0, |r| r.strikes.current(now, self.limits.strike_decay))
    }

    /// Removes the bans whose time is up (logging each at `info`) and the records that
    /// hold nothing worth keeping any more. Returns how many bans expired.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.poll(now, &mut fired);
        let mut expired = 0;
        for due in fired.drain(..) {
            match due {
                Due::BanEnds(key) => {
                    if let Some(ban) = self.bans.remove(&key) {
                        self.ban_order.remove(&(ban.until, key));
                        expired += 1;
                        info!("ban on {} expired", self.redacted(key));
                    }
                }
                Due::Cleanup(key) => {
                    if let Some(record) = self.records.get_mut(&key) {
                        record.cleanup = None;
                        self.settle(key, now);
                    }
                }
            }
        }
        self.fired = fired;
        expired
    }

    /// When [`Abuse::expire`] next has work to do: a ban ending or a record to drop.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// The bans in force at `now` with their time left, nearest to expiry first.
    pub fn bans(&self, now: Instant) -> Vec<(IpKey, Duration)> {
        self.ban_order
            .iter()
            .filter(|(until, _)| *until > now)
            .map(|&(until, key)| (key, until - now))
            .collect()
    }

    /// Bans held (including any whose time is up but that `expire` has not seen yet).
    pub fn ban_count(&self) -> usize {
        self.bans.len()
    }

    /// Addresses with a record (connections, strikes, or a connect or message bucket
    /// refilling).
    pub fn tracked_ips(&self) -> usize {
        self.records.len()
    }

    fn ban_remaining(&self, key: IpKey, now: Instant) -> Option<Duration> {
        self.bans
            .get(&key)
            .filter(|b| b.until > now)
            .map(|b| b.until - now)
    }

    fn bans_enabled(&self) -> bool {
        self.limits.max_strikes > 0 && self.limits.max_bans > 0 && !self.limits.ban_time.is_zero()
    }

    fn redacted(&self, ip: IpKey) -> Redacted<IpKey> {
        Redacted {
            value: ip,
            redact: self.limits.redact_ips,
        }
    }

    /// Adds a strike and bans at `max_strikes`; the caller settles the record.
    fn strike_key(&mut self, key: IpKey, now: Instant) -> Option<Duration> {
        if self.ban_remaining(key, now).is_some() {
            return None;
        }
        let enabled = self.bans_enabled();
        let limits = &self.limits;
        let record = self.records.entry(key).or_insert_with(|| Record::new(now));
        let count = record.strikes.add(now, limits.strike_decay);
        if !enabled || count < limits.max_strikes {
            return None;
        }
        record.strikes = Strikes::new();
        let why = format!("after {count} strikes");
        self.ban(key, self.limits.ban_time, &why, now);
        Some(self.limits.ban_time)
    }

    fn ban(&mut self, key: IpKey, duration: Duration, why: &str, now: Instant) {
        // A ban whose time is up but that `expire` has not removed yet.
        self.unban(key);
        while self.bans.len() >= self.limits.max_bans {
            let Some((_, nearest)) = self.ban_order.first().copied() else {
                break;
            };
            self.unban(nearest);
            self.dropped_bans += 1;
        }
        if self.dropped_bans > 0
            && self
                .last_full_warning
                .is_none_or(|t| now.saturating_duration_since(t) >= FULL_TABLE_WARN_EVERY)
        {
            warn!(
                "ban table full ({} bans): dropped {} bans nearest to expiry to make room",
                self.limits.max_bans, self.dropped_bans
            );
            self.dropped_bans = 0;
            self.last_full_warning = Some(now);
        }
        let until = now
            .checked_add(duration)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        let timer = self.wheel.insert(until, Due::BanEnds(key));
        self.bans.insert(key, Ban { until, timer });
        self.ban_order.insert((until, key));
        info!("banned {} for {duration:?} {why}", self.redacted(key));
    }

    /// Bans an address another server of the cluster banned (or that was banned in
    /// Redis when this one started), for the time left on it.
    pub fn ban_from_cluster(&mut self, key: IpKey, duration: Duration, why: &str, now: Instant) {
        self.ban(key, duration, why, now);
    }

    /// Bans `ip` for `duration` at an operator's word (`BAN:`), strikes or not, exempt
    /// or not: an operator decides on purpose. The server closes its connections.
    pub fn ban_by_operator(&mut self, ip: IpAddr, duration: Duration, by: &str, now: Instant) {
        self.ban(IpKey::of(ip), duration, &format!("by operator {by:?}"), now);
    }

    fn unban(&mut self, key: IpKey) {
        if let Some(ban) = self.bans.remove(&key) {
            self.wheel.cancel(ban.timer);
            self.ban_order.remove(&(ban.until, key));
        }
    }

    /// After any change to `key`'s record: drop it if it holds nothing worth keeping,
    /// or make sure a cleanup timer will look again when it will not.
    fn settle(&mut self, key: IpKey, now: Instant) {
        let Some(record) = self.records.get_mut(&key) else {
            return;
        };
        if record.conns > 0 {
            // Connections keep the record; release settles it again.
            if let Some(id) = record.cleanup.take() {
                self.wheel.cancel(id);
            }
            return;
        }
        let strikes_gone = record
            .strikes
            .clear_at(self.limits.strike_decay)
            .unwrap_or(now);
        let idle_at = strikes_gone
            .max(record.connect.idle_at())
            .max(record.messages.idle_at());
        if idle_at <= now {
            if let Some(id) = record.cleanup.take() {
                self.wheel.cancel(id);
            }
            self.records.remove(&key);
            return;
        }
        // A timer due no later than `idle_at` may stay: when it fires, settle runs again.
        if let Some(id) = record.cleanup {
            match self.wheel.deadline(id) {
                Some(due) if due <= idle_at => return,
                _ => {
                    self.wheel.cancel(id);
                }
            }
        }
        record.cleanup = Some(self.wheel.insert(idle_at, Due::Cleanup(key)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Defaults with every limit off; tests switch on what they test.
    fn config() -> ServerConfig {
        ServerConfig {
            max_strikes: 0,
            max_conns_per_ip: 0,
            connect_rate: 0.0,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn strikes_accumulate_decay_and_ban_at_max() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_strikes: 3,
            strike_decay: secs(30),
            ban_time: secs(600),
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("192.0.2.1");
        assert_eq!(a.strike(x, t0), None);
        assert_eq!(a.strike(x, t0), None);
        assert_eq!(a.strikes(x, t0), 2);
        // Two decay periods later both are gone; the next two do not ban.
        let t1 = t0 + secs(60);
        assert_eq!(a.strikes(x, t1), 0);
        assert_eq!(a.strike(x, t1), None);
        assert_eq!(a.strike(x, t1), None);
        assert_eq!(a.is_banned(x, t1), None);
        assert_eq!(a.strike(x, t1), Some(secs(600)));
        assert_eq!(a.is_banned(x, t1), Some(secs(600)));
        assert_eq!(a.strikes(x, t1), 0, "a ban clears the strikes");
        assert_eq!(
            a.admit(x, t1 + secs(1)),
            Admit::Banned {
                remaining: secs(599)
            }
        );
        assert_eq!(a.strike(x, t1), None, "no strikes while banned");
        assert_eq!(a.ban_count(), 1);
        assert_eq!(a.bans(t1 + secs(100)), vec![(IpKey::of(x), secs(500))]);
    }

    #[test]
    fn ban_leaves_memory_exactly_at_its_deadline() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_strikes: 1,
            ban_time: secs(600),
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("192.0.2.7");
        assert_eq!(a.strike(x, t0), Some(secs(600)));
        let until = t0 + secs(600);
        assert_eq!(a.next_deadline(), Some(until));
        // One wheel tick (and one nanosecond) before the deadline it is still there.
        assert_eq!(a.expire(until - WHEEL_TICK), 0);
        assert_eq!(a.expire(until - Duration::from_nanos(1)), 0);
        assert_eq!(a.ban_count(), 1);
        assert!(a.is_banned(x, until - Duration::from_nanos(1)).is_some());
        assert_eq!(a.expire(until), 1);
        assert_eq!(a.ban_count(), 0);
        assert_eq!(a.tracked_ips(), 0);
        assert_eq!(a.next_deadline(), None);
        assert_eq!(a.admit(x, until), Admit::Allowed);
    }

    #[test]
    fn ban_table_cap_drops_the_ban_nearest_to_expiry() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_strikes: 1,
            ban_time: secs(600),
            max_bans: 3,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        for i in 1..=3u64 {
            let x = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8));
            assert!(a.strike(x, t0 + secs(i)).is_some());
        }
        let newest = ip("198.51.100.1");
        assert!(a.strike(newest, t0 + secs(10)).is_some());
        assert_eq!(a.ban_count(), 3);
        assert_eq!(a.is_banned(ip("192.0.2.1"), t0 + secs(10)), None);
        assert!(a.is_banned(ip("192.0.2.2"), t0 + secs(10)).is_some());
        assert!(a.is_banned(newest, t0 + secs(10)).is_some());
        // The dropped ban's timer went with it: only three expire.
        assert_eq!(a.expire(t0 + secs(700)), 3);
        assert_eq!(a.ban_count(), 0);
    }

    #[test]
    fn per_ip_connection_cap_and_release() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_conns_per_ip: 2,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("203.0.113.5");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.admit(x, t0), Admit::TooManyConnections);
        assert_eq!(a.strikes(x, t0), 0, "a refusal for the cap is no strike");
        assert_eq!(a.connections(x), 2);
        assert_eq!(
            a.admit(ip("203.0.113.6"), t0),
            Admit::Allowed,
            "other IPs unaffected"
        );
        a.release(x, t0);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.connections(x), 2);
    }

    #[test]
    fn connect_rate_throttles_then_refills() {
        let t0 = Instant::now();
        let c = ServerConfig {
            connect_rate: 2.0,
            connect_burst: 3.0,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("203.0.113.9");
        for _ in 0..3 {
            assert_eq!(a.admit(x, t0), Admit::Allowed);
            a.release(x, t0);
        }
        assert_eq!(a.admit(x, t0), Admit::TooFast);
        assert_eq!(a.admit(x, t0 + Duration::from_millis(500)), Admit::Allowed);
    }

    #[test]
    fn a_restart_storm_within_twice_the_connect_burst_earns_no_strike() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_strikes: 1,
            ban_time: secs(60),
            connect_rate: 10.0,
            connect_burst: 20.0,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("198.51.100.20");
        let storm: Vec<Admit> = (0..30).map(|_| a.admit(x, t0)).collect();
        assert!(storm[..20].iter().all(|r| *r == Admit::Allowed));
        assert!(storm[20..].iter().all(|r| *r == Admit::TooFast));
        assert_eq!(a.strikes(x, t0), 0);
        // The refused ten retry at once, and again: 20 refusals in the episode, free.
        for _ in 0..10 {
            assert_eq!(a.admit(x, t0 + Duration::from_millis(10)), Admit::TooFast);
        }
        assert_eq!(a.strikes(x, t0), 0);
        // A second later ten tokens are back and the rest get in.
        let t1 = t0 + secs(1);
        assert!((0..10).all(|_| a.admit(x, t1) == Admit::Allowed));
        assert_eq!(a.strikes(x, t1), 0);
        assert_eq!(a.connections(x), 30);
    }

    #[test]
    fn a_sustained_connect_flood_is_banned_with_default_flags() {
        let t0 = Instant::now();
        let c = ServerConfig::default();
        let mut a = Abuse::new(&c, t0);
        let x = ip("198.51.100.30");
        // 200 attempts a second; each admitted connection closes at once.
        let mut banned_at = None;
        for i in 0..4000u64 {
            let now = t0 + Duration::from_millis(i * 5);
            match a.admit(x, now) {
                Admit::Allowed => a.release(x, now),
                Admit::Banned { remaining } => {
                    assert_eq!(remaining, c.ban_time);
                    banned_at = Some(now - t0);
                    break;
                }
                Admit::TooFast => {}
                Admit::TooManyConnections => panic!("never more than one open"),
            }
        }
        // Struck on the 21st refusal (within 250 ms), then once per 2 s refill time:
        // the fifth strike bans a little over 8 s in.
        let banned_at = banned_at.expect("a flood must be banned");
        assert!(
            banned_at >= secs(8) && banned_at < Duration::from_millis(8250),
            "banned at {banned_at:?}"
        );
    }

    #[test]
    fn hammering_at_the_cap_runs_into_the_throttle_and_is_banned() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_conns_per_ip: 2,
            max_strikes: 2,
            ban_time: secs(60),
            connect_rate: 10.0,
            connect_burst: 20.0,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("203.0.113.10");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        // A client that retries now and then at the cap is refused but never struck.
        for i in 1..=100u64 {
            assert_eq!(a.admit(x, t0 + secs(i)), Admit::TooManyConnections);
        }
        assert_eq!(a.strikes(x, t0 + secs(100)), 0);
        // One that hammers empties the connect bucket (20 tokens: refusals for the cap
        // take them too), then has 20 free refusals, then strikes.
        let t1 = t0 + secs(200);
        let tries: Vec<Admit> = (0..40).map(|_| a.admit(x, t1)).collect();
        assert!(tries[..20].iter().all(|r| *r == Admit::TooManyConnections));
        assert!(tries[20..].iter().all(|r| *r == Admit::TooFast));
        assert_eq!(a.strikes(x, t1), 0);
        assert_eq!(a.admit(x, t1), Admit::TooFast);
        assert_eq!(a.strikes(x, t1), 1);
        // Still hammering, 100 times a second: the second strike comes one refill time
        // (2 s) after the first, and bans.
        let mut banned_at = None;
        for i in 1..=300u64 {
            let now = t1 + Duration::from_millis(i * 10);
            match a.admit(x, now) {
                Admit::Banned { remaining } => {
                    assert_eq!(remaining, secs(60));
                    banned_at = Some(now - t1);
                    break;
                }
                r => assert!(matches!(r, Admit::TooFast | Admit::TooManyConnections)),
            }
        }
        // (An attempt that finds a token is refused for the cap instead, no strike.)
        let banned_at = banned_at.expect("hammering must be banned");
        assert!(
            banned_at >= secs(2) && banned_at < Duration::from_millis(2100),
            "banned at {banned_at:?}"
        );
        // Its open connections are for the server to close.
        assert_eq!(a.connections(x), 2);
    }

    /// Sends `n` messages from `ip` at `now` through the address's limit only;
    /// returns (drops, strikes).
    fn send(a: &mut Abuse, ip: IpAddr, n: usize, now: Instant) -> (usize, usize) {
        let mut drops = 0;
        let mut strikes = 0;
        for _ in 0..n {
            if let Verdict::Drop { strike } = a.take_message(ip, now) {
                drops += 1;
                strikes += usize::from(strike);
            }
        }
        (drops, strikes)
    }

    #[test]
    fn per_ip_message_rate_is_shared_by_all_connections_of_the_address() {
        let t0 = Instant::now();
        let c = ServerConfig {
            ip_rate: 20.0,
            ip_burst: 40.0,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let (x, y) = (ip("192.0.2.60"), ip("192.0.2.61"));
        for _ in 0..4 {
            assert_eq!(a.admit(x, t0), Admit::Allowed);
        }
        // Four connections, ten lines each: the burst of 40 is for all of them.
        assert_eq!(send(&mut a, x, 40, t0), (0, 0));
        assert_eq!(a.take_message(x, t0), Verdict::Drop { strike: true });
        assert_eq!(send(&mut a, x, 10, t0), (10, 0));
        // Another address has its own.
        assert_eq!(a.admit(y, t0), Admit::Allowed);
        assert_eq!(send(&mut a, y, 40, t0), (0, 0));
        // 20 a second: five tokens in 250 ms.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(send(&mut a, x, 6, t1), (1, 0));
    }

    #[test]
    fn many_connections_within_their_own_rate_are_banned_by_the_address_rate() {
        let t0 = Instant::now();
        // Defaults, but the 64 connects at once are not what this test is about.
        let c = ServerConfig {
            connect_rate: 0.0,
            ..ServerConfig::default()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("198.51.100.40");
        let mut conns: Vec<MessageLimit> = (0..64)
            .map(|_| {
                assert_eq!(a.admit(x, t0), Admit::Allowed);
                MessageLimit::new(t0)
            })
            .collect();
        // Each sends four lines a second, under its own 5/s: 256 a second together,
        // against the address's 20. The server's order: the connection's limit, then
        // the address's, and a strike when a verdict says so.
        let mut banned_at = None;
        'run: for tick in 0..1000u64 {
            let now = t0 + Duration::from_millis(tick * 250);
            for m in &mut conns {
                let verdict = match m.check(c.rate, c.burst, now) {
                    Verdict::Pass => a.take_message(x, now),
                    drop => panic!("a connection within its rate was dropped: {drop:?}"),
                };
                if verdict == (Verdict::Drop { strike: true }) && a.strike(x, now).is_some() {
                    banned_at = Some(now - t0);
                    break 'run;
                }
            }
        }
        // First strike at once, then one per refill time (40 / 20/s = 2 s).
        assert_eq!(banned_at, Some(secs(8)));
    }

    #[test]
    fn a_paste_behind_a_nat_costs_one_strike_and_the_neighbour_talks_on() {
        let t0 = Instant::now();
        let c = ServerConfig::default();
        let mut a = Abuse::new(&c, t0);
        let nat = ip("203.0.113.80");
        assert_eq!(a.admit(nat, t0), Admit::Allowed);
        assert_eq!(a.admit(nat, t0), Admit::Allowed);
        let mut paster = MessageLimit::new(t0);
        let mut quiet = MessageLimit::new(t0);
        let line = |m: &mut MessageLimit, a: &mut Abuse, now: Instant| -> bool {
            let verdict = match m.check(c.rate, c.burst, now) {
                Verdict::Pass => a.take_message(nat, now),
                drop => drop,
            };
            if let Verdict::Drop { strike } = verdict {
                if strike {
                    assert_eq!(a.strike(nat, now), None, "banned");
                }
                return false;
            }
            true
        };
        // A paste of 15 lines: ten pass, five drop, one strike.
        let passed = (0..15).filter(|_| line(&mut paster, &mut a, t0)).count();
        assert_eq!(passed, 10);
        assert_eq!(a.strikes(nat, t0), 1);
        // The neighbour, one line a second for a minute: every one passes.
        for i in 0..60 {
            assert!(line(&mut quiet, &mut a, t0 + secs(i)));
        }
        assert_eq!(a.strikes(nat, t0 + secs(29)), 1);
        assert_eq!(a.strikes(nat, t0 + secs(30)), 0, "worn off");
        assert_eq!(a.is_banned(nat, t0 + secs(60)), None);
    }

    #[test]
    fn the_address_message_bucket_outlives_a_reconnect_then_leaves() {
        let t0 = Instant::now();
        let c = ServerConfig {
            ip_rate: 20.0,
            ip_burst: 40.0,
            // Strikes would keep the record too; this test is about the bucket.
            strike_decay: Duration::ZERO,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("192.0.2.70");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(send(&mut a, x, 40, t0), (0, 0));
        a.release(x, t0);
        // No connection, no strike, but the bucket is refilling: the record stays.
        assert_eq!(a.tracked_ips(), 1);
        assert_eq!(a.next_deadline(), Some(t0 + secs(2)));
        // Reconnecting half a second later finds 10 tokens, not a fresh 40.
        let t1 = t0 + Duration::from_millis(500);
        a.expire(t1);
        assert_eq!(a.admit(x, t1), Admit::Allowed);
        assert_eq!(send(&mut a, x, 20, t1), (10, 1));
        a.release(x, t1);
        // Those ten tokens are back 2.5 s in; not an instant earlier.
        let full = t0 + Duration::from_millis(2500);
        a.expire(full - Duration::from_nanos(1));
        assert_eq!(a.tracked_ips(), 1);
        a.expire(full);
        assert_eq!(a.tracked_ips(), 0);
        assert_eq!(a.next_deadline(), None);
        // A message from an address with no counted connection leaves no record behind.
        let y = ip("192.0.2.71");
        assert_eq!(a.take_message(y, full), Verdict::Pass);
        assert_eq!(a.next_deadline(), Some(full + Duration::from_millis(50)));
        a.expire(full + Duration::from_millis(50));
        assert_eq!(a.tracked_ips(), 0);
    }

    #[test]
    fn exempt_or_unlimited_addresses_always_pass_and_keep_no_record() {
        let t0 = Instant::now();
        let c = ServerConfig {
            ip_rate: 1.0,
            ip_burst: 1.0,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        assert_eq!(send(&mut a, ip("127.0.0.9"), 1000, t0), (0, 0));
        assert_eq!(a.tracked_ips(), 0);
        let c = ServerConfig {
            ip_rate: 0.0,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        assert_eq!(send(&mut a, ip("192.0.2.80"), 1000, t0), (0, 0));
        assert_eq!(a.tracked_ips(), 0);
    }

    #[test]
    fn exempt_addresses_are_never_limited() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_strikes: 1,
            max_conns_per_ip: 1,
            connect_rate: 1.0,
            connect_burst: 1.0,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            ..ServerConfig::default()
        };
        let mut a = Abuse::new(&c, t0);
        let lo = ip("127.0.0.3");
        assert!(a.is_exempt(lo));
        for _ in 0..1000 {
            assert_eq!(a.admit(lo, t0), Admit::Allowed);
            assert_eq!(a.strike(lo, t0), None);
        }
        assert_eq!(a.is_banned(lo, t0), None);
        assert_eq!(a.tracked_ips(), 0);
        assert_eq!(a.ban_count(), 0);
        a.release(lo, t0);
        // Not exempt: limited as usual. One refusal is free (the burst is 1), the next
        // strikes, and one strike bans.
        let x = ip("192.0.2.1");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.admit(x, t0), Admit::TooFast);
        assert_eq!(
            a.admit(x, t0),
            Admit::Banned {
                remaining: c.ban_time
            }
        );
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_record() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_conns_per_ip: 2,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        assert_eq!(a.admit(ip("2001:db8:1:2::1"), t0), Admit::Allowed);
        assert_eq!(a.admit(ip("2001:db8:1:2:ffff::9"), t0), Admit::Allowed);
        assert_eq!(
            a.admit(ip("2001:db8:1:2::abcd"), t0),
            Admit::TooManyConnections
        );
        assert_eq!(a.admit(ip("2001:db8:1:3::1"), t0), Admit::Allowed);
        assert_eq!(a.tracked_ips(), 2);
    }

    #[test]
    fn records_are_dropped_when_they_hold_nothing() {
        let t0 = Instant::now();
        let c = ServerConfig {
            max_strikes: 5,
            strike_decay: secs(30),
            connect_rate: 10.0,
            connect_burst: 20.0,
            ..config()
        };
        let mut a = Abuse::new(&c, t0);
        let x = ip("192.0.2.50");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        a.strike(x, t0);
        a.strike(x, t0);
        a.release(x, t0);
        assert_eq!(a.tracked_ips(), 1);
        // Two strikes wear off after 60 s; the bucket long before.
        assert_eq!(a.next_deadline(), Some(t0 + secs(60)));
        a.expire(t0 + secs(59));
        assert_eq!(a.tracked_ips(), 1);
        a.expire(t0 + secs(60));
        assert_eq!(a.tracked_ips(), 0);
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn a_million_distinct_ips_do_not_accumulate() {
        let t0 = Instant::now();
        let c = ServerConfig {
            connect_rate: 10.0,
            connect_burst: 20.0,
            max_conns_per_ip: 64,
            max_strikes: 5,
            ..ServerConfig::default()
        };
        let mut a = Abuse::new(&c, t0);
        let mut now = t0;
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            // Every other one an IPv6 /64 of its own.
            let x = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    (i >> 16) as u16,
                    i as u16,
                    0,
                    0,
                    0,
                    1,
                ))
            };
            assert_eq!(a.admit(x, now), Admit::Allowed);
            a.release(x, now);
            now += Duration::from_micros(1);
            if i % 1000 == 0 {
                a.expire(now);
                peak = peak.max(a.tracked_ips());
            }
        }
        // A record lives 1/connect_rate = 100 ms after its release: ~100k at 1 µs each.
        assert!(peak <= 101_000, "peak {peak}");
        a.expire(now + secs(1));
        assert_eq!(a.tracked_ips(), 0);
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn new_limits_apply_to_the_next_check() {
        let t0 = Instant::now();
        let mut a = Abuse::new(&config(), t0);
        let x = ip("192.0.2.1");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        let capped = ServerConfig {
            max_conns_per_ip: 2,
            ..config()
        };
        a.set_limits(&capped, &[x, x], t0);
        assert_eq!(a.admit(x, t0), Admit::TooManyConnections);
        a.set_limits(&config(), &[x, x], t0);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
    }

    #[test]
    fn an_address_made_exempt_or_not_keeps_its_count_in_step() {
        let t0 = Instant::now();
        let one = ServerConfig {
            max_conns_per_ip: 1,
            ..config()
        };
        let exempt = ServerConfig {
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
            ..one.clone()
        };
        let mut a = Abuse::new(&one, t0);
        let x = ip("192.0.2.1");
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        assert_eq!(a.admit(x, t0), Admit::TooManyConnections);

        // Exempt: its open connection is no longer counted, and its release is a no-op.
        a.set_limits(&exempt, &[x], t0);
        assert_eq!(a.connections(x), 0);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
        a.release(x, t0);
        assert_eq!(a.tracked_ips(), 0);

        // Not exempt again with one still open: it counts, and its release frees it.
        a.set_limits(&one, &[x], t0);
        assert_eq!(a.connections(x), 1);
        assert_eq!(a.admit(x, t0), Admit::TooManyConnections);
        a.release(x, t0);
        assert_eq!(a.connections(x), 0);
        assert_eq!(a.admit(x, t0), Admit::Allowed);
    }
}
