//! The latency distribution as HdrHistogram's percentile text (`.hgrm`), the format of
//! Java's `outputPercentileDistribution` that HdrHistogram's plotter and its many
//! readers take: a header, one row per percentile step (five steps per halving of the
//! distance to 100 %), the last row without its `1/(1-Percentile)` column, and the
//! `#[Mean …]`, `#[Max …]` and `#[Buckets …]` footer. Values are milliseconds.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile steps per halving of the distance to 100 %, as HdrHistogram's own
/// output uses.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Microseconds per millisecond: the histogram records µs, the file shows ms.
const SCALE: f64 = 1000.0;

/// The percentile distribution of `hist` (recorded in microseconds) in milliseconds.
pub fn hgrm(hist: &Histogram<u64>) -> String {
    let digits = usize::from(hist.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / SCALE;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10}");
        }
    }
    let (mean, stdev) = if hist.is_empty() {
        (0.0, 0.0)
    } else {
        (hist.mean() / SCALE, hist.stdev() / SCALE)
    };
    let max = hist.max() as f64 / SCALE;
    // HdrHistogram's sub-bucket count: the power of two that holds 2 × 10^digits.
    let sub_buckets = (2.0 * 10f64.powi(i32::from(hist.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        hist.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tally::new_histogram;

    #[test]
    fn header_rows_and_footer_follow_hdrhistograms_format() {
        let mut h = new_histogram();
        // 1..=1000 µs: 1 µs to 1 ms, mean 0.5005 ms.
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let text = hgrm(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        // The median row: 500 µs, half the count, 1/(1-0.5) = 2.
        assert!(
            lines.contains(&"       0.500 0.500000000000        500           2.00"),
            "{text}"
        );
        // The last row reaches 100 % and all of the count, without the last column.
        let last = lines[lines.len() - 4];
        assert_eq!(last, "       1.000 1.000000000000       1000");
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =        0.500, StdDeviation   =        0.289]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert!(lines[lines.len() - 1].starts_with("#[Buckets = "));
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
        // Every row's count and percentile only grow.
        let rows: Vec<(f64, u64)> = lines[2..lines.len() - 3]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[1].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect();
        assert!(
            rows.windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
    }

    #[test]
    fn an_empty_histogram_has_a_header_and_a_footer() {
        let text = hgrm(&new_histogram());
        assert!(text.starts_with("       Value"));
        assert!(text.contains("Total count    =            0]"), "{text}");
    }
}
