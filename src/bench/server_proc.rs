//! The server as a process: its memory and CPU time from `/proc`, the write counts in
//! its log's summary lines, and starting and stopping a `loopchat server` for a run
//! (`--spawn-server`, a cluster's nodes, `benches/load.rs`), with a TLS port and a
//! throwaway self-signed certificate ([`TempCert`]) for `--tls`, and a browser port
//! (found in its log) for `--ws`.
//!
//! Nothing here talks to the server over the network except the readiness probe. The
//! summary line's format is not known here: `crate::server::stats` writes and parses it.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::server::stats::Summary;

/// Flags that lift loopchat's abuse limits, so one loopback address can open thousands
/// of connections and send as fast as it likes: per connection and per IP, on
/// connecting and on sending, and the private-message receive rate. History is kept in
/// memory (no database file where the bench runs) and not replayed on joining, unless
/// a scenario sets those flags itself.
pub const LIFT_LIMITS: [&str; 16] = [
    "--rate",
    "0",
    "--connect-rate",
    "0",
    "--max-conns-per-ip",
    "0",
    "--max-strikes",
    "0",
    "--ip-rate",
    "0",
    "--msg-in-rate",
    "0",
    "--db",
    "none",
    "--history-replay",
    "0",
];

/// Resident memory of `pid` in bytes (VmRSS), or `None` if the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU seconds `pid` has used, or `None` if the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // after the last ')'. utime and stime are fields 14 and 15 overall.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Resident memory of all of `pids` added up, or `None` if any is gone (or there are
/// none).
pub fn rss_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// CPU seconds of all of `pids` added up, or `None` if any is gone (or there are none).
pub fn cpu_sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// Waits until the resident memory of `pids` has not changed for `quiet`, or `max`
/// has passed. A freshly started loopchat computes a dummy password hash (about
/// 19 MiB, freed at once) and builds its tables; memory sampled before that settles
/// would make "RSS per connection" a fiction for small runs.
pub fn settle(pids: &[u32], quiet: Duration, max: Duration) {
    let start = Instant::now();
    let step = Duration::from_millis(25);
    let mut last = rss_sum(pids);
    let mut since = Instant::now();
    while start.elapsed() < max && last.is_some() {
        std::thread::sleep(step);
        let now = rss_sum(pids);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

/// The first of `pids` that is no longer running, if any.
pub fn first_gone(pids: &[u32]) -> Option<u32> {
    pids.iter().copied().find(|&p| rss_bytes(p).is_none())
}

/// Whether process `pid` holds a socket listening on `addr`'s port: a check that
/// `--server-pid` names the server itself, not a wrapper shell or `cargo run`. `None`
/// when /proc cannot tell (no permission to read its fds, not Linux).
pub fn listens_on(pid: u32, addr: SocketAddr) -> Option<bool> {
    let port = format!(":{:04X}", addr.port());
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, state field 3 (0A = LISTEN), inode field 9.
            if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let found = fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    });
    Some(found)
}

/// The program name of `pid` (`/proc/<pid>/comm`, e.g. `ngircd`), or `None` if the
/// process is gone.
pub fn program_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let name = comm.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// CPU seconds this process (the harness, all threads) has used.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Adds up the deliveries and writes of loopchat's periodic summary lines in a server
/// log: `(deliveries, writes)`, or `None` if the log has no such line. The lines are
/// read by the server's own parser ([`Summary::parse`]), so the format has one owner.
pub fn summary_writes(log: &str) -> Option<(u64, u64)> {
    log.lines()
        .filter_map(Summary::parse)
        .map(|s| (s.delta.deliveries, s.delta.writes))
        .reduce(|(d, w), (dd, dw)| (d + dd, w + dw))
}

/// Write syscalls per delivery over a server log's summary lines, or `None` without
/// such lines or deliveries.
pub fn writes_per_delivery(log: &str) -> Option<f64> {
    summary_writes(log)
        .filter(|&(deliveries, _)| deliveries > 0)
        .map(|(deliveries, writes)| writes as f64 / deliveries as f64)
}

/// A self-signed certificate for `127.0.0.1` and `localhost` and its key, in a
/// temporary directory only this user can read, removed when dropped.
#[derive(Debug)]
pub struct TempCert {
    dir: PathBuf,
    /// The certificate (PEM); also what a client trusts.
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

impl TempCert {
    /// Makes the certificate and writes both files.
    pub fn create() -> io::Result<TempCert> {
        use std::os::unix::fs::DirBuilderExt;
        let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let pair = crate::tls::self_signed(&names).map_err(|e| io::Error::other(e.0))?;
        // Unique per call: a test process may hold several at once.
        static MADE: AtomicU32 = AtomicU32::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("loopchat-bench-tls-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let made = TempCert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&made.cert, pair.cert_pem)?;
        std::fs::write(&made.key, pair.key_pem)?;
        Ok(made)
    }
}

impl Drop for TempCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a spawned server listens on besides its chat port.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen<'a> {
    /// Serve TLS with this certificate: on a TLS port of its own (`--tls-listen`), or
    /// with `ws`, on the browser port (`--wss-listen`).
    pub cert: Option<&'a TempCert>,
    /// A browser port (`--ws-listen`, or `--wss-listen` with `cert`), bound to
    /// `127.0.0.1:0` and found in the server's log. Needs a log file.
    pub ws: bool,
}

/// A `loopchat server` child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    addr: SocketAddr,
    /// Its TLS port, if it serves TLS.
    tls_addr: Option<SocketAddr>,
    /// Its browser port, if it serves WebSocket.
    ws_addr: Option<SocketAddr>,
}

/// A free port on 127.0.0.1, held until the listener is dropped.
pub(crate) fn free_port() -> io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// Asks Linux to send the child SIGTERM when the harness dies (a second Ctrl-C, a
/// kill), so no spawned server or Redis outlives the run that started it.
pub(crate) fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only prctl runs, which is async-signal-safe and
        // touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
}

/// The address a loopchat server logged for one of its listeners: `what` is what the
/// start-up line says after the address (`for browsers`, `for browsers over TLS`;
/// empty for the chat port). Under `--redact-ips` the IP is taken to be 127.0.0.1.
pub fn logged_listener(log: &str, what: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = &line[line.find("listening on ")? + "listening on ".len()..];
        let (addr, after) = rest.split_once(' ')?;
        let after = after.strip_prefix(what)?.trim_start();
        if !after.starts_with("(open files") {
            return None;
        }
        match addr.strip_prefix("[redacted]:") {
            Some(port) => Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?))),
            None => addr.parse().ok(),
        }
    })
}

impl SpawnedServer {
    /// Starts `exe server 127.0.0.1:<free port>` with the abuse limits lifted (but for
    /// those `extra` sets itself), a summary
    /// line every second (unless `extra` sets `--summary-interval`), plus `extra` flags,
    /// and waits (at most 10 s) until it accepts connections. Its log goes to `log` if
    /// given, else is discarded.
    pub fn start(exe: &Path, extra: &[String], log: Option<&Path>) -> io::Result<SpawnedServer> {
        Self::launch(exe, extra, log, Listen::default())
    }

    /// As [`start`](Self::start), and also serving TLS with `cert` on a second free
    /// loopback port ([`tls_addr`](Self::tls_addr)); ready once that port accepts.
    pub fn start_tls(
        exe: &Path,
        extra: &[String],
        log: Option<&Path>,
        cert: &TempCert,
    ) -> io::Result<SpawnedServer> {
        Self::launch(
            exe,
            extra,
            log,
            Listen {
                cert: Some(cert),
                ws: false,
            },
        )
    }

    /// As [`start`](Self::start), with the listeners of `listen`; ready once the port
    /// a client uses ([`client_addr`](Self::client_addr)) accepts.
    pub fn start_with(
        exe: &Path,
        extra: &[String],
        log: Option<&Path>,
        listen: Listen<'_>,
    ) -> io::Result<SpawnedServer> {
        Self::launch(exe, extra, log, listen)
    }

    /// The flags after `server ADDR`: the lifted limits (but for those `extra` sets
    /// itself), a summary every second (unless `extra` sets its interval), the TLS and
    /// browser listeners, then `extra`.
    fn args(
        extra: &[String],
        tls_addr: Option<SocketAddr>,
        listen: Listen<'_>,
    ) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        // A limit that `extra` sets again is left to `extra` (a flag may appear once).
        for pair in LIFT_LIMITS.chunks(2) {
            if !extra
                .iter()
                .any(|a| a == pair[0] || a.starts_with(&format!("{}=", pair[0])))
            {
                args.extend(pair.iter().map(Into::into));
            }
        }
        if !extra.iter().any(|a| a.starts_with("--summary-interval")) {
            args.extend(["--summary-interval", "1s"].map(Into::into));
        }
        if let Some(cert) = listen.cert {
            match (listen.ws, tls_addr) {
                (true, _) => args.extend(["--wss-listen", "127.0.0.1:0"].map(Into::into)),
                (false, Some(a)) => {
                    args.push("--tls-listen".into());
                    args.push(a.to_string().into());
                }
                (false, None) => {}
            }
            args.push("--tls-cert".into());
            args.push(cert.cert.clone().into_os_string());
            args.push("--tls-key".into());
            args.push(cert.key.clone().into_os_string());
        } else if listen.ws {
            args.extend(["--ws-listen", "127.0.0.1:0"].map(Into::into));
        }
        args.extend(extra.iter().map(Into::into));
        args
    }

    fn launch(
        exe: &Path,
        extra: &[String],
        log: Option<&Path>,
        listen: Listen<'_>,
    ) -> io::Result<SpawnedServer> {
        if listen.ws && log.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a spawned server's browser port is read from its log: give it a log file",
            ));
        }
        // Both held at once, so the two ports differ.
        let (plain, addr) = free_port()?;
        let tls = match listen.cert {
            Some(_) if !listen.ws => Some(free_port()?),
            _ => None,
        };
        let tls_addr = tls.as_ref().map(|&(_, a)| a);
        drop((plain, tls));
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        };
        let mut command = Command::new(exe);
        command
            .arg("server")
            .arg(addr.to_string())
            .args(Self::args(extra, tls_addr, listen))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display()))
        })?;
        let mut server = SpawnedServer {
            child,
            addr,
            tls_addr,
            ws_addr: None,
        };
        let browsers = match (listen.ws, listen.cert.is_some()) {
            (false, _) => None,
            (true, false) => Some("for browsers"),
            (true, true) => Some("for browsers over TLS"),
        };
        server.wait_ready(Duration::from_secs(10), log, browsers)?;
        Ok(server)
    }

    /// Waits until the port a client uses accepts; with `browsers`, first until the
    /// `log` names the browser port (`browsers` is what the start-up line says about
    /// it).
    fn wait_ready(
        &mut self,
        limit: Duration,
        log: Option<&Path>,
        browsers: Option<&str>,
    ) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let why = log
                    .and_then(|p| last_line(&std::fs::read_to_string(p).ok()?))
                    .map_or_else(
                        || "run it by hand to see why".into(),
                        |l| format!("it said: {l}"),
                    );
                return Err(io::Error::other(format!(
                    "the spawned server exited at once ({status}); {why}"
                )));
            }
            if let (Some(what), Some(log)) = (browsers, log)
                && self.ws_addr.is_none()
            {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                self.ws_addr = logged_listener(&text, what);
            }
            let ready = browsers.is_none() || self.ws_addr.is_some();
            // The port the harness will use (a bare TCP connect: no handshake needed).
            let probe = self.client_addr();
            if ready && TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if ready {
                    format!("did not listen on {probe}")
                } else {
                    "did not log its browser address (RUST_LOG must let `info` through)".to_string()
                };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the spawned server {what} within {limit:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens for chat.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it serves TLS, if it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Where it serves browsers (WebSocket, or over TLS), if it does.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The port a harness client connects to: the browser port, else the TLS port,
    /// else the chat port.
    pub fn client_addr(&self) -> SocketAddr {
        self.ws_addr.or(self.tls_addr).unwrap_or(self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks it to shut down (SIGTERM) and waits up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        stop_child(&mut self.child, grace);
    }
}

/// Why a process that would not start stopped, from its log: the last line that
/// mentions an error (clap's `error: …`, the logger's `ERROR`), else the last line,
/// without the logger's `[time LEVEL target]` prefix.
pub(crate) fn last_line(log: &str) -> Option<String> {
    let mut lines = log.lines().rev().filter(|l| !l.trim().is_empty());
    let line = log
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or_else(|| lines.next())?;
    let text = match line.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(line, |(_, t)| t),
        None => line,
    };
    Some(text.trim().to_owned())
}

/// Asks a child to end (SIGTERM), waits up to `grace`, then kills it; it is reaped
/// either way.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    // SAFETY: sending a signal to our own child, whose pid we hold and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert_eq!(rss_bytes(u32::MAX), None);
        assert!(program_name(pid).is_some_and(|n| !n.is_empty()));
        assert_eq!(program_name(u32::MAX), None);
    }

    #[test]
    fn finds_who_listens() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(listens_on(std::process::id(), addr), Some(true));
        drop(l);
        assert_ne!(listens_on(std::process::id(), addr), Some(true));
    }

    #[test]
    fn the_reason_a_process_stopped_is_its_last_error_line() {
        let clap = "error: unexpected argument '--cluster' found\n\nUsage: loopchat server\n\n\
                    For more information, try '--help'.\n";
        assert_eq!(
            last_line(clap).as_deref(),
            Some("error: unexpected argument '--cluster' found")
        );
        let logged = "[t INFO  loopchat] starting\n[t ERROR loopchat] cannot open x.db\n";
        assert_eq!(last_line(logged).as_deref(), Some("cannot open x.db"));
        assert_eq!(last_line("one\ntwo\n\n").as_deref(), Some("two"));
        assert_eq!(last_line(""), None);
    }

    #[test]
    fn finds_a_listener_in_the_start_up_lines() {
        let log = "\
[t INFO  loopchat::server] listening on 127.0.0.1:4000 (open files limit 20000, max clients 19936)
[t INFO  loopchat::server] listening on 127.0.0.1:4001 for browsers (open files limit 20000, max clients 19936)
[t INFO  loopchat::server] listening on [redacted]:4002 for browsers over TLS (open files limit 20000, max clients 19936)
";
        let at = |port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(logged_listener(log, ""), at(4000));
        assert_eq!(logged_listener(log, "for browsers"), at(4001));
        assert_eq!(logged_listener(log, "for browsers over TLS"), at(4002));
        assert_eq!(logged_listener(log, "for metrics"), None);
        assert_eq!(logged_listener("listening on nothing", ""), None);
    }

    #[test]
    fn spawned_flags_lift_limits_the_extras_do_not_set_and_add_listeners() {
        let strings = |v: Vec<std::ffi::OsString>| -> Vec<String> {
            v.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let extra = ["--rate=5".to_string(), "--coalesce".into(), "0".into()];
        let args = strings(SpawnedServer::args(&extra, None, Listen::default()));
        assert!(!args.iter().any(|a| a == "--rate"), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--db", "none"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--summary-interval", "1s"]));
        assert!(args.ends_with(&extra), "{args:?}");
        let ws = strings(SpawnedServer::args(
            &[],
            None,
            Listen {
                cert: None,
                ws: true,
            },
        ));
        assert!(ws.windows(2).any(|w| w == ["--ws-listen", "127.0.0.1:0"]));
        let cert = TempCert::create().unwrap();
        let tls_addr = SocketAddr::from(([127, 0, 0, 1], 4443));
        let listen = Listen {
            cert: Some(&cert),
            ws: false,
        };
        let tls = strings(SpawnedServer::args(&[], Some(tls_addr), listen));
        assert!(
            tls.windows(2)
                .any(|w| w == ["--tls-listen", "127.0.0.1:4443"])
        );
        assert!(tls.iter().any(|a| a == "--tls-key"));
        let wss = strings(SpawnedServer::args(
            &[],
            None,
            Listen {
                cert: Some(&cert),
                ws: true,
            },
        ));
        assert!(wss.windows(2).any(|w| w == ["--wss-listen", "127.0.0.1:0"]));
        assert!(
            !wss.iter()
                .any(|a| a == "--tls-listen" || a == "--ws-listen")
        );
    }

    #[test]
    fn sums_the_summary_lines() {
        use crate::server::stats::Stats;
        let summary = |deliveries, writes| Summary {
            clients: 5,
            named: 5,
            rooms: 1,
            interval: Duration::from_secs(1),
            delta: Stats {
                lines_in: 10,
                deliveries,
                writes,
                ..Stats::default()
            },
            bans: 0,
            unsaved: 0,
        };
        let (first, second) = (summary(90, 45), summary(10, 5));
        // Only whole summary lines count, not a line that merely looks like one.
        let log = format!(
            "x INFO {first}\ny INFO {second}\nz INFO shut down: 5 connections closed\n\
             w INFO summary: garbled 7 deliveries, 7 writes (1.000 per delivery)\n"
        );
        assert_eq!(summary_writes(&log), Some((100, 50)));
        assert_eq!(summary_writes("nothing here"), None);
        assert_eq!(writes_per_delivery(&log), Some(0.5));
        assert_eq!(writes_per_delivery("nothing here"), None);
    }
}
