//! `loopchat bench`: the load harness. It drives any server that speaks the line
//! protocol, plain lines or IRC, over plain TCP, TLS or WebSocket, from one process,
//! against one server or spread over several, and reports connection counts, phase
//! times, handshakes (per second, latency), deliveries (expected, received, lost,
//! duplicated, reordered), throughput, latency percentiles and, given the servers'
//! pids, their memory and CPU time (and a cluster's Redis CPU per message); once or
//! over `--repeat` runs, and its reports can be drawn (`plot`) and compared
//! (`compare`).
//!
//! # Layout
//!
//! - [`config`]: the flags ([`BenchArgs`]), their checked form ([`BenchConfig`]) and the
//!   capacity checks (open files, ephemeral ports).
//! - `cli`: the command: repeats, spawned servers, the printed table, `--json` and
//!   `--hgrm` files, and the `plot` and `compare` subcommands ([`BenchTool`]).
//! - `contract`: what the coordinator and the workers share: the phases, the shared
//!   state, and the layout of clients over workers and rooms.
//! - `worker`: one mio loop per harness thread, owning its share of the connections;
//!   `worker::phases` holds what it does in each phase (one set of hooks per phase),
//!   `worker::irc` a client's IRC registration, join and `PING` answers.
//! - `sockets`: client socket set-up (source address, connect status, connect errors).
//!   Over TLS each socket is wrapped in the client's
//!   [`Transport`](crate::client::transport::Transport), whose handshake the worker
//!   drives in its loop like any other I/O.
//! - [`websocket`]: the client end of RFC 6455 (`--ws`): the upgrade and its check,
//!   masked frames out, the server's frames in (pure; the worker drives it).
//! - [`marker`]: what each message text carries, and per-sender sequence tracking.
//! - [`irc`]: the IRC dialect's lines, both ways (pure).
//! - `tally`: what a worker counts (deliveries classified, latency) and how the
//!   workers' counts add up.
//! - [`report`]: the [`Report`] struct, its table, its JSON (written and read back) and
//!   its `.hgrm` latency distribution.
//! - [`repeat`]: the headline figures, and their median and min–max over runs.
//! - [`saved`]: a JSON report read back; [`plot`] draws several on one SVG chart,
//!   [`compare`] says which figures of two differ by more than their spread.
//! - [`server_proc`]: the server as a process: `/proc` sampling, its summary lines'
//!   write counts and `--spawn-server` (with `--tls`: a TLS port and a throwaway
//!   self-signed certificate; with `--ws`: a browser port).
//! - [`cluster`]: `--spawn-cluster N`: a `redis-server` and N clustered servers,
//!   stopped together.
//!
//! This module is the coordinator: it starts the workers, moves them through the phases
//! (connect → join → idle → load → drain → stalled check), times each, samples the
//! server between them, shows progress, and adds the workers' tallies into a report.
//! Every phase is bounded in time, so a silent or vanished server ends the run with a
//! partial report instead of a hang.

mod cli;
pub mod cluster;
pub mod compare;
pub mod config;
mod contract;
pub mod irc;
pub mod marker;
pub mod plot;
pub mod repeat;
pub mod report;
pub mod saved;
pub mod server_proc;
mod sockets;
mod tally;
pub mod websocket;
mod worker;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

pub use cli::{BenchTool, run};
pub use config::{BenchArgs, BenchConfig, BenchDialect};
use contract::{Phase, Progress, STALL_LIMIT, Shared, WAKE};
pub use report::{Latency, RedisStats, Report, ServerStats};
pub use server_proc::{SpawnedServer, TempCert};
use tally::Tally;
use worker::Worker;

/// Runs one benchmark and returns its report. `Err` means it could not start (bad
/// configuration, not enough open files or ports, no threads); anything that goes wrong
/// once it runs (refused connections, a server that closes or vanishes) is in the
/// report's `problems`, with whatever was measured until then.
pub fn run_bench(config: &BenchConfig) -> Result<Report, String> {
    config.validate()?;
    let nofile = crate::net::raise_nofile_limit();
    config::check_capacity(config, nofile)?;

    let config = Arc::new(config.clone());
    let shared = Arc::new(Shared::new(config.threads, config.rooms));
    let run_id = run_id();
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..config.threads {
        let poll = Poll::new().map_err(|e| format!("cannot create an event loop: {e}"))?;
        let waker = Waker::new(poll.registry(), WAKE)
            .map_err(|e| format!("cannot create an event-loop waker: {e}"))?;
        polls.push(poll);
        wakers.push(waker);
    }
    let mut co = Coordinator {
        config: Arc::clone(&config),
        shared: Arc::clone(&shared),
        wakers,
        handles: Vec::new(),
        progress: config.progress && std::io::stderr().is_terminal(),
        last_progress: Instant::now(),
        problems: Vec::new(),
        aborted: false,
        last_proc_check: Instant::now(),
    };
    for (t, poll) in polls.into_iter().enumerate() {
        let worker = Worker::new(t, Arc::clone(&config), Arc::clone(&shared), poll, run_id);
        let spawned = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker.run());
        match spawned {
            Ok(h) => co.handles.push(h),
            Err(e) => {
                co.finish();
                return Err(format!("cannot start harness thread: {e}"));
            }
        }
    }
    Ok(co.run())
}

/// A run id from the clock and pid: keeps names, rooms and markers of concurrent runs
/// against one server apart.
fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().rotate_left(12)) & 0xff_ffff
}

/// Drives the workers through the phases and collects the report.
struct Coordinator {
    config: Arc<BenchConfig>,
    shared: Arc<Shared>,
    wakers: Vec<Waker>,
    handles: Vec<JoinHandle<Tally>>,
    progress: bool,
    last_progress: Instant,
    problems: Vec<String>,
    aborted: bool,
    last_proc_check: Instant,
}

/// How long past a phase's own bound the coordinator waits before declaring the
/// harness stuck (a worker bug; never expected).
const PHASE_GRACE: Duration = Duration::from_secs(5);

/// How often the coordinator checks on the workers.
const TICK: Duration = Duration::from_millis(2);

impl Coordinator {
    fn run(mut self) -> Report {
        let c = Arc::clone(&self.config);
        let pids = &c.server_pids[..];
        let cpu0 = server_proc::cpu_sum(pids);
        let rss_before = server_proc::rss_sum(pids);
        for &pid in pids {
            if server_proc::rss_bytes(pid).is_none() {
                self.abort(format!("server process {pid} not found in /proc"));
            } else if c
                .addrs
                .iter()
                .all(|&a| server_proc::listens_on(pid, a) == Some(false))
            {
                self.problems.push(format!(
                    "process {pid} does not listen on {}: its memory and CPU are not the \
                     server's (a wrapper shell or `cargo run`? give the server's own pid)",
                    c.addrs_text()
                ));
            }
        }
        let redis = c.redis_pid;
        let redis_cpu0 = redis.and_then(server_proc::cpu_seconds);
        if let Some(pid) = redis
            && redis_cpu0.is_none()
        {
            self.abort(format!("Redis process {pid} not found in /proc"));
        }
        let own_cpu0 = server_proc::own_cpu_seconds();

        let connect_secs = self.phase(Phase::Connect, c.phase_timeout);
        let connected = self.sum(|p| p.connected.load(Ordering::Relaxed));
        if !self.aborted && connected == 0 {
            let why = self.first_failure();
            self.abort(format!(
                "no connection to {} could be established{why}",
                c.addrs_text()
            ));
        }
        let join_secs = if self.aborted {
            0.0
        } else {
            self.phase(Phase::Join, c.phase_timeout + c.settle)
        };
        let joined = self.sum(|p| p.joined.load(Ordering::Relaxed));
        if !self.aborted && joined == 0 {
            let why = self.first_failure();
            self.abort(format!("no client could join{why}"));
        }

        let mut idle_secs = 0.0;
        if !self.aborted && !c.idle.is_zero() {
            self.phase(Phase::Idle, Duration::ZERO);
            let start = Instant::now();
            while !self.aborted && start.elapsed() < c.idle {
                self.tick(Phase::Idle);
                std::thread::sleep(Duration::from_millis(20));
            }
            idle_secs = start.elapsed().as_secs_f64();
        }
        let rss_joined = server_proc::rss_sum(pids);

        let mut steady_secs = 0.0;
        let mut drain_secs = 0.0;
        let mut steady_start = None;
        let mut cpu_load0 = None;
        let mut redis_load0 = None;
        let loaded = c.senders > 0 && !c.duration.is_zero();
        if !self.aborted && loaded {
            cpu_load0 = server_proc::cpu_sum(pids);
            redis_load0 = redis.and_then(server_proc::cpu_seconds);
            // Start a moment ahead so every worker sees the same time zero.
            let start = Instant::now() + Duration::from_millis(5);
            let start_us = start.duration_since(self.shared.epoch).as_micros() as u64;
            self.shared
                .steady_start_us
                .store(start_us, Ordering::Relaxed);
            steady_start = Some(start);
            steady_secs = self.phase(Phase::Steady, c.duration);
            // Runs even after an abort: it counts what was expected.
            drain_secs = self.phase(Phase::Drain, c.drain_timeout);
        }
        let cpu_end = server_proc::cpu_sum(pids);
        let redis_end = redis.and_then(server_proc::cpu_seconds);
        if !self.aborted && c.stalled > 0 {
            self.phase(Phase::Stall, STALL_LIMIT);
        }
        let rss_after = server_proc::rss_sum(pids);
        let mut t = Tally::default();
        for w in &self.finish() {
            if t.merge(w).is_err() {
                self.problems
                    .push("latency histograms could not be merged".into());
            }
        }
        let mut failures: Vec<(String, u64)> = t.failures.into_iter().collect();
        failures.sort_by_key(|f| std::cmp::Reverse(f.1));

        let mut r = Report {
            addr: c.addrs_text(),
            addrs: c
                .spread()
                .into_iter()
                .map(|(a, n)| (a.to_string(), n))
                .collect(),
            label: c.addrs_text(),
            dialect: c.dialect.as_str(),
            clients: c.clients,
            stalled: c.stalled,
            rooms: c.rooms,
            senders: c.senders,
            rate_per_sender: c.rate,
            payload: c.payload,
            threads: c.threads,
            source_ips: c.source_ips.len(),
            tls: c.tls.is_some(),
            ws: c.ws,
            handshakes: t.handshake.len(),
            handshake_latency: Latency::of(&t.handshake),
            established: t.connected,
            connect_failed: t.connect_failed,
            joined: t.joined,
            join_failed: t.join_failed,
            closed_by_server: t.closed_by_server,
            failures,
            server_errors: t.server_errors,
            server_error_samples: t.server_error_samples,
            connect_secs,
            join_secs,
            idle_secs,
            steady_secs,
            drain_secs,
            sent: t.sent,
            send_skipped: t.send_skipped,
            expected: t.expected,
            received: t.received,
            lost: t.expected.saturating_sub(t.received),
            duplicated: t.duplicated,
            out_of_order: t.out_of_order,
            misrouted: t.misrouted,
            echoes: t.echoes,
            stalled_evicted: t.stalled_evicted,
            harness_cpu_secs: server_proc::own_cpu_seconds() - own_cpu0,
            // Throughput, latency and the server's figures follow.
            ..Report::default()
        };
        if let (Some(start), Some(last)) = (steady_start, t.last_delivery) {
            let secs = last.saturating_duration_since(start).as_secs_f64();
            if secs > 0.0 {
                r.deliveries_per_sec = r.received as f64 / secs;
            }
        }
        r.latency = Latency::of(&t.latency);
        r.histogram = (!t.latency.is_empty()).then_some(t.latency);
        if r.connect_secs > 0.0 {
            r.handshakes_per_sec = r.handshakes as f64 / r.connect_secs;
        }
        if !pids.is_empty() {
            let alive = rss_after.is_some();
            let rss_per_conn = match (rss_before, rss_joined) {
                (Some(b), Some(j)) if r.joined > 0 => Some((j as f64 - b as f64) / r.joined as f64),
                _ => None,
            };
            r.server = Some(ServerStats {
                pids: pids.to_vec(),
                rss_before,
                rss_joined,
                rss_after,
                rss_per_conn,
                cpu_secs: cpu0.zip(cpu_end).map(|(a, b)| b - a),
                cpu_load_secs: cpu_load0.zip(cpu_end).map(|(a, b)| b - a),
                alive_at_end: alive,
                writes_per_delivery: None,
            });
            if !alive {
                let gone = server_proc::first_gone(pids).unwrap_or_default();
                self.problems
                    .push(format!("the server process {gone} was gone at the end"));
            }
        }
        if let Some(pid) = redis {
            let rss_after = server_proc::rss_bytes(pid);
            let mut stats = RedisStats {
                pid,
                rss_after,
                cpu_secs: redis_cpu0.zip(redis_end).map(|(a, b)| b - a),
                cpu_load_secs: redis_load0.zip(redis_end).map(|(a, b)| b - a),
                cpu_us_per_sent: None,
                cpu_us_per_delivery: None,
                alive_at_end: rss_after.is_some(),
            };
            stats.per_message(r.sent, r.received);
            if !stats.alive_at_end {
                self.problems
                    .push(format!("the Redis process {pid} was gone at the end"));
            }
            r.redis = Some(stats);
        }
        r.problems = self.problems_for(&r);
        r
    }

    /// Lists what went wrong, coordinator problems first, then every non-zero count.
    fn problems_for(&mut self, r: &Report) -> Vec<String> {
        let mut p = std::mem::take(&mut self.problems);
        let lost = format!(
            "of {} deliveries lost (not received before the drain ended)",
            r.expected
        );
        let counts = [
            (r.connect_failed, "connection(s) failed"),
            (r.join_failed, "client(s) could not join"),
            (
                r.closed_by_server,
                "measured connection(s) closed by the server",
            ),
            (r.lost, lost.as_str()),
            (r.duplicated, "deliveries duplicated"),
            (r.out_of_order, "deliveries out of order"),
            (
                r.misrouted,
                "deliveries reached a client outside the sender's room",
            ),
            (
                r.send_skipped,
                "messages not sent (sender gone, or the server stopped reading from it)",
            ),
        ];
        for (n, what) in counts {
            if n > 0 {
                p.push(format!("{n} {what}"));
            }
        }
        p
    }

    /// Runs one phase: announce it, wait until every worker is done (or the phase's
    /// bound plus a grace period passes), return its length in seconds.
    fn phase(&mut self, p: Phase, bound: Duration) -> f64 {
        let start = Instant::now();
        let start_us = start.duration_since(self.shared.epoch).as_micros() as u64;
        self.shared.set_phase(p);
        self.wake();
        let hard = start + bound + PHASE_GRACE;
        loop {
            if self.shared.workers.iter().all(|w| w.done_phase() >= p) {
                break;
            }
            if Instant::now() > hard {
                self.abort(format!(
                    "the {} phase did not end within {:?} (harness stuck)",
                    p.name(),
                    bound + PHASE_GRACE
                ));
                break;
            }
            if self.handles.iter().any(|h| h.is_finished()) {
                self.abort("a harness thread stopped unexpectedly".into());
                break;
            }
            self.tick(p);
            std::thread::sleep(TICK);
        }
        let end_us = self
            .shared
            .workers
            .iter()
            .map(|w| w.done_at_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(start_us);
        Duration::from_micros(end_us.saturating_sub(start_us)).as_secs_f64()
    }

    /// Checks for Ctrl-C, a vanished server or connections, and updates progress.
    fn tick(&mut self, p: Phase) {
        if let Some(flag) = &self.config.interrupt
            && flag.load(Ordering::Relaxed)
            && !self.aborted
        {
            self.abort("interrupted".into());
        }
        if !self.aborted && self.last_proc_check.elapsed() >= Duration::from_millis(100) {
            self.last_proc_check = Instant::now();
            let c = Arc::clone(&self.config);
            if let Some(pid) = server_proc::first_gone(&c.server_pids) {
                self.abort(format!("the server process {pid} exited during the run"));
            } else if let Some(pid) = c.redis_pid
                && server_proc::rss_bytes(pid).is_none()
            {
                self.abort(format!("the Redis process {pid} exited during the run"));
            }
        }
        if !self.aborted && p >= Phase::Idle && p <= Phase::Drain {
            // Workers publish `live` every loop turn: all at zero after some clients
            // joined means the server closed every connection (or went away).
            let live = self.sum(|w| w.live.load(Ordering::Relaxed));
            let joined = self.sum(|w| w.joined.load(Ordering::Relaxed));
            if live == 0 && joined > 0 {
                self.abort("the server closed every connection".into());
            }
        }
        if self.progress && self.last_progress.elapsed() >= Duration::from_millis(500) {
            self.last_progress = Instant::now();
            let c = &self.config;
            let line = format!(
                "[{}] connected {}/{} (failed {}), joined {}, sent {}, received {}",
                p.name(),
                self.sum(|w| w.connected.load(Ordering::Relaxed)),
                c.connections(),
                self.sum(|w| w.connect_failed.load(Ordering::Relaxed)),
                self.sum(|w| w.joined.load(Ordering::Relaxed)),
                self.sum(|w| w.sent.load(Ordering::Relaxed)),
                self.sum(|w| w.received.load(Ordering::Relaxed)),
            );
            eprint!("\r{line:<100}");
        }
    }

    fn sum(&self, f: impl Fn(&Progress) -> u64) -> u64 {
        self.shared.workers.iter().map(f).sum()
    }

    /// `: <reason>` for the first connect or join failure any worker saw.
    fn first_failure(&self) -> String {
        match self.shared.first_failure.lock() {
            Ok(g) => g.as_ref().map(|f| format!(": {f}")).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn abort(&mut self, why: String) {
        if !self.aborted {
            self.aborted = true;
            self.shared.abort.store(true, Ordering::Relaxed);
            self.wake();
            self.problems.push(format!("run cut short: {why}"));
        }
    }

    fn wake(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Tells the workers to close everything and collects their results.
    fn finish(&mut self) -> Vec<Tally> {
        self.shared.set_phase(Phase::Finish);
        self.wake();
        if self.progress {
            eprint!("\r{:100}\r", "");
        }
        let mut results = Vec::new();
        for h in self.handles.drain(..) {
            match h.join() {
                Ok(r) => results.push(r),
                Err(_) => self.problems.push("a harness thread panicked".into()),
            }
        }
        results
    }
}
