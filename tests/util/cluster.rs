//! Cluster nodes for the tests: in-process servers joined to one test Redis, and the
//! waits that make cross-node tests deterministic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::redis::RedisServer;
use super::{Client, TestServer};

/// A cluster node in-process, with the test defaults and a short TTL.
pub fn node(redis: &RedisServer, id: &str) -> TestServer {
    node_with(redis, id, |_| {})
}

/// [`node`] with `tweak` applied to its configuration.
pub fn node_with(
    redis: &RedisServer,
    id: &str,
    tweak: impl FnOnce(&mut loopchat::ServerConfig),
) -> TestServer {
    let mut config = super::config();
    config.cluster = Some(redis.url.clone());
    config.node_id = Some(id.into());
    config.cluster_ttl = Duration::from_secs(2);
    tweak(&mut config);
    super::start(config)
}

/// Connects and takes a name; returns once the node hears the lobby (see [`heard`]).
#[track_caller]
pub fn member(addr: SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send_line(&format!("JOIN:{name}"));
    c.expect_line(&format!("SERVER:you are {name} in #lobby\n"));
    heard(&mut c);
    c
}

/// Waits until `c`'s node hears `c`'s room: a `WHO:` answer comes after the room's
/// subscription is confirmed. Returns the answer.
#[track_caller]
pub fn heard(c: &mut Client) -> String {
    c.send_line("WHO:");
    c.expect_prefix("SERVER:#")
}

/// Reads lines until one equals `expected`, within `within`; the lines before it are
/// returned (for messages that may cross a reconnection).
#[track_caller]
pub fn read_until(c: &mut Client, expected: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    while Instant::now() < deadline {
        match c.read_line_within(Duration::from_millis(200)) {
            Some(line) if line.trim_end() == expected => return before,
            Some(line) => before.push(line),
            None => {}
        }
    }
    panic!("{expected:?} did not come within {within:?}; got {before:?}");
}
