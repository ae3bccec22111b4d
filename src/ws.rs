//! WebSocket (RFC 6455) framing and the opening handshake's key, with no I/O.
//!
//! Written here rather than taken from `tungstenite`: the loop owns every buffer and
//! every byte of a connection (read budget, output caps), and a chat message is one
//! small text frame each way, so a frame codec of a page is all that is needed. Like
//! the line codec, partial input is `Ok(None)`, not an error, and errors are a small
//! `Copy` enum that names the close code to send.

use std::fmt::Write as _;

/// Opcodes.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Largest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// The GUID every accept key is made with (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes (RFC 6455 §7.4.1).
pub mod code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away (the server shuts down).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data that does not fit the message type (invalid UTF-8 in text).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (no pong in time).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
}

/// Why the peer's frames cannot be taken; the close code to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A client frame without a mask, reserved bits set, an unknown opcode, a
    /// fragmented or oversized control frame, a continuation with nothing to continue.
    Protocol,
    /// A message over the line cap.
    TooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
}

impl WsError {
    /// The close code this error is answered with.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Protocol => code::PROTOCOL,
            WsError::TooBig => code::TOO_BIG,
            WsError::InvalidUtf8 => code::INVALID_DATA,
        }
    }
}

/// What the peer sent, once a frame is whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message (fragments joined), as UTF-8.
    Text(String),
    /// A ping with its payload, to answer with a pong.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close, with its code if it had one.
    Close(Option<u16>),
}

/// Reassembles messages from frames; holds a message's fragments between frames.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The text message being reassembled, if a first fragment came.
    fragments: Option<Vec<u8>>,
}

impl Decoder {
    /// Takes one frame from the front of `buf`: `Ok(Some((what, used)))` when a frame is
    /// whole (`what` is `None` for a fragment that completes nothing yet), `Ok(None)`
    /// while the frame is partial. `max` bounds a message's payload.
    #[allow(clippy::type_complexity)]
    pub fn decode(
        &mut self,
        buf: &[u8],
        max: usize,
    ) -> Result<Option<(Option<Incoming>, usize)>, WsError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return Err(WsError::Protocol); // no extension was negotiated
        }
        let opcode = buf[0] & 0x0F;
        if buf[1] & 0x80 == 0 {
            return Err(WsError::Protocol); // a client must mask (§5.1)
        }
        let (len, mut at) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(WsError::Protocol); // the most significant bit must be 0 (§5.2)
        }
        let control = opcode & 0x8 != 0;
        if control && (!fin || len > MAX_CONTROL as u64) {
            return Err(WsError::Protocol);
        }
        let held = self.fragments.as_ref().map_or(0, Vec::len) as u64;
        if !control && held.saturating_add(len) > max as u64 {
            return Err(WsError::TooBig);
        }
        let len = len as usize;
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        let payload: Vec<u8> = buf[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        let used = at + len;
        let what = match opcode {
            TEXT | CONTINUATION => {
                let mut message = match (opcode, self.fragments.take()) {
                    (TEXT, None) => payload,
                    (CONTINUATION, Some(mut sofar)) => {
                        sofar.extend_from_slice(&payload);
                        sofar
                    }
                    _ => return Err(WsError::Protocol),
                };
                if !fin {
                    self.fragments = Some(std::mem::take(&mut message));
                    return Ok(Some((None, used)));
                }
                let text = String::from_utf8(message).map_err(|_| WsError::InvalidUtf8)?;
                Some(Incoming::Text(text))
            }
            // Chat is text; a binary message is a protocol error for this service.
            BINARY => return Err(WsError::Protocol),
            // A close body is empty or a two-byte code and a reason (§5.5.1).
            CLOSE if payload.len() == 1 => return Err(WsError::Protocol),
            CLOSE => Some(Incoming::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            )),
            PING => Some(Incoming::Ping(payload)),
            PONG => Some(Incoming::Pong),
            _ => return Err(WsError::Protocol),
        };
        Ok(Some((what, used)))
    }
}

/// Appends a server frame (never masked) with `opcode` and `payload` to `out`.
fn frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A text frame.
pub fn text(payload: &[u8], out: &mut Vec<u8>) {
    frame(TEXT, payload, out);
}

/// A pong answering a ping's `payload`.
pub fn pong(payload: &[u8], out: &mut Vec<u8>) {
    frame(PONG, payload, out);
}

/// A ping.
pub fn ping(out: &mut Vec<u8>) {
    frame(PING, b"loopchat", out);
}

/// A close frame with `code`.
pub fn close(code: u16, out: &mut Vec<u8>) {
    frame(CLOSE, &code.to_be_bytes(), out);
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID.as_bytes());
    base64(&sha.digest().bytes())
}

/// Standard base64 with padding (also the bench's WebSocket keys).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let _ = out.write_char(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`.
    fn client(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn the_rfc_example_key_is_accepted() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn a_masked_text_frame_decodes_and_partial_input_waits() {
        let f = client(0x81, b"SAY::hi", [1, 2, 3, 4]);
        let mut d = Decoder::default();
        assert_eq!(d.decode(&f[..5], 100), Ok(None));
        assert_eq!(
            d.decode(&f, 100),
            Ok(Some((Some(Incoming::Text("SAY::hi".into())), f.len())))
        );
    }

    #[test]
    fn fragments_join_into_one_message_with_controls_between() {
        let mut d = Decoder::default();
        let first = client(0x01, b"SAY:", [9, 9, 9, 9]);
        let ping = client(0x89, b"x", [1, 1, 1, 1]);
        let last = client(0x80, b":hi", [7, 7, 7, 7]);
        assert_eq!(d.decode(&first, 100), Ok(Some((None, first.len()))));
        assert_eq!(
            d.decode(&ping, 100),
            Ok(Some((Some(Incoming::Ping(b"x".to_vec())), ping.len())))
        );
        assert_eq!(
            d.decode(&last, 100),
            Ok(Some((Some(Incoming::Text("SAY::hi".into())), last.len())))
        );
    }

    #[test]
    fn unmasked_frames_bad_opcodes_and_big_controls_are_protocol_errors() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(&[0x81, 0x02, b'h', b'i'], 100),
            Err(WsError::Protocol)
        );
        assert_eq!(
            d.decode(&client(0x83, b"", [0; 4]), 100),
            Err(WsError::Protocol)
        );
        assert_eq!(
            d.decode(&client(0xC1, b"x", [0; 4]), 100),
            Err(WsError::Protocol)
        );
        assert_eq!(
            d.decode(&client(0x89, &[0; 126], [0; 4]), 1000),
            Err(WsError::Protocol)
        );
        assert_eq!(
            d.decode(&client(0x80, b"x", [0; 4]), 100),
            Err(WsError::Protocol)
        );
        assert_eq!(
            d.decode(&client(0x82, b"x", [0; 4]), 100),
            Err(WsError::Protocol)
        );
    }

    #[test]
    fn too_big_and_invalid_utf8_have_their_codes() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(&client(0x81, &[b'x'; 200], [0; 4]), 100),
            Err(WsError::TooBig)
        );
        assert_eq!(WsError::TooBig.close_code(), 1009);
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(&client(0x81, &[0xff, 0xfe], [0; 4]), 100),
            Err(WsError::InvalidUtf8)
        );
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn huge_lengths_are_refused_without_overflow() {
        let mut d = Decoder::default();
        let first = client(0x01, b"SAY:", [0; 4]);
        assert_eq!(d.decode(&first, 100), Ok(Some((None, first.len()))));
        let mut next = vec![0x80, 0x80 | 127];
        next.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        next.extend_from_slice(&[0; 4]);
        assert_eq!(d.decode(&next, 100), Err(WsError::TooBig));
        let mut d = Decoder::default();
        assert_eq!(d.decode(&first, 100), Ok(Some((None, first.len()))));
        next[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(d.decode(&next, 100), Err(WsError::Protocol));
    }

    #[test]
    fn server_frames_are_unmasked_with_the_right_length_form() {
        let mut out = Vec::new();
        text(b"hi", &mut out);
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        text(&[b'x'; 300], &mut out);
        assert_eq!(&out[..4], &[0x81, 126, 1, 44]);
        out.clear();
        close(1000, &mut out);
        assert_eq!(out, [0x88, 2, 0x03, 0xE8]);
    }
}
