//! `loopchat bench plot A.json [B.json …] -o FILE.svg`: latency by percentile for one or
//! several reports on one chart, the way HdrHistogram's plotter draws it: the x axis is
//! 1/(1-p) on a log scale, so 50 %, 90 %, 99 % … 99.999 % are evenly apart and the tail
//! gets as much room as the median. One line per report, labelled with its server and
//! scenario; a report of several runs (`--repeat`) is drawn as its median with the
//! runs' min–max as a pale band around it.
//!
//! Drawn with `plotters`' SVG backend only: text is written as SVG `<text>` elements
//! for the viewer to render, so no font files are needed here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plotters::prelude::*;

use super::saved::Saved;

/// Arguments of `loopchat bench plot`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Reports to draw (`--json` of `loopchat bench`, with or without --repeat).
    #[arg(value_name = "REPORT.json", required = true)]
    pub reports: Vec<PathBuf>,
    /// Where to write the chart (SVG).
    #[arg(short, long, value_name = "FILE.svg")]
    pub output: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "Latency by percentile")]
    pub title: String,
}

/// The x axis' ticks: 1/(1-p) for 50 %, 90 %, 99 % … 99.999 %.
const TICKS: [(f64, &str); 6] = [
    (2.0, "50%"),
    (10.0, "90%"),
    (100.0, "99%"),
    (1e3, "99.9%"),
    (1e4, "99.99%"),
    (1e5, "99.999%"),
];

/// Line colours, in turn (colour-blind-safe, from the Okabe–Ito palette).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 600);

/// The title's font size as plotters takes it: 28, or less for a long title so that
/// it fits the chart's width. A sans-serif character is about 0.55 em wide on average,
/// and plotters writes 1/1.24 of the size it is given into the SVG.
fn caption_size(title: &str) -> f64 {
    let fit_px = f64::from(SIZE.0 - 40) / (0.55 * title.chars().count().max(1) as f64);
    (fit_px * 1.24).clamp(12.0, 28.0)
}

/// x for percentile `p` (in percent): 1/(1-p).
fn x_of(p: f64) -> f64 {
    1.0 / (1.0 - p / 100.0)
}

/// A report's line: its points inside the axis, in order.
fn line(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|(p, _)| (50.0..=99.999).contains(p))
        .map(|&(p, ms)| (x_of(p), ms))
        .collect()
}

/// The legend text of a report.
fn legend(s: &Saved) -> String {
    let runs = if s.runs > 1 {
        format!(" (median of {} runs)", s.runs)
    } else {
        String::new()
    };
    format!("{}: {}{runs}", s.label, s.scenario)
}

/// Draws `reports` as an SVG document.
pub fn svg(reports: &[Saved], title: &str) -> Result<String, String> {
    let mut out = String::new();
    draw(reports, title, &mut out).map_err(|e| format!("cannot draw the chart: {e}"))?;
    Ok(out)
}

fn draw(
    reports: &[Saved],
    title: &str,
    out: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let highest = reports
        .iter()
        .flat_map(|s| {
            let band = s
                .band
                .as_ref()
                .map(|(_, hi)| hi.as_slice())
                .unwrap_or_default();
            line(&s.percentiles).into_iter().chain(line(band))
        })
        .map(|(_, ms)| ms)
        .fold(0.0, f64::max);
    let y_top = (highest * 1.1).max(1.0);
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let x_range = (TICKS[0].0..TICKS[TICKS.len() - 1].0)
        .log_scale()
        .with_key_points(TICKS.iter().map(|t| t.0).collect());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", caption_size(title)))
        .margin(20)
        // Room for the last tick's label, centred on the right edge.
        .margin_right(50)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, 0.0..y_top)?;
    let tick_label = |x: &f64| {
        TICKS
            .iter()
            .find(|t| (t.0 / x - 1.0).abs() < 1e-6)
            .map_or_else(String::new, |t| t.1.to_owned())
    };
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&tick_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .y_label_formatter(&|y| format!("{y}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in reports.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if let Some((lo, hi)) = &s.band {
            let mut outline = line(lo);
            outline.extend(line(hi).into_iter().rev());
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                colour.mix(0.15).filled(),
            )))?;
        }
        chart
            .draw_series(LineSeries::new(
                line(&s.percentiles),
                colour.stroke_width(2),
            ))?
            .label(legend(s))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 17))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Reads `paths` and writes their chart to `output`.
pub fn plot_files(paths: &[PathBuf], output: &Path, title: &str) -> Result<(), String> {
    let reports = paths
        .iter()
        .map(|p| Saved::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    for (p, s) in paths.iter().zip(&reports) {
        if s.percentiles.is_empty() {
            return Err(format!(
                "{}: no latency percentiles (nothing was delivered, or the report is from \
                 a version without them)",
                p.display()
            ));
        }
    }
    let svg = svg(&reports, title)?;
    std::fs::write(output, svg).map_err(|e| format!("cannot write {}: {e}", output.display()))
}

/// Runs `loopchat bench plot`: 0 when the chart was written, 1 otherwise.
pub fn run(args: &PlotArgs) -> ExitCode {
    match plot_files(&args.reports, &args.output, &args.title) {
        Ok(()) => {
            println!("wrote {}", args.output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loopchat bench plot: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(label: &str, scale: f64, band: bool) -> Saved {
        let curve: Vec<(f64, f64)> = crate::bench::report::percentiles()
            .into_iter()
            .map(|p| (p, scale * x_of(p).ln()))
            .collect();
        Saved {
            label: label.into(),
            scenario: "irc, 200 clients".into(),
            settings: Vec::new(),
            runs: if band { 3 } else { 1 },
            figures: Vec::new(),
            band: band.then(|| {
                let lo = curve.iter().map(|&(p, v)| (p, v * 0.8)).collect();
                let hi = curve.iter().map(|&(p, v)| (p, v * 1.2)).collect();
                (lo, hi)
            }),
            percentiles: curve,
        }
    }

    #[test]
    fn draws_one_labelled_line_per_report_with_text_and_no_fonts() {
        let svg = svg(
            &[saved("ngircd", 2.0, true), saved("loopchat", 1.0, false)],
            "Latency <&> by percentile",
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // A line and a legend mark for each report, in its colour.
        for colour in ["#0072B2", "#D55E00"] {
            let stroke = format!("stroke=\"{colour}\" stroke-width=\"2\"");
            assert_eq!(svg.matches(&stroke).count(), 2, "{colour}");
        }
        assert_eq!(svg.matches("<polygon").count(), 1, "one band");
        assert!(svg.contains("ngircd: irc, 200 clients (median of 3 runs)"));
        // plotters writes each text on a line of its own.
        assert!(svg.contains("\nloopchat: irc, 200 clients\n</text>"));
        for tick in ["50%", "90%", "99.9%", "99.999%"] {
            assert!(
                svg.contains(&format!(">\n{tick}\n</text>")),
                "{tick} missing"
            );
        }
        assert!(svg.contains("Latency &lt;&amp;&gt; by percentile"));
    }

    #[test]
    fn a_long_title_gets_a_smaller_font() {
        assert_eq!(caption_size("Latency by percentile"), 28.0);
        let long = "x".repeat(120);
        assert!(caption_size(&long) / 1.24 * 0.55 * 120.0 <= f64::from(SIZE.0));
    }

    #[test]
    fn x_is_one_over_one_minus_p() {
        assert_eq!(x_of(50.0), 2.0);
        assert!((x_of(99.9) - 1000.0).abs() < 1e-6);
        assert_eq!(line(&[(0.0, 1.0), (50.0, 2.0), (100.0, 3.0)]), [(2.0, 2.0)]);
    }
}
