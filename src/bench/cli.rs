//! The `loopchat bench` command: from its flags to the printed table and the files.
//!
//! It checks the flags, handles Ctrl-C, and runs the benchmark `--repeat` times (with
//! `--spawn-server` or `--spawn-cluster`, each run against fresh servers, so no run
//! inherits another's memory or backlog), then prints one report (or, over several
//! runs, the median and min–max of every figure) and writes `--json` and `--hgrm`.
//! `plot` and `compare` are dispatched from here to their own modules. The runs
//! themselves are [`run_bench`](super::run_bench)'s.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::cluster::{self, Cluster};
use super::compare::{self, CompareArgs};
use super::config::{self, BenchArgs, BenchConfig};
use super::plot::{self, PlotArgs};
use super::repeat::Repeated;
use super::report::{Report, hgrm::hgrm};
use super::server_proc::{self, Listen, SpawnedServer, TempCert};

/// Exit status for a command line that makes no sense (clap uses the same).
const EXIT_USAGE: u8 = 2;

/// How long to leave a server that is not spawned afresh between two runs, so the
/// connections of one are gone before the next starts.
const PAUSE_BETWEEN_RUNS: Duration = Duration::from_secs(1);

/// `loopchat bench`'s subcommands: they read reports instead of running a benchmark.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchTool {
    /// Draw latency by percentile for one or more JSON reports on one SVG chart.
    Plot(PlotArgs),
    /// Say, figure by figure, whether two JSON reports differ by more than their runs'
    /// spread.
    Compare(CompareArgs),
}

/// Runs `loopchat bench`; returns the process exit status: 0 for a clean run, 1 when
/// the report lists problems or the run could not start, 2 for bad arguments.
pub fn run(args: BenchArgs) -> ExitCode {
    match &args.tool {
        Some(BenchTool::Plot(p)) => return plot::run(p),
        Some(BenchTool::Compare(c)) => return compare::run(c),
        None => {}
    }
    // Check the flags before spawning anything; the spawned server's address replaces
    // the placeholder.
    let spawning = args.spawn_server || args.spawn_cluster.is_some();
    let placeholder = spawning.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut config = match BenchConfig::from_args(&args, placeholder) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loopchat bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C exits at once; the first ends the run with a partial report.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, interrupt.clone());
        if let Err(e) = signal_hook::flag::register(signal, interrupt.clone()) {
            log::warn!("cannot handle signal {signal}: {e}");
        }
    }
    config.interrupt = Some(interrupt.clone());
    if args.insecure {
        log::warn!("--insecure: the server's certificate is not verified");
    }

    let n = args.repeat.max(1) as usize;
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            if interrupt.load(Ordering::Relaxed) {
                break;
            }
            if !spawning {
                std::thread::sleep(PAUSE_BETWEEN_RUNS);
            }
        }
        if n > 1 {
            log::info!("run {} of {n}", i + 1);
        }
        match run_once(&args, &config) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("loopchat bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (table, json, histogram, mut ok) = if n == 1 && runs.len() == 1 {
        let r = &runs[0];
        (r.to_string(), r.to_json(), r.histogram.clone(), r.ok())
    } else {
        let rep = Repeated::of(runs);
        let ok = rep.ok() && rep.runs.len() == n;
        (rep.to_string(), rep.to_json(), Some(rep.histogram), ok)
    };
    print!("{table}");
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, json)
    {
        eprintln!("loopchat bench: cannot write {}: {e}", path.display());
        ok = false;
    }
    if let Some(path) = &args.hgrm {
        let text = hgrm(&histogram.unwrap_or_else(super::tally::new_histogram));
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("loopchat bench: cannot write {}: {e}", path.display());
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What one run started: one server, or a cluster. Dropping it stops everything (the
/// children are killed and reaped even when the run fails).
enum Spawned {
    One(SpawnedServer),
    Cluster(Cluster),
}

impl Spawned {
    /// The loopchat servers (a cluster's nodes, in order).
    fn servers(&self) -> &[SpawnedServer] {
        match self {
            Spawned::One(s) => std::slice::from_ref(s),
            Spawned::Cluster(c) => c.nodes(),
        }
    }

    fn stop(&mut self) {
        match self {
            Spawned::One(s) => s.stop(STOP_GRACE),
            Spawned::Cluster(c) => c.stop(STOP_GRACE),
        }
    }
}

/// A spawned server's memory counts as settled when it has not changed for this long…
const SETTLE_QUIET: Duration = Duration::from_millis(300);
/// …or when this much time has passed since it was ready.
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// How long a spawned server (or node, or Redis) may take to shut down after a run.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// One run: spawn the server (or cluster) if asked, run the benchmark, stop what was
/// spawned, and fill in what only the command knows (the label, the server's writes
/// per delivery).
fn run_once(args: &BenchArgs, base: &BenchConfig) -> Result<Report, String> {
    let mut config = base.clone();
    let mut spawned = None;
    // Every spawned process's log, read for its summary lines after the run.
    let mut logs: Vec<PathBuf> = Vec::new();
    // Lives until the spawned server is stopped.
    let mut temp_cert = None;
    if args.spawn_server || args.spawn_cluster.is_some() {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find my own executable to spawn the server: {e}"))?;
        let log = args.server_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("loopchat-bench-{}.log", std::process::id()))
        });
        if args.tls {
            temp_cert = Some(
                TempCert::create()
                    .map_err(|e| format!("cannot make a certificate for the server: {e}"))?,
            );
        }
        let listen = Listen {
            cert: temp_cert.as_ref(),
            ws: args.ws,
        };
        let started = match args.spawn_cluster {
            Some(n) => {
                let n = usize::from(n);
                let redis_log = cluster::redis_log(&log);
                logs.extend((1..=n).map(|k| cluster::node_log(&log, k)));
                logs.push(redis_log.clone());
                let node_log = |k| cluster::node_log(&log, k);
                Cluster::start(&exe, n, &args.server_arg, &redis_log, node_log, listen)
                    .map(Spawned::Cluster)
            }
            None => {
                logs.push(log.clone());
                SpawnedServer::start_with(&exe, &args.server_arg, Some(&log), listen)
                    .map(Spawned::One)
            }
        };
        let started = started.map_err(|e| {
            remove_logs(args, &logs);
            e.to_string()
        })?;
        let servers = started.servers();
        match &started {
            Spawned::Cluster(c) => {
                log::info!(
                    "spawned redis-server on {} (pid {}) and {} loopchat servers: {}",
                    c.redis().addr(),
                    c.redis().pid(),
                    servers.len(),
                    describe(servers)
                );
                config.redis_pid = Some(c.redis().pid());
            }
            Spawned::One(_) => log::info!("spawned loopchat server: {}", describe(servers)),
        }
        config.addrs = servers.iter().map(|s| s.client_addr()).collect();
        config.server_pids = servers.iter().map(|s| s.pid()).collect();
        // Memory is sampled at the start of the run: let the start-up's settle first.
        server_proc::settle(&config.server_pids, SETTLE_QUIET, SETTLE_MAX);
        spawned = Some(started);
        if let Some(cert) = &temp_cert {
            config.tls = Some(config::tls_setup(
                "127.0.0.1",
                Some(&cert.cert),
                args.insecure,
            )?);
        }
    }

    let result = super::run_bench(&config);
    if let Some(s) = spawned.as_mut() {
        s.stop();
    }
    drop(spawned);
    drop(temp_cert);
    let writes = logs
        .iter()
        .filter_map(|path| server_proc::summary_writes(&std::fs::read_to_string(path).ok()?))
        .reduce(|(d, w), (dd, dw)| (d + dd, w + dw))
        .filter(|&(deliveries, _)| deliveries > 0)
        .map(|(deliveries, writes)| writes as f64 / deliveries as f64);
    remove_logs(args, &logs);
    let mut report = result?;
    if let Some(server) = report.server.as_mut() {
        server.writes_per_delivery = writes;
    }
    let transport = match (args.ws, args.tls) {
        (true, true) => " wss",
        (true, false) => " ws",
        _ => "",
    };
    report.label = match &args.label {
        Some(l) => l.clone(),
        None if args.spawn_server => format!("loopchat{transport}"),
        None if let Some(n) = args.spawn_cluster => format!("loopchat{transport} x{n}"),
        None => config
            .server_pids
            .first()
            .and_then(|&pid| server_proc::program_name(pid))
            .unwrap_or_else(|| report.addr.clone()),
    };
    Ok(report)
}

/// Removes the temporary logs (not a `--server-log` the user asked to keep).
fn remove_logs(args: &BenchArgs, logs: &[PathBuf]) {
    if args.server_log.is_none() {
        for path in logs {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The spawned servers for the log: command line flags, pids and ports.
fn describe(servers: &[SpawnedServer]) -> String {
    let each: Vec<String> = servers
        .iter()
        .map(|s| {
            let mut what = format!("pid {} chat {}", s.pid(), s.addr());
            if let Some(a) = s.tls_addr() {
                what.push_str(&format!(", TLS {a}"));
            }
            if let Some(a) = s.ws_addr() {
                what.push_str(&format!(", browsers {a}"));
            }
            what
        })
        .collect();
    format!(
        "{} (flags {})",
        each.join("; "),
        server_proc::LIFT_LIMITS.join(" ")
    )
}
