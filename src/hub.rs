//! Chat state: who is connected under which name, which rooms exist and who is in them.
//!
//! The hub applies one parsed [`Command`] from one connection and says who must be told
//! what through an [`Outbox`]; it never sees sockets, buffers or dialects. Names and
//! rooms are unique without regard to ASCII case. A room's member list is a `Vec` with
//! each member's index kept beside it, so joining and leaving are O(1) and a broadcast
//! is one pass over a slice.

use std::collections::HashMap;

use slab::Slab;

use crate::codec::{Command, Event, MAX_NAME, valid_name, valid_room};

/// A connection's identity: its slab key in the server.
pub type ConnId = usize;

/// The room every named connection starts in.
pub const LOBBY: &str = "#lobby";

/// Most names (or rooms) listed in one `WHO:` (or `ROOMS:`) answer.
const LIST_LIMIT: usize = 100;

/// Where the hub's output goes. The server implements it by encoding each event once
/// per dialect and appending the bytes to the recipients' output queues.
pub trait Outbox {
    /// Tells one connection.
    fn send(&mut self, to: ConnId, event: Event<'_>);
    /// Tells every connection in `members` except `except`.
    fn broadcast(&mut self, members: &[ConnId], except: Option<ConnId>, event: Event<'_>);
}

/// What the connection should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading.
    Continue,
    /// The client asked to leave: flush its output, then close.
    Leave,
}

/// Per-connection chat state.
#[derive(Debug, Default)]
struct Member {
    /// Chosen or guest name; `None` until the connection becomes a member.
    name: Option<Box<str>>,
    /// The room and this member's index in its member list.
    room: Option<(usize, usize)>,
}

#[derive(Debug)]
struct Room {
    name: Box<str>,
    members: Vec<ConnId>,
}

/// Names, rooms and membership.
#[derive(Debug)]
pub struct Hub {
    /// Indexed by [`ConnId`]; slab keys are dense, so this stays compact.
    members: Vec<Option<Member>>,
    /// Lower-cased name → connection.
    names: HashMap<Box<str>, ConnId>,
    rooms: Slab<Room>,
    /// Lower-cased room name → key in `rooms`.
    room_index: HashMap<Box<str>, usize>,
    next_guest: u64,
    /// Rooms with more members than this send no join/leave notices.
    announce_limit: usize,
}

/// Lower-cases a name into `buf` without allocating; `None` if it cannot be a name.
fn fold<'b>(name: &str, buf: &'b mut [u8; MAX_NAME + 1]) -> Option<&'b str> {
    let bytes = name.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

impl Hub {
    /// An empty hub.
    pub fn new(announce_limit: usize) -> Hub {
        Hub {
            members: Vec::new(),
            names: HashMap::new(),
            rooms: Slab::new(),
            room_index: HashMap::new(),
            next_guest: 1,
            announce_limit,
        }
    }

    /// Registers a new connection (not yet a member of any room).
    pub fn add(&mut self, id: ConnId) {
        if self.members.len() <= id {
            self.members.resize_with(id + 1, || None);
        }
        self.members[id] = Some(Member::default());
    }

    /// Forgets a connection; its room hears `LEAVE:` when `announce` is set (the server
    /// clears it at shutdown, when nobody needs to hear it). Safe to call twice.
    pub fn remove(&mut self, id: ConnId, announce: bool, out: &mut impl Outbox) {
        let Some(member) = self.members.get_mut(id).and_then(Option::take) else {
            return;
        };
        if let Some(name) = &member.name {
            let mut buf = [0; MAX_NAME + 1];
            if let Some(key) = fold(name, &mut buf) {
                self.names.remove(key);
            }
            if let Some((room, pos)) = member.room {
                self.leave_room(id, room, pos, name, announce, out);
            }
        }
    }

    /// The connection's name, if it has one.
    pub fn name(&self, id: ConnId) -> Option<&str> {
        self.member(id)?.name.as_deref()
    }

    /// Number of named connections.
    pub fn named(&self) -> usize {
        self.names.len()
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Members of a room, by name (any case); empty if there is no such room.
    pub fn room_members(&self, room: &str) -> &[ConnId] {
        let mut buf = [0; MAX_NAME + 1];
        let key = room.strip_prefix('#').and_then(|r| fold(r, &mut buf));
        key.and_then(|k| self.room_by_folded(k))
            .map_or(&[], |r| &self.rooms[r].members[..])
    }

    fn room_by_folded(&self, folded_without_hash: &str) -> Option<usize> {
        let mut key = String::with_capacity(folded_without_hash.len() + 1);
        key.push('#');
        key.push_str(folded_without_hash);
        self.room_index.get(key.as_str()).copied()
    }

    fn member(&self, id: ConnId) -> Option<&Member> {
        self.members.get(id)?.as_ref()
    }

    fn member_mut(&mut self, id: ConnId) -> Option<&mut Member> {
        self.members.get_mut(id)?.as_mut()
    }

    /// Applies one command from `id`.
    pub fn apply(&mut self, id: ConnId, cmd: Command<'_>, out: &mut impl Outbox) -> Next {
        if self.member(id).is_none() {
            return Next::Continue;
        }
        match cmd {
            Command::Nick(name) => self.nick(id, name, out),
            Command::Join(room) => self.join(id, room, out),
            Command::Say(text) => self.say(id, text, out),
            Command::Msg { to, text } => self.msg(id, to, text, out),
            Command::Who => self.who(id, out),
            Command::Rooms => self.list_rooms(id, out),
            Command::Help => out.send(
                id,
                Event::Server(
                    "commands: /nick <name>, /join #<room>, /msg <name> <text>, /who, /rooms, \
                     /quit [reason]; any other line is said to your room",
                ),
            ),
            Command::Leave(_) => return Next::Leave,
        }
        Next::Continue
    }

    fn nick(&mut self, id: ConnId, name: &str, out: &mut impl Outbox) {
        if !valid_name(name) {
            let msg = format!("invalid name {name}: use 1-32 of A-Z a-z 0-9 _ - .");
            return out.send(id, Event::Error(&msg));
        }
        let mut buf = [0; MAX_NAME + 1];
        let Some(key) = fold(name, &mut buf) else {
            return;
        };
        if let Some(&owner) = self.names.get(key)
            && owner != id
        {
            return out.send(id, Event::Error(&format!("name {name} is taken")));
        }
        let Some(member) = self.member_mut(id) else {
            return;
        };
        match member.name.take() {
            None => {
                member.name = Some(name.into());
                self.names.insert(key.into(), id);
                self.enter(id, LOBBY, name, out);
            }
            Some(old) if &*old == name => {
                member.name = Some(old);
                out.send(id, Event::Server(&format!("you are already {name}")));
            }
            Some(old) => {
                member.name = Some(name.into());
                let room = member.room;
                let mut old_buf = [0; MAX_NAME + 1];
                if let Some(old_key) = fold(&old, &mut old_buf) {
                    self.names.remove(old_key);
                }
                self.names.insert(key.into(), id);
                let notice = format!("{old} is now known as {name}");
                match room {
                    Some((room, _)) => {
                        out.broadcast(&self.rooms[room].members, None, Event::Server(&notice))
                    }
                    None => out.send(id, Event::Server(&notice)),
                }
            }
        }
    }

    fn join(&mut self, id: ConnId, room: &str, out: &mut impl Outbox) {
        if !valid_room(room) {
            let msg = format!("invalid room {room}: use # and 1-32 of A-Z a-z 0-9 _ - .");
            return out.send(id, Event::Error(&msg));
        }
        let Some(name) = self.name(id).map(Box::<str>::from) else {
            let guest = self.take_guest_name(id);
            return self.enter(id, room, &guest, out);
        };
        let Some(member) = self.member_mut(id) else {
            return;
        };
        if let Some((current, pos)) = member.room {
            if self.rooms[current].name.eq_ignore_ascii_case(room) {
                let msg = format!("you are already in {}", self.rooms[current].name);
                return out.send(id, Event::Server(&msg));
            }
            self.leave_room(id, current, pos, &name, true, out);
        }
        let room = self.enter_room(id, room, &name, out);
        let msg = format!("you are now in {}", self.rooms[room].name);
        out.send(id, Event::Server(&msg));
    }

    fn say(&mut self, id: ConnId, text: &str, out: &mut impl Outbox) {
        if text.is_empty() {
            return out.send(id, Event::Error("empty message"));
        }
        self.ensure_member(id, out);
        if let Some(Member {
            name: Some(name),
            room: Some((room, _)),
        }) = self.member(id)
        {
            let from = name;
            out.broadcast(
                &self.rooms[*room].members,
                Some(id),
                Event::Say { from, text },
            );
        }
    }

    fn msg(&mut self, id: ConnId, to: &str, text: &str, out: &mut impl Outbox) {
        if text.is_empty() {
            return out.send(id, Event::Error("empty message"));
        }
        let mut buf = [0; MAX_NAME + 1];
        let Some(&target) = fold(to, &mut buf).and_then(|k| self.names.get(k)) else {
            return out.send(id, Event::Error(&format!("no such user {to}")));
        };
        self.ensure_member(id, out);
        if let Some(from) = self.name(id) {
            out.send(target, Event::Msg { from, text });
        }
    }

    fn who(&self, id: ConnId, out: &mut impl Outbox) {
        let room = match self.member(id).and_then(|m| m.room) {
            Some((room, _)) => Some(room),
            None => self.room_index.get(LOBBY).copied(),
        };
        let Some(room) = room else {
            return out.send(id, Event::Server(&format!("{LOBBY} (0):")));
        };
        let room = &self.rooms[room];
        let mut names: Vec<&str> = room.members.iter().filter_map(|&m| self.name(m)).collect();
        names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        let mut line = format!("{} ({}):", room.name, names.len());
        for name in names.iter().take(LIST_LIMIT) {
            line.push(' ');
            line.push_str(name);
        }
        if names.len() > LIST_LIMIT {
            line.push_str(&format!(" …and {} more", names.len() - LIST_LIMIT));
        }
        out.send(id, Event::Server(&line));
    }

    fn list_rooms(&self, id: ConnId, out: &mut impl Outbox) {
        let mut rooms: Vec<&Room> = self.rooms.iter().map(|(_, r)| r).collect();
        rooms.sort_unstable_by_key(|r| r.name.to_ascii_lowercase());
        let mut line = format!("rooms ({}):", rooms.len());
        for room in rooms.iter().take(LIST_LIMIT) {
            line.push_str(&format!(" {} ({})", room.name, room.members.len()));
        }
        if rooms.len() > LIST_LIMIT {
            line.push_str(&format!(" …and {} more", rooms.len() - LIST_LIMIT));
        }
        out.send(id, Event::Server(&line));
    }

    /// Gives a nameless connection a guest name and puts it in the lobby, so its first
    /// chat line has a sender.
    fn ensure_member(&mut self, id: ConnId, out: &mut impl Outbox) {
        if self.name(id).is_none() {
            let guest = self.take_guest_name(id);
            self.enter(id, LOBBY, &guest, out);
        }
    }

    /// Picks the next free `guestN`, records it as `id`'s name and returns it.
    fn take_guest_name(&mut self, id: ConnId) -> Box<str> {
        loop {
            let guest = format!("guest{}", self.next_guest);
            self.next_guest += 1;
            if !self.names.contains_key(guest.as_str()) {
                let guest: Box<str> = guest.into();
                self.names.insert(guest.clone(), id);
                if let Some(m) = self.member_mut(id) {
                    m.name = Some(guest.clone());
                }
                return guest;
            }
        }
    }

    /// First entry into a room for a connection that just got its name.
    fn enter(&mut self, id: ConnId, room: &str, name: &str, out: &mut impl Outbox) {
        let room = self.enter_room(id, room, name, out);
        let msg = format!("you are {name} in {}", self.rooms[room].name);
        out.send(id, Event::Server(&msg));
    }

    fn announces(&self, room: usize) -> bool {
        self.rooms[room].members.len() <= self.announce_limit
    }

    /// Adds `id` to `room` (creating it) and tells the other members.
    fn enter_room(&mut self, id: ConnId, room: &str, name: &str, out: &mut impl Outbox) -> usize {
        let key = room.to_ascii_lowercase();
        let room = match self.room_index.get(key.as_str()) {
            Some(&r) => r,
            None => {
                let r = self.rooms.insert(Room {
                    name: room.into(),
                    members: Vec::new(),
                });
                self.room_index.insert(key.into(), r);
                r
            }
        };
        let members = &mut self.rooms[room].members;
        members.push(id);
        let pos = members.len() - 1;
        if let Some(m) = self.member_mut(id) {
            m.room = Some((room, pos));
        }
        if self.announces(room) {
            out.broadcast(&self.rooms[room].members, Some(id), Event::Join(name));
        }
        room
    }

    /// Takes `id` out of `room` (it sits at `pos`), tells the rest, drops an empty room.
    fn leave_room(
        &mut self,
        id: ConnId,
        room: usize,
        pos: usize,
        name: &str,
        announce: bool,
        out: &mut impl Outbox,
    ) {
        let announce = announce && self.announces(room);
        let members = &mut self.rooms[room].members;
        members.swap_remove(pos);
        if let Some(&moved) = members.get(pos)
            && let Some(Some(m)) = self.members.get_mut(moved)
        {
            m.room = Some((room, pos));
        }
        if let Some(Some(m)) = self.members.get_mut(id) {
            m.room = None;
        }
        if self.rooms[room].members.is_empty() {
            let gone = self.rooms.remove(room);
            self.room_index
                .remove(gone.name.to_ascii_lowercase().as_str());
        } else if announce {
            out.broadcast(&self.rooms[room].members, None, Event::Leave(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records deliveries as `to <- FRAME` strings.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Outbox for Recorder {
        fn send(&mut self, to: ConnId, event: Event<'_>) {
            let mut buf = Vec::new();
            event.encode(crate::codec::Dialect::Frames, &mut buf);
            self.0.push(format!(
                "{to} <- {}",
                String::from_utf8_lossy(&buf).trim_end()
            ));
        }
        fn broadcast(&mut self, members: &[ConnId], except: Option<ConnId>, event: Event<'_>) {
            for &m in members {
                if Some(m) != except {
                    self.send(m, event);
                }
            }
        }
    }

    fn hub_with(n: usize) -> Hub {
        let mut hub = Hub::new(1000);
        for id in 0..n {
            hub.add(id);
        }
        hub
    }

    fn run(hub: &mut Hub, id: ConnId, cmd: Command<'_>) -> Vec<String> {
        let mut out = Recorder::default();
        hub.apply(id, cmd, &mut out);
        out.0
    }

    #[test]
    fn first_name_joins_lobby_and_is_announced() {
        let mut hub = hub_with(2);
        run(&mut hub, 0, Command::Nick("alice"));
        assert_eq!(
            run(&mut hub, 1, Command::Nick("bob")),
            ["0 <- JOIN:bob", "1 <- SERVER:you are bob in #lobby"]
        );
    }

    #[test]
    fn names_are_unique_without_regard_to_case() {
        let mut hub = hub_with(2);
        run(&mut hub, 0, Command::Nick("alice"));
        assert_eq!(
            run(&mut hub, 1, Command::Nick("ALICE")),
            ["1 <- ERROR:name ALICE is taken"]
        );
        assert_eq!(
            run(&mut hub, 0, Command::Nick("Alice")),
            ["0 <- SERVER:alice is now known as Alice"]
        );
    }

    #[test]
    fn say_goes_to_others_in_the_room_under_the_real_name() {
        let mut hub = hub_with(3);
        for (id, n) in [(0, "a"), (1, "b"), (2, "c")] {
            run(&mut hub, id, Command::Nick(n));
        }
        assert_eq!(
            run(&mut hub, 1, Command::Say("hi")),
            ["0 <- SAY:b:hi", "2 <- SAY:b:hi"]
        );
    }

    #[test]
    fn chatting_without_a_name_gives_a_guest_name() {
        let mut hub = hub_with(2);
        run(&mut hub, 0, Command::Nick("alice"));
        assert_eq!(
            run(&mut hub, 1, Command::Say("hi")),
            [
                "0 <- JOIN:guest1",
                "1 <- SERVER:you are guest1 in #lobby",
                "0 <- SAY:guest1:hi"
            ]
        );
    }

    #[test]
    fn leaving_keeps_member_positions_consistent() {
        let mut hub = hub_with(4);
        for (id, n) in [(0, "a"), (1, "b"), (2, "c"), (3, "d")] {
            run(&mut hub, id, Command::Nick(n));
        }
        let mut out = Recorder::default();
        hub.remove(0, true, &mut out);
        hub.remove(2, true, &mut out);
        let mut members = hub.room_members("#LOBBY").to_vec();
        members.sort();
        assert_eq!(members, [1, 3]);
        assert_eq!(run(&mut hub, 3, Command::Say("x")), ["1 <- SAY:d:x"]);
        hub.remove(1, true, &mut out);
        hub.remove(3, true, &mut out);
        assert_eq!(hub.room_count(), 0);
        assert_eq!(hub.named(), 0);
    }

    #[test]
    fn big_rooms_do_not_announce_presence() {
        let mut hub = Hub::new(2);
        for id in 0..4 {
            hub.add(id);
        }
        run(&mut hub, 0, Command::Nick("a"));
        assert_eq!(
            run(&mut hub, 1, Command::Nick("b")),
            ["0 <- JOIN:b", "1 <- SERVER:you are b in #lobby"]
        );
        assert_eq!(
            run(&mut hub, 2, Command::Nick("c")),
            ["2 <- SERVER:you are c in #lobby"]
        );
    }
}
