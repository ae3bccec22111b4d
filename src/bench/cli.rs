//! The `loopchat bench` command: from its flags to the printed table and the files.
//!
//! It checks the flags, handles Ctrl-C, and runs the benchmark `--repeat` times (with
//! `--spawn-server`, each run against a fresh server, so no run inherits another's
//! memory or backlog), then prints one report (or, over several runs, the median and
//! min–max of every figure) and writes `--json` and `--hgrm`. `plot` and `compare` are
//! dispatched from here to their own modules. The runs themselves are
//! [`run_bench`](super::run_bench)'s.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::compare::{self, CompareArgs};
use super::config::{self, BenchArgs, BenchConfig};
use super::plot::{self, PlotArgs};
use super::repeat::Repeated;
use super::report::{Report, hgrm::hgrm};
use super::server_proc::{self, SpawnedServer, TempCert};

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
    let placeholder = args
        .spawn_server
        .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
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
            if !args.spawn_server {
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

/// One run: spawn the server if asked, run the benchmark, stop the server, and fill
/// in what only the command knows (the label, the server's writes per delivery).
fn run_once(args: &BenchArgs, base: &BenchConfig) -> Result<Report, String> {
    let mut config = base.clone();
    let mut spawned = None;
    let mut server_log = None;
    // Lives until the spawned server is stopped.
    let mut temp_cert = None;
    if args.spawn_server {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find my own executable to spawn the server: {e}"))?;
        let log = args.server_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("loopchat-bench-{}.log", std::process::id()))
        });
        server_log = Some(log.clone());
        let s = if args.tls {
            let cert = TempCert::create()
                .map_err(|e| format!("cannot make a certificate for the server: {e}"))?;
            let s = SpawnedServer::start_tls(&exe, &args.server_arg, Some(&log), &cert)
                .map_err(|e| e.to_string())?;
            let addr = s.tls_addr().unwrap_or(s.addr());
            config.tls = Some(config::tls_setup(
                &addr.ip().to_string(),
                Some(&cert.cert),
                args.insecure,
            )?);
            config.addr = addr;
            temp_cert = Some(cert);
            s
        } else {
            let s = SpawnedServer::start(&exe, &args.server_arg, Some(&log))
                .map_err(|e| e.to_string())?;
            config.addr = s.addr();
            s
        };
        log::info!(
            "spawned `loopchat server {} {}` (pid {}){}",
            s.addr(),
            server_proc::LIFT_LIMITS.join(" "),
            s.pid(),
            s.tls_addr()
                .map(|a| format!(", TLS on {a}"))
                .unwrap_or_default()
        );
        config.server_pid = Some(s.pid());
        spawned = Some(s);
    }

    let result = super::run_bench(&config);
    if let Some(mut s) = spawned {
        s.stop(Duration::from_secs(3));
    }
    drop(temp_cert);
    let writes = server_log.as_ref().and_then(|path| {
        let log = std::fs::read_to_string(path).ok();
        if args.server_log.is_none() {
            let _ = std::fs::remove_file(path);
        }
        server_proc::writes_per_delivery(&log?)
    });
    let mut report = result?;
    if let Some(server) = report.server.as_mut() {
        server.writes_per_delivery = writes;
    }
    report.label = match &args.label {
        Some(l) => l.clone(),
        None if args.spawn_server => "loopchat".into(),
        None => config
            .server_pid
            .and_then(server_proc::program_name)
            .unwrap_or_else(|| report.addr.clone()),
    };
    Ok(report)
}
