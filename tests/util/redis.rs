//! A real `redis-server` for the tests: on a free loopback port, with persistence off
//! and its files in a temporary directory, killed when dropped.
//!
//! Cluster mode needs Redis, so a missing `redis-server` fails the test with what to
//! install (`.ci/run` installs it); it is never a silent skip.
//!
//! ```ignore
//! mod util;
//! let redis = util::redis::RedisServer::start();
//! // ... Store or server with `redis.url` ...
//! redis.kill(); // an outage
//! redis.restart(); // the same port, empty again (persistence is off)
//! ```

use std::fs::File;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer PING; it usually takes a few
/// milliseconds, but a loaded 2-core CI machine must not fail a test for it.
const START_WITHIN: Duration = Duration::from_secs(5);

/// Tries with a fresh port when the one picked was taken before Redis could bind it.
const START_ATTEMPTS: usize = 5;

/// One `redis-server` process.
pub struct RedisServer {
    /// The loopback port it listens on (kept across [`RedisServer::restart`]).
    pub port: u16,
    /// `redis://127.0.0.1:<port>` (database 0; append `/N` for another).
    pub url: String,
    /// `None` while killed.
    child: Option<Child>,
    /// Its working directory (`--dir`) and log; removed on drop.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits (at most 5 s) until it
    /// answers PING. Panics, saying what to do, if it is not installed or cannot start.
    #[track_caller]
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("make a temporary directory for redis-server");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn(port, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        url: format!("redis://127.0.0.1:{port}"),
                        child: Some(child),
                        dir,
                    };
                }
                Err(Failure::PortTaken(log)) => last = log,
                Err(Failure::Fatal(why)) => panic!("{why}"),
            }
        }
        panic!("redis-server could not bind a free port in {START_ATTEMPTS} tries:\n{last}");
    }

    /// Kills it with SIGKILL and waits for it to exit: an outage, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (killing it first if it runs), empty, and waits
    /// until it answers PING.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_WITHIN;
        loop {
            match spawn(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old process's socket can linger for a moment after it dies.
                Err(Failure::PortTaken(log)) => {
                    if Instant::now() >= deadline {
                        panic!(
                            "redis-server could not bind port {} again:\n{log}",
                            self.port
                        );
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                Err(Failure::Fatal(why)) => panic!("{why}"),
            }
        }
    }

    /// Stops the process (SIGSTOP) without closing anything: a Redis that accepts bytes
    /// and never answers, for timeout tests. [`RedisServer::resume`] undoes it.
    #[track_caller]
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process go on (SIGCONT); it then answers what it was sent meanwhile.
    #[track_caller]
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    #[track_caller]
    fn signal(&self, sig: libc::c_int) {
        let Some(child) = &self.child else {
            panic!("redis-server on port {} is not running", self.port);
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: sends a signal to the child we started (not yet reaped, so the pid is
        // still ours); no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs one command (`["XLEN", "loopchat:history:#a"]`) and renders the reply like
    /// `redis-cli` would, roughly: integers and strings as they are, nil as `(nil)`,
    /// arrays one element per line, errors as `(error) ...`.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        let client = redis::Client::open(self.url.as_str()).expect("the test Redis URL parses");
        let mut conn = client
            .get_connection_with_timeout(START_WITHIN)
            .unwrap_or_else(|e| panic!("cannot connect to the test Redis on {}: {e}", self.url));
        let Some((name, rest)) = args.split_first() else {
            panic!("cli needs a command");
        };
        let mut cmd = redis::cmd(name);
        for a in rest {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut conn) {
            Ok(v) => render(&v),
            Err(e) => format!("(error) {e}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Failure {
    /// The port was taken meanwhile: worth another try. Carries the log.
    PortTaken(String),
    /// Anything else: the message to panic with.
    Fatal(String),
}

/// A port the kernel had free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound address").port()
}

/// Starts `redis-server` on `port` and waits until it answers PING.
fn spawn(port: u16, dir: &Path) -> Result<Child, Failure> {
    let log_path = dir.join(format!("redis-{port}.log"));
    let log = File::create(&log_path)
        .map_err(|e| Failure::Fatal(format!("cannot create {}: {e}", log_path.display())))?;
    let err_log = log
        .try_clone()
        .map_err(|e| Failure::Fatal(format!("cannot share {}: {e}", log_path.display())))?;
    let port_arg = port.to_string();
    let spawned = Command::new(binary())
        .args(["--port", &port_arg, "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Failure::Fatal(
                "redis-server not found: install it (apt-get install redis-server); the \
                 cluster and Redis store tests need a real Redis (.ci/run installs it)"
                    .into(),
            ));
        }
        Err(e) => return Err(Failure::Fatal(format!("cannot start redis-server: {e}"))),
    };
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + START_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(if log.contains("Address already in use") {
                Failure::PortTaken(log)
            } else {
                Failure::Fatal(format!("redis-server exited at start ({status}):\n{log}"))
            });
        }
        if answers(&url) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Failure::Fatal(format!(
                "redis-server on port {port} did not answer PING within {START_WITHIN:?}:\n{log}"
            )));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `redis-server` from `PATH`, or where Debian puts it.
fn binary() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file());
    in_path.unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

/// Whether a Redis on `url` answers PING now.
fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

fn render(v: &redis::Value) -> String {
    use redis::Value;
    match v {
        Value::Nil => "(nil)".into(),
        Value::Int(n) => n.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Array(items) | Value::Set(items) => {
            items.iter().map(render).collect::<Vec<_>>().join("\n")
        }
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{}\n{}", render(k), render(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Double(d) => d.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::ServerError(e) => format!("(error) {e}"),
        other => format!("{other:?}"),
    }
}
