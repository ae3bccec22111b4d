//! A worker thread: takes jobs off the shared queue one at a time, hashes or verifies,
//! and answers through the callback. Nothing here panics on a job's content.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, PoisonError};

use super::{Answer, Job, Shared, Work};

/// Runs until the [`super::Hasher`] drops its sender and the queue is empty. The worker
/// with `warm_up` computes the dummy hash first, so `start` stays quick and the first
/// unknown name costs no more than the next.
pub(super) fn run(shared: &Shared, rx: &Mutex<Receiver<Job>>, warm_up: bool) {
    if warm_up {
        shared.engine.dummy();
    }
    loop {
        // The lock is held only while waiting for a job, never while working on one.
        // Nothing panics while holding it, but a poisoned lock still guards a sound
        // receiver.
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { break };
        if shared.stopping.load(Ordering::Relaxed) {
            continue; // dropped: its password is wiped
        }
        let answer = work(shared, &job);
        drop(job);
        (shared.answer)(answer);
    }
}

fn work(shared: &Shared, job: &Job) -> Answer {
    let (engine, counters) = (&shared.engine, &shared.counters);
    match &job.work {
        Work::Hash => match engine.hash(&job.password) {
            Ok(phc) => {
                counters.hashed.fetch_add(1, Ordering::Relaxed);
                Answer::Hashed { tag: job.tag, phc }
            }
            Err(e) => {
                log::error!("auth: cannot hash a new password: {e}");
                Answer::Failed { tag: job.tag }
            }
        },
        Work::Verify(phc) => {
            let ok = engine.verify(&job.password, phc.as_deref(), counters);
            counters.verified.fetch_add(1, Ordering::Relaxed);
            Answer::Verified { tag: job.tag, ok }
        }
    }
}
