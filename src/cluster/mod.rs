//! The cluster backplane: several servers share rooms, names and bans through Redis.
//!
//! The loop never talks to Redis. It hands a [`Request`] to the [`Backplane`], whose
//! queue is bounded and never blocks (a full queue is counted and logged once per
//! episode; once it has room again the link asks for the loop's whole state, so the
//! names and rooms refused meanwhile are caught up: [`Event::Resync`]), and hears
//! back through the callback given at [`Backplane::start`] (the server forwards each
//! [`Event`] into its inbox and wakes the loop). Two threads do the Redis I/O with
//! the sync `redis` client:
//!
//! - the **link** thread (`link`) takes the loop's requests in order, pipelines them
//!   (one round trip per batch), runs the heartbeat, and reconnects with backoff and
//!   jitter after an outage, then re-establishes this node's names, presence and
//!   subscriptions from its own mirror of them;
//! - the **subscriber** thread (`subscriber`) holds the pub/sub connection: this
//!   node's channel, the all-nodes channel, and the channel of every room with a local
//!   member. It drops this node's own publications (by origin instance).
//!
//! Ordering: every publication of a node goes through the link's one connection, in
//! the loop's order, so Redis delivers one sender's messages in order to every other
//! node. A room is subscribed to before anything this node says in it is published:
//! the link asks the subscriber (woken by a [`wire::Frame::Wake`] published on this
//! node's own channel) and waits for its acknowledgement, so by the time another node
//! sees `JOIN:<name>` from here, this node hears that room.
//!
//! Redis keys, all under `loopchat:` in the URL's database, are listed in [`keys`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use log::warn;

use crate::hub::ConnId;

mod link;
mod scripts;
mod subscriber;
pub mod wire;

pub use wire::{Frame, LostWhy, Reply, RoomEvent};

/// Requests the link's queue holds before the loop's sends are refused and counted.
/// About a second of traffic at the link's rate: only a stalled Redis fills it.
pub const QUEUE: usize = 65_536;

/// Guest numbers taken from Redis at a time, so guest names are unique across the
/// cluster without a round trip per guest.
pub const GUEST_BLOCK: u64 = 1000;

/// The Redis key and channel names.
pub mod keys {
    /// Prefix of every key and channel.
    pub const PREFIX: &str = "loopchat:";
    /// `loopchat:alive:<node-id>` = the instance now running under that id, expiring
    /// after `--cluster-ttl` unless the heartbeat renews it.
    pub fn alive(node_id: &str) -> String {
        format!("{PREFIX}alive:{node_id}")
    }
    /// `loopchat:name:<name, lower case>` = `<instance> <since_ms>`: who holds a name.
    pub fn name(folded: &str) -> String {
        format!("{PREFIX}name:{folded}")
    }
    /// `loopchat:members:<room, lower case>`: hash of member (lower case) to
    /// `<instance> <name as shown>`, read by `WHO:`.
    pub fn members(folded_room: &str) -> String {
        format!("{PREFIX}members:{folded_room}")
    }
    /// `loopchat:rooms:<instance>`: hash of room (as shown) to its local member count
    /// on that node, read by `ROOMS:`.
    pub fn rooms(instance: &str) -> String {
        format!("{PREFIX}rooms:{instance}")
    }
    /// `loopchat:nodes`: the set of instances that have run.
    pub const NODES: &str = "loopchat:nodes";
    /// `loopchat:guests`: the counter guest numbers are taken from.
    pub const GUESTS: &str = "loopchat:guests";
    /// `loopchat:ban:<address>` = why, expiring with the ban.
    pub fn ban(ip: &str) -> String {
        format!("{PREFIX}ban:{ip}")
    }
    /// The channel of a room (lower case).
    pub fn room_channel(folded_room: &str) -> String {
        format!("{PREFIX}room:{folded_room}")
    }
    /// The channel of one node instance (private messages, replies, lost names).
    pub fn node_channel(instance: &str) -> String {
        format!("{PREFIX}node:{instance}")
    }
    /// The channel every node hears (bans, accounts, room keys).
    pub const ALL: &str = "loopchat:all";
}

/// How a node joins the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// This node's name (`--node-id`).
    pub node_id: String,
    /// `--cluster-ttl`: how long a silent node keeps its names.
    pub ttl: Duration,
}

/// Whether `id` can name a node: 1 to 32 of letters, digits, `-`, `_`, `.`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A node id for a server not given one: the host name and the process id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(20)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{}", std::process::id())
}

/// How a name is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// A new name: refused if a live node holds it.
    New,
    /// An account's owner logged in: taken from whoever holds it, who is told.
    Force,
}

/// What the loop asks of the backplane. Rooms and names are as shown; the backplane
/// folds case for keys.
#[derive(Debug)]
pub enum Request {
    /// Tell the other nodes' members of `room`.
    Room {
        /// The room as shown.
        room: String,
        /// What happened.
        event: RoomEvent,
    },
    /// A member entered `room` (subscribes when it is the room's first local member).
    Joined {
        /// The room as shown.
        room: String,
        /// The member's name.
        name: String,
    },
    /// A member left `room` (unsubscribes when it was the last local member).
    Left {
        /// The room as shown.
        room: String,
        /// The member's name.
        name: String,
    },
    /// Claim `name` for this node; answered by [`Event::Claimed`] unless `tag` is 0, in
    /// which case only a loss is reported ([`Event::NameLost`]).
    Claim {
        /// Returned in the answer.
        tag: u64,
        /// The name.
        name: String,
        /// How.
        mode: ClaimMode,
    },
    /// This node no longer holds `name`.
    Release {
        /// The name.
        name: String,
    },
    /// A private message for a member of another node; answered only if it cannot be
    /// routed ([`Event::Unrouted`]).
    Route {
        /// The recipient.
        to: String,
        /// The sender's name.
        from: String,
        /// The text.
        text: String,
        /// The sending connection.
        reply: ConnId,
    },
    /// Send a frame to one node instance (a reply to a private message).
    Direct {
        /// The node instance.
        instance: String,
        /// The frame.
        frame: Frame,
    },
    /// Tell every node (a ban, an account, a room key).
    All(Frame),
    /// Ban an address on every node; `frame` is a [`Frame::Ban`].
    Ban(Frame),
    /// The members of `room` on every node: [`Event::Who`].
    Who {
        /// Returned in the answer.
        tag: u64,
        /// The room as shown.
        room: String,
    },
    /// The rooms of every node: [`Event::Rooms`].
    Rooms {
        /// Returned in the answer.
        tag: u64,
    },
    /// A new block of guest numbers: [`Event::Guests`].
    Guests,
    /// Everything this node holds now, asked for by [`Event::Resync`]: its names
    /// (those being claimed too) and its members' rooms, `(room, name)`. The
    /// backplane claims, releases, enters and leaves what it must to match.
    Resync {
        /// The names held.
        names: Vec<String>,
        /// `(room, name)` of every member in a room.
        members: Vec<(String, String)>,
    },
}

/// What the backplane tells the loop.
#[derive(Debug)]
pub enum Event {
    /// Another node published this.
    Frame {
        /// The publishing node's instance.
        origin: String,
        /// What it published.
        frame: Frame,
    },
    /// The answer to a [`Request::Claim`]. While Redis is unreachable every claim is
    /// won here and claimed again when it returns.
    Claimed {
        /// The request's tag.
        tag: u64,
        /// Whether this node now holds the name.
        won: bool,
    },
    /// This node lost a name it held (claimed by another node during an outage, or a
    /// guest name someone on another node had taken).
    NameLost {
        /// The name.
        name: String,
        /// Why.
        why: LostWhy,
    },
    /// A private message could not be routed.
    Unrouted {
        /// The sending connection.
        reply: ConnId,
        /// The recipient as named.
        to: String,
        /// False while Redis is unreachable (nobody elsewhere can be reached).
        reachable: bool,
    },
    /// The answer to [`Request::Who`]: names as shown; `None` while Redis is
    /// unreachable.
    Who {
        /// The request's tag.
        tag: u64,
        /// Every node's members of the room.
        names: Option<Vec<String>>,
    },
    /// The answer to [`Request::Rooms`]: `(room, members)` summed over nodes; `None`
    /// while Redis is unreachable.
    Rooms {
        /// The request's tag.
        tag: u64,
        /// Every node's rooms.
        rooms: Option<Vec<(String, usize)>>,
    },
    /// A new block of guest numbers.
    Guests(Range<u64>),
    /// Redis became unreachable.
    Down,
    /// Redis is back; names, presence and subscriptions are re-established.
    Up,
    /// Requests were refused while the queue was full (names claimed or released,
    /// rooms entered or left, that Redis and the subscriptions never heard of): the
    /// queue has room again, send a [`Request::Resync`].
    Resync,
}

/// What a node learns from Redis at start, before it listens.
#[derive(Debug, Default)]
pub struct Startup {
    /// Bans in force: `(address, milliseconds left, why)`.
    pub bans: Vec<(std::net::IpAddr, u64, String)>,
    /// The first block of guest numbers.
    pub guests: Range<u64>,
}

/// Counters shared with the threads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests refused because the queue was full.
    pub dropped: AtomicU64,
    /// Publications not made because Redis was unreachable.
    pub undelivered: AtomicU64,
    /// Frames from Redis that could not be read.
    pub malformed: AtomicU64,
    /// Whether Redis is reachable now.
    pub up: AtomicBool,
}

/// The loop's handle on the backplane.
pub struct Backplane {
    tx: Option<SyncSender<Request>>,
    instance: Arc<str>,
    counters: Arc<Counters>,
    /// Set while a full queue has been warned about, until a send succeeds again.
    full: bool,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// `d` scaled by a random factor in [0.75, 1.25): reconnections of many nodes spread.
pub(crate) fn link_jitter(d: Duration) -> Duration {
    link::jitter(d)
}

/// Unix time in milliseconds.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Backplane {
    /// Connects to Redis (an error, before the server listens, if it cannot), registers
    /// this node, reads the bans in force and a block of guest numbers, and starts the
    /// two threads. `deliver` is called from them with every [`Event`]; it must not
    /// block.
    pub fn start(
        config: ClusterConfig,
        deliver: Box<dyn Fn(Event) + Send + Sync>,
    ) -> Result<(Backplane, Startup), String> {
        if !valid_node_id(&config.node_id) {
            return Err(format!(
                "--node-id {:?}: use 1 to 32 letters, digits, '-', '_' or '.'",
                config.node_id
            ));
        }
        if config.ttl < Duration::from_secs(1) {
            return Err("--cluster-ttl must be at least 1s".into());
        }
        let instance: Arc<str> = format!("{}/{:016x}", config.node_id, link::random_u64()).into();
        let deliver: Arc<dyn Fn(Event) + Send + Sync> = Arc::from(deliver);
        let counters = Arc::new(Counters::default());
        let (mut link, startup) =
            link::Link::connect(&config, instance.clone(), deliver.clone(), counters.clone())?;
        counters.up.store(true, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let (ctl_tx, ctl_rx) = mpsc::channel();
        let (ack_tx, ack_rx) = mpsc::channel();
        let sub_up = Arc::new(AtomicBool::new(false));
        let sub = subscriber::Subscriber {
            url: config.url.clone(),
            ttl: config.ttl,
            instance: instance.clone(),
            deliver,
            counters: counters.clone(),
            ctl: ctl_rx,
            ack: ack_tx,
            up: sub_up.clone(),
            stop: stop.clone(),
            channels: HashMap::new(),
        };
        let sub_thread = std::thread::Builder::new()
            .name("cluster-sub".into())
            .spawn(move || sub.run())
            .map_err(|e| format!("cannot start the cluster subscriber thread: {e}"))?;
        // The subscriber must hear this node's channel before any claim or message is
        // answered through it.
        let ready = std::time::Instant::now() + Duration::from_secs(5);
        while !sub_up.load(Ordering::Acquire) && std::time::Instant::now() < ready {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !sub_up.load(Ordering::Acquire) {
            warn!("cluster: the subscriber has not connected yet; going on");
        }
        link.attach_subscriber(ctl_tx, ack_rx, sub_up);
        let link_stop = stop.clone();
        let link_thread = std::thread::Builder::new()
            .name("cluster-link".into())
            .spawn(move || link.run(rx, link_stop))
            .map_err(|e| format!("cannot start the cluster link thread: {e}"))?;
        Ok((
            Backplane {
                tx: Some(tx),
                instance,
                counters,
                full: false,
                stop,
                threads: vec![link_thread, sub_thread],
            },
            startup,
        ))
    }

    /// This node's instance (`<node-id>/<random>`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The shared counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Queues `request` without blocking; a full queue drops it, counts it and warns
    /// once per episode. Returns whether it was queued.
    pub fn send(&mut self, request: Request) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(request) {
            Ok(()) => {
                self.full = false;
                true
            }
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.full {
                    warn!("cluster: the backplane's queue is full ({QUEUE}); dropping requests");
                    self.full = true;
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Releases this node's names and presence in Redis (within `wait`) and stops the
    /// threads.
    pub fn stop(mut self, wait: Duration) {
        // Closing the queue tells the link to clean up and exit.
        self.tx = None;
        self.stop.store(true, Ordering::Release);
        let link = self.threads.remove(0);
        let deadline = std::time::Instant::now() + wait;
        while !link.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if link.is_finished() {
            let _ = link.join();
        }
        for thread in self.threads.drain(..) {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_short_and_plain() {
        assert!(valid_node_id("node-1"));
        assert!(valid_node_id("a.b_c"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("has space"));
        assert!(!valid_node_id("a/b"));
        assert!(!valid_node_id(&"x".repeat(33)));
        assert!(valid_node_id(&default_node_id()));
    }
}
