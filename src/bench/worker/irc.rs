//! A worker's side of the IRC dialect: register, join once welcomed, answer `PING`,
//! fail a client on an error while it joins. What the lines say is
//! [`bench::irc`](crate::bench::irc)'s; the client states, queues and counts are the
//! parent module's.

use super::{LineCtx, State, Worker};
use crate::bench::irc::{self, Event};

impl Worker {
    /// Sends client `i`'s `NICK`/`USER`; it joins once the server welcomes it.
    pub(super) fn send_register(&mut self, i: usize) {
        let nick = irc::nick(self.run_id, self.clients[i].id);
        let mut out = std::mem::take(&mut self.line);
        out.clear();
        irc::register(&nick, &mut out);
        self.clients[i].state = State::Registering;
        self.joining += 1;
        self.queue(i, &out);
        self.line = out;
    }

    /// Appends `PRIVMSG #<room> :` for client `i`'s room.
    pub(super) fn irc_privmsg_prefix(&self, i: usize, out: &mut Vec<u8>) {
        if let Some(channel) = self.channels.get(self.clients[i].room) {
            irc::privmsg_prefix(channel, out);
        }
    }
}

impl LineCtx<'_> {
    /// Handles a line that is not a delivery from an IRC server.
    pub(super) fn on_irc_line(&mut self, line: &[u8]) {
        let w = &mut *self.worker;
        let i = self.i;
        let c = &w.clients[i];
        let nick = irc::nick(w.run_id, c.id);
        let Some(channel) = w.channels.get(c.room).cloned() else {
            return;
        };
        let state = c.state;
        let mut out = std::mem::take(&mut w.line);
        out.clear();
        match irc::classify(line, &nick, &channel) {
            Event::Ping(params) => {
                irc::pong(params, &mut out);
                w.queue(i, &out);
            }
            Event::Welcome if state == State::Registering => {
                irc::join(&channel, &mut out);
                w.clients[i].state = State::Joining;
                w.queue(i, &out);
            }
            Event::Joined if state == State::Joining => {
                let c = &mut w.clients[i];
                c.state = State::Joined;
                c.joined = true;
                w.joining -= 1;
                w.tally.joined += 1;
            }
            Event::Error => {
                w.tally.server_error(line);
                if matches!(state, State::Registering | State::Joining) {
                    let why = format!("server said {}", irc::describe(line));
                    w.fail(i, why);
                }
            }
            Event::Welcome | Event::Joined | Event::Other => {}
        }
        w.line = out;
    }
}
