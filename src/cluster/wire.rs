//! What travels between nodes over Redis pub/sub: one [`Frame`] per publication, with
//! the publishing node's instance in front so a node can drop its own.
//!
//! The encoding is a sequence of netstrings (`<len>:<bytes>,`): binary-safe, trivially
//! bounded, and readable in `redis-cli MONITOR`. Decoding never panics and never
//! allocates more than the input's length; anything malformed is an error the caller
//! counts and drops. No I/O here.

use std::net::IpAddr;

use crate::hub::ConnId;

/// A node's identity for one run: `<node-id>/<random>`, so a node restarted under the
/// same `--node-id` does not inherit the names and presence of its previous life.
pub type Instance = str;

/// Something said in a room, as the other nodes deliver it to their members there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// `SAY:<from>:<text>`, with the origin's time stamp for the room's history tail.
    Say {
        /// The sender's name.
        from: String,
        /// The text.
        text: String,
        /// When the origin accepted it (Unix ms).
        at_ms: i64,
    },
    /// `JOIN:<name>`.
    Join(String),
    /// `LEAVE:<name>`.
    Leave(String),
    /// A `SERVER:` line to the room (a rename).
    Server(String),
}

/// Why a node's member lost its name to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostWhy {
    /// Both nodes granted it while Redis was unreachable; the earlier claim kept it.
    Split,
    /// The account's owner logged in on another node.
    LoggedInElsewhere,
}

/// An answer about a private message, to the connection that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The recipient is over its inbound limit.
    Busy(String),
    /// Nobody of that name is on the node the name pointed to (it just left).
    NoSuchUser(String),
}

/// One publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Room traffic, on the room's channel.
    Room {
        /// The room as named by the sender's node.
        room: String,
        /// What happened.
        event: RoomEvent,
    },
    /// A private message, on the recipient's node channel.
    Msg {
        /// The recipient's name.
        to: String,
        /// The sender's name.
        from: String,
        /// The text.
        text: String,
        /// The sending connection, for a [`Frame::Reply`].
        reply: ConnId,
    },
    /// An answer to a [`Frame::Msg`], on the sender's node channel.
    Reply {
        /// The connection that sent the message.
        to: ConnId,
        /// What to tell it.
        reply: Reply,
    },
    /// The member of this node holding `name` must give it up.
    NameLost {
        /// The name (any case).
        name: String,
        /// Why.
        why: LostWhy,
    },
    /// An address (IPv6: a /64) is banned on every node, on the all-nodes channel.
    Ban {
        /// The address, as [`crate::net::IpKey`] keeps it.
        ip: IpAddr,
        /// For how long from now, in milliseconds.
        ms: u64,
        /// Who or what banned it, for the log.
        why: String,
    },
    /// A new account, on the all-nodes channel (its hash is in Redis too).
    Account {
        /// The name as registered.
        name: String,
        /// Its password's PHC string.
        phc: String,
    },
    /// A new room key, on the all-nodes channel.
    RoomKey {
        /// The room as created.
        room: String,
        /// The key's PHC string.
        phc: String,
    },
    /// Wakes a node's subscriber to change its subscriptions (on its node channel).
    Wake,
}

/// A publication that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Encodes `frame` from `origin`.
pub fn encode(origin: &Instance, frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    field(&mut out, origin.as_bytes());
    match frame {
        Frame::Room { room, event } => {
            field(&mut out, b"room");
            field(&mut out, room.as_bytes());
            match event {
                RoomEvent::Say { from, text, at_ms } => {
                    field(&mut out, b"say");
                    field(&mut out, from.as_bytes());
                    field(&mut out, text.as_bytes());
                    field(&mut out, at_ms.to_string().as_bytes());
                }
                RoomEvent::Join(name) => {
                    field(&mut out, b"join");
                    field(&mut out, name.as_bytes());
                }
                RoomEvent::Leave(name) => {
                    field(&mut out, b"leave");
                    field(&mut out, name.as_bytes());
                }
                RoomEvent::Server(text) => {
                    field(&mut out, b"server");
                    field(&mut out, text.as_bytes());
                }
            }
        }
        Frame::Msg {
            to,
            from,
            text,
            reply,
        } => {
            field(&mut out, b"msg");
            field(&mut out, to.as_bytes());
            field(&mut out, from.as_bytes());
            field(&mut out, text.as_bytes());
            conn_id(&mut out, *reply);
        }
        Frame::Reply { to, reply } => {
            field(&mut out, b"reply");
            conn_id(&mut out, *to);
            let (kind, name) = match reply {
                Reply::Busy(name) => (&b"busy"[..], name),
                Reply::NoSuchUser(name) => (&b"nosuch"[..], name),
            };
            field(&mut out, kind);
            field(&mut out, name.as_bytes());
        }
        Frame::NameLost { name, why } => {
            field(&mut out, b"lost");
            field(&mut out, name.as_bytes());
            field(
                &mut out,
                match why {
                    LostWhy::Split => b"split",
                    LostWhy::LoggedInElsewhere => b"login",
                },
            );
        }
        Frame::Ban { ip, ms, why } => {
            field(&mut out, b"ban");
            field(&mut out, ip.to_string().as_bytes());
            field(&mut out, ms.to_string().as_bytes());
            field(&mut out, why.as_bytes());
        }
        Frame::Account { name, phc } => {
            field(&mut out, b"account");
            field(&mut out, name.as_bytes());
            field(&mut out, phc.as_bytes());
        }
        Frame::RoomKey { room, phc } => {
            field(&mut out, b"roomkey");
            field(&mut out, room.as_bytes());
            field(&mut out, phc.as_bytes());
        }
        Frame::Wake => field(&mut out, b"wake"),
    }
    out
}

/// Decodes a publication: its origin instance and its frame.
pub fn decode(bytes: &[u8]) -> Result<(String, Frame), Malformed> {
    let mut r = Reader { rest: bytes };
    let origin = r.string()?;
    let frame = match r.field()? {
        b"room" => {
            let room = r.string()?;
            let event = match r.field()? {
                b"say" => RoomEvent::Say {
                    from: r.string()?,
                    text: r.string()?,
                    at_ms: r.number()?,
                },
                b"join" => RoomEvent::Join(r.string()?),
                b"leave" => RoomEvent::Leave(r.string()?),
                b"server" => RoomEvent::Server(r.string()?),
                _ => return Err(Malformed),
            };
            Frame::Room { room, event }
        }
        b"msg" => Frame::Msg {
            to: r.string()?,
            from: r.string()?,
            text: r.string()?,
            reply: r.conn_id()?,
        },
        b"reply" => {
            let to = r.conn_id()?;
            let reply = match r.field()? {
                b"busy" => Reply::Busy(r.string()?),
                b"nosuch" => Reply::NoSuchUser(r.string()?),
                _ => return Err(Malformed),
            };
            Frame::Reply { to, reply }
        }
        b"lost" => Frame::NameLost {
            name: r.string()?,
            why: match r.field()? {
                b"split" => LostWhy::Split,
                b"login" => LostWhy::LoggedInElsewhere,
                _ => return Err(Malformed),
            },
        },
        b"ban" => Frame::Ban {
            ip: r.string()?.parse().map_err(|_| Malformed)?,
            ms: r.number()?,
            why: r.string()?,
        },
        b"account" => Frame::Account {
            name: r.string()?,
            phc: r.string()?,
        },
        b"roomkey" => Frame::RoomKey {
            room: r.string()?,
            phc: r.string()?,
        },
        b"wake" => Frame::Wake,
        _ => return Err(Malformed),
    };
    if !r.rest.is_empty() {
        return Err(Malformed);
    }
    Ok((origin, frame))
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b',');
}

fn conn_id(out: &mut Vec<u8>, id: ConnId) {
    field(out, id.key.to_string().as_bytes());
    field(out, id.generation.to_string().as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn field(&mut self) -> Result<&'a [u8], Malformed> {
        let colon = self
            .rest
            .iter()
            .take(11)
            .position(|&b| b == b':')
            .ok_or(Malformed)?;
        let digits = &self.rest[..colon];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Malformed);
        }
        let len: usize = std::str::from_utf8(digits)
            .map_err(|_| Malformed)?
            .parse()
            .map_err(|_| Malformed)?;
        let body = &self.rest[colon + 1..];
        if body.len() <= len || body[len] != b',' {
            return Err(Malformed);
        }
        self.rest = &body[len + 1..];
        Ok(&body[..len])
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let bytes = self.field()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Malformed)
    }

    fn number<T: std::str::FromStr>(&mut self) -> Result<T, Malformed> {
        std::str::from_utf8(self.field()?)
            .map_err(|_| Malformed)?
            .parse()
            .map_err(|_| Malformed)
    }

    fn conn_id(&mut self) -> Result<ConnId, Malformed> {
        Ok(ConnId {
            key: self.number()?,
            generation: self.number()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_frame() -> Vec<Frame> {
        let id = ConnId {
            key: 7,
            generation: 3,
        };
        vec![
            Frame::Room {
                room: "#Rust".into(),
                event: RoomEvent::Say {
                    from: "alice".into(),
                    text: "a:b, 3:c, ünïcode".into(),
                    at_ms: 1_700_000_000_123,
                },
            },
            Frame::Room {
                room: "#r".into(),
                event: RoomEvent::Join("bob".into()),
            },
            Frame::Room {
                room: "#r".into(),
                event: RoomEvent::Leave("bob".into()),
            },
            Frame::Room {
                room: "#r".into(),
                event: RoomEvent::Server("bob is now known as rob".into()),
            },
            Frame::Msg {
                to: "bob".into(),
                from: "alice".into(),
                text: String::new(),
                reply: id,
            },
            Frame::Reply {
                to: id,
                reply: Reply::Busy("bob".into()),
            },
            Frame::Reply {
                to: id,
                reply: Reply::NoSuchUser("bob".into()),
            },
            Frame::NameLost {
                name: "bob".into(),
                why: LostWhy::Split,
            },
            Frame::NameLost {
                name: "bob".into(),
                why: LostWhy::LoggedInElsewhere,
            },
            Frame::Ban {
                ip: "2001:db8::".parse().unwrap(),
                ms: 600_000,
                why: "after 5 strikes".into(),
            },
            Frame::Ban {
                ip: "10.0.0.1".parse().unwrap(),
                ms: 1,
                why: String::new(),
            },
            Frame::Account {
                name: "alice".into(),
                phc: "$argon2id$v=19$...".into(),
            },
            Frame::RoomKey {
                room: "#secret".into(),
                phc: "$argon2id$".into(),
            },
            Frame::Wake,
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in every_frame() {
            let bytes = encode("node-1/abc", &frame);
            assert_eq!(
                decode(&bytes),
                Ok(("node-1/abc".to_string(), frame.clone())),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn the_encoding_is_netstrings() {
        let bytes = encode(
            "n/1",
            &Frame::Room {
                room: "#r".into(),
                event: RoomEvent::Join("bob".into()),
            },
        );
        assert_eq!(bytes, b"3:n/1,4:room,2:#r,4:join,3:bob,");
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for frame in every_frame() {
            let bytes = encode("n", &frame);
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), Err(Malformed), "{frame:?} cut {cut}");
            }
            let mut longer = bytes.clone();
            longer.extend_from_slice(b"0:,");
            assert_eq!(decode(&longer), Err(Malformed));
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for bad in [
            &b""[..],
            b"x",
            b"99999999999999999999:a,",
            b"-1:a,",
            b"1:n,4:room,2:#r,3:say,1:a,1:b,3:abc,",
            b"1:n,3:ban,9:not an ip,1:1,0:,",
            b"1:n,5:reply,1:x,1:0,4:busy,1:b,",
            b"1:n,7:unknown,",
            b"1:\xff,4:wake,",
            b"2:n,4:wake,",
        ] {
            assert_eq!(
                decode(bad),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
