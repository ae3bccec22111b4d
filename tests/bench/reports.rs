//! What `loopchat bench` writes and reads besides its table: `--repeat` with fresh
//! spawned servers, the `.hgrm` file, `bench plot`'s SVG and `bench compare`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use loopchat::bench::report::json::{self, Value};

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("loopchat-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loopchat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(args)
        .output()
        .expect("run loopchat")
}

#[track_caller]
fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("report written");
    json::parse(&text).expect("valid JSON")
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for k in path {
        v = v.get(k).unwrap_or_else(|| panic!("no {k} in {path:?}"));
    }
    v.num()
        .unwrap_or_else(|| panic!("{path:?} is not a number"))
}

/// The tiny load both runs below use.
const TINY: [&str; 10] = [
    "bench",
    "--spawn-server",
    "--clients",
    "10",
    "--senders",
    "2",
    "--rate",
    "50",
    "--duration",
    "300ms",
];

#[test]
fn repeat_with_fresh_servers_then_hgrm_plot_and_compare() {
    let dir = Scratch::new("bench-repeat");
    let (rep, hgrm, single) = (
        dir.path("rep.json"),
        dir.path("rep.hgrm"),
        dir.path("one.json"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(TINY)
        .args(["--repeat", "3", "--label", "lc", "--json"])
        .arg(&rep)
        .arg("--hgrm")
        .arg(&hgrm)
        .output()
        .expect("run loopchat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 runs of lc at 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("  run 3 "), "{stdout}");
    assert!(stdout.contains("ok (3 clean runs)"), "{stdout}");
    let p99_row = stdout
        .lines()
        .find(|l| l.contains("latency p99 ms"))
        .expect("p99 row");
    assert!(p99_row.contains(" - "), "median then min - max: {p99_row}");

    // The JSON: each figure's median within its min-max, over three runs.
    let v = read_json(&rep);
    assert_eq!(num(&v, &["repeat"]), 3.0);
    let p99 = v
        .get("figures")
        .and_then(|f| f.get("latency_p99_ms"))
        .expect("p99 figure");
    let (median, min, max) = (
        num(p99, &["median"]),
        num(p99, &["min"]),
        num(p99, &["max"]),
    );
    assert!(min <= median && median <= max, "{min} {median} {max}");
    assert_eq!(
        p99.get("values").and_then(Value::arr).map(<[Value]>::len),
        Some(3)
    );
    // Each run had a server of its own.
    let runs = v.get("runs").and_then(Value::arr).expect("runs");
    let mut pids: Vec<f64> = runs.iter().map(|r| num(r, &["server", "pid"])).collect();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let received: f64 = runs.iter().map(|r| num(r, &["received"])).sum();
    assert!(received > 0.0);

    // The .hgrm: HdrHistogram's header, rows in ms up to 100 %, all three runs' count.
    let text = std::fs::read_to_string(&hgrm).expect("hgrm written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "       Value     Percentile TotalCount 1/(1-Percentile)"
    );
    assert_eq!(lines[1], "");
    let rows: Vec<Vec<f64>> = lines[2..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() > 10, "{text}");
    assert_eq!(rows[0][1], 0.0);
    let last = &rows[rows.len() - 1];
    assert_eq!((last.len(), last[1], last[2]), (3, 1.0, received), "{text}");
    // Values are milliseconds: the largest is the JSON's max latency over the runs.
    let max_ms = num(v.get("figures").unwrap(), &["latency_max_ms", "max"]);
    assert!((last[0] - max_ms).abs() < 0.002, "{} vs {max_ms}", last[0]);
    assert!(
        text.contains(&format!("Total count    = {:>12}]", received as u64)),
        "{text}"
    );

    // A single run for the second line of the chart and for compare.
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(TINY)
        .arg("--json")
        .arg(&single)
        .output()
        .expect("run loopchat");
    assert_eq!(out.status.code(), Some(0));
    let v = read_json(&single);
    assert!(
        v.get("latency_us").and_then(|l| l.get("p99")).is_some(),
        "old fields kept"
    );
    let percentiles = v
        .get("percentiles")
        .and_then(Value::arr)
        .expect("percentiles");
    assert_eq!(percentiles.len(), 48);

    let svg = dir.path("chart.svg");
    let (rep_s, single_s, svg_s) = (
        rep.to_str().unwrap(),
        single.to_str().unwrap(),
        svg.to_str().unwrap(),
    );
    let out = loopchat(&["bench", "plot", rep_s, single_s, "-o", svg_s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let texts = svg_texts(&std::fs::read_to_string(&svg).expect("svg written"));
    let legends: Vec<&String> = texts.iter().filter(|t| t.contains("msg/s")).collect();
    assert_eq!(legends.len(), 2, "one series per report: {texts:?}");
    assert!(legends[0].starts_with("lc: frames, 10 clients") && legends[0].contains("3 runs"));
    assert!(
        legends[1].starts_with("loopchat: frames, 10 clients"),
        "{legends:?}"
    );
    assert!(texts.iter().any(|t| t == "99.9%"), "{texts:?}");

    let out = loopchat(&["bench", "compare", rep_s, single_s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("A: lc: frames, 10 clients"), "{stdout}");
    assert!(stdout.contains("latency p99 ms"), "{stdout}");
}

/// Checks that `svg` is well-formed XML (every tag closed, in order) and returns the
/// text of its elements.
fn svg_texts(svg: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let (mut open, mut texts, mut roots) = (Vec::new(), Vec::new(), 0);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if open.is_empty() {
                    roots += 1;
                }
                open.push(e.name().as_ref().to_owned());
            }
            Ok(Event::End(e)) => {
                assert_eq!(
                    open.pop().as_deref(),
                    Some(e.name().as_ref()),
                    "tags balance"
                );
            }
            Ok(Event::Text(t)) => {
                let t = t.xml10_content();
                if !t.trim().is_empty() {
                    texts.push(t.trim().to_string());
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed XML at {}: {e}", reader.buffer_position()),
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    assert_eq!(roots, 1, "one root element");
    texts
}

/// A repeated report's JSON with three runs of p99 and deliveries/s.
fn repeated(label: &str, p99: [f64; 3], per_sec: [f64; 3]) -> String {
    let figure = |v: [f64; 3]| {
        let mut s = v;
        s.sort_by(f64::total_cmp);
        format!(
            "{{\"median\":{},\"min\":{},\"max\":{},\"values\":[{},{},{}]}}",
            s[1], s[0], s[2], v[0], v[1], v[2]
        )
    };
    format!(
        "{{\"addr\":\"127.0.0.1:1\",\"label\":\"{label}\",\"dialect\":\"irc\",\"clients\":200,\
         \"rooms\":1,\"senders\":10,\"rate_per_sender\":20,\"payload\":64,\"repeat\":3,\
         \"figures\":{{\"latency_p99_ms\":{},\"deliveries_per_sec\":{}}},\"percentiles\":[]}}",
        figure(p99),
        figure(per_sec)
    )
}

#[test]
fn compare_says_which_differences_exceed_the_spread() {
    let dir = Scratch::new("bench-compare");
    let (a, b) = (dir.path("a.json"), dir.path("b.json"));
    std::fs::write(
        &a,
        repeated("ngircd", [30.0, 22.0, 41.0], [3900.0, 3980.0, 3950.0]),
    )
    .unwrap();
    std::fs::write(
        &b,
        repeated("loopchat", [5.0, 9.5, 7.0], [3960.0, 3990.0, 3940.0]),
    )
    .unwrap();
    let out = loopchat(&["bench", "compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {stdout}"))
            .to_string()
    };
    let p99 = row("latency p99 ms");
    assert!(p99.contains("30.000 [22.000 - 41.000]"), "{p99}");
    assert!(p99.contains("7.000 [5.000 - 9.500]"), "{p99}");
    assert!(p99.contains("-77%"), "{p99}");
    assert!(
        p99.ends_with("B lower (better), beyond the spread"),
        "{p99}"
    );
    assert!(
        row("deliveries/s").ends_with("within the spread"),
        "{stdout}"
    );
    assert!(stdout.contains("A: ngircd: irc, 200 clients, 1 room(s), 10 x 20 msg/s (3 runs)"));

    let missing = dir.path("missing.json");
    let out = loopchat(&[
        "bench",
        "compare",
        a.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn subcommands_do_not_mix_with_run_flags() {
    let out = loopchat(&["bench", "--clients", "5", "compare", "a.json", "b.json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = loopchat(&["bench", "plot", "a.json"]);
    assert_eq!(out.status.code(), Some(2), "--output is required");
}
