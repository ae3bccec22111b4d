//! The client end of a WebSocket (RFC 6455) for `loopchat bench --ws`: the upgrade
//! request and the check of its answer, masked frames out, and the server's frames in,
//! reassembled into messages. Pure: no sockets and no clock; the worker feeds it the
//! bytes it reads and queues the bytes it makes.
//!
//! The server's side of the protocol is [`crate::ws`] (it unmasks, this masks; it
//! copies each payload out, this hands out slices of the input, because the harness
//! reads a million frames a second and must measure the server, not itself). Like the
//! line codec, partial input is `Ok(None)`/nothing yet, and errors are small enums.
//! Text is not checked for UTF-8: the harness looks for its markers in bytes.

use std::fmt;

use crate::ws::{WsError, accept_key};

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Largest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// Largest upgrade answer head the harness waits for (bytes); loopchat's is ~130.
const MAX_HEAD: usize = 8 * 1024;

/// Longest frame header: 2 bytes, 8 of extended length (server frames carry no mask).
pub const MAX_HEADER: usize = 10;

/// The path loopchat serves its WebSocket on.
pub const PATH: &str = "/ws";

/// A `Sec-WebSocket-Key` (16 bytes, base64) made from `seed`. The RFC asks for a random
/// nonce so that caches cannot replay answers; the harness talks to one server of its
/// own choosing, so a key it can recompute (instead of keeping one per client) does.
pub fn key(seed: u64) -> String {
    let mut state = seed;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix(&mut state).to_le_bytes());
    bytes[8..].copy_from_slice(&splitmix(&mut state).to_le_bytes());
    crate::ws::base64(&bytes)
}

/// SplitMix64: a well-mixed 64-bit sequence from any seed (zero included).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Appends the upgrade request for `GET /ws` on `host` (the `Host` header: the
/// address as dialled) with `key`. No `Origin`: the harness is not a browser, and
/// loopchat checks origins only when one is sent.
pub fn request(host: &str, key: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(PATH.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n\r\n");
}

/// Why an upgrade answer is refused. Its text is a failure reason in the report, so it
/// carries no per-connection detail (the reasons are counted by their text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeError {
    /// The answer is not HTTP at all (a chat port answers with its greeting).
    NotHttp,
    /// The head grew past [`MAX_HEAD`] without ending.
    TooLong,
    /// An HTTP status other than 101, with its reason phrase.
    Refused(u16, String),
    /// 101, but without `Upgrade: websocket` and `Connection: Upgrade`.
    NotWebSocket,
    /// 101, but `Sec-WebSocket-Accept` does not match the key.
    BadAccept,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::NotHttp => f.write_str(
                "the answer is not HTTP (is the address a --ws-listen port, not the chat port?)",
            ),
            UpgradeError::TooLong => write!(f, "answer head over {MAX_HEAD} bytes"),
            UpgradeError::Refused(code, reason) => {
                write!(f, "refused with HTTP {code} {reason}")
            }
            UpgradeError::NotWebSocket => {
                f.write_str("101 without `Upgrade: websocket` and `Connection: Upgrade`")
            }
            UpgradeError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
        }
    }
}

/// Checks an upgrade answer's head for `key`: `Ok(Some(n))` when the first `n` bytes
/// are a valid `101 Switching Protocols` (what follows is frames), `Ok(None)` while the
/// head is incomplete.
pub fn check_answer(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut answer = httparse::Response::new(&mut headers);
    let used = match answer.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(UpgradeError::TooLong),
        Err(httparse::Error::TooManyHeaders) => return Err(UpgradeError::TooLong),
        Err(_) => return Err(UpgradeError::NotHttp),
    };
    let code = answer.code.unwrap_or(0);
    if code != 101 {
        let reason = answer.reason.unwrap_or("").to_string();
        return Err(UpgradeError::Refused(code, reason));
    }
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let upgrade = header("upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let connection = header("connection").is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade || !connection {
        return Err(UpgradeError::NotWebSocket);
    }
    if header("sec-websocket-accept").map(str::trim) != Some(accept_key(key).as_str()) {
        return Err(UpgradeError::BadAccept);
    }
    Ok(Some(used))
}

/// Frame masks: a client must mask every frame with a fresh key (RFC 6455 §5.3).
/// xorshift64*, seeded per worker: unpredictable enough for a load harness, and a few
/// nanoseconds a frame.
#[derive(Debug, Clone)]
pub struct Masks(u64);

impl Masks {
    /// A sequence from `seed` (any value).
    pub fn new(seed: u64) -> Masks {
        let mut s = seed;
        // Never zero: xorshift would stay at zero.
        Masks(splitmix(&mut s) | 1)
    }

    /// The next mask.
    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let b = (v >> 32) as u32;
        b.to_le_bytes()
    }
}

/// Appends a client frame (final, masked with `mask`) with `opcode` and `payload`.
fn frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// A text frame: one protocol line, without its `\n`.
pub fn text(line: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    frame(TEXT, line, mask, out);
}

/// A pong answering a ping's `payload`.
pub fn pong(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    frame(PONG, payload, mask, out);
}

/// A close frame with `code`.
pub fn close(code: u16, mask: [u8; 4], out: &mut Vec<u8>) {
    frame(CLOSE, &code.to_be_bytes(), mask, out);
}

/// A whole message from the server. Slices borrow the reader's input (or, for a
/// fragmented message, its reassembly buffer) until the callback returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message: one protocol line, without a line end.
    Text(&'a [u8]),
    /// A ping with its payload, to answer with a pong.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close, with its code if it had one; nothing after it is decoded.
    Close(Option<u16>),
}

/// One frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    /// Where the payload starts.
    start: usize,
    /// Payload length.
    len: usize,
}

/// Reads the header at the front of `buf`: `Ok(None)` while it (or its payload) is
/// incomplete. `held`: bytes of a fragmented message already taken, counted against
/// `max` with this frame's.
fn header(buf: &[u8], max: usize, held: usize) -> Result<Option<Header>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[0] & 0x70 != 0 {
        return Err(WsError::Protocol); // no extension was negotiated
    }
    if buf[1] & 0x80 != 0 {
        return Err(WsError::Protocol); // a server must not mask (§5.1)
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let (len, start) = match buf[1] & 0x7F {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let control = opcode & 0x8 != 0;
    match opcode {
        CONTINUATION | TEXT | CLOSE | PING | PONG => {}
        // Binary and reserved opcodes: loopchat speaks text only.
        _ => return Err(WsError::Protocol),
    }
    if control && (!fin || len > MAX_CONTROL as u64) {
        return Err(WsError::Protocol);
    }
    // Checked before the payload arrives, so a huge length never makes the reader
    // wait for (and buffer) it.
    if !control && (held as u64).saturating_add(len) > max as u64 {
        return Err(WsError::TooBig);
    }
    let len = len as usize;
    if buf.len() - start < len {
        return Ok(None);
    }
    Ok(Some(Header {
        fin,
        opcode,
        start,
        len,
    }))
}

/// The server's frames in, as whole messages: holds a partial frame between reads and
/// a fragmented message's parts, both bounded by the `max` message size it is fed with.
#[derive(Debug, Default)]
pub struct WsReader {
    /// Bytes read and not yet decoded: the answer head while upgrading, then at most
    /// one partial frame.
    input: Vec<u8>,
    /// The text message being reassembled, if its first fragment came.
    fragments: Option<Vec<u8>>,
    /// A close came: nothing more is decoded.
    closed: bool,
}

impl WsReader {
    /// While upgrading: takes `data` and checks the answer for `key`. `Ok(true)` once
    /// it is a valid 101; the bytes after its head are kept for [`feed`](Self::feed).
    pub fn feed_answer(&mut self, data: &[u8], key: &str) -> Result<bool, UpgradeError> {
        self.input.extend_from_slice(data);
        match check_answer(&self.input, key)? {
            Some(head) => {
                self.input.drain(..head);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Decodes frames from what it holds and `data`, calling `on` for each whole
    /// message; keeps a partial frame for the next call. `max` bounds a message.
    /// After an error the connection is unusable (the caller closes it).
    pub fn feed(
        &mut self,
        data: &[u8],
        max: usize,
        mut on: impl FnMut(Message<'_>),
    ) -> Result<(), WsError> {
        if self.closed {
            return Ok(());
        }
        if self.input.is_empty() {
            // The usual case: whole frames straight from the read buffer, no copy.
            let (used, closed) = decode(&mut self.fragments, data, max, &mut on)?;
            self.closed = closed;
            if !closed {
                self.input.extend_from_slice(&data[used..]);
            }
        } else {
            self.input.extend_from_slice(data);
            let (used, closed) = decode(&mut self.fragments, &self.input, max, &mut on)?;
            self.closed = closed;
            self.input.drain(..used);
        }
        if self.closed {
            self.input = Vec::new();
        }
        Ok(())
    }

    /// Bytes held between reads (a partial frame or answer head, and fragments).
    pub fn held(&self) -> usize {
        self.input.len() + self.fragments.as_ref().map_or(0, Vec::len)
    }

    /// Frees what it holds (the connection is gone).
    pub fn clear(&mut self) {
        *self = WsReader::default();
    }
}

/// Decodes whole frames from the front of `buf`; returns the bytes used and whether a
/// close came (decoding stops there).
fn decode(
    fragments: &mut Option<Vec<u8>>,
    buf: &[u8],
    max: usize,
    on: &mut impl FnMut(Message<'_>),
) -> Result<(usize, bool), WsError> {
    let mut at = 0;
    loop {
        let held = fragments.as_ref().map_or(0, Vec::len);
        let Some(h) = header(&buf[at..], max, held)? else {
            return Ok((at, false));
        };
        let payload = &buf[at + h.start..at + h.start + h.len];
        at += h.start + h.len;
        match h.opcode {
            TEXT if fragments.is_some() => return Err(WsError::Protocol),
            TEXT if h.fin => on(Message::Text(payload)),
            TEXT => *fragments = Some(payload.to_vec()),
            CONTINUATION => {
                let Some(sofar) = fragments.as_mut() else {
                    return Err(WsError::Protocol); // nothing to continue
                };
                sofar.extend_from_slice(payload);
                if h.fin
                    && let Some(whole) = fragments.take()
                {
                    on(Message::Text(&whole));
                }
            }
            PING => on(Message::Ping(payload)),
            PONG => on(Message::Pong),
            // CLOSE: an empty body, or a two-byte code and a reason (§5.5.1).
            _ if payload.len() == 1 => return Err(WsError::Protocol),
            _ => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                on(Message::Close(code));
                return Ok((at, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Decoder;

    /// A server frame (unmasked) with first byte `first`.
    fn server(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Every message `feed` hands out, as owned values.
    fn messages(r: &mut WsReader, data: &[u8]) -> Result<Vec<String>, WsError> {
        let mut got = Vec::new();
        r.feed(data, 1000, |m| {
            got.push(match m {
                Message::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
                Message::Ping(p) => format!("ping {}", String::from_utf8_lossy(p)),
                Message::Pong => "pong".into(),
                Message::Close(c) => format!("close {c:?}"),
            })
        })?;
        Ok(got)
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn the_request_asks_for_version_13_on_ws() {
        let mut out = Vec::new();
        request("127.0.0.1:8081", KEY, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn keys_are_16_bytes_of_base64_and_differ_by_seed() {
        let (a, b) = (key(1), key(2));
        assert_eq!(a.len(), 24);
        assert!(a.ends_with("=="));
        assert_ne!(a, b);
        assert_eq!(a, key(1));
    }

    #[test]
    fn a_101_with_the_right_accept_is_taken_and_frames_after_it_kept() {
        let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec();
        let head = answer.len();
        answer.extend(server(0x81, b"SERVER:hi"));
        assert_eq!(check_answer(&answer[..20], KEY), Ok(None));
        assert_eq!(check_answer(&answer, KEY), Ok(Some(head)));
        let mut r = WsReader::default();
        assert_eq!(r.feed_answer(&answer[..head - 1], KEY), Ok(false));
        assert_eq!(r.feed_answer(&answer[head - 1..], KEY), Ok(true));
        assert_eq!(messages(&mut r, b"").unwrap(), ["text SERVER:hi"]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn answers_that_are_not_an_upgrade_say_why() {
        let not_http = b"SERVER:welcome to loopchat\n";
        assert_eq!(check_answer(not_http, KEY), Err(UpgradeError::NotHttp));
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        let e = check_answer(forbidden, KEY).unwrap_err();
        assert_eq!(e.to_string(), "refused with HTTP 403 Forbidden");
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(check_answer(wrong, KEY), Err(UpgradeError::BadAccept));
        let plain = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        assert_eq!(check_answer(plain, KEY), Err(UpgradeError::NotWebSocket));
        let endless = [b"HTTP/1.1 101 OK\r\n".as_slice(), &[b'x'; MAX_HEAD]].concat();
        assert_eq!(check_answer(&endless, KEY), Err(UpgradeError::TooLong));
    }

    #[test]
    fn client_frames_are_masked_and_loopchat_decodes_them() {
        let mut masks = Masks::new(7);
        let (m1, m2) = (masks.next_mask(), masks.next_mask());
        assert_ne!(m1, m2);
        let mut out = Vec::new();
        text(b"SAY::hello", m1, &mut out);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 10);
        assert_eq!(&out[2..6], &m1);
        let long = vec![b'x'; 300];
        text(&long, m2, &mut out);
        let mut d = Decoder::default();
        let (first, used) = d.decode(&out, 1000).unwrap().unwrap();
        assert_eq!(first, Some(crate::ws::Incoming::Text("SAY::hello".into())));
        let (second, _) = d.decode(&out[used..], 1000).unwrap().unwrap();
        assert_eq!(second, Some(crate::ws::Incoming::Text("x".repeat(300))));
        out.clear();
        pong(b"p", m1, &mut out);
        assert_eq!(
            d.decode(&out, 1000).unwrap().unwrap().0,
            Some(crate::ws::Incoming::Pong)
        );
        out.clear();
        close(1000, m2, &mut out);
        assert_eq!(
            d.decode(&out, 1000).unwrap().unwrap().0,
            Some(crate::ws::Incoming::Close(Some(1000)))
        );
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut all = server(0x81, b"SAY:a:one");
        all.extend(server(0x81, &[b'y'; 200]));
        all.extend(server(0x89, b"hb"));
        for cut in 0..all.len() {
            let mut r = WsReader::default();
            let mut got = messages(&mut r, &all[..cut]).unwrap();
            got.extend(messages(&mut r, &all[cut..]).unwrap());
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0], "text SAY:a:one");
            assert_eq!(got[2], "ping hb");
            assert_eq!(r.held(), 0);
        }
    }

    #[test]
    fn fragments_join_with_pings_between() {
        let mut r = WsReader::default();
        let mut all = server(0x01, b"SAY:");
        all.extend(server(0x89, b"x"));
        all.extend(server(0x00, b"a:"));
        all.extend(server(0x80, b"hi"));
        assert_eq!(messages(&mut r, &all).unwrap(), ["ping x", "text SAY:a:hi"]);
    }

    #[test]
    fn a_close_ends_decoding() {
        let mut r = WsReader::default();
        let mut all = server(0x88, &1001u16.to_be_bytes());
        all.extend(server(0x81, b"after"));
        assert_eq!(messages(&mut r, &all).unwrap(), ["close Some(1001)"]);
        assert!(messages(&mut r, &server(0x81, b"more")).unwrap().is_empty());
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn bad_server_frames_are_errors() {
        let cases: [&[u8]; 6] = [
            &[0x81, 0x81, 0, 0, 0, 0, b'x'], // masked by the server
            &[0xC1, 0x00],                   // reserved bit
            &[0x82, 0x00],                   // binary
            &[0x80, 0x01, b'x'],             // continuation of nothing
            &[0x09, 0x00],                   // fragmented ping
            &[0x88, 0x01, 0x03],             // one-byte close body
        ];
        for case in cases {
            let mut r = WsReader::default();
            assert_eq!(messages(&mut r, case), Err(WsError::Protocol), "{case:?}");
        }
        let mut r = WsReader::default();
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(messages(&mut r, &huge), Err(WsError::TooBig));
        let mut r = WsReader::default();
        let mut first = server(0x01, &[b'a'; 600]);
        first.extend(server(0x80, &[b'b'; 600]));
        assert_eq!(messages(&mut r, &first), Err(WsError::TooBig));
    }
}
