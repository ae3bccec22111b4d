//! `loopchat bench --spawn-cluster N`: a throwaway `redis-server` on a free loopback
//! port (no persistence) and N `loopchat server --cluster redis://…` nodes, each on its
//! own free port, started for one run and stopped together after it.
//!
//! Everything started is owned by a [`Cluster`] (or, while it starts, by the values
//! that will make it up), so it is stopped and reaped when dropped: after the run, on
//! an error half-way through starting, or on a panic. Nodes stop before Redis, so they
//! can say goodbye to it. What the nodes are given is [`node_args`]; what Redis is
//! given is [`redis_args`]: pure, and tested without starting anything.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::server_proc::{self, Listen, SpawnedServer};

/// The Redis server program, found through `PATH`.
pub const REDIS_SERVER: &str = "redis-server";

/// How long Redis may take to answer `PING` after it starts.
const REDIS_READY: Duration = Duration::from_secs(10);

/// How long a node, then Redis, may take to shut down before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often Redis is started again on a fresh port when the one picked was taken
/// between picking and binding.
const REDIS_ATTEMPTS: usize = 5;

/// Redis's flags: loopback only on `port`, nothing written to disk (no RDB snapshots,
/// no append-only file; a private working directory `dir` all the same), logging to
/// standard output (which goes to its log file).
pub fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--dir",
        &dir.to_string_lossy(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    .map(String::from)
    .to_vec()
}

/// Node `k`'s cluster flags (`k` from 1): the backplane at `url` and its name
/// `node<k>`. They come before the user's `--server-arg`s, so those can add to them.
pub fn node_args(url: &str, k: usize) -> Vec<String> {
    vec![
        "--cluster".into(),
        url.into(),
        "--node-id".into(),
        format!("node{k}"),
    ]
}

/// Where node `k` (from 1) logs, given the log of a single spawned server.
pub fn node_log(base: &Path, k: usize) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".node{k}"));
    PathBuf::from(name)
}

/// Where Redis logs, given the log of a single spawned server.
pub fn redis_log(base: &Path) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".redis");
    PathBuf::from(name)
}

/// A `redis-server` child process, stopped (SIGTERM, then SIGKILL) and reaped when
/// dropped.
#[derive(Debug)]
pub struct SpawnedRedis {
    child: Child,
    addr: SocketAddr,
    /// Its working directory, removed when dropped.
    dir: PathBuf,
}

impl SpawnedRedis {
    /// Starts `redis-server` on a free loopback port with [`redis_args`], its output
    /// to `log`, and waits until it answers `PING` (on another port if the one picked
    /// was taken meanwhile). Not installed: an error that says so.
    pub fn start(log: &Path) -> io::Result<SpawnedRedis> {
        use std::os::unix::fs::DirBuilderExt;
        static MADE: AtomicU32 = AtomicU32::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("loopchat-bench-redis-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut result = Err(io::Error::other("not started"));
        for _ in 0..REDIS_ATTEMPTS {
            result = Self::launch(log, dir.clone());
            match &result {
                Err(_)
                    if std::fs::read_to_string(log)
                        .is_ok_and(|t| t.contains("Address already in use")) => {}
                _ => break,
            }
        }
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn launch(log: &Path, dir: PathBuf) -> io::Result<SpawnedRedis> {
        let (held, addr) = server_proc::free_port()?;
        drop(held);
        let out = std::fs::File::create(log)?;
        let mut command = Command::new(REDIS_SERVER);
        command
            .args(redis_args(addr.port(), &dir))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        server_proc::die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    format!(
                        "--spawn-cluster needs Redis, and `{REDIS_SERVER}` is not installed \
                         (not found in PATH; e.g. apt-get install redis-server)"
                    ),
                )
            } else {
                io::Error::new(e.kind(), format!("cannot start {REDIS_SERVER}: {e}"))
            }
        })?;
        let mut redis = SpawnedRedis { child, addr, dir };
        match redis.wait_ready(log) {
            Ok(()) => Ok(redis),
            Err(e) => {
                // Stopped now, but its directory stays for the next attempt.
                redis.stop(STOP_GRACE);
                redis.dir = PathBuf::new();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, log: &Path) -> io::Result<()> {
        let deadline = Instant::now() + REDIS_READY;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let why = std::fs::read_to_string(log)
                    .ok()
                    .and_then(|t| server_proc::last_line(&t))
                    .unwrap_or_else(|| format!("see {}", log.display()));
                return Err(io::Error::other(format!(
                    "{REDIS_SERVER} exited at once ({status}): {why}"
                )));
            }
            if ping(self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{REDIS_SERVER} did not answer PING on {} within {REDIS_READY:?}",
                        self.addr
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL nodes are given: `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks it to shut down and waits up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        server_proc::stop_child(&mut self.child, grace);
    }
}

impl Drop for SpawnedRedis {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether Redis at `addr` answers `PING` with `+PONG` (not `-LOADING`, not silence).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    s.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// A Redis and the loopchat nodes clustered through it. Dropping it stops the nodes,
/// then Redis (the fields drop in this order).
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<SpawnedServer>,
    redis: SpawnedRedis,
}

impl Cluster {
    /// Starts Redis (logging to `redis_log`), then `n` nodes of `exe` (node `k` logging
    /// to `log(k)`), each with [`node_args`], `extra` and the listeners of `listen`.
    /// Whatever started before an error is stopped again.
    pub fn start(
        exe: &Path,
        n: usize,
        extra: &[String],
        redis_log: &Path,
        log: impl Fn(usize) -> PathBuf,
        listen: Listen<'_>,
    ) -> io::Result<Cluster> {
        let redis = SpawnedRedis::start(redis_log)?;
        let url = redis.url();
        let mut nodes = Vec::with_capacity(n);
        for k in 1..=n {
            let mut args = node_args(&url, k);
            args.extend(extra.iter().cloned());
            let node = SpawnedServer::start_with(exe, &args, Some(&log(k)), listen)
                .map_err(|e| io::Error::new(e.kind(), format!("cluster node {k}: {e}")))?;
            nodes.push(node);
        }
        Ok(Cluster { nodes, redis })
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[SpawnedServer] {
        &self.nodes
    }

    /// Redis.
    pub fn redis(&self) -> &SpawnedRedis {
        &self.redis
    }

    /// Stops the nodes (each asked, then killed after `grace`), then Redis.
    pub fn stop(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            node.stop(grace);
        }
        self.redis.stop(grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_runs_on_loopback_without_persistence() {
        let args = redis_args(6390, Path::new("/tmp/r"));
        let pairs: Vec<(&str, &str)> = args
            .chunks(2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect();
        assert!(pairs.contains(&("--port", "6390")));
        assert!(pairs.contains(&("--dir", "/tmp/r")));
        assert!(pairs.contains(&("--bind", "127.0.0.1")));
        assert!(pairs.contains(&("--save", "")));
        assert!(pairs.contains(&("--appendonly", "no")));
        assert_eq!(args.len() % 2, 0);
    }

    #[test]
    fn each_node_gets_the_backplane_and_its_own_name() {
        assert_eq!(
            node_args("redis://127.0.0.1:6390", 2),
            ["--cluster", "redis://127.0.0.1:6390", "--node-id", "node2"]
        );
    }

    #[test]
    fn node_and_redis_logs_sit_beside_the_base_log() {
        let base = Path::new("/tmp/run.log");
        assert_eq!(node_log(base, 3), Path::new("/tmp/run.log.node3"));
        assert_eq!(redis_log(base), Path::new("/tmp/run.log.redis"));
    }
}
