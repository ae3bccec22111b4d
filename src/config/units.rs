//! The spellings of durations (`500ms`, `60s`, `10m`, `2h`, `30d`) and sizes (`4096`,
//! `64KiB`, `1MiB`) that flags and the configuration file share: parsing, printing
//! back, and the `serde` glue that lets a file write either a string with a unit or a
//! bare number.
//!
//! Printing is exact: what [`format_duration`] and [`format_size`] write parses back
//! to the same value, which is what makes `--print-config` a file one can start from.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

use crate::net::Cidr;

/// Longest duration any flag holds: 10 years. Far beyond any useful timeout, rate
/// window or ban, and small enough that `Instant::now() + MAX_DURATION` (a deadline)
/// cannot overflow, which a value near `u64::MAX` seconds would, with a panic.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Duration units, largest first, in nanoseconds.
const DURATION_UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// Digits of a fraction that can still matter: a nanosecond of a day is 1e-14 of it.
const FRACTION_DIGITS: usize = 18;

/// Parses `250ms`, `1.5s`, `60s`, `10m`, `2h`, `30d` or a bare number of seconds.
///
/// The arithmetic is exact decimal, to the nanosecond, so a printed duration parses
/// back to the same value. Longer values, up to hundreds of digits, are capped at
/// [`MAX_DURATION`] rather than refused: "practically forever" is a fair thing to ask
/// for. Negative numbers, exponents and other units are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let invalid = || format!("invalid duration {s:?}: expected e.g. 500ms, 30s, 10m");
    let (whole, fraction) = num.split_once('.').unwrap_or((num, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(invalid());
    }
    let Some(&(_, unit_ns)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "invalid duration unit in {s:?}: use ms, s, m, h or d"
        ));
    };
    let cap = MAX_DURATION.as_nanos();
    // Saturates far above the cap (which it then meets), so any number of digits is
    // "huge", not an overflow.
    let whole = whole.bytes().fold(0u128, |n, d| {
        n.saturating_mul(10)
            .saturating_add(u128::from(d - b'0'))
            .min(cap + 1)
    });
    let digits = &fraction.as_bytes()[..fraction.len().min(FRACTION_DIGITS)];
    let numerator = digits
        .iter()
        .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
    let fraction_ns = numerator * unit_ns / 10u128.pow(digits.len() as u32);
    let ns = whole
        .saturating_mul(unit_ns)
        .saturating_add(fraction_ns)
        .min(cap);
    // At most MAX_DURATION in nanoseconds: fits a u64 (584 years).
    Ok(Duration::from_nanos(ns as u64))
}

/// Writes `d` the way [`parse_duration`] reads it, in the largest unit that holds it
/// whole (`30d`, `10m`, `1500ms`), or as decimal seconds below a millisecond.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    match DURATION_UNITS
        .iter()
        .find(|(_, unit)| ns.is_multiple_of(*unit))
    {
        Some((name, unit)) => format!("{}{name}", ns / unit),
        None => {
            let fraction = format!("{:09}", d.subsec_nanos());
            format!("{}.{}s", d.as_secs(), fraction.trim_end_matches('0'))
        }
    }
}

/// Size units, largest first, in bytes.
const SIZE_UNITS: [(&str, usize); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Parses a size in bytes: `4096`, `512B`, `64KiB`, `1MiB`, `1GiB`. Whole numbers
/// only; a size too large for this machine's `usize` is refused.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "B"),
    };
    let Some(&(_, multiplier)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit.trim()) else {
        return Err(format!(
            "invalid size unit in {s:?}: use B, KiB, MiB or GiB (e.g. 64KiB)"
        ));
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 4096, 64KiB, 1MiB"))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Writes `n` bytes the way [`parse_size`] reads it: in the largest unit that holds
/// it whole (`1MiB`, `64KiB`), else as a bare number.
pub fn format_size(n: usize) -> String {
    match SIZE_UNITS
        .iter()
        .find(|(_, unit)| n != 0 && *unit > 1 && n.is_multiple_of(*unit))
    {
        Some((name, unit)) => format!("{}{name}", n / unit),
        None => n.to_string(),
    }
}

/// `serde` glue for a [`Duration`]: a string with a unit (`"30s"`), or a whole number
/// of seconds.
pub(crate) mod duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Spelled {
            expecting: "a duration such as \"500ms\", \"30s\" or \"10m\", or whole seconds",
            parse: parse_duration,
        })
    }
}

/// `serde` glue for a size in bytes: a string with a unit (`"64KiB"`), or a number.
pub(crate) mod size {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*n))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        d.deserialize_any(Spelled {
            expecting: "a size such as \"64KiB\" or \"1MiB\", or a number of bytes",
            parse: parse_size,
        })
    }
}

/// `serde` glue for a list of address ranges: `["127.0.0.0/8", "::1"]`.
pub(crate) mod cidrs {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(list: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(de::Error::custom))
            .collect()
    }
}

/// Reads a string through `parse`, or a non-negative whole number as if written
/// without a unit.
struct Spelled<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for Spelled<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.parse)(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(".5m"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5."), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        // Below a nanosecond is nothing.
        assert_eq!(parse_duration("0.0000000001s"), Ok(Duration::ZERO));
        assert!(parse_duration("1.2.3s").is_err());
    }

    #[test]
    fn huge_bare_number_is_capped() {
        assert_eq!(parse_duration("10000000000000000000"), Ok(MAX_DURATION));
    }

    #[test]
    fn number_past_u64_seconds_is_capped() {
        assert_eq!(parse_duration("100000000000000000000"), Ok(MAX_DURATION));
    }

    #[test]
    fn huge_hours_are_capped() {
        assert_eq!(parse_duration("99999999999h"), Ok(MAX_DURATION));
    }

    #[test]
    fn number_too_large_for_f64_is_capped() {
        let digits = format!("1{}", "0".repeat(400));
        assert_eq!(parse_duration(&digits), Ok(MAX_DURATION));
    }

    #[test]
    fn durations_up_to_the_cap_are_kept() {
        assert_eq!(parse_duration("87600h"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("87599h"),
            Ok(MAX_DURATION - Duration::from_secs(3600))
        );
    }

    #[test]
    fn capped_duration_added_to_now_does_not_overflow() {
        let cap = parse_duration("10000000000000000000").unwrap();
        assert!(Instant::now().checked_add(cap).is_some());
        let _deadline = Instant::now() + cap;
    }

    #[test]
    fn exponent_is_refused() {
        assert!(parse_duration("1e30s").is_err());
        assert!(parse_duration("1e30").is_err());
    }

    #[test]
    fn negative_is_refused() {
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn nan_and_infinity_words_are_refused() {
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn empty_and_unit_only_are_refused() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration(".").is_err());
    }

    #[test]
    fn durations_print_in_the_largest_whole_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(50), "50ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(30 * 86400), "30d"),
            (Duration::from_nanos(100_000), "0.0001s"),
            (Duration::new(3, 1), "3.000000001s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text} parses back");
        }
        assert_eq!(
            parse_duration(&format_duration(MAX_DURATION)),
            Ok(MAX_DURATION)
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(
            parse_size("1MB").is_err(),
            "decimal units are not guessed at"
        );
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size(&format!("{}GiB", usize::MAX)).is_err());
    }

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        for (n, text) in [
            (0, "0"),
            (1000, "1000"),
            (4096, "4KiB"),
            (1 << 20, "1MiB"),
            (256 << 20, "256MiB"),
            (3 << 30, "3GiB"),
            (usize::MAX, &usize::MAX.to_string()),
        ] {
            assert_eq!(format_size(n), text);
            assert_eq!(parse_size(text), Ok(n), "{text} parses back");
        }
    }
}
