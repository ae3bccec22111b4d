//! A report read back from its JSON file, single run or `--repeat`: what `plot` and
//! `compare` need of it (who, what scenario, the figures with their spread, the latency
//! by percentile). The files are written by [`Report::to_json`](super::Report::to_json)
//! and [`Repeated::to_json`](super::repeat::Repeated::to_json); the tests here read
//! what those write, so the two sides cannot drift apart.

use std::path::Path;

use super::repeat::Spread;
use super::report::json::{self, Value};

/// Latency in ms by percentile: `(p in percent, ms)` pairs, p rising.
pub type Curve = Vec<(f64, f64)>;

/// What a JSON report says, as far as the subcommands need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The server's name (`label`, or the address for older files).
    pub label: String,
    /// The scenario in a few words: dialect, clients, rooms, load.
    pub scenario: String,
    /// The settings that make two scenarios the same one, by JSON key.
    pub settings: Vec<(String, String)>,
    /// How many runs it covers.
    pub runs: usize,
    /// The figures, by JSON key, each over the runs (one value for a single run).
    pub figures: Vec<(String, Spread)>,
    /// Latency in ms at each percentile (median over the runs).
    pub percentiles: Curve,
    /// With several runs: the lowest and highest latency at each percentile.
    pub band: Option<(Curve, Curve)>,
}

/// The settings compared to tell whether two reports ran the same scenario.
const SETTINGS: [&str; 9] = [
    "clients",
    "stalled",
    "rooms",
    "senders",
    "rate_per_sender",
    "payload",
    "tls",
    "ws",
    "servers",
];

impl Saved {
    /// Reads and parses `path`; the error names the file.
    pub fn load(path: &Path) -> Result<Saved, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Saved::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a report's JSON text.
    pub fn parse(text: &str) -> Result<Saved, String> {
        let v = json::parse(text)?;
        if v.members().is_none() {
            return Err("not a loopchat bench report (expected a JSON object)".into());
        }
        let text_of = |k: &str| v.get(k).and_then(Value::str).map(str::to_owned);
        let num = |k: &str| v.get(k).and_then(Value::num);
        let label = text_of("label")
            .filter(|l| !l.is_empty())
            .or_else(|| text_of("addr"))
            .ok_or("not a loopchat bench report (no `label` or `addr`)")?;
        let settings = SETTINGS
            .iter()
            .filter_map(|&k| {
                let shown = match v.get(k)? {
                    Value::Num(n) => format!("{n}"),
                    Value::Bool(b) => format!("{b}"),
                    other => format!("{other:?}"),
                };
                Some((k.to_owned(), shown))
            })
            .collect();
        let runs = num("repeat").map_or(1, |n| n.max(1.0) as usize);
        let scenario = format!(
            "{}, {} clients, {} room(s), {} x {} msg/s",
            text_of("dialect").unwrap_or_else(|| "?".into()),
            num("clients").unwrap_or(0.0),
            num("rooms").unwrap_or(0.0),
            num("senders").unwrap_or(0.0),
            num("rate_per_sender").unwrap_or(0.0),
        );
        let figures = v
            .get("figures")
            .and_then(Value::members)
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, f)| spread(f).map(|s| (k.clone(), s)))
            .collect();
        let band = match (
            pairs(v.get("percentiles_min")),
            pairs(v.get("percentiles_max")),
        ) {
            (Some(lo), Some(hi)) if !lo.is_empty() && lo.len() == hi.len() => Some((lo, hi)),
            _ => None,
        };
        Ok(Saved {
            label,
            scenario,
            settings,
            runs,
            figures,
            percentiles: pairs(v.get("percentiles")).unwrap_or_default(),
            band,
        })
    }

    /// Figure `key`, if the report has it.
    pub fn figure(&self, key: &str) -> Option<&Spread> {
        self.figures.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }
}

/// A figure: a number (one run) or `{median, min, max, values}` (several).
fn spread(v: &Value) -> Option<Spread> {
    if let Some(n) = v.num() {
        return Spread::of(&[n]);
    }
    let num = |k: &str| v.get(k).and_then(Value::num);
    let values = v
        .get("values")
        .and_then(Value::arr)
        .map(|a| a.iter().filter_map(Value::num).collect())
        .unwrap_or_default();
    Some(Spread {
        median: num("median")?,
        min: num("min")?,
        max: num("max")?,
        values,
    })
}

/// A list of `[a, b]` number pairs.
fn pairs(v: Option<&Value>) -> Option<Curve> {
    v?.arr()?
        .iter()
        .map(|p| match p.arr()? {
            [a, b] => Some((a.num()?, b.num()?)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::repeat::Repeated;
    use crate::bench::tally::new_histogram;
    use crate::bench::{Latency, Report};

    fn report(label: &str, p99_us: u64) -> Report {
        let mut h = new_histogram();
        for us in [100, 200, p99_us] {
            h.record(us).unwrap();
        }
        Report {
            addr: "127.0.0.1:1".into(),
            label: label.into(),
            dialect: "irc",
            clients: 200,
            rooms: 1,
            senders: 10,
            rate_per_sender: 20.0,
            latency: Latency::of(&h),
            histogram: Some(h),
            ..Report::default()
        }
    }

    #[test]
    fn reads_back_a_single_run() {
        let s = Saved::parse(&report("ngircd", 400).to_json()).unwrap();
        assert_eq!(s.label, "ngircd");
        assert_eq!(s.scenario, "irc, 200 clients, 1 room(s), 10 x 20 msg/s");
        assert_eq!(s.runs, 1);
        let p99 = s.figure("latency_p99_ms").unwrap();
        assert_eq!((p99.median, p99.min, p99.max), (0.4, 0.4, 0.4));
        assert_eq!(
            s.percentiles.len(),
            crate::bench::report::percentiles().len()
        );
        assert_eq!(s.percentiles[0], (50.0, 0.2));
        assert!(s.band.is_none());
    }

    #[test]
    fn reads_back_repeated_runs_with_their_spread() {
        let rep = Repeated::of(vec![report("a", 300), report("a", 900)]);
        let s = Saved::parse(&rep.to_json()).unwrap();
        assert_eq!(s.runs, 2);
        let p99 = s.figure("latency_p99_ms").unwrap();
        assert_eq!((p99.median, p99.min, p99.max), (0.6, 0.3, 0.9));
        assert_eq!(p99.values, [0.3, 0.9]);
        let (lo, hi) = s.band.unwrap();
        assert_eq!(lo.len(), hi.len());
        assert!(lo.iter().zip(&hi).all(|(l, h)| l.1 <= h.1));
    }

    #[test]
    fn other_json_is_refused_with_a_reason() {
        assert!(Saved::parse("[1]").unwrap_err().contains("not a loopchat"));
        assert!(Saved::parse("{}").unwrap_err().contains("label"));
        assert!(Saved::parse("{").is_err());
    }
}
