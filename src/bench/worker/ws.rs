//! A worker's side of `--ws`: send a client's upgrade request once its connection (or
//! TLS handshake) is up, check the answer, then turn the server's frames into lines,
//! answer pings with pongs and a close with a close. The frames themselves are
//! [`bench::websocket`](crate::bench::websocket)'s; what a line means is the parent
//! module's ([`LineCtx`]).

use std::time::Instant;

use super::{LineCtx, MAX_LINE, MAX_SENDER_BACKLOG, State, Worker};
use crate::bench::websocket::{self, Message};
use crate::ws::{WsError, code};

impl Worker {
    /// Client `i`'s `Sec-WebSocket-Key`, recomputed from the run and the client rather
    /// than kept per client.
    fn ws_key(&self, i: usize) -> String {
        websocket::key((u64::from(self.run_id) << 32) | self.clients[i].id as u64)
    }

    /// Sends client `i`'s upgrade request; it is connected once the 101 comes.
    pub(super) fn send_upgrade(&mut self, i: usize) {
        let host = self.config.addr_of(self.clients[i].id).to_string();
        let key = self.ws_key(i);
        let mut out = std::mem::take(&mut self.line);
        out.clear();
        websocket::request(&host, &key, &mut out);
        self.clients[i].state = State::Upgrading;
        self.queue(i, &out);
        self.line = out;
    }

    /// Bytes from a WebSocket client: the upgrade answer while upgrading, then frames,
    /// each text message handled as one line.
    pub(super) fn on_ws_bytes(&mut self, i: usize, mut data: &[u8], now: Instant) {
        // Split borrows: the reader belongs to the client, the handler needs the rest.
        let mut reader = std::mem::take(&mut self.clients[i].ws);
        if self.clients[i].state == State::Upgrading {
            let key = self.ws_key(i);
            match reader.feed_answer(data, &key) {
                Ok(true) => {
                    self.connected(i);
                    // What came with the answer is frames, held in the reader.
                    data = &[];
                }
                Ok(false) => {
                    self.clients[i].ws = reader;
                    return;
                }
                Err(e) => {
                    self.fail(i, format!("WebSocket upgrade failed: {e}"));
                    return;
                }
            }
        }
        let now_us = now.duration_since(self.shared.epoch).as_micros() as u64;
        let mut ctx = LineCtx {
            worker: self,
            i,
            now,
            now_us,
        };
        let mut closed = None;
        let result = reader.feed(data, MAX_LINE, |m| match m {
            Message::Text(line) => ctx.on_line(line),
            Message::Ping(payload) => ctx.worker.send_pong(i, payload),
            Message::Pong => {}
            Message::Close(code) => closed = Some(code),
        });
        let c = &mut self.clients[i];
        if c.stream.is_none() {
            // Closed while its frames were handled: nothing more to read.
            return;
        }
        c.ws = reader;
        match (result, closed) {
            (Err(e), _) => {
                let mut frame = Vec::new();
                websocket::close(e.close_code(), self.masks.next_mask(), &mut frame);
                self.queue(i, &frame);
                let what = match e {
                    WsError::Protocol => "a frame that breaks RFC 6455",
                    WsError::TooBig => "a message over the harness's line cap",
                    WsError::InvalidUtf8 => "text that is not UTF-8",
                };
                self.close(i, format!("the server sent {what}"));
            }
            (Ok(()), Some(code)) => {
                self.send_ws_close(i);
                let code = code.map_or_else(|| "no code".into(), |c| c.to_string());
                self.close(i, format!("closed by the server (WebSocket close, {code})"));
            }
            (Ok(()), None) => {}
        }
    }

    /// Answers a ping, unless the server is not reading what the client sends (then
    /// only later pings get answers: RFC 6455 §5.5.3 asks for the latest only).
    fn send_pong(&mut self, i: usize, payload: &[u8]) {
        if self.clients[i].stream.is_none() || self.clients[i].out.pending() > MAX_SENDER_BACKLOG {
            return;
        }
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        websocket::pong(payload, self.masks.next_mask(), &mut frame);
        self.queue(i, &frame);
        self.frame = frame;
    }

    /// Queues a normal close frame and writes what the socket takes: the client is
    /// done (the run ends, or the server closed).
    pub(super) fn send_ws_close(&mut self, i: usize) {
        if !matches!(
            self.clients[i].state,
            State::Connected | State::Joining | State::Joined
        ) {
            return;
        }
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        websocket::close(code::NORMAL, self.masks.next_mask(), &mut frame);
        self.queue(i, &frame);
        self.frame = frame;
    }
}
