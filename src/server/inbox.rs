//! The loop's one door for other threads: a bounded queue of [`LoopMsg`] and the waker
//! that makes `poll` return to drain it.
//!
//! Whatever runs beside the loop (a shutdown request today; storage, password hashing
//! and a cluster backplane later) answers through an [`InboxSender`]. Sending never
//! blocks: when the queue is full the message is counted as dropped and the sender is
//! told, so a slow loop cannot stall another thread and a stalled thread cannot grow
//! the loop's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use mio::{Registry, Token, Waker};

/// Messages the inbox holds before senders are refused. Far more than the loop ever
/// lags behind: it drains the whole queue every time it wakes.
const INBOX_CAPACITY: usize = 4096;

/// What another thread can tell the loop.
#[derive(Debug)]
pub enum LoopMsg {
    /// Shut down gracefully; a second one exits at once.
    Shutdown,
    /// Re-read what can be re-read (the TLS certificate), as SIGHUP does.
    Reload,
    /// The storage thread answers a question about history.
    History(crate::store::Answer),
    /// A password hasher's thread answers.
    Auth(crate::auth::Answer),
    /// The cluster backplane says something.
    Cluster(crate::cluster::Event),
}

/// The sending side, for any thread.
#[derive(Debug, Clone)]
pub struct InboxSender {
    tx: SyncSender<LoopMsg>,
    waker: Arc<Waker>,
    dropped: Arc<AtomicU64>,
}

/// The queue was full; the message was dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxFull;

impl InboxSender {
    /// Queues `msg` and wakes the loop, without blocking.
    pub fn send(&self, msg: LoopMsg) -> Result<(), InboxFull> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                if let Err(e) = self.waker.wake() {
                    log::warn!("could not wake the server: {e}");
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(InboxFull)
            }
            // The loop has exited; nobody is left to tell.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }
}

/// The receiving side, owned by the loop.
#[derive(Debug)]
pub(super) struct Inbox {
    rx: Receiver<LoopMsg>,
    sender: InboxSender,
}

impl Inbox {
    /// A new inbox whose waker raises `token` on `registry`.
    pub(super) fn new(registry: &Registry, token: Token) -> std::io::Result<Inbox> {
        let (tx, rx) = mpsc::sync_channel(INBOX_CAPACITY);
        let sender = InboxSender {
            tx,
            waker: Arc::new(Waker::new(registry, token)?),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        Ok(Inbox { rx, sender })
    }

    /// A sender for another thread.
    pub(super) fn sender(&self) -> InboxSender {
        self.sender.clone()
    }

    /// The next message, if one is waiting.
    pub(super) fn try_recv(&self) -> Option<LoopMsg> {
        self.rx.try_recv().ok()
    }

    /// Messages dropped because the queue was full, since start.
    pub(super) fn dropped(&self) -> u64 {
        self.sender.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_inbox_refuses_and_counts_instead_of_blocking() {
        let poll = mio::Poll::new().unwrap();
        let inbox = Inbox::new(poll.registry(), Token(0)).unwrap();
        let tx = inbox.sender();
        for _ in 0..INBOX_CAPACITY {
            assert_eq!(tx.send(LoopMsg::Shutdown), Ok(()));
        }
        assert_eq!(tx.send(LoopMsg::Shutdown), Err(InboxFull));
        assert_eq!(inbox.dropped(), 1);
        assert!(matches!(inbox.try_recv(), Some(LoopMsg::Shutdown)));
        assert_eq!(
            tx.send(LoopMsg::Shutdown),
            Ok(()),
            "room again after a receive"
        );
    }
}
