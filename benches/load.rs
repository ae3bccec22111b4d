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
//! `hostile` (fanout, plus an endless-line blaster and a private-message flood at a
//! victim, from addresses under the default abuse limits), `rooms` (10 000 clients in
//! 100 rooms), `stalled` (fanout plus one client that never reads and must be evicted),
//! `storm` (10 000 connects + joins, timed).
//!
//! Under `cargo test --benches` (no `--bench` flag) it only lists the scenarios.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Attackers to run beside the load, if any.
    attack: bool,
}

/// Server flags of the fan-out and stalled scenarios, the same for both so their
/// latencies compare. Left to itself, the kernel lets a socket that is not read buffer
/// about 4 MiB on loopback before the server's own queue even starts to grow; a 64 KiB
/// send buffer and a 256 KiB output cap get a stuck reader evicted within seconds.
const FANOUT_SERVER_ARGS: &[&str] = &["--send-buffer", "65536", "--max-output", "262144"];

/// The hostile scenario's server: the fan-out flags, then the default abuse limits put
/// back (the spawned server starts with them lifted) for everyone but the harness's own
/// source addresses (127.0.0.1-16), which are exempt so the load itself is not limited.
const HOSTILE_SERVER_ARGS: &[&str] = &[
    "--send-buffer",
    "65536",
    "--max-output",
    "262144",
    "--rate",
    "5",
    "--connect-rate",
    "10",
    "--max-conns-per-ip",
    "64",
    "--max-strikes",
    "5",
    "--ip-rate",
    "20",
    "--msg-in-rate",
    "10",
    "--exempt",
    "127.0.0.0/27",
];

/// The fan-out load, also the base of the stalled scenario.
fn fanout(c: &mut BenchConfig, _nofile: u64) {
    c.clients = 1000;
    c.rooms = 1;
    c.senders = 10;
    c.rate = 100.0;
    c.duration = Duration::from_secs(10);
}

const SCENARIOS: [Scenario; 6] = [
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
        attack: false,
    },
    Scenario {
        name: "fanout",
        what: "1 room x 1000 clients, 10 senders x 100 msg/s, 10 s",
        server_args: FANOUT_SERVER_ARGS,
        configure: fanout,
        attack: false,
    },
    Scenario {
        name: "hostile",
        what: "fanout, plus an endless-line blaster and a PM flood at a victim (default limits)",
        server_args: HOSTILE_SERVER_ARGS,
        configure: fanout,
        attack: true,
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
        attack: false,
    },
    Scenario {
        name: "stalled",
        what: "fanout, plus 1 client that never reads (evicted at the output cap)",
        server_args: FANOUT_SERVER_ARGS,
        configure: |c, nofile| {
            fanout(c, nofile);
            c.stalled = 1;
        },
        attack: false,
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
        attack: false,
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
    config.server_pids = vec![server.pid()];
    (s.configure)(&mut config, nofile);
    let attack = s.attack.then(|| Attack::start(server.addr()));
    let report = run_bench(&config);
    let attack = attack.map(Attack::stop);
    server.stop(Duration::from_secs(5));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let writes = writes_per_delivery(&log_text);
    let _ = std::fs::remove_file(&log);
    if let Some(a) = attack {
        let evictions: Vec<&str> = log_text
            .lines()
            .filter(|l| l.contains("evicted #"))
            .collect();
        println!(
            "  attack        blaster sent {} MiB in {:.1} s before the server closed it ({}); \
             victim received {} KiB and {}; {} PM senders refused with \"receiving too fast\"",
            a.blasted >> 20,
            a.blaster_secs,
            a.blaster_end,
            a.victim_bytes >> 10,
            if a.victim_evicted {
                "was CLOSED"
            } else {
                "stayed connected"
            },
            a.refused_senders,
        );
        println!("  evictions     {} in the server log", evictions.len());
        for e in evictions.iter().take(5) {
            println!("    {e}");
        }
    }
    report.map(|r| (r, writes))
}

/// The hostile scenario's attackers, on threads of their own: one client blasting an
/// endless line without a newline, and eight clients (one address each) bursting
/// 4000-byte private messages at a victim that reads as fast as it can. All from
/// addresses outside the harness's, so the default abuse limits apply to them. Every
/// loop stops at the stop flag or when the server closes its socket.
struct Attack {
    stop: Arc<AtomicBool>,
    blaster: JoinHandle<(u64, f64, String)>,
    victim: JoinHandle<(u64, bool)>,
    flooders: Vec<JoinHandle<bool>>,
}

/// What the attackers saw.
struct AttackResult {
    blasted: u64,
    blaster_secs: f64,
    blaster_end: String,
    victim_bytes: u64,
    victim_evicted: bool,
    refused_senders: usize,
}

/// Connects from `src` to `addr` and takes `name`.
fn attacker(addr: SocketAddr, src: [u8; 4], name: &str) -> std::io::Result<TcpStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SockAddr::from(SocketAddr::new(IpAddr::from(src), 0)))?;
    socket.connect(&SockAddr::from(addr))?;
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("JOIN:{name}\n").as_bytes())?;
    Ok(stream)
}

impl Attack {
    fn start(addr: SocketAddr) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let blaster = std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0u64;
            let end = match attacker(addr, [127, 0, 1, 1], "blaster") {
                Err(e) => format!("could not connect: {e}"),
                Ok(mut s) => {
                    let chunk = vec![b'x'; 64 * 1024];
                    loop {
                        if flag.load(Ordering::Relaxed) {
                            break "still open at the end".to_string();
                        }
                        match s.write(&chunk) {
                            Ok(n) => sent += n as u64,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(e) => break format!("{e}"),
                        }
                    }
                }
            };
            (sent, start.elapsed().as_secs_f64(), end)
        });
        let flag = Arc::clone(&stop);
        let victim = std::thread::spawn(move || {
            let Ok(mut s) = attacker(addr, [127, 0, 2, 1], "victim") else {
                return (0, true);
            };
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0u64;
            while !flag.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => return (got, true),
                    Ok(n) => got += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return (got, true),
                }
            }
            (got, false)
        });
        // Let the victim take its name before the flood aims at it.
        std::thread::sleep(Duration::from_millis(200));
        let flooders = (1..=8u8)
            .map(|i| {
                let flag = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let Ok(mut s) = attacker(addr, [127, 0, 3, i], &format!("flood{i}")) else {
                        return false;
                    };
                    let mut line = b"MSG:victim:".to_vec();
                    line.extend(std::iter::repeat_n(b'p', 4000));
                    line.push(b'\n');
                    let burst = line.repeat(10);
                    let mut refused = false;
                    let mut buf = vec![0u8; 64 * 1024];
                    while !flag.load(Ordering::Relaxed) {
                        if s.write_all(&burst).is_err() {
                            break;
                        }
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                refused |= buf[..n].windows(18).any(|w| w == b"receiving too fast");
                            }
                            Err(_) => {}
                        }
                    }
                    refused
                })
            })
            .collect();
        Attack {
            stop,
            blaster,
            victim,
            flooders,
        }
    }

    fn stop(self) -> AttackResult {
        self.stop.store(true, Ordering::Relaxed);
        let (blasted, blaster_secs, blaster_end) =
            self.blaster.join().unwrap_or((0, 0.0, "panicked".into()));
        let (victim_bytes, victim_evicted) = self.victim.join().unwrap_or((0, true));
        let refused_senders = self
            .flooders
            .into_iter()
            .filter_map(|f| f.join().ok())
            .filter(|&r| r)
            .count();
        AttackResult {
            blasted,
            blaster_secs,
            blaster_end,
            victim_bytes,
            victim_evicted,
            refused_senders,
        }
    }
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
