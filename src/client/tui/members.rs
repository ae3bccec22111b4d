//! The member list of the current room, as far as the client can know it.
//!
//! It is filled from a `WHO:` answer (`SERVER:#room (<n>): a b c …and <k> more`) and
//! kept up to date from `JOIN:`/`LEAVE:` notices and renames. The server lists at most
//! 100 names, and a room over its `--announce-limit` sends no notices at all, so the
//! list carries how much it knows ([`Extent`]) and the view says so rather than show a
//! list that has quietly gone stale. Names compare without regard to case, as the
//! server's do. This module draws nothing.

/// How much of the room the list holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Extent {
    /// Not in a room, or waiting for the first `WHO:` answer.
    Unknown,
    /// Every member, kept live from notices.
    All,
    /// The names listed plus `more` unnamed members, kept live from notices.
    Some {
        /// Members not named.
        more: usize,
    },
    /// The room is over the announce limit: no notices come, so this is the list as
    /// of `at_ms` (Unix ms) with `count` members, and only a new `WHO:` updates it.
    Frozen {
        /// The member count then.
        count: usize,
        /// When the answer came.
        at_ms: i64,
    },
}

/// A `WHO:` answer, read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Who<'a> {
    /// The room, with its `#`.
    pub room: &'a str,
    /// How many members it has.
    pub count: usize,
    /// The names listed (at most 100).
    pub names: Vec<&'a str>,
}

/// Reads `#room (<n>): a b c …and <k> more`, the text of a `WHO:` answer.
pub(super) fn parse_who(text: &str) -> Option<Who<'_>> {
    let (room, rest) = text.split_once(" (")?;
    if !crate::codec::valid_room(room) {
        return None;
    }
    let (count, rest) = rest.split_once("):")?;
    let count = count.parse().ok()?;
    let listed = rest.split_once(" …and ").map_or(rest, |(names, _)| names);
    let names = listed.split_whitespace().collect();
    Some(Who { room, count, names })
}

/// The current room's members.
#[derive(Debug)]
pub(super) struct Members {
    room: Option<String>,
    /// Sorted without regard to case.
    names: Vec<String>,
    extent: Extent,
    /// The server's `--announce-limit`.
    announce_limit: usize,
}

impl Members {
    /// An empty list for a server whose rooms stop announcing above `announce_limit`.
    pub(super) fn new(announce_limit: usize) -> Members {
        Members {
            room: None,
            names: Vec::new(),
            extent: Extent::Unknown,
            announce_limit,
        }
    }

    /// The room the list is about.
    pub(super) fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// The names known, sorted without regard to case.
    pub(super) fn names(&self) -> &[String] {
        &self.names
    }

    /// How much of the room the list holds.
    pub(super) fn extent(&self) -> &Extent {
        &self.extent
    }

    /// How many members the room has, when known.
    pub(super) fn count(&self) -> Option<usize> {
        match self.extent {
            Extent::Unknown => None,
            Extent::All => Some(self.names.len()),
            Extent::Some { more } => Some(self.names.len() + more),
            Extent::Frozen { count, .. } => Some(count),
        }
    }

    /// Entered `room` (or left every room with `None`): nothing known until `WHO:`.
    pub(super) fn reset(&mut self, room: Option<&str>) {
        self.room = room.map(str::to_owned);
        self.names.clear();
        self.extent = Extent::Unknown;
    }

    /// A `WHO:` answer came at `at_ms`; one about another room is ignored.
    pub(super) fn who(&mut self, who: &Who<'_>, at_ms: i64) {
        let same_room = self
            .room
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(who.room));
        if !same_room {
            return;
        }
        self.names = who.names.iter().map(|&n| n.to_owned()).collect();
        self.names.sort_by_key(|n| n.to_ascii_lowercase());
        self.names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let more = who.count.saturating_sub(self.names.len());
        self.extent = if who.count > self.announce_limit {
            Extent::Frozen {
                count: who.count,
                at_ms,
            }
        } else if more == 0 {
            Extent::All
        } else {
            Extent::Some { more }
        };
    }

    /// `JOIN:<name>` at `at_ms`: someone entered the room.
    pub(super) fn joined(&mut self, name: &str, at_ms: i64) {
        if !self.is_live() {
            return;
        }
        if let Err(at) = self.find(name) {
            self.names.insert(at, name.to_owned());
        }
        self.freeze_if_over_limit(at_ms);
    }

    /// `LEAVE:<name>`: someone left the room.
    pub(super) fn left(&mut self, name: &str) {
        match (self.find(name), &mut self.extent) {
            (Ok(at), Extent::All | Extent::Some { .. }) => {
                self.names.remove(at);
            }
            (Err(_), Extent::Some { more }) => *more = more.saturating_sub(1),
            _ => {}
        }
        if let Extent::Some { more: 0 } = self.extent {
            self.extent = Extent::All;
        }
    }

    /// `<old> is now known as <new>`.
    pub(super) fn renamed(&mut self, old: &str, new: &str) {
        if let Ok(at) = self.find(old) {
            self.names.remove(at);
            if let Err(at) = self.find(new) {
                self.names.insert(at, new.to_owned());
            }
        }
    }

    fn is_live(&self) -> bool {
        matches!(self.extent, Extent::All | Extent::Some { .. })
    }

    /// A room that grows past the limit stops sending notices from then on.
    fn freeze_if_over_limit(&mut self, at_ms: i64) {
        if let Some(count) = self.count()
            && count > self.announce_limit
        {
            self.extent = Extent::Frozen { count, at_ms };
        }
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        let key = name.to_ascii_lowercase();
        self.names
            .binary_search_by(|n| n.to_ascii_lowercase().cmp(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(m: &Members) -> Vec<&str> {
        m.names().iter().map(String::as_str).collect()
    }

    fn in_room(text: &str, limit: usize) -> Members {
        let mut m = Members::new(limit);
        m.reset(Some("#lobby"));
        m.who(&parse_who(text).unwrap(), 1_000);
        m
    }

    #[test]
    fn who_answers_are_read() {
        let who = parse_who("#lobby (3): alice Bob carol").unwrap();
        assert_eq!((who.room, who.count), ("#lobby", 3));
        assert_eq!(who.names, ["alice", "Bob", "carol"]);
        let who = parse_who("#big (150): a b …and 148 more").unwrap();
        assert_eq!((who.count, who.names.len()), (150, 2));
        assert_eq!(parse_who("#lobby (0):").unwrap().names.len(), 0);
        assert_eq!(parse_who("rooms (2): #a (1) #b (1)"), None);
        assert_eq!(parse_who("you are now in #x"), None);
    }

    #[test]
    fn joins_leaves_and_renames_keep_the_list() {
        let mut m = in_room("#lobby (2): bob alice", 1000);
        assert_eq!(listed(&m), ["alice", "bob"]);
        m.joined("Carol", 2_000);
        m.joined("carol", 2_000);
        m.left("bob");
        m.renamed("alice", "ada");
        assert_eq!(listed(&m), ["ada", "Carol"]);
        assert_eq!((m.extent(), m.count()), (&Extent::All, Some(2)));
    }

    #[test]
    fn a_partial_list_counts_the_unnamed() {
        let mut m = in_room("#lobby (150): a b …and 148 more", 1000);
        assert_eq!(
            (m.extent(), m.count()),
            (&Extent::Some { more: 148 }, Some(150))
        );
        m.left("zed");
        m.joined("c", 2_000);
        assert_eq!(m.count(), Some(150));
        assert_eq!(listed(&m), ["a", "b", "c"]);
    }

    #[test]
    fn over_the_announce_limit_the_list_is_frozen_not_faked() {
        let mut m = in_room("#lobby (3): a b c", 2);
        assert_eq!(
            m.extent(),
            &Extent::Frozen {
                count: 3,
                at_ms: 1_000
            }
        );
        m.joined("d", 2_000);
        m.left("a");
        assert_eq!((listed(&m), m.count()), (vec!["a", "b", "c"], Some(3)));

        let mut m = in_room("#lobby (2): a b", 2);
        m.joined("c", 2_000);
        assert!(matches!(m.extent(), Extent::Frozen { count: 3, .. }));
    }

    #[test]
    fn answers_about_another_room_or_before_one_are_ignored() {
        let mut m = Members::new(1000);
        m.who(&parse_who("#lobby (1): a").unwrap(), 0);
        assert_eq!(m.extent(), &Extent::Unknown);
        m.reset(Some("#rust"));
        m.who(&parse_who("#lobby (1): a").unwrap(), 0);
        m.joined("x", 2_000);
        assert_eq!((m.extent(), m.names().len()), (&Extent::Unknown, 0));
    }
}
