//! Browsers: the HTTP side of a `--ws-listen`/`--wss-listen` connection (the upgrade to
//! WebSocket, or the built-in page), then WebSocket framing around the chat protocol.
//!
//! A [`WsStream`] wraps the byte stream under it (plain TCP or TLS, the same
//! [`Transport`] a chat connection uses), so the loop drives a browser like any other
//! connection: same read budget, output caps, rooms, limits and clean close. Each text
//! message in is one protocol line (frames dialect); each line out is one text message.
//! A message with a line end inside it is not split: it reaches the parser as one line
//! with a control character, which is refused with `ERROR:`, never two commands.
//!
//! The page (`GET /`, `/app.js`, `/style.css`) is embedded in the binary and served with
//! a Content-Security-Policy that needs no `'unsafe-inline'`; the upgrade is `GET /ws`.

use std::io;
use std::sync::Arc;

use mio::net::TcpStream;

use crate::outq::{BufferPool, OutQueue, Written};
use crate::transport::{Got, Transport};
use crate::ws::{self, Decoder, Incoming};

/// The page and its two files.
const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// Everything the page loads comes from this server; nothing runs inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Largest HTTP request head taken (bytes).
const MAX_REQUEST: usize = 8 * 1024;

/// Framed output waiting for the socket, at most; the rest stays in the connection's
/// queue, where the output caps see it.
const MAX_FRAMED: usize = 64 * 1024;

/// What every browser connection shares: the allowed origins and the message cap.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// `--ws-origin` entries, e.g. `https://chat.example.org`.
    pub origins: Vec<String>,
    /// The longest message taken (`--max-line`).
    pub max_message: usize,
}

/// Where a browser connection is.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the HTTP request.
    Http,
    /// Upgraded: WebSocket frames both ways.
    Open,
    /// An HTTP answer (the page, an error) is being written; then it closes.
    Answered,
}

/// A browser connection: HTTP, then WebSocket over `inner`.
#[derive(Debug)]
pub struct WsStream {
    inner: Transport,
    config: Arc<WebConfig>,
    phase: Phase,
    /// Bytes read and not yet decoded (the request, or frames).
    input: Vec<u8>,
    decoder: Decoder,
    /// Framed output (and HTTP answers, pongs, the close) not yet written.
    framed: OutQueue,
    /// A close frame has been queued; nothing more is framed after it.
    close_sent: bool,
    /// A ping is out and unanswered.
    awaiting_pong: bool,
}

/// What the answer to a request depends on, taken out of the request buffer.
#[derive(Debug, Default)]
struct Head {
    method: String,
    path: String,
    upgrade: bool,
    key: Option<String>,
    version: Option<String>,
    origin: Option<String>,
    host: Option<String>,
}

impl Head {
    fn of(request: &httparse::Request<'_, '_>) -> Head {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string)
        };
        Head {
            method: request.method.unwrap_or("").to_string(),
            path: request.path.unwrap_or("").to_string(),
            upgrade: header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
            key: header("sec-websocket-key"),
            version: header("sec-websocket-version"),
            origin: header("origin"),
            host: header("host"),
        }
    }
}

/// Output pushes outside a flush use a pool of their own: a few small buffers.
fn scratch() -> BufferPool {
    BufferPool::default()
}

fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether a browser's `Origin` may connect: the same host as the request's `Host`
/// (scheme aside), or an origin the operator listed.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

impl WsStream {
    /// A browser connection over `inner`, before its request.
    pub fn new(inner: Transport, config: Arc<WebConfig>) -> WsStream {
        WsStream {
            inner,
            config,
            phase: Phase::Http,
            input: Vec::new(),
            decoder: Decoder::default(),
            framed: OutQueue::default(),
            close_sent: false,
            awaiting_pong: false,
        }
    }

    /// The answer to a whole request head: the upgrade, the page, or an error.
    fn respond(&mut self, head: Head) {
        let reply = match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/ws") => match (head.upgrade, head.key, head.version.as_deref()) {
                (true, Some(key), Some("13")) => {
                    if let Some(origin) = &head.origin
                        && !origin_allowed(origin, head.host.as_deref(), &self.config.origins)
                    {
                        answer("403 Forbidden", "text/plain", "origin not allowed\n")
                    } else {
                        self.phase = Phase::Open;
                        let reply = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                            ws::accept_key(&key)
                        );
                        self.framed.push(reply.as_bytes(), &mut scratch());
                        return;
                    }
                }
                _ => answer(
                    "400 Bad Request",
                    "text/plain",
                    "a WebSocket upgrade (version 13) is expected here\n",
                ),
            },
            ("GET", "/" | "/index.html") => answer("200 OK", "text/html; charset=utf-8", INDEX),
            ("GET", "/app.js") => answer("200 OK", "text/javascript; charset=utf-8", SCRIPT),
            ("GET", "/style.css") => answer("200 OK", "text/css; charset=utf-8", STYLE),
            ("GET", _) => answer("404 Not Found", "text/plain", "not found\n"),
            _ => answer("405 Method Not Allowed", "text/plain", "only GET\n"),
        };
        self.phase = Phase::Answered;
        self.framed.push(&reply, &mut scratch());
    }

    /// Reads: the request while in HTTP, then messages, each written into `buf` as one
    /// line ending in `\n`. Pings are answered and pongs noted on the way.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Got> {
        let mut raw = 0;
        let mut plain = 0;
        loop {
            match self.phase {
                Phase::Answered => return Ok(Got::Eof),
                Phase::Http => {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut request = httparse::Request::new(&mut headers);
                    let parsed = match request.parse(&self.input) {
                        Ok(httparse::Status::Complete(used)) => {
                            Some(Ok((Head::of(&request), used)))
                        }
                        Ok(httparse::Status::Partial) if self.input.len() <= MAX_REQUEST => None,
                        _ => Some(Err(())),
                    };
                    match parsed {
                        Some(Ok((head, used))) => {
                            self.input.drain(..used);
                            self.respond(head);
                            continue;
                        }
                        Some(Err(())) => {
                            self.phase = Phase::Answered;
                            let reply = answer("400 Bad Request", "text/plain", "bad request\n");
                            self.framed.push(&reply, &mut scratch());
                            continue;
                        }
                        None => {}
                    }
                }
                Phase::Open => {
                    while !self.close_sent {
                        let decoded =
                            match self.decoder.decode(&self.input, self.config.max_message) {
                                Ok(Some(d)) => d,
                                Ok(None) => break,
                                Err(e) => {
                                    self.queue_close(e.close_code());
                                    return Ok(Got::Eof);
                                }
                            };
                        let (what, used) = decoded;
                        match what {
                            Some(Incoming::Text(text)) => {
                                if plain + text.len() + 1 > buf.len() {
                                    if plain == 0 {
                                        // Not even this one fits what the turn's budget
                                        // leaves: the budget is spent, and the message
                                        // waits here for the next turn.
                                        return Ok(Got::Data {
                                            plain: 0,
                                            raw: raw.max(buf.len()),
                                        });
                                    }
                                    break; // the rest next time
                                }
                                for b in text.bytes() {
                                    // A line end inside a message stays inside its line,
                                    // as a control character the parser refuses.
                                    buf[plain] = if b == b'\n' || b == b'\r' { 0x01 } else { b };
                                    plain += 1;
                                }
                                buf[plain] = b'\n';
                                plain += 1;
                            }
                            // A peer that pings and never reads gets no more
                            // pongs than fit the framed bound (RFC 6455 §5.5.3: only
                            // the latest ping needs one).
                            Some(Incoming::Ping(_)) if self.framed.pending() >= MAX_FRAMED => {}
                            Some(Incoming::Ping(payload)) => {
                                let mut frame = Vec::new();
                                ws::pong(&payload, &mut frame);
                                self.framed.push(&frame, &mut scratch());
                            }
                            Some(Incoming::Pong) => self.awaiting_pong = false,
                            Some(Incoming::Close(_)) => {
                                self.input.drain(..used);
                                self.queue_close(ws::code::NORMAL);
                                return Ok(Got::Eof);
                            }
                            None => {}
                        }
                        self.input.drain(..used);
                    }
                    if plain > 0 {
                        return Ok(Got::Data { plain, raw });
                    }
                }
            }
            if self.close_sent {
                // After our close frame nothing more is decoded: what still arrives
                // is read (so the close is clean) and dropped.
                self.input.clear();
            }
            if self.input.len() > MAX_REQUEST + self.config.max_message + 16 {
                // Never reached with a well-formed peer: frames are taken as they come.
                return Err(io::Error::other("WebSocket input over its bound"));
            }
            if raw >= buf.len() {
                // The turn's read budget is spent on frames that carried no line
                // (pings, empty fragments): the rest waits for the next turn.
                return Ok(Got::Data { plain, raw });
            }
            let mut chunk = [0u8; 16 * 1024];
            let want = chunk.len().min(buf.len() - raw);
            match self.inner.read(&mut chunk[..want]) {
                Ok(Got::Data { plain: n, raw: r }) => {
                    raw += r;
                    self.input.extend_from_slice(&chunk[..n]);
                }
                Ok(Got::Eof) => return Ok(Got::Eof),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && (raw > 0 || plain > 0) => {
                    return Ok(Got::Data { plain, raw });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn queue_close(&mut self, code: u16) {
        if !self.close_sent && self.phase == Phase::Open {
            let mut frame = Vec::new();
            ws::close(code, &mut frame);
            self.framed.push(&frame, &mut scratch());
            self.close_sent = true;
        }
    }

    /// Frames complete lines of `out` as text messages (up to [`MAX_FRAMED`] waiting)
    /// and writes what is framed.
    pub fn write_from(&mut self, out: &mut OutQueue, pool: &mut BufferPool) -> io::Result<Written> {
        let mut taken = 0;
        match self.phase {
            Phase::Open if !self.close_sent => {
                let mut frame = Vec::new();
                while self.framed.pending() < MAX_FRAMED {
                    let pending = out.as_slice();
                    let Some(end) = pending.iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    frame.clear();
                    ws::text(&pending[..end], &mut frame);
                    self.framed.push(&frame, pool);
                    out.consume(end + 1, pool);
                    taken += end + 1;
                }
            }
            // Before the upgrade nothing is framed; after an HTTP answer or a close,
            // nothing will be.
            Phase::Http => {}
            Phase::Open | Phase::Answered => {
                taken = out.pending();
                out.clear(pool);
            }
        }
        let written = self.inner.write_from(&mut self.framed, pool)?;
        Ok(Written {
            calls: written.calls,
            bytes: taken,
        })
    }

    /// Keepalive, every 30 s: `false` if the last ping went unanswered (a close is
    /// queued), else a new ping is queued.
    pub fn keepalive(&mut self) -> bool {
        if self.phase != Phase::Open || self.close_sent {
            return true;
        }
        if self.awaiting_pong {
            self.queue_close(ws::code::POLICY);
            return false;
        }
        let mut frame = Vec::new();
        ws::ping(&mut frame);
        self.framed.push(&frame, &mut scratch());
        self.awaiting_pong = true;
        true
    }

    /// Whether bytes of its own wait to be written.
    pub fn wants_write(&self) -> bool {
        !self.framed.is_empty() || self.inner.wants_write()
    }

    /// Bytes held beside the connection's queue.
    pub fn buffered(&self) -> usize {
        self.framed.pending() + self.inner.buffered()
    }

    /// Whether the HTTP request (or a TLS handshake under it) is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.phase == Phase::Http || self.inner.is_handshaking()
    }

    /// The socket, to register with the poller.
    pub fn socket(&mut self) -> &mut TcpStream {
        self.inner.socket()
    }

    /// Ends the stream: a close frame (1001 going away, if none was sent), then what the
    /// stream under it does (close_notify, FIN).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.queue_close(ws::code::GOING_AWAY);
        let _ = self.inner.write_from(&mut self.framed, &mut scratch());
        self.inner.shutdown_write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_must_match_the_host_or_the_list() {
        let listed = vec!["https://chat.example.org".to_string()];
        assert!(origin_allowed(
            "http://localhost:8081",
            Some("localhost:8081"),
            &[]
        ));
        assert!(origin_allowed(
            "https://chat.example.org",
            Some("other"),
            &listed
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            Some("localhost:8081"),
            &listed
        ));
        assert!(!origin_allowed("http://localhost:8081", None, &[]));
    }

    #[test]
    fn the_page_loads_nothing_inline() {
        assert!(INDEX.contains("src=\"app.js\"") || INDEX.contains("src=\"/app.js\""));
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("style=\""), "no inline style");
        assert!(
            !SCRIPT.contains("innerHTML"),
            "user text never becomes HTML"
        );
        assert!(!CSP.contains("unsafe-inline"));
    }
}
