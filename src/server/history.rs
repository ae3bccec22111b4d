//! Room history on the loop's side: the time stamp of each room message, the tail of
//! each active room kept in memory, the replay to a member entering a room, and paging.
//!
//! The loop never touches the disk: messages go to the storage thread
//! ([`crate::store::Store`]) through its bounded queue, and what must come from disk (a
//! room's tail the first time it is entered since it was last empty, or a page further
//! back) is asked for and answered through the loop's inbox. While a member waits for
//! its replay, live output to it is held back, so it sees one ordered stream: the
//! room's last messages, `SERVER:end of history for #room`, then what was said since.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::warn;

use super::cluster::Cluster;
use super::conns::Conns;
use crate::codec::Event;
use crate::hub::{Audience, Busy, ConnId, Outbox};
use crate::notice::Notice;
use crate::store::{Answer, Message, Store, Tag};

/// How long a member's output may be held for a replay the store has not answered
/// (its queue or the inbox was full, or the disk is very slow). Then it gets what the
/// loop has, the end line, and its held output.
pub(super) const REPLAY_WAIT: Duration = Duration::from_secs(5);

/// One active room's recent messages.
#[derive(Debug, Default)]
struct Tail {
    /// The last messages, oldest first: at most `replay` once loaded.
    messages: VecDeque<Message>,
    /// Whether `messages` holds the stored history too (else only what was said
    /// since the room came back, while the store is asked for the rest).
    loaded: bool,
    /// Members waiting for the load, with how many of `messages` (said since the
    /// room came back) they had not received live.
    waiting: Vec<(ConnId, usize)>,
    /// The last time stamp given in this room (Unix ms), so times strictly increase.
    last_ms: i64,
    /// The room's name as shown.
    name: Box<str>,
}

/// A question put to the store.
#[derive(Debug)]
enum Pending {
    /// The stored tail of a room (by folded name), for the members waiting on it.
    Load { room: Box<str> },
    /// A page for one connection, of its room (named as shown).
    Page { id: ConnId, room: Box<str> },
}

/// The loop's side of history.
pub(super) struct History {
    store: Store,
    /// `--history-replay`: messages replayed on entering a room (0 = no replay).
    replay: usize,
    /// Tails of active rooms, by folded name.
    rooms: HashMap<Box<str>, Tail>,
    pending: HashMap<Tag, Pending>,
    next_tag: Tag,
}

/// Lower-cased room name, the key of `rooms`.
fn fold(room: &str) -> Box<str> {
    room.to_ascii_lowercase().into()
}

/// The tail of `room` in `rooms`, made if the room has none yet.
fn tail_of<'r>(rooms: &'r mut HashMap<Box<str>, Tail>, room: &str) -> &'r mut Tail {
    rooms.entry(fold(room)).or_insert_with(|| Tail {
        name: room.into(),
        ..Tail::default()
    })
}

/// Now in Unix milliseconds.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl History {
    pub(super) fn new(store: Store, replay: usize) -> History {
        History {
            store,
            replay,
            rooms: HashMap::new(),
            pending: HashMap::new(),
            next_tag: 1,
        }
    }

    /// The store, for its counters and to close it at shutdown.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Takes the store out (at shutdown, to commit and stop it).
    pub(super) fn into_store(self) -> Store {
        self.store
    }

    /// Records a room message: its time (strictly increasing within the room), the
    /// room's tail, and the store.
    fn record(&mut self, room: &str, from: &str, text: &str) -> i64 {
        let tail = tail_of(&mut self.rooms, room);
        let at_ms = unix_ms().max(tail.last_ms.saturating_add(1));
        tail.last_ms = at_ms;
        let message = Message {
            room: room.to_string(),
            at_ms,
            from: from.to_string(),
            text: text.to_string(),
        };
        if self.replay > 0 {
            tail.messages.push_back(message.clone());
            if tail.loaded && tail.messages.len() > self.replay {
                tail.messages.pop_front();
            }
        }
        self.store.append(message);
        at_ms
    }

    /// A room message from another server of the cluster: into the room's tail for
    /// replay, not into the store (its own server stored it).
    pub(super) fn record_remote(&mut self, room: &str, from: &str, text: &str, at_ms: i64) {
        if self.replay == 0 {
            return;
        }
        let tail = tail_of(&mut self.rooms, room);
        tail.last_ms = tail.last_ms.max(at_ms);
        tail.messages.push_back(Message {
            room: room.to_string(),
            at_ms,
            from: from.to_string(),
            text: text.to_string(),
        });
        if tail.loaded && tail.messages.len() > self.replay {
            tail.messages.pop_front();
        }
    }

    /// A member entered `room`: replays its tail at once if the loop has it, else
    /// holds the member's output and asks the store. Returns the tag to time out, if a
    /// question was put.
    fn entered(&mut self, id: ConnId, room: &str, conns: &mut Conns) -> Option<Tag> {
        if self.replay == 0 {
            return None;
        }
        let key = fold(room);
        let tail = tail_of(&mut self.rooms, room);
        if tail.loaded {
            replay(conns, id, room, tail.messages.iter(), self.replay);
            return None;
        }
        conns.hold_output(id);
        tail.waiting.push((id, tail.messages.len()));
        if tail.waiting.len() > 1 {
            return None; // already asked
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        if self.store.query(tag, room, self.replay, None) {
            self.pending.insert(tag, Pending::Load { room: key });
            Some(tag)
        } else {
            // The store's queue is full: serve what the loop has rather than wait.
            self.finish_load(&key, Vec::new(), conns);
            None
        }
    }

    /// A page of history for `id`; answered when the store replies.
    fn page(&mut self, id: ConnId, room: &str, n: usize, before: Option<i64>, conns: &mut Conns) {
        let tag = self.next_tag;
        self.next_tag += 1;
        if self.store.query(tag, room, n, before) {
            self.pending.insert(
                tag,
                Pending::Page {
                    id,
                    room: room.into(),
                },
            );
        } else {
            conns.notice(id, Notice::EndOfHistory(room));
        }
    }

    /// The store answered.
    pub(super) fn answered(&mut self, answer: Answer, conns: &mut Conns) {
        match self.pending.remove(&answer.tag) {
            Some(Pending::Load { room }) => self.finish_load(&room, answer.messages, conns),
            Some(Pending::Page { id, room }) => {
                replay(conns, id, &room, answer.messages.iter(), usize::MAX);
            }
            None => {}
        }
    }

    /// A question was not answered within [`REPLAY_WAIT`]: the members waiting on it
    /// get what the loop has.
    pub(super) fn timed_out(&mut self, tag: Tag, conns: &mut Conns) {
        if let Some(Pending::Load { room }) = self.pending.remove(&tag) {
            warn!(
                "history for {room:?} not loaded within {REPLAY_WAIT:?}; replaying what is in memory"
            );
            self.finish_load(&room, Vec::new(), conns);
        }
    }

    /// Puts the stored messages before those said since the room came back, replays to
    /// every member waiting, and releases their held output.
    fn finish_load(&mut self, key: &str, stored: Vec<Message>, conns: &mut Conns) {
        let Some(tail) = self.rooms.get_mut(key) else {
            return;
        };
        let mut live = std::mem::take(&mut tail.messages);
        // In a cluster a message said on another server may arrive live and be in the
        // store's answer too: it is replayed once.
        live.retain(|m| {
            !stored
                .iter()
                .any(|s| s.at_ms == m.at_ms && s.from == m.from && s.text == m.text)
        });
        let stored_len = stored.len();
        let mut all: VecDeque<Message> = stored.into();
        all.extend(live);
        if let Some(last) = all.back() {
            tail.last_ms = tail.last_ms.max(last.at_ms);
        }
        let replay_len = self.replay;
        for (id, seen_live) in std::mem::take(&mut tail.waiting) {
            // What it had not received live: the stored part and the live messages
            // said before it entered. It goes ahead of the output held meanwhile.
            let owed = all.iter().take(stored_len + seen_live);
            conns.ahead_of_held(|conns| replay(conns, id, &tail.name, owed, replay_len));
            conns.release_output(id);
        }
        while all.len() > self.replay {
            all.pop_front();
        }
        tail.messages = all;
        tail.loaded = true;
    }

    /// The room is gone (its last member left); so is its tail. Members that were
    /// still waiting for its replay (they moved on before it loaded) get their held
    /// output now: nobody will answer for this room any more.
    fn forget(&mut self, room: &str, conns: &mut Conns) {
        if let Some(tail) = self.rooms.remove(&fold(room)) {
            for (id, _) in tail.waiting {
                conns.release_output(id);
            }
        }
    }
}

/// Sends `id` the last `limit` of `messages` as `HISTORY:` lines, then the end line.
fn replay<'m>(
    conns: &mut Conns,
    id: ConnId,
    room: &str,
    messages: impl DoubleEndedIterator<Item = &'m Message> + ExactSizeIterator,
    limit: usize,
) {
    let skip = messages.len().saturating_sub(limit);
    for m in messages.skip(skip) {
        conns.send(
            id,
            Event::History {
                room: &m.room,
                at_ms: m.at_ms,
                from: &m.from,
                text: &m.text,
            },
        );
    }
    conns.notice(id, Notice::EndOfHistory(room));
}

/// The server's [`Outbox`]: the connection table for delivery, with history beside it
/// to see room messages and entries.
pub(super) struct Delivery<'a> {
    conns: &'a mut Conns,
    history: &'a mut History,
    /// Questions put to the store during this delivery, to time out.
    asked: &'a mut Vec<Tag>,
    /// The other servers, if this one is in a cluster.
    cluster: &'a mut Cluster,
}

impl<'a> Delivery<'a> {
    /// The outbox for one call into the hub. Questions it puts to the store are left
    /// in `asked`, for the loop to arm their timeouts.
    pub(super) fn new(
        conns: &'a mut Conns,
        history: &'a mut History,
        asked: &'a mut Vec<Tag>,
        cluster: &'a mut Cluster,
    ) -> Delivery<'a> {
        Delivery {
            conns,
            history,
            asked,
            cluster,
        }
    }
}

impl Outbox for Delivery<'_> {
    fn send(&mut self, to: ConnId, event: Event<'_>) {
        self.conns.send(to, event);
    }

    fn to_room(&mut self, room: Audience<'_>, except: Option<ConnId>, event: Event<'_>) {
        let at_ms = match event {
            Event::Say { from, text } => self.history.record(room.room, from, text),
            _ => 0,
        };
        self.conns.to_room(room, except, event);
        self.cluster.publish_room(room.room, event, at_ms);
    }

    fn notice(&mut self, to: ConnId, notice: Notice<'_>) {
        self.conns.notice(to, notice);
    }

    fn private(&mut self, to: ConnId, event: Event<'_>) -> Result<(), Busy> {
        self.conns.private(to, event)
    }

    fn entered(&mut self, id: ConnId, room: &str) {
        if let Some(tag) = self.history.entered(id, room, self.conns) {
            self.asked.push(tag);
        }
    }

    fn history(&mut self, id: ConnId, room: &str, n: usize, before: Option<i64>) {
        self.history.page(id, room, n, before, self.conns);
    }

    fn room_closed(&mut self, room: &str) {
        self.history.forget(room, self.conns);
    }

    fn joined(&mut self, room: &str, name: &str) {
        self.cluster.joined(room, name);
    }

    fn left(&mut self, room: &str, name: &str) {
        self.cluster.left(room, name);
    }

    fn name_taken(&mut self, _id: ConnId, name: &str) {
        self.cluster.name_taken(name);
    }

    fn name_freed(&mut self, name: &str) {
        self.cluster.name_freed(name);
    }

    fn elsewhere(&mut self, from_id: ConnId, from: &str, to: &str, text: &str) -> bool {
        self.cluster.route(from_id, from, to, text)
    }
}
