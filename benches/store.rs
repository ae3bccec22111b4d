//! Storage throughput: how many messages a second the storage thread commits when the
//! loop gives it all it can take, the batch size that reaches, how long a history query
//! waits, and what a million messages cost on disk.
//!
//! ```text
//! cargo bench --bench store                               # 1 000 000 saturated
//! STORE_BENCH_MESSAGES=200000 cargo bench --bench store   # fewer
//! ```
//!
//! Each run opens a [`Store`] on a file in a temp directory and appends from this
//! thread, standing in for the loop, through [`Store::append`], asking now and then for
//! a room's last 20 as a join would.
//!
//! - `saturated` (flush 50 ms): appends never block, so the producer keeps the queue
//!   full but never over (appended, neither stored nor counted unsaved, plus the
//!   queries in flight, stays under the queue's length): the storage thread never
//!   waits for work and no message is dropped. A query every 10 000 messages waits
//!   behind a full queue. The size on disk is measured after `close`, which commits
//!   the rest and checkpoints the WAL into the database file.
//! - `10k/s` at flush 50 ms and 5 ms: a busy server's steady traffic, 20 queries a
//!   second; the batch a flush interval collects, and what smaller batches cost.
//!
//! Wall-clock rates depend on what else the machine runs; the storage thread's CPU time
//! (from /proc) gives its rate per CPU second, what a core of its own would sustain.
//! Messages look like chat: 50 rooms, 1 000 senders, text of 20–100 bytes (60 on
//! average).
//!
//! Under `cargo test --benches` (no `--bench` flag) it only says what it would do.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loopchat::store::{DEFAULT_QUEUE, Message, Store, StoreConfig};

/// Messages of the saturated run unless `STORE_BENCH_MESSAGES` says otherwise.
const MESSAGES: u64 = 1_000_000;

/// The steady runs: this rate, for this long.
const STEADY_RATE: u64 = 10_000;
const STEADY_FOR: Duration = Duration::from_secs(3);

/// The spec's floor for the storage thread, stored messages/s.
const GOAL: f64 = 100_000.0;

const LOREM: &str = "the quick brown fox jumps over the lazy dog while the loop keeps \
                     serving everyone and the disk takes its time";

/// One run: how hard, and at what flush interval.
struct Run {
    name: &'static str,
    flush: Duration,
    /// Messages per second, or `None` for as fast as the store takes them.
    rate: Option<u64>,
    messages: u64,
    /// A query every this many messages.
    query_every: u64,
}

struct Row {
    name: &'static str,
    flush: Duration,
    stored: u64,
    unsaved: u64,
    commits: u64,
    secs: f64,
    /// CPU time of the storage thread.
    cpu_secs: f64,
    query_p50_ms: f64,
    query_max_ms: f64,
    bytes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages = std::env::var("STORE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let steady = STEADY_RATE * STEADY_FOR.as_secs();
    let runs = [
        Run {
            name: "saturated",
            flush: Duration::from_millis(50),
            rate: None,
            messages,
            query_every: 10_000,
        },
        Run {
            name: "10k/s",
            flush: Duration::from_millis(50),
            rate: Some(STEADY_RATE),
            messages: steady,
            query_every: STEADY_RATE / 20,
        },
        Run {
            name: "10k/s",
            flush: Duration::from_millis(5),
            rate: Some(STEADY_RATE),
            messages: steady,
            query_every: STEADY_RATE / 20,
        },
    ];
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs this too: do not load the machine there.
        println!(
            "store bench (run with `cargo bench --bench store`), through Store::append into a temp-dir SQLite file:"
        );
        for r in &runs {
            println!(
                "  {:<9} flush {:>2} ms, {} messages",
                r.name,
                r.flush.as_millis(),
                r.messages
            );
        }
        println!(
            "prints stored/s, per CPU second, mean batch, query wait, bytes on disk per million"
        );
        return;
    }
    // The store's own warnings (a full queue, a failed commit) belong in the output.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut rows = Vec::new();
    for run in &runs {
        match measure(run) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("store bench: {e}");
                std::process::exit(1);
            }
        }
    }
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!();
    println!(
        "| run | flush | stored | unsaved | seconds | stored/s | store CPU s | stored per CPU s | commits | mean batch | query p50 / max | on disk | per million |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} ms | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {} | {:.0} | {:.2} / {:.1} ms | {:.1} MiB | {:.1} MiB |",
            r.name,
            r.flush.as_millis(),
            r.stored,
            r.unsaved,
            r.secs,
            r.stored as f64 / r.secs,
            r.cpu_secs,
            r.stored as f64 / r.cpu_secs,
            r.commits,
            r.stored as f64 / r.commits.max(1) as f64,
            r.query_p50_ms,
            r.query_max_ms,
            mib(r.bytes as f64),
            mib(r.bytes as f64 * 1e6 / r.stored.max(1) as f64),
        );
    }
    if let Some(sat) = rows.first() {
        println!();
        println!(
            "goal >= {GOAL:.0} stored/s at saturation: {:.0}/s wall clock, {:.0} per CPU second: {}",
            sat.stored as f64 / sat.secs,
            sat.stored as f64 / sat.cpu_secs,
            if sat.stored as f64 / sat.secs >= GOAL {
                "met"
            } else {
                "NOT met on the wall clock"
            }
        );
    }
}

fn measure(run: &Run) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let path = dir.path().join("bench.db");
    let (answered_tx, answered) = mpsc::channel::<(u64, Instant)>();
    let config = StoreConfig {
        path: Some(path.clone()),
        flush: run.flush,
        ..StoreConfig::default()
    };
    let store = Store::open(
        config,
        Box::new(move |a| {
            let _ = answered_tx.send((a.tag, Instant::now()));
        }),
    )
    .map_err(|e| e.to_string())?;
    // The queue also holds the queries in flight, at most one per `query_every`.
    let queue = DEFAULT_QUEUE as u64;
    let in_flight_cap = queue - queue / run.query_every - 2;
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut asked = Vec::new();
    let start = Instant::now();
    for i in 0..run.messages {
        match run.rate {
            None => {
                // A full queue is a quarter of a second of work: sleeping a little
                // leaves the core to the storage thread without ever starving it.
                while i - (store.stored() + store.unsaved()) >= in_flight_cap {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            // Checked every 100 messages: the loop, too, hands over messages in bursts.
            Some(rate) if i % 100 == 0 => {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            Some(_) => {}
        }
        store.append(message(i, base_ms));
        if i % run.query_every == 0 {
            // Timed from before the call: the answer may come before it returns.
            let asked_at = Instant::now();
            if store.query(asked.len() as u64, &room(i), 20, None) {
                asked.push(asked_at);
            }
        }
    }
    while store.stored() + store.unsaved() < run.messages {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    let (stored, unsaved, commits) = (store.stored(), store.unsaved(), store.commits());
    let cpu_secs = storage_thread_cpu().unwrap_or(f64::NAN);
    store.close(Duration::from_secs(60));
    let mut waits: Vec<f64> = answered
        .try_iter()
        .filter_map(|(tag, at)| asked.get(tag as usize).map(|t| (at - *t).as_secs_f64()))
        .map(|s| s * 1000.0)
        .collect();
    waits.sort_by(f64::total_cmp);
    let bytes = size_on_disk(&path);
    println!(
        "{} at flush {} ms: {stored} stored in {secs:.2} s, {commits} commits, {} answers",
        run.name,
        run.flush.as_millis(),
        waits.len(),
    );
    Ok(Row {
        name: run.name,
        flush: run.flush,
        stored,
        unsaved,
        commits,
        secs,
        cpu_secs,
        query_p50_ms: waits.get(waits.len() / 2).copied().unwrap_or(0.0),
        query_max_ms: waits.last().copied().unwrap_or(0.0),
        bytes,
    })
}

fn room(i: u64) -> String {
    format!("#room{:02}", i % 50)
}

fn message(i: u64, base_ms: i64) -> Message {
    let len = 20 + (i * 37 % 81) as usize;
    Message {
        room: room(i),
        at_ms: base_ms + i as i64,
        from: format!("user{:04}", (i * 7) % 1000),
        text: LOREM[..len].to_string(),
    }
}

/// CPU seconds the storage thread (named `loopchat-store`) has used so far, from
/// `/proc/self/task/<tid>/stat` (utime and stime, fields 14 and 15).
fn storage_thread_cpu() -> Option<f64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let task = tasks.flatten().find(|t| {
        std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "loopchat-store")
    })?;
    let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// The database, plus its WAL and shared-memory files if any are left.
fn size_on_disk(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|ext| {
            let mut p = path.as_os_str().to_owned();
            p.push(ext);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum()
}
