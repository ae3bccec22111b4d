//! Chat state: who is connected under which name, which rooms exist and who is in them.
//!
//! The hub applies one parsed [`Command`] from one connection and says who must be told
//! what through an [`Outbox`]; it never sees sockets, buffers or dialects. Names and
//! rooms are unique without regard to ASCII case. A room's member list is a `Vec` with
//! each member's index kept beside it, so joining and leaving are O(1) and a broadcast
//! is one pass over a slice.
//!
//! Its unit tests, one per edge case, sit at the end of this file beside the code they
//! pin down; they are why the file runs past 600 lines.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

use slab::Slab;

use crate::codec::{Command, Event, MAX_NAME, valid_name, valid_room};
use crate::notice::Notice;

/// A connection's identity: its slab key (also its poll token) and a generation that
/// tells apart the connections that used the same key one after another. Anything that
/// answers later — a timer, another thread — carries the whole id, so an answer for a
/// connection that has gone is dropped instead of reaching the newcomer in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The slab key.
    pub key: u32,
    /// Which use of that key.
    pub generation: u32,
}

impl ConnId {
    /// The slab key as an index.
    pub fn index(self) -> usize {
        self.key as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.key)
    }
}

/// The room every named connection starts in.
pub const LOBBY: &str = "#lobby";

/// Most names (or rooms) listed in one `WHO:` (or `ROOMS:`) answer.
const LIST_LIMIT: usize = 100;

/// A room as the audience of a broadcast: its name (so storage and a backplane can see
/// "SAY in #rust") and its members (so local fan-out stays one pass over a slice).
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    /// The room's name as created, with its `#`.
    pub room: &'a str,
    /// The members, in no particular order.
    pub members: &'a [ConnId],
}

/// A private message was not delivered: the recipient is receiving too fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Where the hub's output goes. The server implements it by encoding each event once
/// per dialect and appending the bytes to the recipients' output queues.
pub trait Outbox {
    /// Tells one connection.
    fn send(&mut self, to: ConnId, event: Event<'_>);

    /// Tells every member of a room except `except`.
    fn to_room(&mut self, room: Audience<'_>, except: Option<ConnId>, event: Event<'_>);

    /// Sends one connection a reply from [`Notice`].
    fn notice(&mut self, to: ConnId, notice: Notice<'_>) {
        let text = notice.to_string();
        self.send(to, notice.event(&text));
    }

    /// Delivers a private message, unless the recipient is over its inbound limit.
    fn private(&mut self, to: ConnId, event: Event<'_>) -> Result<(), Busy> {
        self.send(to, event);
        Ok(())
    }

    /// `id` has entered `room` (a first name or a move) and been told so: the place to
    /// replay the room's history to it.
    fn entered(&mut self, id: ConnId, room: &str) {
        let _ = (id, room);
    }

    /// `id` asks for the last `n` messages of `room`, strictly before `before`.
    fn history(&mut self, id: ConnId, room: &str, n: usize, before: Option<i64>) {
        let _ = (id, room, n, before);
    }

    /// The last member left `room` and it no longer exists.
    fn room_closed(&mut self, room: &str) {
        let _ = room;
    }

    /// `name` entered `room` (before the room is told), for a cluster's presence. A
    /// rename is `joined` with the new name, then `left` with the old one (only
    /// `joined` when just the case changes).
    fn joined(&mut self, room: &str, name: &str) {
        let _ = (room, name);
    }

    /// `name` left `room` (or is known there by another name now).
    fn left(&mut self, room: &str, name: &str) {
        let _ = (room, name);
    }

    /// `id` now holds `name` (chosen, a guest's, or an account's).
    fn name_taken(&mut self, id: ConnId, name: &str) {
        let _ = (id, name);
    }

    /// Nobody here holds `name` any more.
    fn name_freed(&mut self, name: &str) {
        let _ = name;
    }

    /// A private message for a name nobody here holds: true if it was passed on to
    /// another server (which answers if it cannot deliver), false for "no such user".
    fn elsewhere(&mut self, from_id: ConnId, from: &str, to: &str, text: &str) -> bool {
        let _ = (from_id, from, to, text);
        false
    }
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
#[derive(Debug)]
struct Member {
    /// The whole id, so a stale id for the same slot is told apart.
    id: ConnId,
    /// Chosen or guest name; `None` until the connection becomes a member.
    name: Option<Box<str>>,
    /// The room and this member's index in its member list.
    room: Option<(usize, usize)>,
    /// Logged in to the account of its current name.
    account: bool,
    /// Logged in as an operator (`--admin`).
    admin: bool,
}

#[derive(Debug)]
struct Room {
    name: Box<str>,
    members: Vec<ConnId>,
}

impl Room {
    fn audience(&self) -> Audience<'_> {
        Audience {
            room: &self.name,
            members: &self.members,
        }
    }
}

/// Names, rooms and membership.
#[derive(Debug)]
pub struct Hub {
    /// Indexed by [`ConnId::key`]; slab keys are dense, so this stays compact.
    members: Vec<Option<Member>>,
    /// Lower-cased name → connection.
    names: HashMap<Box<str>, ConnId>,
    /// Lower-cased names that belong to accounts: only their owner may take them.
    reserved: HashSet<Box<str>>,
    rooms: Slab<Room>,
    /// Lower-cased room name → key in `rooms`.
    room_index: HashMap<Box<str>, usize>,
    next_guest: u64,
    /// The end of the block `next_guest` is taken from (a cluster hands out blocks so
    /// guest names are unique across servers); unbounded on a lone server.
    guest_end: u64,
    /// Rooms with more members than this send no join/leave notices.
    announce_limit: usize,
}

/// Lower-cases a name into `buf` without allocating; `None` if it cannot be a name.
fn fold<'b>(name: &str, buf: &'b mut [u8; MAX_NAME + 2]) -> Option<&'b str> {
    let bytes = name.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// Orders names as `WHO:` lists them: without regard to ASCII case, without allocating.
fn by_folded_name(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|b| b.to_ascii_lowercase())
        .cmp(b.bytes().map(|b| b.to_ascii_lowercase()))
}

/// The text of a `WHO:` answer: `#room (N): a b c`, the first 100 names in
/// case-insensitive order (found by selection), then how many more. A cluster answers
/// with every server's names through the same function.
pub fn who_line(room: &str, mut names: Vec<&str>) -> String {
    sort_prefix(&mut names, LIST_LIMIT, |a, b| by_folded_name(a, b));
    let mut line = format!("{room} ({}):", names.len());
    for name in names.iter().take(LIST_LIMIT) {
        line.push(' ');
        line.push_str(name);
    }
    if names.len() > LIST_LIMIT {
        line.push_str(&format!(" …and {} more", names.len() - LIST_LIMIT));
    }
    line
}

/// The text of a `ROOMS:` answer from `(room, members)` pairs: the first 100 rooms by
/// name, then how many more.
pub fn rooms_line(mut rooms: Vec<(&str, usize)>) -> String {
    sort_prefix(&mut rooms, LIST_LIMIT, |a, b| by_folded_name(a.0, b.0));
    let mut line = format!("rooms ({}):", rooms.len());
    for (room, members) in rooms.iter().take(LIST_LIMIT) {
        line.push_str(&format!(" {room} ({members})"));
    }
    if rooms.len() > LIST_LIMIT {
        line.push_str(&format!(" …and {} more", rooms.len() - LIST_LIMIT));
    }
    line
}

/// Sorts the first `limit` items of `items` by `cmp` and leaves the rest unordered
/// after them: a selection in O(n) plus a sort of what is shown, instead of sorting
/// all of a room of thousands for a list of a hundred.
fn sort_prefix<T>(items: &mut [T], limit: usize, cmp: impl Fn(&T, &T) -> Ordering) {
    if items.len() > limit && limit > 0 {
        items.select_nth_unstable_by(limit - 1, &cmp);
    }
    let shown = items.len().min(limit);
    items[..shown].sort_unstable_by(&cmp);
}

impl Hub {
    /// An empty hub.
    pub fn new(announce_limit: usize) -> Hub {
        Hub {
            members: Vec::new(),
            names: HashMap::new(),
            reserved: HashSet::new(),
            rooms: Slab::new(),
            room_index: HashMap::new(),
            next_guest: 1,
            guest_end: u64::MAX,
            announce_limit,
        }
    }

    /// Registers a new connection (not yet a member of any room).
    pub fn add(&mut self, id: ConnId) {
        let i = id.index();
        if self.members.len() <= i {
            self.members.resize_with(i + 1, || None);
        }
        self.members[i] = Some(Member {
            id,
            name: None,
            room: None,
            account: false,
            admin: false,
        });
    }

    /// Forgets a connection; its room hears `LEAVE:` when `announce` is set (the server
    /// clears it at shutdown, when nobody needs to hear it). Safe to call twice, and a
    /// no-op for an id whose slot now belongs to another connection.
    pub fn remove(&mut self, id: ConnId, announce: bool, out: &mut impl Outbox) {
        if self.member(id).is_none() {
            return;
        }
        let Some(member) = self.members.get_mut(id.index()).and_then(Option::take) else {
            return;
        };
        if let Some(name) = &member.name {
            let mut buf = [0; MAX_NAME + 2];
            if let Some(key) = fold(name, &mut buf) {
                self.names.remove(key);
            }
            if let Some((room, pos)) = member.room {
                self.leave_room(id, room, pos, name, announce, out);
            }
            out.name_freed(name);
        }
    }

    /// The connection's name, if it has one.
    pub fn name(&self, id: ConnId) -> Option<&str> {
        self.member(id)?.name.as_deref()
    }

    /// Reserves `name` for its account: from now on only a connection logged in to it
    /// may take it.
    pub fn reserve(&mut self, name: &str) {
        let mut buf = [0; MAX_NAME + 2];
        if let Some(key) = fold(name, &mut buf) {
            self.reserved.insert(key.into());
        }
    }

    /// Whether `name` (any case) belongs to an account.
    pub fn is_reserved(&self, name: &str) -> bool {
        let mut buf = [0; MAX_NAME + 2];
        fold(name, &mut buf).is_some_and(|k| self.reserved.contains(k))
    }

    /// The connection that holds `name` (any case), if any.
    pub fn owner(&self, name: &str) -> Option<ConnId> {
        let mut buf = [0; MAX_NAME + 2];
        fold(name, &mut buf).and_then(|k| self.names.get(k).copied())
    }

    /// Every named connection's name, with the room it is in (as created): what a
    /// cluster's backplane must hold for this server.
    pub fn presence(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.members.iter().flatten().filter_map(|m| {
            let room = m.room.map(|(room, _)| &*self.rooms[room].name);
            Some((m.name.as_deref()?, room))
        })
    }

    /// Whether `id` is logged in as an operator.
    pub fn is_admin(&self, id: ConnId) -> bool {
        self.member(id).is_some_and(|m| m.admin)
    }

    /// Rooms with more members than `limit` stop announcing joins and leaves (a
    /// reloaded `--announce-limit`).
    pub fn set_announce_limit(&mut self, limit: usize) {
        self.announce_limit = limit;
    }

    /// Decides again who of those logged in to an account is an operator (a reloaded
    /// `--admin` list): `is_admin` is asked by account name.
    pub fn set_admins(&mut self, is_admin: impl Fn(&str) -> bool) {
        for member in self.members.iter_mut().flatten() {
            if let (true, Some(name)) = (member.account, &member.name) {
                member.admin = is_admin(name);
            }
        }
    }

    /// Whether a room of this name (any case) exists.
    pub fn room_exists(&self, room: &str) -> bool {
        !self.room_members(room).is_empty()
    }

    /// Logs `id` in to the account `name` (the server has checked the password and
    /// freed the name if another connection held it): `SERVER:logged in as <name>`,
    /// then everything `JOIN:<name>` does.
    pub fn login(&mut self, id: ConnId, name: &str, admin: bool, out: &mut impl Outbox) {
        let Some(member) = self.member_mut(id) else {
            return;
        };
        member.account = true;
        member.admin = admin;
        out.notice(id, Notice::LoggedIn(name));
        self.nick(id, name, out);
    }

    /// Number of named connections.
    pub fn named(&self) -> usize {
        self.names.len()
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A room's name as created, found by any case; `None` if there is no such room.
    pub fn room_name(&self, room: &str) -> Option<&str> {
        let mut buf = [0; MAX_NAME + 2];
        fold(room, &mut buf)
            .and_then(|k| self.room_index.get(k))
            .map(|&r| &*self.rooms[r].name)
    }

    /// Members of a room, by name (any case); empty if there is no such room.
    pub fn room_members(&self, room: &str) -> &[ConnId] {
        let mut buf = [0; MAX_NAME + 2];
        fold(room, &mut buf)
            .and_then(|k| self.room_index.get(k))
            .map_or(&[], |&r| &self.rooms[r].members[..])
    }

    fn member(&self, id: ConnId) -> Option<&Member> {
        self.members
            .get(id.index())?
            .as_ref()
            .filter(|m| m.id == id)
    }

    fn member_mut(&mut self, id: ConnId) -> Option<&mut Member> {
        self.members
            .get_mut(id.index())?
            .as_mut()
            .filter(|m| m.id == id)
    }

    /// Applies one command from `id`.
    pub fn apply(&mut self, id: ConnId, cmd: Command<'_>, out: &mut impl Outbox) -> Next {
        if self.member(id).is_none() {
            return Next::Continue;
        }
        match cmd {
            Command::Nick(name) => self.nick(id, name, out),
            // A key has been checked by the server before the command gets here.
            Command::Join { room, .. } => self.join(id, room, out),
            // Accounts, the server password and operators are the server's: they need
            // hashing off the loop, the abuse table and other connections.
            Command::Register { .. }
            | Command::Auth { .. }
            | Command::Pass(_)
            | Command::Kick { .. }
            | Command::Ban { .. } => {}
            Command::Say(text) => self.say(id, text, out),
            Command::Msg { to, text } => self.msg(id, to, text, out),
            Command::Who => self.who(id, out),
            Command::Rooms => self.list_rooms(id, out),
            Command::History { n, before } => self.history(id, n, before, out),
            Command::Help => out.notice(id, Notice::Help),
            Command::Leave(_) => return Next::Leave,
        }
        Next::Continue
    }

    fn nick(&mut self, id: ConnId, name: &str, out: &mut impl Outbox) {
        if !valid_name(name) {
            return out.notice(id, Notice::InvalidName(name));
        }
        let mut buf = [0; MAX_NAME + 2];
        let Some(key) = fold(name, &mut buf) else {
            return;
        };
        if let Some(&owner) = self.names.get(key)
            && owner != id
        {
            return out.notice(id, Notice::NameTaken(name));
        }
        let reserved = self.reserved.contains(key);
        let Some(member) = self.member_mut(id) else {
            return;
        };
        let own_account = member.account
            && member
                .name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(name));
        if reserved && !own_account {
            return out.notice(id, Notice::NameRegistered(name));
        }
        if !own_account {
            // A move to another name leaves the account (and its rights) behind.
            member.account = false;
            member.admin = false;
        }
        match member.name.take() {
            None => {
                member.name = Some(name.into());
                self.names.insert(key.into(), id);
                out.name_taken(id, name);
                self.enter(id, LOBBY, name, out);
            }
            Some(old) if &*old == name => {
                member.name = Some(old);
                out.notice(id, Notice::AlreadyNamed(name));
            }
            Some(old) => {
                member.name = Some(name.into());
                let room = member.room;
                let mut old_buf = [0; MAX_NAME + 2];
                if let Some(old_key) = fold(&old, &mut old_buf) {
                    self.names.remove(old_key);
                }
                self.names.insert(key.into(), id);
                out.name_taken(id, name);
                if !old.eq_ignore_ascii_case(name) {
                    out.name_freed(&old);
                }
                let notice = Notice::Renamed {
                    old: &old,
                    new: name,
                };
                match room {
                    Some((room, _)) => {
                        // The new name is in the room before the old one leaves it (a
                        // new spelling of the same name replaces it): a cluster never
                        // sees the room empty here and never stops hearing it.
                        out.joined(&self.rooms[room].name, name);
                        if !old.eq_ignore_ascii_case(name) {
                            out.left(&self.rooms[room].name, &old);
                        }
                        let text = notice.to_string();
                        out.to_room(self.rooms[room].audience(), None, Event::Server(&text))
                    }
                    None => out.notice(id, notice),
                }
            }
        }
    }

    fn join(&mut self, id: ConnId, room: &str, out: &mut impl Outbox) {
        if !valid_room(room) {
            return out.notice(id, Notice::InvalidRoom(room));
        }
        let Some(name) = self.name(id).map(Box::<str>::from) else {
            let guest = self.take_guest_name(id, out);
            return self.enter(id, room, &guest, out);
        };
        let Some(member) = self.member_mut(id) else {
            return;
        };
        if let Some((current, pos)) = member.room {
            if self.rooms[current].name.eq_ignore_ascii_case(room) {
                return out.notice(id, Notice::AlreadyIn(&self.rooms[current].name));
            }
            self.leave_room(id, current, pos, &name, true, out);
        }
        let room = self.enter_room(id, room, &name, out);
        out.notice(id, Notice::NowIn(&self.rooms[room].name));
        out.entered(id, &self.rooms[room].name);
    }

    fn say(&mut self, id: ConnId, text: &str, out: &mut impl Outbox) {
        if text.is_empty() {
            return out.notice(id, Notice::EmptyMessage);
        }
        self.ensure_member(id, out);
        if let Some(Member {
            name: Some(from),
            room: Some((room, _)),
            ..
        }) = self.member(id)
        {
            out.to_room(
                self.rooms[*room].audience(),
                Some(id),
                Event::Say { from, text },
            );
        }
    }

    fn msg(&mut self, id: ConnId, to: &str, text: &str, out: &mut impl Outbox) {
        if text.is_empty() {
            return out.notice(id, Notice::EmptyMessage);
        }
        let mut buf = [0; MAX_NAME + 2];
        let Some(&target) = fold(to, &mut buf).and_then(|k| self.names.get(k)) else {
            if valid_name(to) {
                self.ensure_member(id, out);
                if let Some(from) = self.name(id)
                    && out.elsewhere(id, from, to, text)
                {
                    return;
                }
            }
            return out.notice(id, Notice::NoSuchUser(to));
        };
        self.ensure_member(id, out);
        if let Some(from) = self.name(id)
            && out.private(target, Event::Msg { from, text }).is_err()
        {
            out.notice(id, Notice::ReceivingTooFast(to));
        }
    }

    /// `WHO:`: the first 100 names of the room in case-insensitive order, found by
    /// selection, so the cost does not grow with a sort of the whole room.
    fn who(&self, id: ConnId, out: &mut impl Outbox) {
        let room = match self.member(id).and_then(|m| m.room) {
            Some((room, _)) => Some(room),
            None => self.room_index.get(LOBBY).copied(),
        };
        let Some(room) = room else {
            return out.send(id, Event::Server(&format!("{LOBBY} (0):")));
        };
        let room = &self.rooms[room];
        let names: Vec<&str> = room.members.iter().filter_map(|&m| self.name(m)).collect();
        out.send(id, Event::Server(&who_line(&room.name, names)));
    }

    /// `ROOMS:`: the first 100 rooms by name, found by selection.
    fn list_rooms(&self, id: ConnId, out: &mut impl Outbox) {
        let rooms: Vec<(&str, usize)> = self
            .rooms
            .iter()
            .map(|(_, r)| (&*r.name, r.members.len()))
            .collect();
        out.send(id, Event::Server(&rooms_line(rooms)));
    }

    /// `HISTORY:`: asks for the history of one's room (the lobby before one has a
    /// name, as `WHO:` does).
    fn history(&self, id: ConnId, n: usize, before: Option<i64>, out: &mut impl Outbox) {
        let room = match self.member(id).and_then(|m| m.room) {
            Some((room, _)) => &*self.rooms[room].name,
            None => LOBBY,
        };
        out.history(id, room, n, before);
    }

    /// Gives a nameless connection a guest name and puts it in the lobby, so its first
    /// chat line has a sender.
    fn ensure_member(&mut self, id: ConnId, out: &mut impl Outbox) {
        if self.name(id).is_none() {
            let guest = self.take_guest_name(id, out);
            self.enter(id, LOBBY, &guest, out);
        }
    }

    /// Picks the next free `guestN`, records it as `id`'s name and returns it.
    fn take_guest_name(&mut self, id: ConnId, out: &mut impl Outbox) -> Box<str> {
        let guest = self.next_guest_name();
        self.names.insert(guest.clone(), id);
        if let Some(m) = self.member_mut(id) {
            m.name = Some(guest.clone());
        }
        out.name_taken(id, &guest);
        guest
    }

    /// The next free `guestN`.
    fn next_guest_name(&mut self) -> Box<str> {
        loop {
            let guest = format!("guest{}", self.next_guest);
            self.next_guest += 1;
            if !self.names.contains_key(guest.as_str()) && !self.reserved.contains(guest.as_str()) {
                return guest.into();
            }
        }
    }

    /// Guest numbers are taken from `block` from now on (a cluster's share). A block
    /// that is not ahead of the one in use is ignored.
    pub fn set_guests(&mut self, block: std::ops::Range<u64>) {
        if block.start >= self.next_guest.min(self.guest_end) || self.guest_end == u64::MAX {
            self.next_guest = block.start;
            self.guest_end = block.end;
        }
    }

    /// Guest numbers left in the current block (after it, numbering goes on past it,
    /// unique on this server only, until a new block comes).
    pub fn guests_left(&self) -> u64 {
        self.guest_end.saturating_sub(self.next_guest)
    }

    /// `id` loses its name to another server: it becomes the next guest, and its room
    /// hears the rename like any other. Returns the new name.
    pub fn rename_to_guest(&mut self, id: ConnId, out: &mut impl Outbox) -> Option<Box<str>> {
        self.member(id)?.name.as_ref()?;
        let guest = self.next_guest_name();
        if let Some(m) = self.member_mut(id) {
            // The account (and its rights) stay with the name.
            m.account = false;
            m.admin = false;
        }
        self.nick(id, &guest, out);
        Some(guest)
    }

    /// The room `id` is in, or the lobby (as `WHO:` and `HISTORY:` see it).
    pub fn room_of(&self, id: ConnId) -> &str {
        match self.member(id).and_then(|m| m.room) {
            Some((room, _)) => &self.rooms[room].name,
            None => LOBBY,
        }
    }

    /// First entry into a room for a connection that just got its name.
    fn enter(&mut self, id: ConnId, room: &str, name: &str, out: &mut impl Outbox) {
        let room = self.enter_room(id, room, name, out);
        let room = &self.rooms[room].name;
        out.notice(id, Notice::YouAre { name, room });
        out.entered(id, room);
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
        out.joined(&self.rooms[room].name, name);
        if self.announces(room) {
            out.to_room(self.rooms[room].audience(), Some(id), Event::Join(name));
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
            && let Some(m) = self.member_mut(moved)
        {
            m.room = Some((room, pos));
        }
        if let Some(m) = self.member_mut(id) {
            m.room = None;
        }
        out.left(&self.rooms[room].name, name);
        // Told even when nobody here is left: members on other servers of a cluster
        // hear it through the outbox.
        if announce {
            out.to_room(self.rooms[room].audience(), None, Event::Leave(name));
        }
        if self.rooms[room].members.is_empty() {
            let gone = self.rooms.remove(room);
            self.room_index
                .remove(gone.name.to_ascii_lowercase().as_str());
            out.room_closed(&gone.name);
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
                "{} <- {}",
                to.key,
                String::from_utf8_lossy(&buf).trim_end()
            ));
        }
        fn to_room(&mut self, room: Audience<'_>, except: Option<ConnId>, event: Event<'_>) {
            for &m in room.members {
                if Some(m) != except {
                    self.send(m, event);
                }
            }
        }
    }

    fn id(key: u32) -> ConnId {
        ConnId { key, generation: 0 }
    }

    fn hub_with(n: u32) -> Hub {
        let mut hub = Hub::new(1000);
        for key in 0..n {
            hub.add(id(key));
        }
        hub
    }

    fn run(hub: &mut Hub, key: u32, cmd: Command<'_>) -> Vec<String> {
        let mut out = Recorder::default();
        hub.apply(id(key), cmd, &mut out);
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
        hub.remove(id(0), true, &mut out);
        hub.remove(id(2), true, &mut out);
        let mut members: Vec<u32> = hub.room_members("#LOBBY").iter().map(|m| m.key).collect();
        members.sort();
        assert_eq!(members, [1, 3]);
        assert_eq!(run(&mut hub, 3, Command::Say("x")), ["1 <- SAY:d:x"]);
        hub.remove(id(1), true, &mut out);
        hub.remove(id(3), true, &mut out);
        assert_eq!(hub.room_count(), 0);
        assert_eq!(hub.named(), 0);
    }

    #[test]
    fn big_rooms_do_not_announce_presence() {
        let mut hub = Hub::new(2);
        for key in 0..4 {
            hub.add(id(key));
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

    #[test]
    fn a_stale_id_for_a_reused_slot_is_ignored() {
        let mut hub = hub_with(2);
        run(&mut hub, 0, Command::Nick("alice"));
        run(&mut hub, 1, Command::Nick("bob"));
        let mut out = Recorder::default();
        hub.remove(id(1), true, &mut out);
        // Slot 1 is reused by a new connection.
        let newcomer = ConnId {
            key: 1,
            generation: 1,
        };
        hub.add(newcomer);
        assert_eq!(hub.name(id(1)), None, "the old id no longer names anyone");
        let mut out = Recorder::default();
        assert_eq!(
            hub.apply(id(1), Command::Say("late"), &mut out),
            Next::Continue
        );
        hub.remove(id(1), true, &mut out);
        assert!(
            out.0.is_empty(),
            "a stale id neither speaks nor leaves: {:?}",
            out.0
        );
        let mut out = Recorder::default();
        hub.apply(newcomer, Command::Nick("carol"), &mut out);
        assert_eq!(
            out.0,
            ["0 <- JOIN:carol", "1 <- SERVER:you are carol in #lobby"]
        );
    }

    #[test]
    fn who_lists_the_first_hundred_names_in_order() {
        let mut hub = hub_with(150);
        for key in (0..150).rev() {
            run(&mut hub, key, Command::Nick(&format!("N{key:03}")));
        }
        let out = run(&mut hub, 7, Command::Who);
        let line = out[0].strip_prefix("7 <- SERVER:#lobby (150): ").unwrap();
        let names: Vec<&str> = line.split(' ').take(100).collect();
        let expected: Vec<String> = (0..100).map(|k| format!("N{k:03}")).collect();
        assert_eq!(names, expected);
        assert!(line.ends_with(" …and 50 more"));
    }

    #[test]
    fn names_sort_without_regard_to_case() {
        let mut names = vec!["bob", "Alice", "carol", "ALAN"];
        sort_prefix(&mut names, 3, |a, b| by_folded_name(a, b));
        assert_eq!(&names[..3], ["ALAN", "Alice", "bob"]);
    }

    #[test]
    fn a_busy_recipient_turns_a_private_message_into_an_error_for_the_sender() {
        struct Full(Recorder);
        impl Outbox for Full {
            fn send(&mut self, to: ConnId, event: Event<'_>) {
                self.0.send(to, event)
            }
            fn to_room(&mut self, room: Audience<'_>, except: Option<ConnId>, event: Event<'_>) {
                self.0.to_room(room, except, event)
            }
            fn private(&mut self, _: ConnId, _: Event<'_>) -> Result<(), Busy> {
                Err(Busy)
            }
        }
        let mut hub = hub_with(2);
        run(&mut hub, 0, Command::Nick("alice"));
        run(&mut hub, 1, Command::Nick("bob"));
        let mut out = Full(Recorder::default());
        hub.apply(
            id(0),
            Command::Msg {
                to: "BOB",
                text: "hi",
            },
            &mut out,
        );
        assert_eq!(
            out.0.0,
            ["0 <- ERROR:BOB is receiving too fast, message dropped"]
        );
    }
}
