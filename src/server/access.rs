//! Access: accounts (`REGISTER:`, `AUTH:`), the server password (`PASS:`), room keys
//! (`JOIN:#room:<key>`) and operators (`KICK:`, `BAN:`).
//!
//! Passwords and keys are hashed and checked with Argon2id on the hasher's threads
//! ([`crate::auth::Hasher`]), never on the loop: the connection that asked waits (its
//! input is not read) while everyone else is served, and the answer comes back through
//! the inbox with a tag that names the connection by its full id, so an answer for a
//! connection that has gone is dropped. Accounts and room keys are read from the store
//! at start and kept in memory as PHC strings; new ones are written through the
//! store's queue. No password, key or hash is ever logged or sent.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use log::{debug, info, warn};

use super::Server;
use super::history::Delivery;
use crate::auth::{self, Answer, Hasher, Tag};
use crate::codec::{Command, Secret, valid_name, valid_room};
use crate::hub::{ConnId, Outbox};
use crate::net::IpKey;
use crate::notice::Notice;
use crate::store::{self, Secrets};

/// What a question to the hasher was for.
#[derive(Debug)]
enum Pending {
    /// A new account's password is being hashed.
    Register { id: ConnId, name: Box<str> },
    /// A login is being checked.
    Auth { id: ConnId, name: Box<str> },
    /// A new room's key is being hashed.
    NewKey { id: ConnId, room: Box<str> },
    /// A key for a room that has one is being checked.
    CheckKey { id: ConnId, room: Box<str> },
}

impl Pending {
    fn id(&self) -> ConnId {
        match self {
            Pending::Register { id, .. }
            | Pending::Auth { id, .. }
            | Pending::NewKey { id, .. }
            | Pending::CheckKey { id, .. } => *id,
        }
    }
}

/// Once the hasher's queue is half full, it is shared out in this many parts: one
/// address (or IPv6 /64) may then have at most one part of it waiting.
const HASHER_SHARES: usize = 8;

/// The state of access control.
pub(super) struct Access {
    hasher: Hasher,
    /// Folded name → (name as registered, PHC string).
    accounts: HashMap<Box<str>, (Box<str>, String)>,
    /// Folded room → PHC string of its key.
    room_keys: HashMap<Box<str>, String>,
    pending: HashMap<Tag, Pending>,
    /// The address each job in the hasher came from, until its answer: a job counts
    /// against its address even after the connection that asked has gone.
    asked_from: HashMap<Tag, IpKey>,
    next_tag: Tag,
    /// The server password, if one is set, and where it is read from.
    password: Option<Vec<u8>>,
    password_file: Option<PathBuf>,
    /// Folded names of operators.
    admins: HashSet<Box<str>>,
}

impl Access {
    /// Access with the accounts and room keys read from the store, the hasher's threads
    /// started, and the server password read from its file (an error if it cannot be).
    pub(super) fn new(
        hasher: Hasher,
        secrets: Secrets,
        password_file: Option<PathBuf>,
        admins: &[String],
    ) -> Result<Access, String> {
        let password = match &password_file {
            Some(path) => Some(auth::read_password_file(path)?),
            None => None,
        };
        Ok(Access {
            hasher,
            accounts: secrets
                .accounts
                .into_iter()
                .map(|(name, phc)| (fold(&name), (name.into(), phc)))
                .collect(),
            room_keys: secrets
                .room_keys
                .into_iter()
                .map(|(room, phc)| (fold(&room), phc))
                .collect(),
            pending: HashMap::new(),
            asked_from: HashMap::new(),
            next_tag: 1,
            password,
            password_file,
            admins: admins.iter().map(|a| fold(a)).collect(),
        })
    }

    /// An account registered on another server of the cluster; false if it was known.
    pub(super) fn add_account(&mut self, name: &str, phc: String) -> bool {
        match self.accounts.entry(fold(name)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((name.into(), phc));
                true
            }
        }
    }

    /// A room key made on another server of the cluster (a known one is kept).
    pub(super) fn add_room_key(&mut self, room: &str, phc: String) {
        self.room_keys.entry(fold(room)).or_insert(phc);
    }

    /// The names of every account, to reserve in the hub.
    pub(super) fn account_names(&self) -> impl Iterator<Item = &str> {
        self.accounts.values().map(|(name, _)| &**name)
    }

    /// Whether connections must give a server password first.
    pub(super) fn needs_password(&self) -> bool {
        self.password.is_some()
    }

    /// Re-reads the server password file (SIGHUP); a file that cannot be read leaves
    /// the old password.
    pub(super) fn reload(&mut self) {
        let Some(path) = &self.password_file else {
            return;
        };
        match auth::read_password_file(path) {
            Ok(password) => {
                self.password = Some(password);
                info!("reload: server password read from {}", path.display());
            }
            Err(e) => warn!("reload: {e}; keeping the server password in use"),
        }
    }

    /// Takes on a reloaded list of operators (for the next login; the server tells the
    /// hub about those logged in).
    pub(super) fn set_admins(&mut self, admins: &[String]) {
        self.admins = admins.iter().map(|a| fold(a)).collect();
    }

    /// Whether the account `name` is an operator.
    pub(super) fn is_admin(&self, name: &str) -> bool {
        self.admins.contains(&fold(name))
    }

    /// Takes on a reloaded password file, read at the next [`Access::reload`]. Without
    /// one, connections need no password from now on.
    pub(super) fn set_password_file(&mut self, path: Option<PathBuf>) {
        if path.is_none() {
            self.password = None;
        }
        self.password_file = path;
    }

    /// Stops the hasher's threads (at exit).
    pub(super) fn stop(self) {
        self.hasher.stop();
    }

    fn tag(&mut self, pending: Pending) -> Tag {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending.insert(tag, pending);
        tag
    }
}

/// ASCII lower case, as names and rooms compare.
fn fold(name: &str) -> Box<str> {
    name.to_ascii_lowercase().into()
}

impl Server {
    /// Handles what access control owns, before the hub sees a command. Returns true
    /// if the command was taken here.
    pub(super) fn gate(&mut self, id: ConnId, cmd: &Command<'_>, now: Instant) -> bool {
        let Some(conn) = self.conns.get(id) else {
            return true;
        };
        if !conn.has_passed() && self.access.needs_password() {
            match cmd {
                Command::Pass(password) => self.check_server_password(id, *password, now),
                Command::Leave(_) => return false,
                _ => self.conns.notice(id, Notice::PasswordRequired),
            }
            return true;
        }
        match *cmd {
            Command::Pass(_) => self.conns.notice(id, Notice::PasswordAccepted),
            Command::Register { name, password } => self.register(id, name, password),
            Command::Auth { name, password } => self.authenticate(id, name, password),
            Command::Kick { name, reason } => self.kick(id, name, reason, now),
            Command::Ban { name, duration } => self.ban_by_operator(id, name, duration, now),
            Command::Join { room, key } if valid_room(room) => return self.keyed(id, room, key),
            _ => return false,
        }
        true
    }

    fn check_server_password(&mut self, id: ConnId, given: Secret<'_>, now: Instant) {
        let right = self
            .access
            .password
            .as_deref()
            .is_some_and(|p| auth::ct_eq(p, given.0.as_bytes()));
        if right {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.pass();
            }
            return self.conns.notice(id, Notice::PasswordAccepted);
        }
        debug!("{id} gave a wrong server password");
        let ip = self.conns.get(id).map(|c| c.peer().ip());
        self.last_words(id, Notice::WrongServerPassword, now);
        if let Some(ip) = ip
            && let Some(ban) = self.abuse.strike(ip, now)
        {
            self.ban(IpKey::of(ip), ban, now);
        }
    }

    /// Whether `id`'s address (an IPv6 /64 counts as one) already has its share of the
    /// hasher's queue waiting while the queue is at least half full: a few addresses
    /// must not fill it and leave everyone else `ERROR:server busy`, yet a crowd behind
    /// one NAT logging in at a quiet moment is served. Exempt addresses have no share.
    fn over_hasher_share(&self, id: ConnId) -> bool {
        let capacity = self.access.hasher.capacity();
        if self.access.asked_from.len() < capacity / 2 {
            return false;
        }
        let Some(ip) = self.conns.get(id).map(|c| c.peer().ip()) else {
            return false;
        };
        if self.abuse.is_exempt(ip) {
            return false;
        }
        let key = IpKey::of(ip);
        let share = (capacity / HASHER_SHARES).max(1);
        // At most the queue's capacity plus the workers' jobs are pending: a short scan.
        let held = self
            .access
            .asked_from
            .values()
            .filter(|&&k| k == key)
            .count();
        held >= share
    }

    fn register(&mut self, id: ConnId, name: &str, password: Secret<'_>) {
        if !valid_name(name) {
            return self.conns.notice(id, Notice::InvalidName(name));
        }
        if !(auth::MIN_PASSWORD..=auth::MAX_PASSWORD).contains(&password.0.len()) {
            return self.conns.notice(id, Notice::PasswordLength);
        }
        if self.access.accounts.contains_key(&fold(name)) {
            return self.conns.notice(id, Notice::NameRegistered(name));
        }
        if self.hub.owner(name).is_some_and(|owner| owner != id) {
            return self.conns.notice(id, Notice::NameTaken(name));
        }
        if self.over_hasher_share(id) {
            return self.conns.notice(id, Notice::Busy);
        }
        let tag = self.access.tag(Pending::Register {
            id,
            name: name.into(),
        });
        let sent = self.access.hasher.hash(tag, password.0);
        self.wait_for(id, tag, sent.is_ok());
    }

    fn authenticate(&mut self, id: ConnId, name: &str, password: Secret<'_>) {
        if self.over_hasher_share(id) {
            return self.conns.notice(id, Notice::Busy);
        }
        // An unknown name is checked against a dummy hash: the same work, the same
        // answer, so timing does not tell which names have accounts.
        let phc = self
            .access
            .accounts
            .get(&fold(name))
            .map(|(_, phc)| phc.clone());
        let tag = self.access.tag(Pending::Auth {
            id,
            name: name.into(),
        });
        let sent = self.access.hasher.verify(tag, password.0, phc.as_deref());
        self.wait_for(id, tag, sent.is_ok());
    }

    /// A `JOIN:#room` with or without a key, where keys matter: the room has one, or a
    /// key is given for a room that does not exist yet. Returns false to let the hub
    /// handle a plain join.
    fn keyed(&mut self, id: ConnId, room: &str, key: Option<Secret<'_>>) -> bool {
        let stored = self.access.room_keys.get(&fold(room)).cloned();
        match (stored, key) {
            (None, None) => false,
            // A key for a room that exists without one changes nothing.
            (None, Some(_)) if self.hub.room_exists(room) => false,
            (_, Some(_)) if self.over_hasher_share(id) => {
                self.conns.notice(id, Notice::Busy);
                true
            }
            (None, Some(key)) => {
                let tag = self.access.tag(Pending::NewKey {
                    id,
                    room: room.into(),
                });
                let sent = self.access.hasher.hash(tag, key.0);
                self.wait_for(id, tag, sent.is_ok());
                true
            }
            (Some(_), None) => {
                self.conns.notice(id, Notice::NeedsKey(room));
                true
            }
            (Some(phc), Some(key)) => {
                let tag = self.access.tag(Pending::CheckKey {
                    id,
                    room: room.into(),
                });
                let sent = self.access.hasher.verify(tag, key.0, Some(&phc));
                self.wait_for(id, tag, sent.is_ok());
                true
            }
        }
    }

    /// After a question went to the hasher: the connection waits for the answer, or,
    /// if the hasher is at capacity, is told to try again.
    fn wait_for(&mut self, id: ConnId, tag: Tag, sent: bool) {
        if sent {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.set_waiting(true);
                self.access
                    .asked_from
                    .insert(tag, IpKey::of(conn.peer().ip()));
            }
        } else {
            self.access.pending.remove(&tag);
            self.conns.notice(id, Notice::Busy);
        }
    }

    /// The hasher answered.
    pub(super) fn on_auth_answer(&mut self, answer: Answer, now: Instant) {
        self.access.asked_from.remove(&answer.tag());
        let Some(pending) = self.access.pending.remove(&answer.tag()) else {
            return;
        };
        let id = pending.id();
        // The connection may have gone; its slot may even hold another one now.
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.set_waiting(false);
        let ip = conn.peer().ip();
        match (pending, answer) {
            (Pending::Register { name, .. }, Answer::Hashed { phc, .. }) => {
                self.finish_register(id, &name, phc, now)
            }
            (Pending::Auth { name, .. }, Answer::Verified { ok: true, .. }) => {
                let name = self
                    .access
                    .accounts
                    .get(&fold(&name))
                    .map_or(name, |(registered, _)| registered.clone());
                self.log_in(id, &name, now);
            }
            (Pending::Auth { .. }, Answer::Verified { ok: false, .. }) => {
                self.conns.notice(id, Notice::WrongLogin);
                if let Some(ban) = self.abuse.strike(ip, now) {
                    self.ban(IpKey::of(ip), ban, now);
                }
            }
            (Pending::NewKey { room, .. }, Answer::Hashed { phc, .. }) => {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    self.access.room_keys.entry(fold(&room))
                {
                    slot.insert(phc.clone());
                    self.cluster.tell_all(crate::cluster::Frame::RoomKey {
                        room: room.to_string(),
                        phc: phc.clone(),
                    });
                    let secret = store::Secret::RoomKey {
                        room: room.to_string(),
                        phc,
                    };
                    if !self.history.store().put_secret(secret) {
                        warn!("store queue full: the key of {room:?} is kept in memory only");
                    }
                }
                self.join_room(id, &room);
            }
            (Pending::CheckKey { room, .. }, Answer::Verified { ok, .. }) => {
                if ok {
                    self.join_room(id, &room);
                } else {
                    self.conns.notice(id, Notice::WrongKey(&room));
                    if let Some(ban) = self.abuse.strike(ip, now) {
                        self.ban(IpKey::of(ip), ban, now);
                    }
                }
            }
            (_, _) => self.conns.notice(id, Notice::Busy),
        }
        // Input read while it waited (and what the socket holds) is served next turn.
        self.conns.schedule_read(id);
        self.conns.schedule_flush(id);
        self.arm_replay_timers(now);
    }

    fn finish_register(&mut self, id: ConnId, name: &str, phc: String, now: Instant) {
        if self.register_refused(id, name) {
            return;
        }
        // In a cluster the name is claimed first; the rest follows the answer.
        let own = self.hub.owner(name) == Some(id);
        if own || !self.cluster_claim_account(id, name, Some(phc.clone()), now) {
            self.finish_register_now(id, name, phc);
        }
    }

    /// Whether a registration must stop: someone registered or took the name while
    /// this one was hashed (then it has been told).
    fn register_refused(&mut self, id: ConnId, name: &str) -> bool {
        if self.access.accounts.contains_key(&fold(name)) {
            self.conns.notice(id, Notice::NameRegistered(name));
            return true;
        }
        if self.hub.owner(name).is_some_and(|owner| owner != id) {
            self.conns.notice(id, Notice::NameTaken(name));
            return true;
        }
        false
    }

    /// Registers the account `name` and logs `id` in to it.
    pub(super) fn finish_register_now(&mut self, id: ConnId, name: &str, phc: String) {
        if self.register_refused(id, name) {
            return;
        }
        let key = fold(name);
        self.access.accounts.insert(key, (name.into(), phc.clone()));
        self.cluster.tell_all(crate::cluster::Frame::Account {
            name: name.into(),
            phc: phc.clone(),
        });
        let secret = store::Secret::Account {
            name: name.to_string(),
            phc,
        };
        if !self.history.store().put_secret(secret) {
            warn!("store queue full: the account {name:?} is kept in memory only");
        }
        self.hub.reserve(name);
        info!("account {name:?} registered");
        let admin = self.access.is_admin(name);
        let mut out = Delivery::new(
            &mut self.conns,
            &mut self.history,
            &mut self.asked,
            &mut self.cluster,
        );
        self.hub.login(id, name, admin, &mut out);
    }

    /// Logs `id` in to `name`; a connection that holds the name is closed first (in a
    /// cluster, on whichever server it is: the name is claimed first).
    fn log_in(&mut self, id: ConnId, name: &str, now: Instant) {
        let own = self.hub.owner(name) == Some(id);
        if own || !self.cluster_claim_account(id, name, None, now) {
            self.log_in_now(id, name, now);
        }
    }

    /// Logs `id` in to `name` on this server.
    pub(super) fn log_in_now(&mut self, id: ConnId, name: &str, now: Instant) {
        if let Some(other) = self.hub.owner(name)
            && other != id
        {
            self.last_words(other, Notice::LoggedInElsewhere, now);
            let mut out = Delivery::new(
                &mut self.conns,
                &mut self.history,
                &mut self.asked,
                &mut self.cluster,
            );
            self.hub.remove(other, true, &mut out);
        }
        debug!("{id} logged in as {name:?}");
        let admin = self.access.is_admin(name);
        let mut out = Delivery::new(
            &mut self.conns,
            &mut self.history,
            &mut self.asked,
            &mut self.cluster,
        );
        self.hub.login(id, name, admin, &mut out);
    }

    fn join_room(&mut self, id: ConnId, room: &str) {
        let mut out = Delivery::new(
            &mut self.conns,
            &mut self.history,
            &mut self.asked,
            &mut self.cluster,
        );
        self.hub
            .apply(id, Command::Join { room, key: None }, &mut out);
    }

    /// The operator's target: `Err` with the refusal to send, or the connection.
    fn target(&self, id: ConnId, name: &str) -> Result<ConnId, Notice<'static>> {
        if !self.hub.is_admin(id) {
            return Err(Notice::NotAllowed);
        }
        match self.hub.owner(name) {
            Some(target) if self.hub.is_admin(target) => Err(Notice::NotAllowed),
            Some(target) => Ok(target),
            None => Err(Notice::NotAllowed),
        }
    }

    fn kick(&mut self, id: ConnId, name: &str, reason: &str, now: Instant) {
        let target = match self.target(id, name) {
            Ok(target) => target,
            Err(Notice::NotAllowed) if self.hub.is_admin(id) && self.hub.owner(name).is_none() => {
                return self.conns.notice(id, Notice::NoSuchUser(name));
            }
            Err(refusal) => return self.conns.notice(id, refusal),
        };
        let by = self.hub.name(id).unwrap_or_default().to_string();
        info!("{by:?} kicked {name:?}: {reason:?}");
        self.last_words(target, Notice::Kicked { by: &by, reason }, now);
    }

    fn ban_by_operator(&mut self, id: ConnId, name: &str, duration: &str, now: Instant) {
        let target = match self.target(id, name) {
            Ok(target) => target,
            Err(Notice::NotAllowed) if self.hub.is_admin(id) && self.hub.owner(name).is_none() => {
                return self.conns.notice(id, Notice::NoSuchUser(name));
            }
            Err(refusal) => return self.conns.notice(id, refusal),
        };
        let Ok(duration) = crate::config::parse_duration(duration) else {
            let usage = crate::codec::ParseError::Usage("BAN:<name>:<duration>, e.g. BAN:bob:10m");
            return self.conns.notice(id, Notice::Parse(usage));
        };
        let Some(ip) = self.conns.get(target).map(|c| c.peer().ip()) else {
            return;
        };
        let by = self.hub.name(id).unwrap_or_default().to_string();
        self.abuse.ban_by_operator(ip, duration, &by, now);
        self.announce_ban(IpKey::of(ip), duration, &format!("by operator {by:?}"));
        let seconds = super::whole_seconds(duration);
        self.last_words_to_all(
            |c| IpKey::of(c.peer().ip()) == IpKey::of(ip),
            Notice::BannedBy { by: &by, seconds },
            now,
        );
    }
}
