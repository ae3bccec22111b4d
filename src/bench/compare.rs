//! `loopchat bench compare A.json B.json`: for each figure both reports have, the two
//! medians, their min–max ranges, the change from A to B, and whether the difference
//! is larger than the spread (the ranges do not overlap) or within it. Reports of
//! single runs have no spread: their differences are shown but not judged.
//!
//! It reads reports through [`Saved`]; it runs nothing.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use super::repeat::{Better, Spread, decimals, figure};
use super::saved::Saved;

/// Arguments of `loopchat bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The first report (`--json` of `loopchat bench`, with or without --repeat).
    #[arg(value_name = "A.json")]
    pub a: PathBuf,
    /// The second report.
    #[arg(value_name = "B.json")]
    pub b: PathBuf,
}

/// What one figure's comparison says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The ranges do not overlap: B is higher than A beyond the spread.
    Higher,
    /// The ranges do not overlap: B is lower than A beyond the spread.
    Lower,
    /// The ranges overlap: the difference is within the runs' own spread.
    WithinSpread,
    /// Both reports are single runs: there is no spread to judge by.
    NoSpread,
}

/// One figure of both reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The figure's JSON key.
    pub key: String,
    /// A's value over its runs.
    pub a: Spread,
    /// B's value over its runs.
    pub b: Spread,
    /// The verdict.
    pub verdict: Verdict,
}

/// The comparison of two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The first report.
    pub a: Saved,
    /// The second report.
    pub b: Saved,
    /// The figures both have, in the table order of [`FIGURES`](super::repeat::FIGURES)
    /// (figures this version does not know come last).
    pub rows: Vec<Row>,
}

/// Compares `a` with `b`.
pub fn compare(a: Saved, b: Saved) -> Comparison {
    let mut rows: Vec<Row> = a
        .figures
        .iter()
        .filter_map(|(key, sa)| {
            let sb = b.figure(key)?;
            let verdict = if a.runs < 2 && b.runs < 2 {
                Verdict::NoSpread
            } else if !sa.apart(sb) {
                Verdict::WithinSpread
            } else if sb.median > sa.median {
                Verdict::Higher
            } else {
                Verdict::Lower
            };
            Some(Row {
                key: key.clone(),
                a: sa.clone(),
                b: sb.clone(),
                verdict,
            })
        })
        .collect();
    let order = |k: &str| {
        super::repeat::FIGURES
            .iter()
            .position(|f| f.key == k)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| order(&r.key));
    Comparison { a, b, rows }
}

impl Comparison {
    /// The settings in which the two scenarios differ, as `name A vs B`.
    pub fn differences(&self) -> Vec<String> {
        self.a
            .settings
            .iter()
            .filter_map(|(k, va)| {
                let (_, vb) = self.b.settings.iter().find(|(kb, _)| kb == k)?;
                (va != vb).then(|| format!("{k} {va} vs {vb}"))
            })
            .collect()
    }
}

/// A spread as `median [min - max]` (a single value alone), with `d` decimals.
fn shown(s: &Spread, d: usize) -> String {
    if s.values.len() > 1 || s.min != s.max {
        format!("{:.d$} [{:.d$} - {:.d$}]", s.median, s.min, s.max)
    } else {
        format!("{:.d$}", s.median)
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "loopchat bench compare")?;
        for (name, s) in [("A", &self.a), ("B", &self.b)] {
            let runs = if s.runs == 1 {
                "1 run".to_string()
            } else {
                format!("{} runs", s.runs)
            };
            writeln!(f, "  {name}: {}: {} ({runs})", s.label, s.scenario)?;
        }
        if (self.a.runs < 2) != (self.b.runs < 2) {
            writeln!(
                f,
                "  note: a single run has no spread of its own: its value is judged against \
                 the other report's range only"
            )?;
        }
        let diff = self.differences();
        if !diff.is_empty() {
            writeln!(f, "  note: the scenarios differ: {}", diff.join(", "))?;
        }
        writeln!(
            f,
            "  {:<27} {:>26} {:>26} {:>8}  verdict",
            "figure (median [min - max])", "A", "B", "change"
        )?;
        for r in &self.rows {
            let fig = figure(&r.key);
            let name = fig.map_or(r.key.as_str(), |f| f.name);
            let change = if r.a.median != 0.0 {
                format!(
                    "{:+.0}%",
                    (r.b.median - r.a.median) / r.a.median.abs() * 100.0
                )
            } else {
                "-".into()
            };
            let judged = |higher: bool| {
                let better = match fig.map(|f| f.better) {
                    Some(Better::Lower) => Some(!higher),
                    Some(Better::Higher) => Some(higher),
                    _ => None,
                };
                let dir = if higher { "higher" } else { "lower" };
                match better {
                    Some(true) => format!("B {dir} (better), beyond the spread"),
                    Some(false) => format!("B {dir} (worse), beyond the spread"),
                    None => format!("B {dir}, beyond the spread"),
                }
            };
            let verdict = match r.verdict {
                Verdict::Higher => judged(true),
                Verdict::Lower => judged(false),
                Verdict::WithinSpread => "within the spread".into(),
                Verdict::NoSpread => "single runs: no spread to judge by".into(),
            };
            let d = decimals(&[r.a.median, r.a.min, r.a.max, r.b.median, r.b.min, r.b.max]);
            writeln!(
                f,
                "  {name:<27} {:>26} {:>26} {change:>8}  {verdict}",
                shown(&r.a, d),
                shown(&r.b, d)
            )?;
        }
        Ok(())
    }
}

/// Runs `loopchat bench compare`: 0 when both reports could be read, 1 otherwise.
pub fn run(args: &CompareArgs) -> ExitCode {
    let loaded = Saved::load(&args.a).and_then(|a| Ok((a, Saved::load(&args.b)?)));
    match loaded {
        Ok((a, b)) => {
            print!("{}", compare(a, b));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loopchat bench compare: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(runs: usize, figures: &[(&str, &[f64])]) -> Saved {
        Saved {
            label: "x".into(),
            scenario: "irc, 1 clients".into(),
            settings: vec![("clients".into(), "1".into())],
            runs,
            figures: figures
                .iter()
                .map(|(k, v)| (k.to_string(), Spread::of(v).unwrap()))
                .collect(),
            percentiles: Vec::new(),
            band: None,
        }
    }

    #[test]
    fn a_difference_counts_only_when_the_ranges_do_not_overlap() {
        let a = saved(
            3,
            &[
                ("latency_p99_ms", &[10.0, 12.0, 15.0]),
                ("deliveries_per_sec", &[100.0, 110.0, 120.0]),
                ("latency_p50_ms", &[1.0, 1.1, 1.2]),
            ],
        );
        let b = saved(
            3,
            &[
                ("latency_p99_ms", &[4.0, 4.5, 5.0]),
                ("deliveries_per_sec", &[115.0, 130.0, 140.0]),
                ("latency_p50_ms", &[1.3, 1.4, 1.5]),
            ],
        );
        let c = compare(a, b);
        let verdicts: Vec<(&str, Verdict)> =
            c.rows.iter().map(|r| (r.key.as_str(), r.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("deliveries_per_sec", Verdict::WithinSpread),
                ("latency_p50_ms", Verdict::Higher),
                ("latency_p99_ms", Verdict::Lower),
            ]
        );
        let text = c.to_string();
        assert!(
            text.contains("B lower (better), beyond the spread"),
            "{text}"
        );
        assert!(
            text.contains("B higher (worse), beyond the spread"),
            "{text}"
        );
        assert!(text.contains("12.000 [10.000 - 15.000]"), "{text}");
        assert!(text.contains("110 [100 - 120]"), "{text}");
        assert!(text.contains("-62%"), "{text}");
    }

    #[test]
    fn single_runs_are_not_judged_and_different_scenarios_are_noted() {
        let a = saved(1, &[("lost", &[0.0])]);
        let mut b = saved(1, &[("lost", &[3.0])]);
        b.settings = vec![("clients".into(), "2".into())];
        let c = compare(a, b);
        assert_eq!(c.rows[0].verdict, Verdict::NoSpread);
        let text = c.to_string();
        assert!(text.contains("scenarios differ: clients 1 vs 2"), "{text}");
        assert!(text.contains("no spread to judge by"), "{text}");
    }
}
