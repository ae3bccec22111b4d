//! The cluster on the loop's side: what this server tells the others (through the
//! [`Backplane`]'s bounded queue, never waiting) and what it does with what they say
//! (through the inbox).
//!
//! - Room traffic said here is delivered here first, then published; room traffic
//!   from elsewhere is delivered to this server's members of the room.
//! - A name is claimed in Redis before it is granted: the connection waits (its input
//!   is not read) until the claim is answered, as it does for a password check. Guest
//!   names come from blocks of numbers unique across the cluster.
//! - `WHO:` and `ROOMS:` are answered from every server's presence in Redis; `MSG:`
//!   to a name not held here is routed to the server that holds it.
//! - Bans, accounts and room keys made here are announced to every server.
//! - While Redis is unreachable, everything here goes on for this server's members:
//!   names are granted at once (and claimed again when Redis is back), `WHO:` and
//!   `ROOMS:` answer for this server, and what would cross to another server is
//!   dropped and counted.
//!
//! Without `--cluster`, [`Cluster`] is off and every method returns at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::history::Delivery;
use super::inbox::LoopMsg;
use super::{Server, Timer};
use crate::cluster::{
    Backplane, ClaimMode, ClusterConfig, Event as ClusterEvent, Frame, GUEST_BLOCK, LostWhy, Reply,
    Request, RoomEvent,
};
use crate::codec::{Command, Event, valid_name};
use crate::hub::{Audience, ConnId, Outbox};
use crate::net::IpKey;
use crate::notice::Notice;

/// How long a connection waits for Redis to answer a claim or a list before it is
/// answered as if Redis were unreachable.
const WAIT: Duration = Duration::from_secs(5);

/// What a connection waits for.
#[derive(Debug)]
enum Waiting {
    /// `JOIN:<name>`: the claim of a new name.
    Nick { id: ConnId, name: Box<str> },
    /// A login: the account's name, taken from whoever holds it.
    Login { id: ConnId, name: Box<str> },
    /// A registration: the new account's name.
    Register {
        id: ConnId,
        name: Box<str>,
        phc: String,
    },
    /// `WHO:` for the room it is in.
    Who { id: ConnId },
    /// `ROOMS:`.
    Rooms { id: ConnId },
}

impl Waiting {
    fn id(&self) -> ConnId {
        match self {
            Waiting::Nick { id, .. }
            | Waiting::Login { id, .. }
            | Waiting::Register { id, .. }
            | Waiting::Who { id }
            | Waiting::Rooms { id } => *id,
        }
    }
}

/// This server's part of a cluster, or nothing.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    backplane: Option<Backplane>,
    waiting: HashMap<u64, Waiting>,
    next_tag: u64,
    /// When a block of guest numbers was asked for, until it is received. An answer
    /// can be lost (Redis unreachable, a full inbox): the block is asked for again as
    /// soon as Redis is back, or after [`WAIT`].
    guests_asked: Option<Instant>,
    /// The loop's own inbox, for an answer the backplane cannot give: a private
    /// message its full queue refused.
    inbox: Option<super::inbox::InboxSender>,
}

impl Cluster {
    /// Joins the cluster `config.cluster` names, if any: connects to Redis (an error
    /// if it cannot), reads the bans in force and a block of guest numbers. Events go
    /// to the loop through `inbox`.
    /// A flag that cannot work is `InvalidInput` (a service manager should not
    /// restart into it); an unreachable Redis is `ConnectionRefused` (it may come up).
    pub(super) fn join(
        config: &crate::config::ServerConfig,
        inbox: super::inbox::InboxSender,
    ) -> std::io::Result<(Cluster, crate::cluster::Startup)> {
        use std::io::{Error, ErrorKind};
        let Some(url) = &config.cluster else {
            return Ok((Cluster::default(), crate::cluster::Startup::default()));
        };
        let invalid = |e: String| Error::new(ErrorKind::InvalidInput, e);
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(crate::cluster::default_node_id);
        if !crate::cluster::valid_node_id(&node_id) {
            return Err(invalid(format!(
                "--node-id {node_id:?}: use 1 to 32 letters, digits, '-', '_' or '.'"
            )));
        }
        if config.cluster_ttl < Duration::from_secs(1) {
            return Err(invalid("--cluster-ttl must be at least 1s".into()));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(invalid(format!("--cluster {url}: {e}")));
        }
        let own = inbox.clone();
        let (backplane, startup) = Backplane::start(
            ClusterConfig {
                url: url.clone(),
                node_id,
                ttl: config.cluster_ttl,
            },
            Box::new(move |event| {
                // A full inbox drops the event (counted there): a lost room message, or
                // a waiting connection released by its timeout.
                let _ = inbox.send(LoopMsg::Cluster(event));
            }),
        )
        .map_err(|e| Error::new(ErrorKind::ConnectionRefused, e))?;
        Ok((
            Cluster {
                backplane: Some(backplane),
                inbox: Some(own),
                next_tag: 1,
                ..Cluster::default()
            },
            startup,
        ))
    }

    /// The backplane's counters, in a cluster.
    pub(super) fn counters(&self) -> Option<&crate::cluster::Counters> {
        self.backplane.as_ref().map(Backplane::counters)
    }

    /// Whether this server is in a cluster.
    pub(super) fn is_on(&self) -> bool {
        self.backplane.is_some()
    }

    /// Queues `request`; false if the backplane's queue refused it (or there is
    /// none).
    fn send(&mut self, request: Request) -> bool {
        match &mut self.backplane {
            Some(backplane) => backplane.send(request),
            None => false,
        }
    }

    fn wait(&mut self, waiting: Waiting) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.waiting.insert(tag, waiting);
        tag
    }

    /// Publishes room traffic said here.
    pub(super) fn publish_room(&mut self, room: &str, event: Event<'_>, at_ms: i64) {
        if !self.is_on() {
            return;
        }
        let event = match event {
            Event::Say { from, text } => RoomEvent::Say {
                from: from.into(),
                text: text.into(),
                at_ms,
            },
            Event::Join(name) => RoomEvent::Join(name.into()),
            Event::Leave(name) => RoomEvent::Leave(name.into()),
            Event::Server(text) => RoomEvent::Server(text.into()),
            Event::Msg { .. } | Event::Error(_) | Event::History { .. } => return,
        };
        self.send(Request::Room {
            room: room.into(),
            event,
        });
    }

    pub(super) fn joined(&mut self, room: &str, name: &str) {
        if self.is_on() {
            self.send(Request::Joined {
                room: room.into(),
                name: name.into(),
            });
        }
    }

    pub(super) fn left(&mut self, room: &str, name: &str) {
        if self.is_on() {
            self.send(Request::Left {
                room: room.into(),
                name: name.into(),
            });
        }
    }

    /// A name granted here: claimed (again) in Redis; only a loss is answered.
    pub(super) fn name_taken(&mut self, name: &str) {
        if self.is_on() {
            self.send(Request::Claim {
                tag: 0,
                name: name.into(),
                mode: ClaimMode::New,
            });
        }
    }

    pub(super) fn name_freed(&mut self, name: &str) {
        if self.is_on() {
            self.send(Request::Release { name: name.into() });
        }
    }

    /// Passes a private message on to the server holding `to`; false off a cluster.
    pub(super) fn route(&mut self, reply: ConnId, from: &str, to: &str, text: &str) -> bool {
        if !self.is_on() {
            return false;
        }
        let queued = self.send(Request::Route {
            to: to.into(),
            from: from.into(),
            text: text.into(),
            reply,
        });
        if !queued && let Some(inbox) = &self.inbox {
            // Refused by a full queue: the sender is told, as when Redis is away.
            let _ = inbox.send(LoopMsg::Cluster(ClusterEvent::Unrouted {
                reply,
                to: to.into(),
                reachable: false,
            }));
        }
        true
    }

    /// Announces `frame` to every server.
    pub(super) fn tell_all(&mut self, frame: Frame) {
        if self.is_on() {
            self.send(Request::All(frame));
        }
    }

    /// Asks for a new block of guest numbers when the one in use runs low.
    pub(super) fn top_up_guests(&mut self, left: u64) {
        if self.is_on()
            && left < GUEST_BLOCK / 2
            && self.guests_asked.is_none_or(|at| at.elapsed() >= WAIT)
        {
            self.guests_asked = Some(Instant::now());
            self.send(Request::Guests);
        }
    }

    /// Gives up this server's names and presence in Redis and stops the threads.
    pub(super) fn stop(self) {
        if let Some(backplane) = self.backplane {
            backplane.stop(Duration::from_secs(2));
        }
    }
}

impl Server {
    /// In a cluster, takes the commands that need Redis first: a new name, `WHO:` and
    /// `ROOMS:`. Returns true if the command was taken here.
    pub(super) fn cluster_gate(&mut self, id: ConnId, cmd: &Command<'_>, now: Instant) -> bool {
        if !self.cluster.is_on() {
            return false;
        }
        let waiting = match *cmd {
            Command::Nick(name) => {
                let own = self
                    .hub
                    .name(id)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name));
                // What the hub refuses or needs no claim for, it handles alone.
                if !valid_name(name)
                    || own
                    || self.hub.owner(name).is_some()
                    || self.hub.is_reserved(name)
                {
                    return false;
                }
                Waiting::Nick {
                    id,
                    name: name.into(),
                }
            }
            Command::Who => Waiting::Who { id },
            Command::Rooms => Waiting::Rooms { id },
            _ => return false,
        };
        self.cluster_ask(waiting, now);
        true
    }

    /// Puts a question to Redis for a connection, which waits for the answer.
    fn cluster_ask(&mut self, waiting: Waiting, now: Instant) {
        let id = waiting.id();
        let tag = self.cluster.next_tag;
        let request = match &waiting {
            Waiting::Nick { name, .. } | Waiting::Register { name, .. } => Request::Claim {
                tag,
                name: name.to_string(),
                mode: ClaimMode::New,
            },
            Waiting::Login { name, .. } => Request::Claim {
                tag,
                name: name.to_string(),
                mode: ClaimMode::Force,
            },
            Waiting::Who { id } => Request::Who {
                tag,
                room: self.hub.room_of(*id).to_string(),
            },
            Waiting::Rooms { .. } => Request::Rooms { tag },
        };
        self.cluster.wait(waiting);
        if let Some(backplane) = &mut self.cluster.backplane
            && backplane.send(request)
        {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.set_waiting(true);
            }
            self.timers.insert(now + WAIT, Timer::Cluster(tag));
        } else {
            // The queue is full: answer as if Redis were unreachable.
            self.cluster_answered(tag, None, now);
        }
    }

    /// A login (`AUTH:`) or a registration needs its name claimed first in a cluster.
    /// Returns true if it was asked for (the rest follows the answer).
    pub(super) fn cluster_claim_account(
        &mut self,
        id: ConnId,
        name: &str,
        phc: Option<String>,
        now: Instant,
    ) -> bool {
        if !self.cluster.is_on() {
            return false;
        }
        let waiting = match phc {
            Some(phc) => Waiting::Register {
                id,
                name: name.into(),
                phc,
            },
            None => Waiting::Login {
                id,
                name: name.into(),
            },
        };
        self.cluster_ask(waiting, now);
        true
    }

    /// The answer to a question a connection waits for: `Some(true)` a claim won,
    /// `Some(false)` lost, `None` Redis unreachable (or too slow). Lists come with
    /// `names`/`rooms`.
    fn cluster_answered(&mut self, tag: u64, won: Option<bool>, now: Instant) {
        self.cluster_finish(tag, won, None, None, now);
    }

    fn cluster_finish(
        &mut self,
        tag: u64,
        won: Option<bool>,
        names: Option<Vec<String>>,
        rooms: Option<Vec<(String, usize)>>,
        now: Instant,
    ) {
        let Some(waiting) = self.cluster.waiting.remove(&tag) else {
            return;
        };
        let id = waiting.id();
        let Some(conn) = self.conns.get_mut(id) else {
            // Gone meanwhile: a name it won, or may yet win (Redis did not answer in
            // time; the release follows the claim to Redis), is nobody's.
            if let Waiting::Nick { name, .. }
            | Waiting::Login { name, .. }
            | Waiting::Register { name, .. } = &waiting
                && won != Some(false)
                && self.hub.owner(name).is_none()
            {
                self.cluster.name_freed(name);
            }
            return;
        };
        conn.set_waiting(false);
        // While Redis is unreachable a claim is granted: it is made again when Redis
        // is back, and a conflict then is settled by the earlier claim.
        let won = won.unwrap_or(true);
        match waiting {
            Waiting::Nick { name, .. } => {
                if won {
                    let mut out = Delivery::new(
                        &mut self.conns,
                        &mut self.history,
                        &mut self.asked,
                        &mut self.cluster,
                    );
                    self.hub.apply(id, Command::Nick(&name), &mut out);
                    // Taken here meanwhile, or refused: the claim is let go.
                    if self.hub.owner(&name).is_none() {
                        self.cluster.name_freed(&name);
                    }
                } else {
                    self.conns.notice(id, Notice::NameTaken(&name));
                }
            }
            Waiting::Login { name, .. } => {
                self.log_in_now(id, &name, now);
                // Closing meanwhile: the claim is let go.
                if self.hub.owner(&name).is_none() {
                    self.cluster.name_freed(&name);
                }
            }
            Waiting::Register { name, phc, .. } => {
                if won {
                    self.finish_register_now(id, &name, phc);
                    // Closing meanwhile, or refused: the claim is let go.
                    if self.hub.owner(&name).is_none() {
                        self.cluster.name_freed(&name);
                    }
                } else {
                    self.conns.notice(id, Notice::NameTaken(&name));
                }
            }
            Waiting::Who { .. } => match names {
                Some(names) => {
                    let room = self.hub.room_of(id).to_string();
                    let line =
                        crate::hub::who_line(&room, names.iter().map(String::as_str).collect());
                    self.conns.send(id, Event::Server(&line));
                }
                None => {
                    self.hub.apply(id, Command::Who, &mut self.conns);
                }
            },
            Waiting::Rooms { .. } => match rooms {
                Some(rooms) => {
                    // A room this server has is shown as it was created here.
                    let line = crate::hub::rooms_line(
                        rooms
                            .iter()
                            .map(|(r, n)| (self.hub.room_name(r).unwrap_or(r), *n))
                            .collect(),
                    );
                    self.conns.send(id, Event::Server(&line));
                }
                None => {
                    self.hub.apply(id, Command::Rooms, &mut self.conns);
                }
            },
        }
        // Input read while it waited is served next turn.
        self.conns.schedule_read(id);
        self.conns.schedule_flush(id);
        self.arm_replay_timers(now);
    }

    /// A question to Redis was not answered in time: answered as if Redis were away.
    pub(super) fn cluster_timed_out(&mut self, tag: u64, now: Instant) {
        if self.cluster.waiting.contains_key(&tag) {
            debug!("cluster: no answer from Redis within {WAIT:?}; answering alone");
            self.cluster_answered(tag, None, now);
        }
    }

    /// Something from the backplane.
    pub(super) fn on_cluster(&mut self, event: ClusterEvent, now: Instant) {
        match event {
            ClusterEvent::Frame { origin, frame } => self.on_frame(origin, frame, now),
            ClusterEvent::Claimed { tag, won } => self.cluster_answered(tag, Some(won), now),
            ClusterEvent::Who { tag, names } => {
                let won = names.is_some().then_some(true);
                self.cluster_finish(tag, won, names, None, now)
            }
            ClusterEvent::Rooms { tag, rooms } => {
                let won = rooms.is_some().then_some(true);
                self.cluster_finish(tag, won, None, rooms, now)
            }
            ClusterEvent::NameLost { name, why } => self.lose_name(&name, why, now),
            ClusterEvent::Unrouted {
                reply,
                to,
                reachable,
            } => {
                let notice = if reachable {
                    Notice::NoSuchUser(&to)
                } else {
                    Notice::Unreachable(&to)
                };
                self.conns.notice(reply, notice);
            }
            ClusterEvent::Guests(block) => {
                self.cluster.guests_asked = None;
                self.hub.set_guests(block);
            }
            ClusterEvent::Down => {}
            ClusterEvent::Resync => self.cluster_resync(),
            ClusterEvent::Up => {
                info!("cluster: serving the whole cluster again");
                // A block asked for while Redis was away was never answered.
                self.cluster.guests_asked = None;
            }
        }
    }

    /// Requests were refused while the backplane's queue was full: tells it
    /// everything this server holds, for it to catch up (refused again, it asks again).
    fn cluster_resync(&mut self) {
        let mut names = Vec::new();
        let mut members = Vec::new();
        for (name, room) in self.hub.presence() {
            names.push(name.to_string());
            if let Some(room) = room {
                members.push((room.to_string(), name.to_string()));
            }
        }
        // Names being claimed for a waiting connection are held until answered.
        for waiting in self.cluster.waiting.values() {
            if let Waiting::Nick { name, .. }
            | Waiting::Login { name, .. }
            | Waiting::Register { name, .. } = waiting
            {
                names.push(name.to_string());
            }
        }
        info!(
            "cluster: requests were refused while the queue was full; catching up ({} names)",
            names.len()
        );
        self.cluster.send(Request::Resync { names, members });
    }

    fn on_frame(&mut self, origin: String, frame: Frame, now: Instant) {
        match frame {
            Frame::Room { room, event } => self.deliver_remote(&room, event),
            Frame::Msg {
                to,
                from,
                text,
                reply,
            } => {
                let answer = match self.hub.owner(&to) {
                    None => Some(Reply::NoSuchUser(to.clone())),
                    Some(target) => self
                        .conns
                        .private(
                            target,
                            Event::Msg {
                                from: &from,
                                text: &text,
                            },
                        )
                        .err()
                        .map(|_| Reply::Busy(to.clone())),
                };
                if let Some(answer) = answer {
                    self.cluster.send(Request::Direct {
                        instance: origin,
                        frame: Frame::Reply {
                            to: reply,
                            reply: answer,
                        },
                    });
                }
            }
            Frame::Reply { to, reply } => match reply {
                Reply::Busy(name) => self.conns.notice(to, Notice::ReceivingTooFast(&name)),
                Reply::NoSuchUser(name) => self.conns.notice(to, Notice::NoSuchUser(&name)),
            },
            Frame::NameLost { name, why } => self.lose_name(&name, why, now),
            Frame::Ban { ip, ms, why } => {
                let key = IpKey::of(ip);
                let duration = Duration::from_millis(ms);
                self.abuse
                    .ban_from_cluster(key, duration, &format!("on {origin}: {why}"), now);
                self.close_banned(key, duration, now);
            }
            Frame::Account { name, phc } => {
                if self.access.add_account(&name, phc) {
                    self.hub.reserve(&name);
                }
            }
            Frame::RoomKey { room, phc } => self.access.add_room_key(&room, phc),
            Frame::Wake => {}
        }
    }

    /// Room traffic from another server, to this server's members of the room.
    fn deliver_remote(&mut self, room: &str, event: RoomEvent) {
        let members = self.hub.room_members(room);
        if members.is_empty() {
            return;
        }
        let audience = Audience { room, members };
        match &event {
            RoomEvent::Say { from, text, at_ms } => {
                self.history.record_remote(room, from, text, *at_ms);
                self.conns
                    .to_room(audience, None, Event::Say { from, text });
            }
            RoomEvent::Join(name) => self.conns.to_room(audience, None, Event::Join(name)),
            RoomEvent::Leave(name) => self.conns.to_room(audience, None, Event::Leave(name)),
            RoomEvent::Server(text) => self.conns.to_room(audience, None, Event::Server(text)),
        }
    }

    /// The member here holding `name` gives it up to another server.
    fn lose_name(&mut self, name: &str, why: LostWhy, now: Instant) {
        let Some(holder) = self.hub.owner(name) else {
            return;
        };
        warn!("cluster: {holder} lost the name {name:?} to another server ({why:?})");
        match why {
            LostWhy::Split => {
                self.conns.notice(holder, Notice::NameLost(name));
                let mut out = Delivery::new(
                    &mut self.conns,
                    &mut self.history,
                    &mut self.asked,
                    &mut self.cluster,
                );
                self.hub.rename_to_guest(holder, &mut out);
            }
            LostWhy::LoggedInElsewhere => {
                self.last_words(holder, Notice::LoggedInElsewhere, now);
                let mut out = Delivery::new(
                    &mut self.conns,
                    &mut self.history,
                    &mut self.asked,
                    &mut self.cluster,
                );
                self.hub.remove(holder, true, &mut out);
            }
        }
        self.conns.schedule_flush(holder);
    }

    /// A ban made here (strikes or an operator), for every server.
    pub(super) fn announce_ban(&mut self, key: IpKey, duration: Duration, why: &str) {
        if self.cluster.is_on() {
            self.cluster.send(Request::Ban(Frame::Ban {
                ip: key.addr(),
                ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                why: why.into(),
            }));
        }
    }
}
