//! Who this client is on the server (its name, its room, its login, the server
//! password and the room's key) as the server confirmed it, so that a new connection
//! can take it all back ([`Identity::restore`]).
//!
//! What the client asks for is noted when the frame is sent ([`Identity::sent`]) and
//! only becomes part of the identity when the server's reply confirms it
//! ([`Identity::heard`]): a refused login or a wrong key is never replayed. Passwords
//! and keys live in [`Zeroizing`] strings, kept only to log in again, and are wiped when
//! replaced or dropped. The reply texts are the ones in [`crate::notice`]; the tests
//! hold the two together.

use zeroize::Zeroizing;

use crate::codec::{self, Command, Event};

/// A secret kept to say again on a new connection.
type Secret = Zeroizing<String>;

/// What a server line changed that the rest of the client must follow.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Heard<'a> {
    /// Nothing.
    Nothing,
    /// This client is now in `room` (a first name or a move): its members are new.
    Entered(&'a str),
    /// Someone in the room, maybe this client, changed name.
    Renamed {
        /// The name before.
        old: &'a str,
        /// The name now.
        new: &'a str,
    },
}

/// What a new connection sends to be what the last one was.
pub(super) struct Restore {
    /// At once: `PASS:`, then `AUTH:` or `JOIN:<name>`.
    pub first: Vec<Zeroizing<String>>,
    /// `JOIN:#room[:key]`, unless the room was the lobby.
    pub room: Option<Zeroizing<String>>,
    /// `first` takes a name. The room frame then waits until the server has put this
    /// connection in the lobby and finished with it (the answer to the `WHO:` that
    /// follows): a server that is still loading the lobby's history for the replay
    /// should not be asked to move the connection meanwhile.
    pub named: bool,
}

/// The name, room and credentials to take back after a reconnect.
#[derive(Default)]
pub(super) struct Identity {
    /// The name the server gave this connection, or the last one's.
    name: Option<String>,
    /// The server confirmed a name on this connection.
    named: bool,
    /// The room this connection is in.
    room: Option<String>,
    /// The name to ask for on a new connection: one this client chose (`--name`,
    /// `/nick`), never a guest name the server made up.
    keep_name: Option<String>,
    /// The last name asked for with `JOIN:<name>`.
    asked_name: Option<String>,
    /// Name and password of the account logged in to.
    login: Option<(String, Secret)>,
    /// Sent with `REGISTER:`/`AUTH:`, waiting for `logged in as`.
    pending_login: Option<(String, Secret)>,
    /// The server password that was accepted.
    pass: Option<Secret>,
    /// Sent with `PASS:`, waiting for `password accepted`.
    pending_pass: Option<Secret>,
    /// The key of the current room, if it has one.
    room_key: Option<Secret>,
    /// Sent with `JOIN:#room:<key>`, waiting for `you are now in #room`.
    pending_key: Option<(String, Secret)>,
}

impl Identity {
    /// An identity that will ask for `name` on its first connection.
    pub(super) fn new(name: Option<&str>) -> Identity {
        Identity {
            keep_name: name.map(str::to_owned),
            ..Identity::default()
        }
    }

    /// The name the server gave this connection (while disconnected: the last one's).
    pub(super) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The room this connection is in.
    pub(super) fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// Whether a login will be repeated on reconnect.
    pub(super) fn logged_in(&self) -> bool {
        self.login.is_some()
    }

    /// Notes what a frame about to be sent asks for.
    pub(super) fn sent(&mut self, frame: &str) {
        let secret = |s: &str| Zeroizing::new(s.to_owned());
        match codec::parse_frame(frame.as_bytes()) {
            Ok(Command::Nick(name)) => self.asked_name = Some(name.to_owned()),
            Ok(Command::Register { name, password } | Command::Auth { name, password }) => {
                self.pending_login = Some((name.to_owned(), secret(password.0)));
            }
            Ok(Command::Pass(password)) => self.pending_pass = Some(secret(password.0)),
            Ok(Command::Join {
                room,
                key: Some(key),
            }) => self.pending_key = Some((room.to_owned(), secret(key.0))),
            _ => {}
        }
    }

    /// Follows what a server line says about this client.
    pub(super) fn heard<'a>(&mut self, event: &Event<'a>) -> Heard<'a> {
        match *event {
            Event::Server(text) => self.server(text),
            Event::Error(text) => {
                if text == "wrong name or password" || text.starts_with("password must be") {
                    self.pending_login = None;
                } else if text.starts_with("wrong server password") {
                    self.pending_pass = None;
                } else if text.starts_with("wrong key for ") || text.ends_with(" needs a key") {
                    self.pending_key = None;
                }
                Heard::Nothing
            }
            _ => Heard::Nothing,
        }
    }

    /// The connection is gone: nothing is confirmed on the next until it says so.
    pub(super) fn disconnected(&mut self) {
        self.named = false;
        self.pending_login = None;
        self.pending_pass = None;
        self.pending_key = None;
        self.asked_name = None;
    }

    /// The frames that take back, on a new connection, what the last one had: the
    /// server password and the login (or the chosen name) at once, and the room with its
    /// key once the name is back (see [`Restore`]).
    pub(super) fn restore(&self) -> Restore {
        let mut first = Vec::new();
        if let Some(pass) = &self.pass {
            first.push(Zeroizing::new(format!("PASS:{}", pass.as_str())));
        }
        let named = if let Some((name, password)) = &self.login {
            first.push(Zeroizing::new(format!("AUTH:{name}:{}", password.as_str())));
            true
        } else if let Some(name) = &self.keep_name {
            first.push(Zeroizing::new(format!("JOIN:{name}")));
            true
        } else {
            false
        };
        let room = self
            .room
            .as_deref()
            .filter(|r| !r.eq_ignore_ascii_case("#lobby"))
            .map(|room| {
                Zeroizing::new(match &self.room_key {
                    Some(key) => format!("JOIN:{room}:{}", key.as_str()),
                    None => format!("JOIN:{room}"),
                })
            });
        Restore { first, room, named }
    }

    fn server<'a>(&mut self, text: &'a str) -> Heard<'a> {
        // `you are now in #x` would also read as the first name of someone called
        // `now`; only a connection without a name yet gets a first name.
        let first_name = (!self.named).then(|| you_are(text)).flatten();
        if let Some((name, room)) = first_name {
            self.name = Some(name.to_owned());
            self.named = true;
            let chosen =
                |n: &Option<String>| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name));
            let chose = chosen(&self.asked_name)
                || chosen(&self.keep_name)
                || self
                    .login
                    .as_ref()
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name));
            self.keep_name = chose.then(|| name.to_owned());
            self.enter(room);
            Heard::Entered(room)
        } else if let Some(room) = text
            .strip_prefix("you are now in ")
            .filter(|r| codec::valid_room(r))
        {
            self.enter(room);
            Heard::Entered(room)
        } else if let Some(name) = text.strip_prefix("logged in as ") {
            let pending = self.pending_login.take();
            match pending {
                Some((n, password)) if n.eq_ignore_ascii_case(name) => {
                    self.login = Some((name.to_owned(), password));
                }
                _ if self
                    .login
                    .as_ref()
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name)) => {}
                _ => self.login = None,
            }
            self.asked_name = Some(name.to_owned());
            Heard::Nothing
        } else if text == "password accepted" {
            if let Some(pass) = self.pending_pass.take() {
                self.pass = Some(pass);
            }
            Heard::Nothing
        } else if let Some((old, new)) = renamed(text) {
            if self.name.as_deref() == Some(old) {
                self.name = Some(new.to_owned());
                self.keep_name = Some(new.to_owned());
                // A login belongs to its name: a rename away from it is not taken back.
                if self
                    .login
                    .as_ref()
                    .is_some_and(|(n, _)| !n.eq_ignore_ascii_case(new))
                {
                    self.login = None;
                }
            }
            Heard::Renamed { old, new }
        } else {
            Heard::Nothing
        }
    }

    fn enter(&mut self, room: &str) {
        self.room_key = match self.pending_key.take() {
            Some((r, key)) if r.eq_ignore_ascii_case(room) => Some(key),
            _ => None,
        };
        self.room = Some(room.to_owned());
    }
}

/// `you are <name> in <room>`.
fn you_are(text: &str) -> Option<(&str, &str)> {
    let (name, room) = text.strip_prefix("you are ")?.split_once(" in ")?;
    (codec::valid_name(name) && codec::valid_room(room)).then_some((name, room))
}

/// `<old> is now known as <new>`.
fn renamed(text: &str) -> Option<(&str, &str)> {
    let (old, new) = text.split_once(" is now known as ")?;
    (codec::valid_name(old) && codec::valid_name(new)).then_some((old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice::Notice;

    fn hear(id: &mut Identity, notice: Notice<'_>) {
        let text = notice.to_string();
        id.heard(&notice.event(&text));
    }

    fn restored(id: &Identity) -> Vec<String> {
        let r = id.restore();
        r.first
            .iter()
            .chain(&r.room)
            .map(|f| f.as_str().to_owned())
            .collect()
    }

    #[test]
    fn the_servers_replies_are_read_as_notice_writes_them() {
        let text = Notice::YouAre {
            name: "bob",
            room: "#lobby",
        }
        .to_string();
        assert_eq!(you_are(&text), Some(("bob", "#lobby")));
        let text = Notice::Renamed { old: "a", new: "b" }.to_string();
        assert_eq!(renamed(&text), Some(("a", "b")));
        let mut id = Identity::default();
        let text = Notice::NowIn("#rust").to_string();
        assert_eq!(id.heard(&Event::Server(&text)), Heard::Entered("#rust"));
    }

    #[test]
    fn a_chosen_name_and_room_are_taken_back() {
        let mut id = Identity::new(Some("alice"));
        assert_eq!(restored(&id), ["JOIN:alice"]);
        hear(
            &mut id,
            Notice::YouAre {
                name: "alice",
                room: "#lobby",
            },
        );
        id.sent("JOIN:#rust");
        hear(&mut id, Notice::NowIn("#rust"));
        id.sent("JOIN:ally");
        hear(
            &mut id,
            Notice::Renamed {
                old: "alice",
                new: "ally",
            },
        );
        id.disconnected();
        assert_eq!(restored(&id), ["JOIN:ally", "JOIN:#rust"]);
    }

    #[test]
    fn a_person_called_now_or_already_is_not_confused_with_a_move() {
        let mut id = Identity::new(Some("now"));
        hear(
            &mut id,
            Notice::YouAre {
                name: "now",
                room: "#lobby",
            },
        );
        assert_eq!(id.name(), Some("now"));
        hear(&mut id, Notice::AlreadyIn("#lobby"));
        hear(&mut id, Notice::NowIn("#rust"));
        assert_eq!((id.name(), id.room()), (Some("now"), Some("#rust")));
    }

    #[test]
    fn a_guest_name_is_not_taken_back() {
        let mut id = Identity::default();
        hear(
            &mut id,
            Notice::YouAre {
                name: "guest3",
                room: "#lobby",
            },
        );
        assert_eq!(id.name(), Some("guest3"));
        assert!(restored(&id).is_empty());
    }

    #[test]
    fn a_login_is_repeated_only_once_the_server_accepted_it() {
        let mut id = Identity::default();
        id.sent("AUTH:bob:wrong-one");
        hear(&mut id, Notice::WrongLogin);
        assert!(restored(&id).is_empty());
        id.sent("AUTH:bob:hunter22:x");
        hear(&mut id, Notice::LoggedIn("bob"));
        hear(
            &mut id,
            Notice::YouAre {
                name: "bob",
                room: "#lobby",
            },
        );
        assert!(id.logged_in());
        assert_eq!(restored(&id), ["AUTH:bob:hunter22:x"]);
        // The restore itself logs in again without forgetting the password.
        id.disconnected();
        hear(&mut id, Notice::LoggedIn("bob"));
        assert_eq!(restored(&id), ["AUTH:bob:hunter22:x"]);
    }

    #[test]
    fn server_password_and_room_key_come_back_when_accepted() {
        let mut id = Identity::new(Some("eve"));
        id.sent("PASS:sesame");
        hear(&mut id, Notice::PasswordAccepted);
        hear(
            &mut id,
            Notice::YouAre {
                name: "eve",
                room: "#lobby",
            },
        );
        id.sent("JOIN:#vault:wrong");
        hear(&mut id, Notice::WrongKey("#vault"));
        id.sent("JOIN:#vault:k3y");
        hear(&mut id, Notice::NowIn("#vault"));
        assert_eq!(
            restored(&id),
            ["PASS:sesame", "JOIN:eve", "JOIN:#vault:k3y"]
        );
        id.sent("JOIN:#open");
        hear(&mut id, Notice::NowIn("#open"));
        assert_eq!(restored(&id), ["PASS:sesame", "JOIN:eve", "JOIN:#open"]);
    }

    #[test]
    fn someone_elses_rename_changes_nothing_here() {
        let mut id = Identity::new(Some("alice"));
        hear(
            &mut id,
            Notice::YouAre {
                name: "alice",
                room: "#lobby",
            },
        );
        let text = Notice::Renamed {
            old: "bob",
            new: "rob",
        }
        .to_string();
        assert_eq!(
            id.heard(&Event::Server(&text)),
            Heard::Renamed {
                old: "bob",
                new: "rob"
            }
        );
        assert_eq!(id.name(), Some("alice"));
    }
}
