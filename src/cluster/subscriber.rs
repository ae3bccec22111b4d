//! The subscriber thread: one pub/sub connection holding this node's channel, the
//! all-nodes channel and the channel of every room with a local member. Each
//! publication of another node goes to the loop as an [`Event::Frame`]; this node's
//! own are dropped, except the [`Frame::Wake`] the link sends to have subscriptions
//! changed.
//!
//! The channels to hear are kept here, so after a reconnection (with backoff and
//! jitter) the thread subscribes to all of them again by itself. A read timeout of
//! `--cluster-ttl` finds a connection that died silently: the link's heartbeat
//! publishes a wake-up on this node's channel three times per TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use log::debug;

use super::wire::{self, Frame};
use super::{Counters, Event, keys};

/// What the link asks of the subscriber, in order.
#[derive(Debug)]
pub(crate) enum SubCtl {
    /// Hear this channel.
    Subscribe(String),
    /// Stop hearing it.
    Unsubscribe(String),
    /// Say so (with this number) once everything before has been done.
    Ack(u64),
}

pub(super) struct Subscriber {
    pub(super) url: String,
    pub(super) ttl: Duration,
    pub(super) instance: Arc<str>,
    pub(super) deliver: Arc<dyn Fn(Event) + Send + Sync>,
    pub(super) counters: Arc<Counters>,
    pub(super) ctl: Receiver<SubCtl>,
    pub(super) ack: Sender<u64>,
    pub(super) up: Arc<AtomicBool>,
    pub(super) stop: Arc<AtomicBool>,
    /// Room channels to hear, with how many subscribe requests are outstanding for
    /// each (a room can be left and entered again before a wake-up is seen).
    pub(super) channels: HashMap<String, ()>,
}

impl Subscriber {
    pub(super) fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Acquire) {
            match self.session(&mut backoff) {
                Ok(()) => break,
                Err(e) => {
                    self.up.store(false, Ordering::Release);
                    debug!("cluster: subscriber lost Redis: {e}");
                }
            }
            let until = Instant::now() + super::link_jitter(backoff);
            while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.up.store(false, Ordering::Release);
    }

    /// One connection's life; `Ok` only when told to stop.
    fn session(&mut self, backoff: &mut Duration) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(self.ttl))?;
        let mut pubsub = con.as_pubsub();
        let acks = self.take_ctl();
        pubsub.subscribe(keys::node_channel(&self.instance))?;
        pubsub.subscribe(keys::ALL)?;
        for channel in self.channels.keys() {
            pubsub.subscribe(channel)?;
        }
        for n in acks {
            let _ = self.ack.send(n);
        }
        self.up.store(true, Ordering::Release);
        // A change the link sent after `take_ctl` but while `up` was still false came
        // without a wake-up: applied now, not at the next heartbeat.
        self.apply_ctl(&mut pubsub)?;
        *backoff = Duration::from_millis(100);
        loop {
            let msg = pubsub.get_message()?;
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let Ok((origin, frame)) = wire::decode(msg.get_payload_bytes()) else {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if origin == *self.instance {
                if frame == Frame::Wake {
                    self.apply_ctl(&mut pubsub)?;
                }
                continue;
            }
            (self.deliver)(Event::Frame { origin, frame });
        }
    }

    /// Takes every pending change into `channels` without a connection; returns the
    /// acknowledgements owed once subscribed.
    fn take_ctl(&mut self) -> Vec<u64> {
        let mut acks = Vec::new();
        while let Ok(ctl) = self.ctl.try_recv() {
            match ctl {
                SubCtl::Subscribe(ch) => {
                    self.channels.insert(ch, ());
                }
                SubCtl::Unsubscribe(ch) => {
                    self.channels.remove(&ch);
                }
                SubCtl::Ack(n) => acks.push(n),
            }
        }
        acks
    }

    /// Applies every pending change on the live connection, in order.
    fn apply_ctl(&mut self, pubsub: &mut redis::PubSub<'_>) -> redis::RedisResult<()> {
        while let Ok(ctl) = self.ctl.try_recv() {
            match ctl {
                SubCtl::Subscribe(ch) => {
                    if self.channels.insert(ch.clone(), ()).is_none() {
                        pubsub.subscribe(&ch)?;
                    }
                }
                SubCtl::Unsubscribe(ch) => {
                    if self.channels.remove(&ch).is_some() {
                        pubsub.unsubscribe(&ch)?;
                    }
                }
                SubCtl::Ack(n) => {
                    let _ = self.ack.send(n);
                }
            }
        }
        Ok(())
    }
}
