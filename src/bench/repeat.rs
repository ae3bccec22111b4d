//! `--repeat N`: the headline figures of several runs of one scenario, each as median
//! and min–max, because on a small shared machine one run's p99 can be 20–50 % off the
//! next one's. [`FIGURES`] names the figures (and is what every JSON report lists under
//! `figures`); [`Spread`] is one figure over the runs; [`Repeated`] is the whole
//! result, printed as a table and written as JSON with every run's own report inside.
//!
//! Running the runs is the command's (`cli`); comparing two results is `compare`'s.

use std::fmt;

use hdrhistogram::Histogram;

use super::report::json::Json;
use super::report::{Report, percentiles, percentiles_ms};
use super::tally::new_histogram;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (latency, loss, CPU, memory).
    Lower,
    /// Larger is better (throughput).
    Higher,
    /// Neither: it describes the run (messages sent).
    Neither,
}

/// One headline figure of a report.
#[derive(Debug)]
pub struct Figure {
    /// Its key in the JSON `figures` object.
    pub key: &'static str,
    /// Its name in tables.
    pub name: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Its value in a report (`None` when the run did not measure it).
    pub get: fn(&Report) -> Option<f64>,
}

fn lat(r: &Report, f: fn(&super::Latency) -> f64) -> Option<f64> {
    r.latency.as_ref().map(f)
}

fn server(r: &Report, f: fn(&super::ServerStats) -> Option<f64>) -> Option<f64> {
    r.server.as_ref().and_then(f)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The headline figures, in table order.
pub const FIGURES: [Figure; 21] = [
    Figure {
        key: "connect_join_secs",
        name: "connect+join s",
        better: Better::Lower,
        get: |r| Some(r.connect_secs + r.join_secs),
    },
    Figure {
        key: "sent",
        name: "messages sent",
        better: Better::Neither,
        get: |r| Some(r.sent as f64),
    },
    Figure {
        key: "received",
        name: "deliveries",
        better: Better::Neither,
        get: |r| Some(r.received as f64),
    },
    Figure {
        key: "lost",
        name: "lost",
        better: Better::Lower,
        get: |r| Some(r.lost as f64),
    },
    Figure {
        key: "deliveries_per_sec",
        name: "deliveries/s",
        better: Better::Higher,
        get: |r| Some(r.deliveries_per_sec),
    },
    Figure {
        key: "latency_mean_ms",
        name: "latency mean ms",
        better: Better::Lower,
        get: |r| lat(r, |l| l.mean_us / 1000.0),
    },
    Figure {
        key: "latency_p50_ms",
        name: "latency p50 ms",
        better: Better::Lower,
        get: |r| lat(r, |l| ms(l.p50_us)),
    },
    Figure {
        key: "latency_p90_ms",
        name: "latency p90 ms",
        better: Better::Lower,
        get: |r| lat(r, |l| ms(l.p90_us)),
    },
    Figure {
        key: "latency_p99_ms",
        name: "latency p99 ms",
        better: Better::Lower,
        get: |r| lat(r, |l| ms(l.p99_us)),
    },
    Figure {
        key: "latency_p999_ms",
        name: "latency p99.9 ms",
        better: Better::Lower,
        get: |r| lat(r, |l| ms(l.p999_us)),
    },
    Figure {
        key: "latency_max_ms",
        name: "latency max ms",
        better: Better::Lower,
        get: |r| lat(r, |l| ms(l.max_us)),
    },
    Figure {
        key: "handshakes_per_sec",
        name: "handshakes/s",
        better: Better::Higher,
        get: |r| (r.tls || r.ws).then_some(r.handshakes_per_sec),
    },
    Figure {
        key: "handshake_p99_ms",
        name: "handshake p99 ms",
        better: Better::Lower,
        get: |r| r.handshake_latency.map(|l| ms(l.p99_us)),
    },
    Figure {
        key: "server_rss_per_conn_kib",
        name: "server RSS/conn KiB",
        better: Better::Lower,
        get: |r| server(r, |s| s.rss_per_conn.map(|b| b / 1024.0)),
    },
    Figure {
        key: "server_rss_after_mib",
        name: "server RSS after MiB",
        better: Better::Lower,
        get: |r| server(r, |s| s.rss_after.map(|b| b as f64 / (1024.0 * 1024.0))),
    },
    Figure {
        key: "server_cpu_secs",
        name: "server CPU s",
        better: Better::Lower,
        get: |r| server(r, |s| s.cpu_secs),
    },
    Figure {
        key: "server_cpu_load_secs",
        name: "server CPU s (load)",
        better: Better::Lower,
        get: |r| server(r, |s| s.cpu_load_secs),
    },
    Figure {
        key: "server_writes_per_delivery",
        name: "writes/delivery",
        better: Better::Lower,
        get: |r| server(r, |s| s.writes_per_delivery),
    },
    Figure {
        key: "redis_cpu_load_secs",
        name: "Redis CPU s (load)",
        better: Better::Lower,
        get: |r| r.redis.as_ref().and_then(|s| s.cpu_load_secs),
    },
    Figure {
        key: "redis_cpu_us_per_msg",
        name: "Redis CPU µs/msg",
        better: Better::Lower,
        get: |r| r.redis.as_ref().and_then(|s| s.cpu_us_per_sent),
    },
    Figure {
        key: "harness_cpu_secs",
        name: "harness CPU s",
        better: Better::Neither,
        get: |r| Some(r.harness_cpu_secs),
    },
];

/// The figure called `key`.
pub fn figure(key: &str) -> Option<&'static Figure> {
    FIGURES.iter().find(|f| f.key == key)
}

/// One figure over several runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// The median (of an even count, the mean of the middle two).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// Every run's value, in run order.
    pub values: Vec<f64>,
}

impl Spread {
    /// The spread of `values` (`None` if there are none, or any is not a number).
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            values: values.to_vec(),
        })
    }

    /// Whether the two min–max ranges have no value in common: the difference between
    /// them is larger than the runs' own spread.
    pub fn apart(&self, other: &Spread) -> bool {
        self.max < other.min || other.max < self.min
    }
}

/// The result of `--repeat N`.
#[derive(Debug, Clone)]
pub struct Repeated {
    /// Every run's report, in order.
    pub runs: Vec<Report>,
    /// Each figure that some run measured, over the runs that measured it.
    pub figures: Vec<(&'static Figure, Spread)>,
    /// The latency at each of [`percentiles`] over the runs that delivered anything.
    pub percentiles: Vec<(f64, Spread)>,
    /// Every run's deliveries in one histogram (microseconds), for `--hgrm`.
    pub histogram: Histogram<u64>,
}

impl Repeated {
    /// Adds up the runs.
    pub fn of(runs: Vec<Report>) -> Repeated {
        let figures = FIGURES
            .iter()
            .filter_map(|f| {
                let values: Vec<f64> = runs.iter().filter_map(|r| (f.get)(r)).collect();
                Spread::of(&values).map(|s| (f, s))
            })
            .collect();
        let curves: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .filter_map(|r| r.histogram.as_ref().map(percentiles_ms))
            .filter(|c| !c.is_empty())
            .collect();
        let percentiles = percentiles()
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let values: Vec<f64> = curves.iter().map(|c| c[i].1).collect();
                Spread::of(&values).map(|s| (p, s))
            })
            .collect();
        let mut histogram = new_histogram();
        for h in runs.iter().filter_map(|r| r.histogram.as_ref()) {
            // Histograms from `new_histogram` always add up.
            let _ = histogram.add(h);
        }
        Repeated {
            runs,
            figures,
            percentiles,
            histogram,
        }
    }

    /// Whether every run was clean.
    pub fn ok(&self) -> bool {
        self.runs.iter().all(Report::ok)
    }

    /// The figures and percentiles as one JSON object, with the scenario's settings
    /// (from the first run) and every run's own report under `runs`.
    pub fn to_json(&self) -> String {
        let mut j = Json::default();
        j.open();
        if let Some(r) = self.runs.first() {
            j.str("addr", &r.addr);
            j.str("label", &r.label);
            j.str("dialect", r.dialect);
            j.num("clients", r.clients as f64);
            j.num("stalled", r.stalled as f64);
            j.num("rooms", r.rooms as f64);
            j.num("senders", r.senders as f64);
            j.num("rate_per_sender", r.rate_per_sender);
            j.num("payload", r.payload as f64);
            j.key("tls");
            j.raw(if r.tls { "true" } else { "false" });
            j.key("ws");
            j.raw(if r.ws { "true" } else { "false" });
            j.num("servers", r.addrs.len().max(1) as f64);
        }
        j.num("repeat", self.runs.len() as f64);
        j.key("figures");
        j.open();
        for (f, s) in &self.figures {
            j.key(f.key);
            j.open();
            j.num("median", s.median);
            j.num("min", s.min);
            j.num("max", s.max);
            j.key("values");
            j.numbers(&s.values);
            j.close();
        }
        j.close();
        j.key("percentiles");
        let medians: Vec<(f64, f64)> = self
            .percentiles
            .iter()
            .map(|(p, s)| (*p, s.median))
            .collect();
        j.pairs(&medians);
        j.key("percentiles_min");
        let mins: Vec<(f64, f64)> = self.percentiles.iter().map(|(p, s)| (*p, s.min)).collect();
        j.pairs(&mins);
        j.key("percentiles_max");
        let maxes: Vec<(f64, f64)> = self.percentiles.iter().map(|(p, s)| (*p, s.max)).collect();
        j.pairs(&maxes);
        j.key("ok");
        j.raw(if self.ok() { "true" } else { "false" });
        j.key("problems");
        j.list(&self.problems());
        j.key("runs");
        j.out.push('[');
        for (i, r) in self.runs.iter().enumerate() {
            if i > 0 {
                j.out.push(',');
            }
            j.raw(r.to_json().trim_end());
        }
        j.out.push(']');
        j.close();
        j.out.push('\n');
        j.out
    }

    /// Every run's problems, each with its run number.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, r) in self.runs.iter().enumerate() {
            out.extend(r.problems.iter().map(|p| format!("run {}: {p}", i + 1)));
        }
        out
    }
}

/// How many decimals to show values of this size with, so that the values of one row
/// line up: none if all are whole, one from 100 up, else three.
pub fn decimals(values: &[f64]) -> usize {
    if values.iter().all(|v| v.fract() == 0.0) {
        0
    } else if values.iter().all(|v| v.abs() >= 100.0) {
        1
    } else {
        3
    }
}

impl fmt::Display for Repeated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.runs.len();
        if let Some(r) = self.runs.first() {
            writeln!(f, "loopchat bench: {n} runs of {}", r.scenario())?;
        }
        for (i, r) in self.runs.iter().enumerate() {
            let p99 = r
                .latency
                .map_or_else(|| "-".into(), |l| format!("{:.3} ms", ms(l.p99_us)));
            let clean = if r.ok() { "ok" } else { "PROBLEMS" };
            writeln!(
                f,
                "  run {:<10}p99 {p99}, {:.0} deliveries/s, {} lost, {clean}",
                i + 1,
                r.deliveries_per_sec,
                r.lost
            )?;
        }
        writeln!(f, "  {:<22}{:>12}  {:>25}", "figure", "median", "min - max")?;
        for (fig, s) in &self.figures {
            let d = decimals(&[s.median, s.min, s.max]);
            let range = format!("{:.d$} - {:.d$}", s.min, s.max);
            writeln!(f, "  {:<22}{:>12.d$}  {range:>25}", fig.name, s.median)?;
        }
        let problems = self.problems();
        if problems.is_empty() {
            writeln!(f, "  {:<14}ok ({n} clean runs)", "result")?;
        }
        for p in problems {
            writeln!(f, "  {:<14}{p}", "PROBLEM")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Latency;

    fn run(p99_us: u64, per_sec: f64) -> Report {
        let mut h = new_histogram();
        for us in [100, 200, p99_us] {
            h.record(us).unwrap();
        }
        Report {
            label: "x".into(),
            deliveries_per_sec: per_sec,
            latency: Latency::of(&h),
            histogram: Some(h),
            ..Report::default()
        }
    }

    #[test]
    fn spread_takes_median_min_and_max() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.values, [3.0, 1.0, 2.0]);
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert!(!s.apart(&Spread::of(&[2.9, 5.0]).unwrap()));
        assert!(s.apart(&Spread::of(&[3.1, 5.0]).unwrap()));
    }

    #[test]
    fn repeated_runs_give_median_and_range_of_every_figure() {
        let rep = Repeated::of(vec![run(900, 100.0), run(500, 300.0), run(700, 200.0)]);
        let (_, p99) = rep
            .figures
            .iter()
            .find(|(f, _)| f.key == "latency_p99_ms")
            .unwrap();
        assert_eq!((p99.median, p99.min, p99.max), (0.7, 0.5, 0.9));
        // No server stats in these runs: no server figures.
        assert!(
            rep.figures
                .iter()
                .all(|(f, _)| !f.key.starts_with("server"))
        );
        assert_eq!(rep.histogram.len(), 9);
        assert_eq!(rep.percentiles.len(), percentiles().len());
        let table = rep.to_string();
        assert!(table.contains("latency p99 ms"), "{table}");
        assert!(table.contains("0.500 - 0.900"), "{table}");
        assert!(table.contains("ok (3 clean runs)"), "{table}");
        let json = super::super::report::json::parse(&rep.to_json()).unwrap();
        let f = json
            .get("figures")
            .and_then(|f| f.get("deliveries_per_sec"));
        assert_eq!(
            f.and_then(|f| f.get("median")).and_then(|v| v.num()),
            Some(200.0)
        );
        assert_eq!(json.get("repeat").and_then(|v| v.num()), Some(3.0));
        assert_eq!(
            json.get("runs").and_then(|v| v.arr()).map(<[_]>::len),
            Some(3)
        );
    }
}
