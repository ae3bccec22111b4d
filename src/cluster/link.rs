//! The link thread: the loop's requests, in order, pipelined to Redis over one
//! connection; the heartbeat; and the outage: warn once, reconnect with backoff and
//! jitter, re-establish what this node holds from its mirror.
//!
//! The mirror (names held, members of each room) is kept from the requests whether
//! Redis is reachable or not, so after an outage the node re-claims exactly what its
//! members hold now. A name claimed meanwhile by another node is settled by the claim
//! script: the earlier claim keeps it (ties: the smaller instance), and the loser's
//! node is told ([`Event::NameLost`] here, or a [`Frame::NameLost`] to the other).
//!
//! The file runs past 600 lines because each request's Redis commands and the answer
//! they give are written out next to each other, in the builder style of the `redis`
//! crate, which takes a line per argument. The Lua scripts are in `scripts`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::{Connection, Pipeline, Value};

use super::scripts::{LUA_AT_LEAST, LUA_DEL_IF_EQUAL, Scripts};
use super::subscriber::SubCtl;
use super::wire::{self, Frame, LostWhy};
use super::{
    ClaimMode, ClusterConfig, Counters, Event, GUEST_BLOCK, Request, Startup, keys, unix_ms,
};

/// Requests served per pipeline (one round trip).
const MAX_BATCH: usize = 512;

/// How long a connection, a command or the subscriber's acknowledgement may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Releases and room leaves kept (each) for Redis's return: a long outage with much
/// coming and going holds at most this many; past it a few may linger in Redis for a
/// node that no longer holds them (until it stops).
const UNAPPLIED_MAX: usize = 65_536;

/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A random number, for instance ids and jitter.
pub(super) fn random_u64() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

/// `d` scaled by a random factor in [0.75, 1.25).
pub(super) fn jitter(d: Duration) -> Duration {
    let f = 0.75 + (random_u64() % 1000) as f64 / 2000.0;
    d.mul_f64(f)
}

fn fold(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// One room as this node holds it.
#[derive(Debug, Default)]
struct RoomMirror {
    shown: String,
    /// Folded name → name as shown.
    members: HashMap<String, String>,
}

/// What a command in a pipeline answers.
enum Pending {
    None,
    Claim {
        tag: u64,
        name: String,
    },
    Route {
        reply: crate::hub::ConnId,
        to: String,
    },
    Who {
        tag: u64,
    },
    Rooms {
        tag: u64,
    },
    Guests,
}

pub(super) struct Link {
    client: redis::Client,
    con: Option<Connection>,
    config: ClusterConfig,
    instance: Arc<str>,
    deliver: Arc<dyn Fn(Event) + Send + Sync>,
    counters: Arc<Counters>,
    scripts: Scripts,
    /// Folded name → (name as shown, when claimed in Unix ms).
    names: HashMap<String, (String, i64)>,
    /// Folded room → its local members.
    rooms: HashMap<String, RoomMirror>,
    ctl: Option<Sender<SubCtl>>,
    ack: Option<Receiver<u64>>,
    sub_up: Arc<AtomicBool>,
    barrier: u64,
    down_since: Option<Instant>,
    backoff: Duration,
    next_try: Instant,
    next_heartbeat: Instant,
    /// Warned that another process runs under this node id.
    warned_twin: bool,
    /// A heartbeat has set the alive key (after that, finding it gone means it lapsed).
    beat_once: bool,
    pipe: Pipeline,
    pending: Vec<Pending>,
    /// Requests the loop's queue had refused when a resync was last asked for.
    dropped_seen: u64,
    /// A resync was asked for and not received yet (asked again at each heartbeat:
    /// the loop's inbox may have dropped the question).
    resync_asked: bool,
    /// Names released (folded) and members gone from rooms (folded room and name)
    /// since Redis last answered a pipeline: one that failed, or was never sent while
    /// Redis was unreachable, may not have been applied. Applied again by
    /// [`Link::restore`], for a Redis that comes back with its data.
    unapplied_releases: HashSet<String>,
    unapplied_leaves: HashSet<(String, String)>,
    /// The last guest number of the highest block this node was given.
    guests_top: u64,
}

impl Link {
    /// Connects and registers this node; reads the bans in force and guest numbers.
    pub(super) fn connect(
        config: &ClusterConfig,
        instance: Arc<str>,
        deliver: Arc<dyn Fn(Event) + Send + Sync>,
        counters: Arc<Counters>,
    ) -> Result<(Link, Startup), String> {
        let unreachable = |e: redis::RedisError| format!("cannot use Redis at {}: {e}", config.url);
        let client = redis::Client::open(config.url.as_str()).map_err(unreachable)?;
        let now = Instant::now();
        let mut link = Link {
            client,
            con: None,
            config: config.clone(),
            instance,
            deliver,
            counters,
            scripts: Scripts::new(),
            names: HashMap::new(),
            rooms: HashMap::new(),
            ctl: None,
            ack: None,
            sub_up: Arc::new(AtomicBool::new(false)),
            barrier: 0,
            down_since: None,
            backoff: BACKOFF_MIN,
            next_try: now,
            next_heartbeat: now,
            warned_twin: false,
            beat_once: false,
            pipe: redis::pipe(),
            pending: Vec::new(),
            dropped_seen: 0,
            resync_asked: false,
            unapplied_releases: HashSet::new(),
            unapplied_leaves: HashSet::new(),
            guests_top: 0,
        };
        let mut con = link.open().map_err(unreachable)?;
        let startup = link.read_startup(&mut con).map_err(unreachable)?;
        link.guests_top = startup.guests.end.saturating_sub(1);
        link.con = Some(con);
        link.heartbeat(now);
        if link.con.is_none() {
            return Err(format!("cannot use Redis at {}: lost at start", config.url));
        }
        info!(
            "cluster: joined through {} as {} ({} bans in force)",
            link.config.url,
            link.instance,
            startup.bans.len()
        );
        Ok((link, startup))
    }

    pub(super) fn attach_subscriber(
        &mut self,
        ctl: Sender<SubCtl>,
        ack: Receiver<u64>,
        up: Arc<AtomicBool>,
    ) {
        self.ctl = Some(ctl);
        self.ack = Some(ack);
        self.sub_up = up;
    }

    fn open(&self) -> redis::RedisResult<Connection> {
        let mut con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        self.scripts.load(&mut con)?;
        Ok(con)
    }

    fn read_startup(&self, con: &mut Connection) -> redis::RedisResult<Startup> {
        let mut bans = Vec::new();
        let pattern = keys::ban("*");
        let found: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter::<String>(con)?
            .collect::<redis::RedisResult<Vec<String>>>()?;
        for key in found.into_iter().take(100_000) {
            let (ttl, why): (i64, Option<String>) = redis::pipe()
                .cmd("PTTL")
                .arg(&key)
                .cmd("GET")
                .arg(&key)
                .query(con)?;
            let ip = key.strip_prefix(&keys::ban("")).unwrap_or_default();
            if let (Ok(ip), true) = (ip.parse(), ttl > 0) {
                bans.push((ip, ttl as u64, why.unwrap_or_default()));
            }
        }
        let end: u64 = redis::cmd("INCRBY")
            .arg(keys::GUESTS)
            .arg(GUEST_BLOCK)
            .query(con)?;
        Ok(Startup {
            bans,
            guests: end.saturating_sub(GUEST_BLOCK) + 1..end + 1,
        })
    }

    /// The thread's body: serve requests until the loop closes the queue.
    pub(super) fn run(mut self, rx: Receiver<Request>, stop: Arc<AtomicBool>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let now = Instant::now();
            let next = if self.con.is_some() {
                self.next_heartbeat
            } else {
                self.next_try
            };
            match rx.recv_timeout(next.saturating_duration_since(now)) {
                Ok(request) => {
                    batch.push(request);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if stop.load(Ordering::Acquire) && batch.is_empty() {
                break;
            }
            // Fewer than a full batch: the queue was empty when it was taken.
            let drained = batch.len() < MAX_BATCH;
            for request in batch.drain(..) {
                self.serve(request);
            }
            self.execute();
            self.ask_resync(drained);
            let now = Instant::now();
            if self.con.is_some() {
                if now >= self.next_heartbeat {
                    self.heartbeat(now);
                }
            } else if now >= self.next_try {
                self.reconnect(now);
            }
        }
        self.leave();
    }

    // ----- requests ------------------------------------------------------------------

    fn publish(&mut self, channel: String, frame: &Frame) {
        let payload = wire::encode(&self.instance, frame);
        self.pipe.cmd("PUBLISH").arg(channel).arg(payload);
        self.pending.push(Pending::None);
    }

    fn serve(&mut self, request: Request) {
        match request {
            Request::Room { room, event } => {
                let channel = keys::room_channel(&fold(&room));
                self.publish(channel, &Frame::Room { room, event });
            }
            Request::Joined { room, name } => self.joined(room, name),
            Request::Left { room, name } => self.left(&room, &name),
            Request::Claim { tag, name, mode } => self.claim(tag, name, mode),
            Request::Release { name } => self.release(&name),
            Request::Route {
                to,
                from,
                text,
                reply,
            } => {
                let frame = Frame::Msg {
                    to: to.clone(),
                    from,
                    text,
                    reply,
                };
                let payload = wire::encode(&self.instance, &frame);
                self.pipe.add_command(
                    redis::cmd("EVALSHA")
                        .arg(self.scripts.route.get_hash())
                        .arg(1)
                        .arg(keys::name(&fold(&to)))
                        .arg(payload)
                        .clone(),
                );
                self.pending.push(Pending::Route { reply, to });
            }
            Request::Direct { instance, frame } => {
                self.publish(keys::node_channel(&instance), &frame)
            }
            Request::All(frame) => self.publish(keys::ALL.to_string(), &frame),
            Request::Ban(frame) => {
                if let Frame::Ban { ip, ms, why } = &frame {
                    self.pipe
                        .cmd("SET")
                        .arg(keys::ban(&ip.to_string()))
                        .arg(why)
                        .arg("PX")
                        .arg((*ms).max(1));
                    self.pending.push(Pending::None);
                }
                self.publish(keys::ALL.to_string(), &frame);
            }
            Request::Who { tag, room } => {
                self.pipe.add_command(
                    redis::cmd("EVALSHA")
                        .arg(self.scripts.who.get_hash())
                        .arg(1)
                        .arg(keys::members(&fold(&room)))
                        .clone(),
                );
                self.pending.push(Pending::Who { tag });
            }
            Request::Rooms { tag } => {
                self.pipe.add_command(
                    redis::cmd("EVALSHA")
                        .arg(self.scripts.rooms.get_hash())
                        .arg(0)
                        .clone(),
                );
                self.pending.push(Pending::Rooms { tag });
            }
            Request::Guests => {
                self.pipe.cmd("INCRBY").arg(keys::GUESTS).arg(GUEST_BLOCK);
                self.pending.push(Pending::Guests);
            }
            Request::Resync { names, members } => self.resync(names, members),
        }
    }

    fn release(&mut self, name: &str) {
        let key = fold(name);
        self.names.remove(&key);
        self.pipe.add_command(self.release_command(&key));
        self.pending.push(Pending::None);
        if self.unapplied_releases.len() < UNAPPLIED_MAX {
            self.unapplied_releases.insert(key);
        }
    }

    fn release_command(&self, folded: &str) -> redis::Cmd {
        redis::cmd("EVALSHA")
            .arg(self.scripts.release.get_hash())
            .arg(1)
            .arg(keys::name(folded))
            .arg(&*self.instance)
            .clone()
    }

    /// Asks the loop for everything it holds when it refused requests since the last
    /// ask, once the queue has been drained (so the answer finds room).
    fn ask_resync(&mut self, drained: bool) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if drained && dropped != self.dropped_seen {
            self.dropped_seen = dropped;
            self.resync_asked = true;
            (self.deliver)(Event::Resync);
        }
    }

    /// Makes the mirror (and so Redis and the subscriptions) match what the loop
    /// holds: names it lacks are claimed (a loss is reported like any other), names
    /// nobody holds any more are released; members are entered into their rooms
    /// before stale ones leave, so no room is seen empty on the way.
    fn resync(&mut self, names: Vec<String>, members: Vec<(String, String)>) {
        self.resync_asked = false;
        let held: HashMap<String, String> = names.into_iter().map(|n| (fold(&n), n)).collect();
        let released: Vec<String> = self
            .names
            .iter()
            .filter(|(key, _)| !held.contains_key(*key))
            .map(|(_, (shown, _))| shown.clone())
            .collect();
        for name in released {
            self.release(&name);
        }
        for (key, name) in held {
            if !self.names.contains_key(&key) {
                self.claim(0, name, ClaimMode::New);
            }
        }
        let mut present = HashSet::new();
        for (room, name) in members {
            let (folded_room, folded) = (fold(&room), fold(&name));
            let known = self
                .rooms
                .get(&folded_room)
                .and_then(|r| r.members.get(&folded))
                .is_some_and(|shown| *shown == name);
            present.insert((folded_room, folded));
            if !known {
                self.joined(room, name);
            }
        }
        let stale: Vec<(String, String)> = self
            .rooms
            .iter()
            .flat_map(|(folded_room, room)| {
                room.members
                    .iter()
                    .filter(|(folded, _)| {
                        !present.contains(&(folded_room.clone(), (*folded).clone()))
                    })
                    .map(|(_, name)| (room.shown.clone(), name.clone()))
            })
            .collect();
        for (room, name) in stale {
            self.left(&room, &name);
        }
    }

    fn forget_command(&self, folded_room: &str, name: &str) -> redis::Cmd {
        redis::cmd("EVALSHA")
            .arg(self.scripts.forget.get_hash())
            .arg(1)
            .arg(keys::members(folded_room))
            .arg(fold(name))
            .arg(&*self.instance)
            .clone()
    }

    fn claim_command(&self, name: &str, since: i64, mode: &str) -> redis::Cmd {
        redis::cmd("EVALSHA")
            .arg(self.scripts.claim.get_hash())
            .arg(1)
            .arg(keys::name(&fold(name)))
            .arg(&*self.instance)
            .arg(since)
            .arg(mode)
            .clone()
    }

    fn claim(&mut self, tag: u64, name: String, mode: ClaimMode) {
        let key = fold(&name);
        let since = match self.names.get(&key) {
            Some((_, since)) => *since,
            None => unix_ms(),
        };
        let mode = match mode {
            ClaimMode::New => "new",
            ClaimMode::Force => "force",
        };
        let cmd = self.claim_command(&name, since, mode);
        self.pipe.add_command(cmd);
        // Held from now on: while Redis is unreachable the claim is granted here and
        // made again when it returns.
        self.names.insert(key, (name.clone(), since));
        self.pending.push(Pending::Claim { tag, name });
    }

    fn joined(&mut self, room: String, name: String) {
        let folded_room = fold(&room);
        let entry = self
            .rooms
            .entry(folded_room.clone())
            .or_insert_with(|| RoomMirror {
                shown: room.clone(),
                members: HashMap::new(),
            });
        let first = entry.members.is_empty();
        entry.members.insert(fold(&name), name.clone());
        let count = entry.members.len();
        let shown = entry.shown.clone();
        if first {
            // Subscribed before anything this node says there is published.
            self.execute();
            self.subscribe(keys::room_channel(&folded_room));
        }
        self.pipe
            .cmd("HSET")
            .arg(keys::members(&folded_room))
            .arg(fold(&name))
            .arg(format!("{} {name}", self.instance));
        self.pending.push(Pending::None);
        self.pipe
            .cmd("HSET")
            .arg(keys::rooms(&self.instance))
            .arg(shown)
            .arg(count);
        self.pending.push(Pending::None);
    }

    fn left(&mut self, room: &str, name: &str) {
        let folded_room = fold(room);
        let Some(entry) = self.rooms.get_mut(&folded_room) else {
            return;
        };
        entry.members.remove(&fold(name));
        let count = entry.members.len();
        let shown = entry.shown.clone();
        let forget = self.forget_command(&folded_room, name);
        self.pipe.add_command(forget);
        self.pending.push(Pending::None);
        if self.unapplied_leaves.len() < UNAPPLIED_MAX {
            self.unapplied_leaves
                .insert((folded_room.clone(), fold(name)));
        }
        if count == 0 {
            self.rooms.remove(&folded_room);
            self.pipe
                .cmd("HDEL")
                .arg(keys::rooms(&self.instance))
                .arg(shown);
            if let Some(ctl) = &self.ctl {
                let _ = ctl.send(SubCtl::Unsubscribe(keys::room_channel(&folded_room)));
            }
        } else {
            self.pipe
                .cmd("HSET")
                .arg(keys::rooms(&self.instance))
                .arg(shown)
                .arg(count);
        }
        self.pending.push(Pending::None);
    }

    /// Subscribes to `channel` and waits (at most [`IO_TIMEOUT`]) until the subscriber
    /// says it is subscribed.
    fn subscribe(&mut self, channel: String) {
        let Some(ctl) = &self.ctl else {
            return;
        };
        self.barrier += 1;
        let barrier = self.barrier;
        if ctl.send(SubCtl::Subscribe(channel)).is_err() || ctl.send(SubCtl::Ack(barrier)).is_err()
        {
            return;
        }
        // While the subscriber is reconnecting it subscribes to everything it was
        // given as soon as it is back; nothing to wait for now.
        if !self.sub_up.load(Ordering::Acquire) || self.con.is_none() {
            return;
        }
        self.wake_subscriber();
        let Some(ack) = &self.ack else {
            return;
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match ack.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(n) if n >= barrier => return,
                Ok(_) => continue,
                Err(_) => {
                    debug!("cluster: the subscriber did not confirm a subscription in time");
                    return;
                }
            }
        }
    }

    fn wake_subscriber(&mut self) {
        let payload = wire::encode(&self.instance, &Frame::Wake);
        let result: redis::RedisResult<()> = match &mut self.con {
            Some(con) => redis::cmd("PUBLISH")
                .arg(keys::node_channel(&self.instance))
                .arg(payload)
                .query(con),
            None => return,
        };
        if let Err(e) = result {
            self.went_down(&e);
        }
    }

    // ----- execution -----------------------------------------------------------------

    /// Sends the pipeline built so far and hands out the answers.
    fn execute(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let pipe = std::mem::replace(&mut self.pipe, redis::pipe());
        let values = match &mut self.con {
            Some(con) => match pipe.clone().ignore_errors().query::<Vec<Value>>(con) {
                Ok(values) => match values.iter().find_map(unavailable) {
                    // Redis answered, but cannot serve this node now (it forgot the
                    // scripts, or refuses writes): as if unreachable. Reconnecting
                    // loads the scripts again and re-establishes what the node holds.
                    Some(e) => {
                        self.went_down(&e);
                        None
                    }
                    None => Some(values),
                },
                Err(e) => {
                    self.went_down(&e);
                    None
                }
            },
            None => None,
        };
        match values {
            Some(values) => {
                self.unapplied_releases.clear();
                self.unapplied_leaves.clear();
                for (p, v) in pending.into_iter().zip(values) {
                    self.answer(p, Some(v));
                }
            }
            None => {
                for p in pending {
                    self.answer(p, None);
                }
            }
        }
    }

    /// Hands out one command's answer; `None`: Redis was unreachable.
    fn answer(&mut self, pending: Pending, value: Option<Value>) {
        if let Some(Value::ServerError(e)) = &value {
            debug!("cluster: Redis refused a command: {e:?}");
        }
        match pending {
            Pending::None => {
                if value.is_none() {
                    self.counters.undelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Pending::Claim { tag, name } => {
                let won = match &value {
                    None => true,
                    Some(v) => claim_won(v).0,
                };
                if !won {
                    self.names.remove(&fold(&name));
                    if tag == 0 {
                        (self.deliver)(Event::NameLost {
                            name: name.clone(),
                            why: LostWhy::Split,
                        });
                    }
                }
                if let Some(v) = &value
                    && let (true, Some(previous)) = claim_won(v)
                {
                    // Taken from a live node (an account's login): tell it.
                    let frame = Frame::NameLost {
                        name: name.clone(),
                        why: LostWhy::LoggedInElsewhere,
                    };
                    let payload = wire::encode(&self.instance, &frame);
                    if let Some(con) = &mut self.con {
                        let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
                            .arg(keys::node_channel(&previous))
                            .arg(payload)
                            .query(con);
                        if let Err(e) = sent {
                            self.went_down(&e);
                        }
                    }
                }
                if tag != 0 {
                    (self.deliver)(Event::Claimed { tag, won });
                }
            }
            Pending::Route { reply, to } => {
                let routed = matches!(value, Some(Value::Int(1)));
                if !routed {
                    (self.deliver)(Event::Unrouted {
                        reply,
                        to,
                        reachable: value.is_some(),
                    });
                }
            }
            Pending::Who { tag } => {
                let names = value.map(|v| strings(&v));
                (self.deliver)(Event::Who { tag, names });
            }
            Pending::Rooms { tag } => {
                let rooms = value.map(|v| sum_rooms(&strings(&v)));
                (self.deliver)(Event::Rooms { tag, rooms });
            }
            Pending::Guests => {
                if let Some(Value::Int(end)) = value
                    && let Ok(end) = u64::try_from(end)
                {
                    self.guests_top = self.guests_top.max(end);
                    (self.deliver)(Event::Guests(end.saturating_sub(GUEST_BLOCK) + 1..end + 1));
                }
            }
        }
    }

    // ----- heartbeat and outages -----------------------------------------------------

    /// Renews this node's alive key and its rooms hash, and wakes the subscriber so
    /// its connection is never silent for long (its read timeout finds a dead one).
    fn heartbeat(&mut self, now: Instant) {
        let ttl_ms = self.config.ttl.as_millis().max(1) as u64;
        self.next_heartbeat = now + self.config.ttl / 3;
        if self.resync_asked {
            (self.deliver)(Event::Resync);
        }
        let payload = wire::encode(&self.instance, &Frame::Wake);
        let Some(con) = &mut self.con else {
            return;
        };
        let result: redis::RedisResult<(Option<String>, i64, i64, i64)> = redis::pipe()
            .cmd("SET")
            .arg(keys::alive(&self.config.node_id))
            .arg(&*self.instance)
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .cmd("SADD")
            .arg(keys::NODES)
            .arg(&*self.instance)
            .cmd("PEXPIRE")
            .arg(keys::rooms(&self.instance))
            .arg(ttl_ms * 2)
            .cmd("PUBLISH")
            .arg(keys::node_channel(&self.instance))
            .arg(payload)
            .query(con);
        let beat_before = std::mem::replace(&mut self.beat_once, true);
        match result {
            Ok((None, ..)) if beat_before => self.lapsed(),
            Ok((Some(previous), ..)) => {
                if previous != *self.instance && !self.warned_twin {
                    warn!(
                        "cluster: another server ({previous}) runs under node id {:?}, or ran less than --cluster-ttl ago; give each server its own --node-id",
                        self.config.node_id
                    );
                    self.warned_twin = true;
                }
            }
            Ok(_) => {}
            Err(e) => self.went_down(&e),
        }
    }

    /// This node's alive key had lapsed (Redis stalled past the TTL, or evicted it):
    /// the other nodes took the node for dead meanwhile, may have forgotten its
    /// presence and claimed its names. They are all taken back, as after an outage.
    fn lapsed(&mut self) {
        warn!(
            "cluster: this server was taken for dead (its alive key lapsed: Redis stalled past --cluster-ttl, or evicted it); claiming its names and presence back"
        );
        let Some(mut con) = self.con.take() else {
            return;
        };
        match self.restore(&mut con) {
            Ok((_, lost)) => {
                self.con = Some(con);
                for name in lost {
                    (self.deliver)(Event::NameLost {
                        name,
                        why: LostWhy::Split,
                    });
                }
            }
            Err(e) => self.went_down(&e),
        }
    }

    fn went_down(&mut self, e: &redis::RedisError) {
        self.con = None;
        let now = Instant::now();
        if self.down_since.is_none() {
            warn!(
                "cluster: Redis at {} is unreachable ({e}); serving this node's members only until it is back",
                self.config.url
            );
            self.down_since = Some(now);
            self.backoff = BACKOFF_MIN;
            self.counters.up.store(false, Ordering::Relaxed);
            (self.deliver)(Event::Down);
        }
        self.next_try = now + jitter(self.backoff);
    }

    fn reconnect(&mut self, now: Instant) {
        let mut con = match self.open() {
            Ok(con) => con,
            Err(e) => {
                debug!("cluster: reconnecting to {}: {e}", self.config.url);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.next_try = now + jitter(self.backoff);
                return;
            }
        };
        // Names are claimed again only once this node hears its rooms again, so what
        // the settling of a conflict says in them is heard here too.
        let deadline = Instant::now() + IO_TIMEOUT;
        while !self.sub_up.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !self.sub_up.load(Ordering::Acquire) {
            debug!("cluster: Redis is back but the subscriber is not yet");
            self.next_try = now + jitter(BACKOFF_MIN);
            return;
        }
        match self.restore(&mut con) {
            Ok((kept, lost)) => {
                self.con = Some(con);
                self.heartbeat(now);
                if self.con.is_none() {
                    return;
                }
                let down = self.down_since.take().map(|t| now - t).unwrap_or_default();
                self.counters.up.store(true, Ordering::Relaxed);
                info!(
                    "cluster: Redis at {} is back after {:.1}s; {kept} names re-claimed, {} lost to other nodes",
                    self.config.url,
                    down.as_secs_f64(),
                    lost.len()
                );
                for name in lost {
                    (self.deliver)(Event::NameLost {
                        name,
                        why: LostWhy::Split,
                    });
                }
                (self.deliver)(Event::Up);
            }
            Err(e) => {
                debug!("cluster: re-establishing at {}: {e}", self.config.url);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.next_try = now + jitter(self.backoff);
            }
        }
    }

    /// Gives up in Redis what this node's members gave up while it could not (a
    /// Redis back with its data still has it), keeps the guest counter past this
    /// node's blocks (a Redis back empty starts it again), claims again every name
    /// they hold, and writes their presence back. Returns how many names were kept and which were
    /// lost.
    fn restore(&mut self, con: &mut Connection) -> redis::RedisResult<(usize, Vec<String>)> {
        let ttl_ms = self.config.ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::alive(&self.config.node_id))
            .arg(&*self.instance)
            .arg("PX")
            .arg(ttl_ms)
            .cmd("SADD")
            .arg(keys::NODES)
            .arg(&*self.instance);
        for key in &self.unapplied_releases {
            if !self.names.contains_key(key) {
                pipe.add_command(self.release_command(key));
            }
        }
        for (folded_room, folded) in &self.unapplied_leaves {
            let here = self
                .rooms
                .get(folded_room)
                .is_some_and(|r| r.members.contains_key(folded));
            if !here {
                pipe.add_command(self.forget_command(folded_room, folded));
            }
        }
        // Rewritten whole below, without the rooms left meanwhile.
        pipe.cmd("DEL").arg(keys::rooms(&self.instance));
        // No block handed out from now on overlaps this node's.
        pipe.cmd("EVAL")
            .arg(LUA_AT_LEAST)
            .arg(1)
            .arg(keys::GUESTS)
            .arg(self.guests_top);
        pipe.query::<()>(con)?;
        self.unapplied_releases.clear();
        self.unapplied_leaves.clear();
        let names: Vec<(String, String, i64)> = self
            .names
            .iter()
            .map(|(k, (shown, since))| (k.clone(), shown.clone(), *since))
            .collect();
        let mut pipe = redis::pipe();
        for (_, shown, since) in &names {
            pipe.add_command(self.claim_command(shown, *since, "reclaim"));
        }
        let answers: Vec<Value> = pipe.query(con)?;
        let mut lost = Vec::new();
        let mut taken_from = Vec::new();
        for ((key, shown, _), v) in names.iter().zip(&answers) {
            match claim_won(v) {
                (false, _) => {
                    self.names.remove(key);
                    lost.push(shown.clone());
                }
                (true, Some(previous)) => taken_from.push((previous, shown.clone())),
                (true, None) => {}
            }
        }
        let mut pipe = redis::pipe();
        for (previous, name) in taken_from {
            let frame = Frame::NameLost {
                name,
                why: LostWhy::Split,
            };
            pipe.cmd("PUBLISH")
                .arg(keys::node_channel(&previous))
                .arg(wire::encode(&self.instance, &frame));
        }
        for (folded_room, room) in &self.rooms {
            // A name lost is written back by the node that kept it, not here.
            let kept = room
                .members
                .iter()
                .filter(|(folded, _)| !lost.iter().any(|l| l.eq_ignore_ascii_case(folded)));
            for (folded, name) in kept {
                pipe.cmd("HSET")
                    .arg(keys::members(folded_room))
                    .arg(folded)
                    .arg(format!("{} {name}", self.instance));
            }
            pipe.cmd("HSET")
                .arg(keys::rooms(&self.instance))
                .arg(&room.shown)
                .arg(room.members.len());
        }
        pipe.query::<()>(con)?;
        Ok((names.len() - lost.len(), lost))
    }

    /// At a clean stop: gives up this node's names and presence at once, rather than
    /// after the TTL.
    fn leave(&mut self) {
        if self.con.is_none() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, _) in self.names.values().map(|n| (fold(&n.0), ())) {
            pipe.add_command(
                redis::cmd("EVALSHA")
                    .arg(self.scripts.release.get_hash())
                    .arg(1)
                    .arg(keys::name(&key))
                    .arg(&*self.instance)
                    .clone(),
            );
        }
        for (folded_room, room) in &self.rooms {
            for folded in room.members.keys() {
                pipe.add_command(self.forget_command(folded_room, folded));
            }
        }
        pipe.cmd("DEL").arg(keys::rooms(&self.instance));
        pipe.cmd("SREM").arg(keys::NODES).arg(&*self.instance);
        pipe.cmd("EVAL")
            .arg(LUA_DEL_IF_EQUAL)
            .arg(1)
            .arg(keys::alive(&self.config.node_id))
            .arg(&*self.instance);
        // Wakes the subscriber so it sees the stop.
        pipe.cmd("PUBLISH")
            .arg(keys::node_channel(&self.instance))
            .arg(wire::encode(&self.instance, &Frame::Wake));
        if let Some(con) = &mut self.con
            && let Err(e) = pipe.ignore_errors().query::<Vec<Value>>(con)
        {
            debug!("cluster: leaving: {e}");
        }
    }
}

/// The error of an answer that says Redis cannot serve this node for now, rather
/// than answering the command: its scripts are gone (`SCRIPT FLUSH`), or it refuses
/// writes (a read-only replica, out of memory, a failing disk, loading, a script
/// running too long).
fn unavailable(v: &Value) -> Option<redis::RedisError> {
    let Value::ServerError(e) = v else {
        return None;
    };
    matches!(
        e.code(),
        "NOSCRIPT" | "READONLY" | "OOM" | "MISCONF" | "LOADING" | "BUSY" | "MASTERDOWN"
    )
    .then(|| e.clone().into())
}

/// A claim script's answer: whether it was won, and the live node it was taken from.
fn claim_won(v: &Value) -> (bool, Option<String>) {
    let Value::Array(items) = v else {
        return (false, None);
    };
    let won = matches!(items.first(), Some(Value::Int(1)));
    let previous = match items.get(1) {
        Some(Value::BulkString(b)) if !b.is_empty() => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    (won, previous)
}

/// The strings of an array answer (others are skipped).
fn strings(v: &Value) -> Vec<String> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// `room, count, room, count…` from every node, summed per room (any case; the
/// smallest spelling is shown, the asking server may prefer its own).
fn sum_rooms(flat: &[String]) -> Vec<(String, usize)> {
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut rooms: Vec<(String, usize)> = Vec::new();
    for pair in flat.chunks_exact(2) {
        let count: usize = pair[1].parse().unwrap_or(0);
        if count == 0 {
            continue;
        }
        match by_key.get(&fold(&pair[0])) {
            Some(&i) => {
                rooms[i].1 += count;
                // Whatever order the nodes come in, one spelling is shown.
                if pair[0] < rooms[i].0 {
                    rooms[i].0 = pair[0].clone();
                }
            }
            None => {
                by_key.insert(fold(&pair[0]), rooms.len());
                rooms.push((pair[0].clone(), count));
            }
        }
    }
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_summed_over_nodes_without_regard_to_case() {
        let flat: Vec<String> = [
            "#lobby", "3", "#Rust", "1", "#lobby", "2", "#rust", "4", "#x", "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            sum_rooms(&flat),
            [("#lobby".to_string(), 5), ("#Rust".to_string(), 5)]
        );
        let flat: Vec<String> = ["#rust", "1", "#Rust", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(sum_rooms(&flat), [("#Rust".to_string(), 2)]);
    }

    #[test]
    fn claim_answers_are_read_defensively() {
        let won = Value::Array(vec![Value::Int(1), Value::BulkString(b"".to_vec())]);
        assert_eq!(claim_won(&won), (true, None));
        let taken = Value::Array(vec![Value::Int(1), Value::BulkString(b"n/1".to_vec())]);
        assert_eq!(claim_won(&taken), (true, Some("n/1".into())));
        let lost = Value::Array(vec![Value::Int(0), Value::BulkString(b"n/1".to_vec())]);
        assert!(!claim_won(&lost).0);
        assert_eq!(claim_won(&Value::Nil), (false, None));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(750) && j < Duration::from_millis(1250));
        }
    }
}
