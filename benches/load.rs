//! End-to-end load scenarios: each starts a fresh release `loopchat server` (abuse
//! limits lifted), drives it through the harness library (`loopchat::bench`), prints the
//! full report, and at the end one Markdown table of all scenarios.
//!
//! ```text
//! cargo bench --bench load                      # every scenario
//! cargo bench --bench load -- fanout stalled    # just these
//! LOAD_SCENARIOS=storm cargo bench --bench load # same, from the environment
//! ```
//!
//! Scenarios: `idle` (as many joined connections as the open-files limit allows, server
//! memory per connection), `fanout` (1 room x 1 000 clients, 10 senders x 100 msg/s),
//! `rooms` (10 000 clients in 100 rooms), `stalled` (fanout plus one client that never
//! reads and must be evicted), `storm` (10 000 connects + joins, timed).
//!
//! Under `cargo test --benches` (no `--bench` flag) it only lists the scenarios.

use std::path::Path;
use std::time::Duration;

use loopchat::bench::server_proc::{SpawnedServer, writes_per_delivery};
use loopchat::bench::{BenchConfig, Report, run_bench};

/// The server binary cargo built for this bench (same profile).
const SERVER_EXE: &str = env!("CARGO_BIN_EXE_loopchat");

struct Scenario {
    name: &'static str,
    what: &'static str,
    /// Extra `loopchat server` flags.
    server_args: &'static [&'static str],
    configure: fn(&mut BenchConfig, nofile: u64),
}

/// Server flags of the fan-out and stalled scenarios, the same for both so their
/// latencies compare. Left to itself, the kernel lets a socket that is not read buffer
/// about 4 MiB on loopback before the server's own queue even starts to grow; a 64 KiB
/// send buffer and a 256 KiB output cap get a stuck reader evicted within seconds.
const FANOUT_SERVER_ARGS: &[&str] = &["--send-buffer", "65536", "--max-output", "262144"];

/// The fan-out load, also the base of the stalled scenario.
fn fanout(c: &mut BenchConfig, _nofile: u64) {
    c.clients = 1000;
    c.rooms = 1;
    c.senders = 10;
    c.rate = 100.0;
    c.duration = Duration::from_secs(10);
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "idle",
        what: "joined connections up to the fd limit, held 3 s",
        server_args: &[],
        configure: |c, nofile| {
            // The harness and the server each hold one fd per connection under the same
            // limit; leave both a margin for their own files.
            c.clients = (nofile as usize * 95 / 100).max(1);
            c.rooms = 1;
            c.senders = 0;
            c.duration = Duration::ZERO;
            c.idle = Duration::from_secs(3);
            c.phase_timeout = Duration::from_secs(120);
        },
    },
    Scenario {
        name: "fanout",
        what: "1 room x 1000 clients, 10 senders x 100 msg/s, 10 s",
        server_args: FANOUT_SERVER_ARGS,
        configure: fanout,
    },
    Scenario {
        name: "rooms",
        what: "10000 clients in 100 rooms, 100 senders x 10 msg/s, 5 s",
        server_args: &[],
        configure: |c, _| {
            c.clients = 10_000;
            c.rooms = 100;
            c.senders = 100;
            c.rate = 10.0;
            c.duration = Duration::from_secs(5);
        },
    },
    Scenario {
        name: "stalled",
        what: "fanout, plus 1 client that never reads (evicted at the output cap)",
        server_args: FANOUT_SERVER_ARGS,
        configure: |c, nofile| {
            fanout(c, nofile);
            c.stalled = 1;
        },
    },
    Scenario {
        name: "storm",
        what: "10000 connects + joins into 1 room, 1024 in flight",
        server_args: &[],
        configure: |c, _| {
            c.clients = 10_000;
            c.rooms = 1;
            c.senders = 0;
            c.duration = Duration::ZERO;
            c.concurrency = 1024;
        },
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut wanted: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    if let Ok(env) = std::env::var("LOAD_SCENARIOS") {
        wanted.extend(
            env.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs this too: do not load the machine there.
        println!("load scenarios (run with `cargo bench --bench load`):");
        for s in &SCENARIOS {
            println!("  {:<8} {}", s.name, s.what);
        }
        return;
    }
    for w in &wanted {
        if !SCENARIOS.iter().any(|s| s.name == w) {
            eprintln!(
                "unknown scenario {w:?}; choose from: {}",
                SCENARIOS.map(|s| s.name).join(", ")
            );
            std::process::exit(2);
        }
    }
    let nofile = loopchat::net::raise_nofile_limit();
    let mut rows = Vec::new();
    for s in SCENARIOS
        .iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.name))
    {
        println!("== {}: {}", s.name, s.what);
        match run_scenario(s, nofile) {
            Ok((report, writes)) => {
                print!("{report}");
                rows.push(row(s, &report, writes));
            }
            Err(e) => {
                println!("  failed to run: {e}");
                rows.push(format!("| {} | could not run: {e} |", s.name));
            }
        }
        println!();
    }
    println!(
        "| scenario | conns | connect+join s | sent | delivered / expected | lost | deliveries/s | \
         p50 ms | p99 ms | p99.9 ms | max ms | server RSS/conn | server CPU s (load) | writes/delivery | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn run_scenario(s: &Scenario, nofile: u64) -> Result<(Report, Option<f64>), String> {
    let log = std::env::temp_dir().join(format!(
        "loopchat-load-{}-{}.log",
        s.name,
        std::process::id()
    ));
    let extra: Vec<String> = s.server_args.iter().map(|a| a.to_string()).collect();
    let mut server = SpawnedServer::start(Path::new(SERVER_EXE), &extra, Some(&log))
        .map_err(|e| e.to_string())?;
    let mut config = BenchConfig::new(server.addr());
    config.server_pid = Some(server.pid());
    (s.configure)(&mut config, nofile);
    let report = run_bench(&config);
    server.stop(Duration::from_secs(5));
    let writes = std::fs::read_to_string(&log)
        .ok()
        .and_then(|l| writes_per_delivery(&l));
    let _ = std::fs::remove_file(&log);
    report.map(|r| (r, writes))
}

fn row(s: &Scenario, r: &Report, writes: Option<f64>) -> String {
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    let (p50, p99, p999, max) = match &r.latency {
        Some(l) => (ms(l.p50_us), ms(l.p99_us), ms(l.p999_us), ms(l.max_us)),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    let (rss, cpu) = match &r.server {
        Some(sv) => (
            sv.rss_per_conn
                .map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0)),
            format!(
                "{} ({})",
                sv.cpu_secs.map_or("-".into(), |c| format!("{c:.2}")),
                sv.cpu_load_secs.map_or("-".into(), |c| format!("{c:.2}"))
            ),
        ),
        None => ("-".into(), "-".into()),
    };
    let mut notes = Vec::new();
    if r.stalled > 0 {
        notes.push(format!(
            "{}/{} stalled evicted",
            r.stalled_evicted, r.stalled
        ));
    }
    if !r.ok() {
        notes.push(r.problems.join("; "));
    }
    format!(
        "| {} | {}/{} | {:.3} | {} | {} / {} | {} | {:.0} | {p50} | {p99} | {p999} | {max} | {rss} | {cpu} | {} | {} |",
        s.name,
        r.joined,
        r.clients + r.stalled,
        r.connect_secs + r.join_secs,
        r.sent,
        r.received,
        r.expected,
        r.lost,
        r.deliveries_per_sec,
        writes.map_or("-".into(), |w| format!("{w:.3}")),
        if notes.is_empty() {
            "ok".into()
        } else {
            notes.join("; ")
        },
    )
}
