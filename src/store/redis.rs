//! The Redis backend, for cluster mode: history and accounts live in one Redis, so
//! every node answers the same.
//!
//! It speaks through the `redis` crate's sync client (a maintained RESP client; the
//! storage thread is already a thread of its own, so it needs no async runtime). Every
//! read and write has a timeout, so the storage thread never hangs on a silent Redis;
//! any failure drops the connection, and the next call connects again (after a short,
//! growing pause), so a restarted Redis heals by itself.
//!
//! # Keys
//!
//! All under [`PREFIX`], in the database the URL names; rooms and names are folded to
//! ASCII lower case, as the hub folds them.
//!
//! - `loopchat:history:<room>`: a stream per room, capped near [`HISTORY_CAP`] entries.
//!   Fields `room` (as shown), `from`, `text`. The entry id is `<ms>-0`, and the
//!   milliseconds grow strictly within a room: [`APPEND_LUA`] gives a message
//!   `max(at_ms, last + 1)`, so a time stays an exact paging cursor even when nodes with
//!   skewed clocks append to one room. The stored time is the id's.
//! - `loopchat:account:<name>`: a hash {`name` (as registered), `phc`}.
//! - `loopchat:roomkey:<room>`: a hash {`room` (as created), `phc`}.
//!
//! # What differs from SQLite
//!
//! A batch is not one transaction: it goes in one round trip, as one script call per
//! room (and per [`SCRIPT_BATCH`] messages), each of which is atomic. A connection lost
//! in the middle counts the whole batch as unsaved, though Redis may have stored part
//! of it. No lock file: many servers share one Redis on purpose. How long history
//! survives a Redis restart is Redis's persistence setting (RDB or AOF), not ours.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::{Client, Cmd, Connection, ConnectionAddr, ErrorKind, Pipeline, RedisResult, Value};

use super::{Backend, Message, Secret, Secrets, StoreError};

/// Every key loopchat writes starts with this, so it can share a Redis database.
const PREFIX: &str = "loopchat:";

/// Entries a room's stream keeps (approximately: Redis trims whole nodes of ~100, so a
/// stream holds at least this many and a little more). History is for scrolling back,
/// not an archive; 10 000 messages at ~150 bytes is ~1.5 MB per busy room.
pub const HISTORY_CAP: usize = 10_000;

/// Longest wait for a connection, a reply or a write. Bounds how long the storage
/// thread can be held by a Redis that stopped answering; a healthy one answers in
/// microseconds, and the largest batch in well under a second.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed connection before the next try, doubled per failure up to
/// [`MAX_BACKOFF`]: while Redis is down the storage thread mostly fails at once
/// instead of waiting out a connect timeout per batch.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest pause between connection attempts; a restarted Redis is used again at most
/// this long after it answers.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Messages per script call: one call holds Redis (and every other node's traffic) for
/// about a millisecond at most.
const SCRIPT_BATCH: usize = 256;

/// Keys asked for per SCAN step (a hint to Redis, not a limit).
const SCAN_COUNT: usize = 1000;

/// SCAN steps one retention call may take. With [`SCAN_COUNT`] that is ~4 000 keys a
/// call (history keys or not: SCAN walks the whole database); the cursor is kept
/// between calls, so a large keyspace is walked over several.
const PRUNE_SCAN_STEPS: usize = 4;

/// Rooms trimmed per round trip; between round trips retention stops once it has
/// deleted what it was asked for, and the rooms not yet visited wait for the next call.
const PRUNE_KEYS: usize = 32;

/// Appends messages to one room's stream, with ids whose milliseconds grow strictly.
/// `KEYS[1]` the stream; `ARGV[1]` the cap; then four per message: room, at_ms, from,
/// text. Returns how many were added. An existing but empty stream (emptied by hand)
/// still refuses ids at or below its last one, so that is read from `XINFO`.
const APPEND_LUA: &str = r"
local key = KEYS[1]
local last = 0
local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if top[1] then
  last = tonumber(string.match(top[1][1], '^%d+')) or 0
elseif redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info - 1, 2 do
    if info[i] == 'last-generated-id' then
      last = tonumber(string.match(info[i + 1], '^%d+')) or 0
    end
  end
end
local added = 0
for i = 2, #ARGV - 3, 4 do
  local ms = math.max(tonumber(ARGV[i + 1]) or 0, last + 1)
  redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], string.format('%.0f-0', ms),
    'room', ARGV[i], 'from', ARGV[i + 2], 'text', ARGV[i + 3])
  last = ms
  added = added + 1
end
return added
";

/// Trims one room's stream to the entries at or after `ARGV[1]` (Unix ms), exactly, and
/// deletes the stream once empty, so a room nobody speaks in leaves no key behind. In
/// a script, so an append from another node cannot land between the trim and the
/// delete. Returns how many entries went.
const PRUNE_LUA: &str = r"
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if trimmed > 0 and redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
end
return trimmed
";

/// The scripts, by hash; loaded on every new connection, and again if Redis says it
/// lost them (`SCRIPT FLUSH`).
static APPEND: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(APPEND_LUA));
static PRUNE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PRUNE_LUA));

/// The largest time a Lua number (a double) carries exactly; later times are clamped.
const MAX_MS: i64 = (1 << 53) - 1;

/// History, accounts and room keys in Redis.
pub struct RedisBackend {
    client: Client,
    /// `None` after a failure, until the next call connects again.
    conn: Option<Connection>,
    /// `redis <url>`, for the logs.
    name: String,
    /// The URL without credentials, for errors.
    db: String,
    /// No connection attempt before this, after a failed one.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Why the last connection attempt failed, repeated while waiting to retry.
    down: String,
    /// Where retention's SCAN goes on from (0: a new pass).
    prune_cursor: u64,
    /// Rooms the SCAN found that retention has not trimmed yet.
    prune_keys: VecDeque<String>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("db", &self.db)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`) and
    /// checks it answers, so an unreachable Redis stops the server before it listens.
    pub fn open(url: &str) -> Result<RedisBackend, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Open {
            db: without_credentials(url),
            reason: format!("not a usable Redis URL: {}", describe(&e)),
        })?;
        let db = shown(&client);
        let mut backend = RedisBackend {
            client,
            conn: None,
            name: format!("redis {db}"),
            db,
            retry_at: None,
            backoff: MIN_BACKOFF,
            down: String::new(),
            prune_cursor: 0,
            prune_keys: VecDeque::new(),
        };
        let checked = backend.call(|conn| redis::cmd("PING").query::<String>(conn));
        match checked {
            Ok(_) => Ok(backend),
            Err(reason) => Err(StoreError::Open {
                db: backend.db.clone(),
                reason,
            }),
        }
    }

    /// The connection, made if there is none (unless the last attempt failed less than
    /// the backoff ago).
    fn connection(&mut self) -> Result<&mut Connection, String> {
        if self.conn.is_none() {
            let now = Instant::now();
            if let Some(at) = self.retry_at
                && now < at
            {
                return Err(self.down.clone());
            }
            match connect(&self.client) {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.retry_at = None;
                    self.backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    self.down = format!("cannot connect: {}", describe(&e));
                    self.retry_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(self.down.clone());
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "not connected".to_string())
    }

    /// Runs `f` on the connection. An error that may have left the connection out of
    /// step (I/O, timeout, a reply that does not parse) drops it; an error reply from
    /// Redis does not.
    fn call<T>(&mut self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, String> {
        let conn = self.connection()?;
        f(conn).map_err(|e| {
            if !matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) {
                self.conn = None;
            }
            describe(&e)
        })
    }

    fn write_error(&self, reason: String) -> StoreError {
        StoreError::Write {
            db: self.db.clone(),
            reason,
        }
    }

    fn read_error(&self, reason: String) -> StoreError {
        StoreError::Read {
            db: self.db.clone(),
            reason,
        }
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn append(&mut self, batch: &[Message]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Each room's messages in the order given, rooms in order of first appearance.
        let mut rooms: Vec<(String, Vec<&Message>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for m in batch {
            let key = history_key(&m.room);
            match index.get(&key) {
                Some(&i) => rooms[i].1.push(m),
                None => {
                    index.insert(key.clone(), rooms.len());
                    rooms.push((key, vec![m]));
                }
            }
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (key, messages) in &rooms {
            for chunk in messages.chunks(SCRIPT_BATCH) {
                let mut call = evalsha(&APPEND, key);
                call.arg(HISTORY_CAP);
                for m in chunk {
                    call.arg(&m.room)
                        .arg(m.at_ms.clamp(0, MAX_MS))
                        .arg(&m.from)
                        .arg(&m.text);
                }
                pipe.add_command(call);
            }
        }
        self.call(|conn| run_scripts(conn, &pipe))
            .map(|_| ())
            .map_err(|reason| self.write_error(reason))
    }

    fn recent(
        &mut self,
        room: &str,
        n: usize,
        before_ms: Option<i64>,
    ) -> Result<Vec<Message>, StoreError> {
        let end = match before_ms {
            // Ids start at 1-0: nothing is before 0 (and `(0-0` is not a valid bound).
            Some(b) if b <= 0 => return Ok(Vec::new()),
            Some(b) => format!("({b}-0"),
            None => "+".to_string(),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let key = history_key(room);
        let reply = self
            .call(|conn| {
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(&end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(n)
                    .query::<Value>(conn)
            })
            .map_err(|reason| self.read_error(reason))?;
        let mut messages = parse_entries(reply, room).map_err(|reason| self.read_error(reason))?;
        messages.reverse();
        Ok(messages)
    }

    fn prune(&mut self, older_than_ms: i64, max_rows: usize) -> Result<usize, StoreError> {
        // Ids start at 1: nothing is older than 1.
        if older_than_ms <= 1 || max_rows == 0 {
            return Ok(0);
        }
        let cutoff = older_than_ms.min(MAX_MS);
        let mut trimmed = 0;
        let mut steps = 0;
        loop {
            if self.prune_keys.is_empty() {
                // One pass over the keyspace per call at most, and a bounded walk.
                let new_pass = self.prune_cursor == 0;
                if steps == PRUNE_SCAN_STEPS || (steps > 0 && new_pass) {
                    break;
                }
                let cursor = self.prune_cursor;
                let (next, keys) = self
                    .call(|conn| scan(conn, cursor, &format!("{PREFIX}history:*")))
                    .map_err(|reason| self.write_error(reason))?;
                self.prune_cursor = next;
                self.prune_keys.extend(keys);
                steps += 1;
                continue;
            }
            let take = self.prune_keys.len().min(PRUNE_KEYS);
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for key in self.prune_keys.iter().take(take) {
                let mut call = evalsha(&PRUNE, key);
                call.arg(cutoff);
                pipe.add_command(call);
            }
            let replies = self
                .call(|conn| run_scripts(conn, &pipe))
                .map_err(|reason| self.write_error(reason))?;
            // Only once trimmed: a failed step leaves its keys for the next call.
            self.prune_keys.drain(..take);
            for reply in replies {
                if let Value::Int(n) = reply {
                    trimmed += usize::try_from(n).unwrap_or(0);
                }
            }
            if trimmed >= max_rows {
                break;
            }
        }
        Ok(trimmed)
    }

    fn secrets(&mut self) -> Result<Secrets, StoreError> {
        let mut accounts = self
            .read_pairs(&format!("{PREFIX}account:*"), "name")
            .map_err(|reason| self.read_error(reason))?;
        let mut room_keys = self
            .read_pairs(&format!("{PREFIX}roomkey:*"), "room")
            .map_err(|reason| self.read_error(reason))?;
        accounts.sort();
        room_keys.sort();
        Ok(Secrets {
            accounts,
            room_keys,
        })
    }

    fn put_secret(&mut self, secret: &Secret) -> Result<(), StoreError> {
        let (key, field, name, phc) = match secret {
            Secret::Account { name, phc } => (account_key(name), "name", name, phc),
            Secret::RoomKey { room, phc } => (room_key_key(room), "room", room, phc),
        };
        self.call(|conn| {
            redis::cmd("HSET")
                .arg(&key)
                .arg(field)
                .arg(name)
                .arg("phc")
                .arg(phc)
                .query::<()>(conn)
        })
        .map_err(|reason| self.write_error(reason))
    }
}

impl RedisBackend {
    /// `(field, phc)` of every hash whose key matches `pattern`; hashes missing either
    /// field are not loopchat's and are skipped.
    fn read_pairs(&mut self, pattern: &str, field: &str) -> Result<Vec<(String, String)>, String> {
        let mut pairs = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, keys) = self.call(|conn| scan(conn, cursor, pattern))?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HMGET").arg(key).arg(field).arg("phc");
                }
                let rows: Vec<Vec<Option<String>>> = self.call(|conn| pipe.query(conn))?;
                for row in rows {
                    if let [Some(name), Some(phc)] = row.as_slice() {
                        pairs.push((name.clone(), phc.clone()));
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice (when Redis rehashes during the walk).
        pairs.sort();
        pairs.dedup();
        Ok(pairs)
    }
}

/// A connection with timeouts on every read and write, and the scripts loaded.
fn connect(client: &Client) -> RedisResult<Connection> {
    let mut conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    load_scripts(&mut conn)?;
    Ok(conn)
}

/// `SCRIPT LOAD`s both scripts. (Not `Script::load`, which asserts on the reply in
/// debug builds: nothing Redis says may panic.)
fn load_scripts(conn: &mut Connection) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.cmd("SCRIPT").arg("LOAD").arg(APPEND_LUA);
    pipe.cmd("SCRIPT").arg("LOAD").arg(PRUNE_LUA);
    let hashes: Vec<String> = pipe.query(conn)?;
    if hashes != [APPEND.get_hash(), PRUNE.get_hash()] {
        return Err(redis::RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "SCRIPT LOAD answered with unexpected hashes",
        )));
    }
    Ok(())
}

/// `EVALSHA <script> 1 <key>`, for the caller to add the arguments.
fn evalsha(script: &redis::Script, key: &str) -> Cmd {
    let mut call = redis::cmd("EVALSHA");
    call.arg(script.get_hash()).arg(1).arg(key);
    call
}

/// Sends `pipe` (script calls, with `ignore_errors`) in one round trip and returns
/// the replies in order. Calls refused with NOSCRIPT (someone flushed Redis's script
/// cache meanwhile) are sent again, once, after loading the scripts; those before the
/// flush ran, so only the refused ones are repeated. Any other error reply fails.
fn run_scripts(conn: &mut Connection, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    let mut replies: Vec<Value> = pipe.query(conn)?;
    let refused: Vec<usize> = replies
        .iter()
        .enumerate()
        .filter(|(_, v)| {
            matches!(v, Value::ServerError(e)
                if e.kind() == Some(redis::ServerErrorKind::NoScript))
        })
        .map(|(i, _)| i)
        .collect();
    if !refused.is_empty() {
        load_scripts(conn)?;
        let calls: Vec<&Cmd> = pipe.cmd_iter().collect();
        let mut again = redis::pipe();
        again.ignore_errors();
        for &i in &refused {
            if let Some(call) = calls.get(i) {
                again.add_command((*call).clone());
            }
        }
        let retried: Vec<Value> = again.query(conn)?;
        for (i, reply) in refused.into_iter().zip(retried) {
            if let Some(slot) = replies.get_mut(i) {
                *slot = reply;
            }
        }
    }
    if replies.len() != pipe.len() {
        return Err(redis::RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "a pipeline came back with the wrong number of replies",
        )));
    }
    for reply in &replies {
        if let Value::ServerError(e) = reply {
            return Err(e.clone().into());
        }
    }
    Ok(replies)
}

/// One SCAN step: the next cursor and the keys matching `pattern`.
fn scan(conn: &mut Connection, cursor: u64, pattern: &str) -> RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query(conn)
}

/// `loopchat:history:<room folded>`.
fn history_key(room: &str) -> String {
    format!("{PREFIX}history:{}", room.to_ascii_lowercase())
}

/// `loopchat:account:<name folded>`.
fn account_key(name: &str) -> String {
    format!("{PREFIX}account:{}", name.to_ascii_lowercase())
}

/// `loopchat:roomkey:<room folded>`.
fn room_key_key(room: &str) -> String {
    format!("{PREFIX}roomkey:{}", room.to_ascii_lowercase())
}

/// An XRANGE/XREVRANGE reply as messages, in the reply's order. An entry without
/// `from` or `text` is not loopchat's and is skipped; one without `room` is taken to
/// be `room`'s.
fn parse_entries(reply: Value, room: &str) -> Result<Vec<Message>, String> {
    let Value::Array(entries) = reply else {
        return Err(format!("unexpected reply to XREVRANGE: {reply:?}"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err("unexpected stream entry (not an array)".into());
        };
        let mut parts = parts.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err("unexpected stream entry (no id or no fields)".into());
        };
        let id = text(id).ok_or("unexpected stream entry id (not a string)")?;
        let at_ms = id
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<i64>().ok())
            .ok_or_else(|| format!("unexpected stream entry id {id:?}"))?;
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Array(flat) => {
                let mut flat = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            Value::Map(pairs) => pairs,
            _ => return Err(format!("unexpected fields in stream entry {id}")),
        };
        let (mut shown, mut from, mut said) = (None, None, None);
        for (k, v) in pairs {
            let slot = match text(k).as_deref() {
                Some("room") => &mut shown,
                Some("from") => &mut from,
                Some("text") => &mut said,
                _ => continue,
            };
            *slot = text(v);
        }
        if let (Some(from), Some(text)) = (from, said) {
            out.push(Message {
                room: shown.unwrap_or_else(|| room.to_string()),
                at_ms,
                from,
                text,
            });
        }
    }
    Ok(out)
}

/// A string reply as text (invalid UTF-8 replaced, not refused).
fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// The URL as the logs show it: scheme, address and database, never credentials.
fn shown(client: &Client) -> String {
    let info = client.get_connection_info();
    let db = info.redis_settings().db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{}:{port}/{db}", bracketed(host)),
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{}:{port}/{db}", bracketed(host))
        }
        ConnectionAddr::Unix(path) => format!("redis+unix://{}?db={db}", path.display()),
        #[allow(unreachable_patterns)]
        other => format!("{other} db {db}"),
    }
}

/// An IPv6 address in brackets, as in a URL.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `url` with any `user:password@` removed, for a URL that did not even parse.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest.to_string(),
    }
}

/// The client's error in words, with a hint for the usual causes.
fn describe(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        format!("{e} (is redis-server running there?)")
    } else if e.is_timeout() {
        format!("{e} (no answer within {} s)", IO_TIMEOUT.as_secs())
    } else if e.kind() == ErrorKind::AuthenticationFailed {
        format!("{e} (check the user and password in the URL)")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(flat)])
    }

    #[test]
    fn keys_fold_ascii_case_and_share_one_prefix() {
        assert_eq!(history_key("#Rust"), "loopchat:history:#rust");
        assert_eq!(account_key("Alice"), "loopchat:account:alice");
        assert_eq!(room_key_key("#Club"), "loopchat:roomkey:#club");
    }

    #[test]
    fn entries_become_messages_with_the_id_as_time() {
        let reply = Value::Array(vec![
            entry(
                "1700000000123-0",
                &[("room", "#Rust"), ("from", "ann"), ("text", "hi: there")],
            ),
            entry("5-0", &[("from", "bob"), ("text", "no room field")]),
            entry("6-0", &[("room", "#rust"), ("text", "no sender: skipped")]),
        ]);
        let got = parse_entries(reply, "#rust").unwrap();
        assert_eq!(
            got,
            [
                Message {
                    room: "#Rust".into(),
                    at_ms: 1_700_000_000_123,
                    from: "ann".into(),
                    text: "hi: there".into(),
                },
                Message {
                    room: "#rust".into(),
                    at_ms: 5,
                    from: "bob".into(),
                    text: "no room field".into(),
                },
            ]
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let cases = [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("1-0")])]),
            Value::Array(vec![entry("x-0", &[("from", "a"), ("text", "b")])]),
            Value::Array(vec![Value::Array(vec![Value::Nil, Value::Array(vec![])])]),
            Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Int(2)])]),
        ];
        for reply in cases {
            let shown = format!("{reply:?}");
            assert!(parse_entries(reply, "#a").is_err(), "{shown}");
        }
        // An odd field count loses the dangling field, nothing else.
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("2-0"),
            Value::Array(vec![
                bulk("from"),
                bulk("a"),
                bulk("text"),
                bulk("b"),
                bulk("x"),
            ]),
        ])]);
        assert_eq!(parse_entries(odd, "#a").unwrap().len(), 1);
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        let client = Client::open("redis://user:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(shown(&client), "redis://127.0.0.1:6380/2");
        let client = Client::open("redis://127.0.0.1:6379").unwrap();
        assert_eq!(shown(&client), "redis://127.0.0.1:6379/0");
        assert_eq!(
            without_credentials("redis://u:p@w@host:1/3"),
            "redis://host:1/3"
        );
        assert_eq!(without_credentials("nonsense"), "nonsense");
        assert_eq!(without_credentials("redis://h/x@y"), "redis://h/x@y");
    }

    #[test]
    fn a_bad_url_is_refused_at_open_without_showing_its_password() {
        let e = RedisBackend::open("http://user:hunter2@example.com/")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("http://example.com/"), "{e}");
    }
}
