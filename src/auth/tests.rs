//! The hasher through its public face, with real threads and tiny Argon2 parameters so
//! each hash takes microseconds; the real parameters' cost is measured by an ignored
//! test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;

/// Long enough for any answer on a loaded 2-core machine; tests end as soon as it comes.
const PATIENCE: Duration = Duration::from_secs(10);

/// The smallest Argon2 allows: 8 KiB, one pass.
fn tiny() -> Params {
    Params::new(Params::MIN_M_COST, 1, 1, None).unwrap()
}

/// A hasher with tiny parameters whose answers arrive on the returned receiver.
#[track_caller]
fn start(threads: usize, queue: usize) -> (Hasher, Receiver<Answer>) {
    let (tx, rx) = mpsc::channel();
    let config = HasherConfig { threads, queue };
    let hasher = Hasher::with_params(config, tiny(), Box::new(move |a| drop(tx.send(a)))).unwrap();
    (hasher, rx)
}

#[track_caller]
fn next(answers: &Receiver<Answer>) -> Answer {
    answers.recv_timeout(PATIENCE).expect("no answer")
}

#[track_caller]
fn hash(hasher: &Hasher, answers: &Receiver<Answer>, password: &str) -> String {
    hasher.hash(1, password).unwrap();
    match next(answers) {
        Answer::Hashed { tag: 1, phc } => phc,
        other => panic!("expected a hash, got {other:?}"),
    }
}

#[track_caller]
fn verify(hasher: &Hasher, answers: &Receiver<Answer>, password: &str, phc: Option<&str>) -> bool {
    hasher.verify(2, password, phc).unwrap();
    match next(answers) {
        Answer::Verified { tag: 2, ok } => ok,
        other => panic!("expected a verification, got {other:?}"),
    }
}

#[test]
fn hash_then_verify_accepts_the_password_and_refuses_another() {
    let (hasher, answers) = start(1, 4);
    let phc = hash(&hasher, &answers, "correct horse");
    assert!(verify(&hasher, &answers, "correct horse", Some(&phc)));
    assert!(!verify(&hasher, &answers, "correct horsE", Some(&phc)));
    assert!(!verify(&hasher, &answers, "correct horse ", Some(&phc)));
    assert!(!verify(&hasher, &answers, "", Some(&phc)));
    assert_eq!(hasher.refused(), 0);
    hasher.stop();
}

#[test]
fn hashes_are_argon2id_phc_strings_with_a_fresh_salt_each() {
    let (hasher, answers) = start(2, 4);
    let a = hash(&hasher, &answers, "same password");
    let b = hash(&hasher, &answers, "same password");
    let m = Params::MIN_M_COST;
    assert!(
        a.starts_with(&format!("$argon2id$v=19$m={m},t=1,p=1$")),
        "{a}"
    );
    assert_ne!(a, b, "two hashes of one password share a salt");
    let salt = |phc: &str| phc.split('$').nth(4).unwrap().to_string();
    assert_ne!(salt(&a), salt(&b));
    hasher.stop();
}

#[test]
fn the_real_parameters_are_owasps_argon2id_minimum() {
    assert_eq!(
        (PARAMS.m_cost(), PARAMS.t_cost(), PARAMS.p_cost()),
        (19 * 1024, 2, 1)
    );
    assert_eq!(PARAMS.output_len(), None, "32 bytes, argon2's default");
}

#[test]
fn verification_reads_the_parameters_from_the_hash() {
    // Made with other parameters (and another variant) than the hasher's own.
    let other = Params::new(16, 2, 2, Some(16)).unwrap();
    let phc = Argon2::new(Algorithm::Argon2i, Version::V0x13, other)
        .hash_password_with_salt(b"old password", b"sixteen byte sal")
        .unwrap()
        .to_string();
    assert!(phc.starts_with("$argon2i$v=19$m=16,t=2,p=2$"), "{phc}");
    let (hasher, answers) = start(1, 4);
    assert!(verify(&hasher, &answers, "old password", Some(&phc)));
    assert!(!verify(&hasher, &answers, "new password", Some(&phc)));
    hasher.stop();
}

#[test]
fn an_unknown_name_is_refused_after_a_dummy_verification() {
    let (hasher, answers) = start(1, 4);
    assert!(!verify(&hasher, &answers, "any password", None));
    // Even the dummy's own password matches nothing.
    let dummy = std::str::from_utf8(DUMMY_PASSWORD).unwrap();
    assert!(!verify(&hasher, &answers, dummy, None));
    let shared = &hasher.shared;
    assert_eq!(shared.counters.dummies.load(Ordering::Relaxed), 2);
    // The dummy has the hasher's own parameters, so it costs what a real one does.
    let m = Params::MIN_M_COST;
    let dummy_phc = shared.engine.dummy.get().expect("no dummy hash");
    assert!(dummy_phc.starts_with(&format!("$argon2id$v=19$m={m},t=1,p=1$")));
    hasher.stop();
}

#[test]
fn the_dummy_hash_is_ready_without_any_unknown_name() {
    let (hasher, answers) = start(1, 4);
    // One job behind the warm-up: once it is answered, the warm-up is done.
    hash(&hasher, &answers, "password");
    assert!(hasher.shared.engine.dummy.get().is_some());
    hasher.stop();
}

#[test]
fn a_malformed_hash_matches_nothing() {
    let (hasher, answers) = start(1, 16);
    let good = hash(&hasher, &answers, "password");
    let cut = &good[..good.len() - 5];
    let no_hash = &good[..good.rfind('$').unwrap()];
    let bad_b64 = format!("{}!!!!", &good[..good.len() - 4]);
    let zero_t = good.replace("t=1", "t=0");
    let malformed = [
        "",
        "password",
        "$",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$",
        "$argon2id$v=99$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
        "$2b$12$GhvMmNVjRW29ulnudl.LbuAnUtN/LRfe1JsBm1Xu6LE3059z5Tr8m",
        no_hash,
        &bad_b64,
        &zero_t,
    ];
    for phc in malformed {
        let dummies = hasher.shared.counters.dummies.load(Ordering::Relaxed);
        assert!(!verify(&hasher, &answers, "password", Some(phc)), "{phc:?}");
        // It costs the work a real verification does.
        let after = hasher.shared.counters.dummies.load(Ordering::Relaxed);
        assert_eq!(after, dummies + 1, "{phc:?}");
    }
    // A shortened hash may still decode, to a shorter output that matches nothing
    // (work done in full), or not decode (a dummy verification): false either way.
    assert!(!verify(&hasher, &answers, "password", Some(cut)));
    // The workers are all still there.
    assert!(verify(&hasher, &answers, "password", Some(&good)));
    hasher.stop();
}

/// A one-thread hasher whose worker is held inside its answer to a first job (hash,
/// tag 1) until the test waits on the returned barrier.
#[track_caller]
fn held(queue: usize) -> (Hasher, Receiver<Answer>, Arc<Barrier>) {
    let (tx, answers) = mpsc::channel();
    let inside = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let first = AtomicBool::new(true);
    let (i, r) = (Arc::clone(&inside), Arc::clone(&release));
    let callback = move |a| {
        if first.swap(false, Ordering::Relaxed) {
            i.wait();
            r.wait();
        }
        drop(tx.send(a));
    };
    let config = HasherConfig { threads: 1, queue };
    let hasher = Hasher::with_params(config, tiny(), Box::new(callback)).unwrap();
    hasher.hash(1, "password").unwrap();
    inside.wait();
    (hasher, answers, release)
}

#[test]
fn a_full_queue_is_busy_at_once() {
    let (hasher, answers, release) = held(2);
    // The worker is busy with job 1; two wait; the fourth is refused.
    hasher.hash(2, "password").unwrap();
    hasher.verify(3, "password", None).unwrap();
    let t = Instant::now();
    assert_eq!(hasher.hash(4, "password"), Err(Busy));
    assert_eq!(hasher.verify(5, "password", Some("$argon2id$")), Err(Busy));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(hasher.refused(), 2);
    release.wait();
    let tags: Vec<Tag> = (0..3).map(|_| next(&answers).tag()).collect();
    assert_eq!(tags, [1, 2, 3]);
    // Room again once drained.
    hasher.hash(6, "password").unwrap();
    assert!(matches!(next(&answers), Answer::Hashed { tag: 6, .. }));
    hasher.stop();
}

#[test]
fn stop_drops_queued_jobs_and_finishes_the_running_one() {
    let (hasher, answers, release) = held(4);
    hasher.hash(2, "password").unwrap();
    hasher.verify(3, "password", None).unwrap();
    let shared = Arc::clone(&hasher.shared);
    let stopper = std::thread::spawn(move || hasher.stop());
    let deadline = Instant::now() + PATIENCE;
    while !shared.stopping.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "stop never began");
        std::thread::yield_now();
    }
    release.wait();
    stopper.join().unwrap();
    let got: Vec<Answer> = answers.try_iter().collect();
    assert!(
        matches!(got[..], [Answer::Hashed { tag: 1, .. }]),
        "{got:?}"
    );
}

#[test]
fn the_default_config_leaves_a_core_for_the_loop() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = HasherConfig::default();
    assert_eq!(config.threads, cores.saturating_sub(1).max(1));
    assert_eq!(config.queue, DEFAULT_QUEUE);
}

#[test]
fn zero_threads_or_queue_mean_one() {
    let (hasher, answers) = start(0, 0);
    assert_eq!(hasher.threads.len(), 1);
    hash(&hasher, &answers, "password");
    hasher.stop();
}

#[test]
fn debug_output_shows_no_password_or_hash() {
    let phc = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let jobs = [
        Job {
            tag: 7,
            password: Zeroizing::new(b"hunter2-secret".to_vec()),
            work: Work::Hash,
        },
        Job {
            tag: 8,
            password: Zeroizing::new(b"hunter2-secret".to_vec()),
            work: Work::Verify(Some(phc.into())),
        },
    ];
    for job in &jobs {
        let shown = format!("{job:?} {job:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("c2FsdHNhbHQ"), "{shown}");
        assert!(shown.contains(&job.tag.to_string()), "{shown}");
    }
    let answer = Answer::Hashed {
        tag: 7,
        phc: phc.into(),
    };
    let shown = format!("{answer:?}");
    assert!(
        !shown.contains("argon2") && !shown.contains("c2FsdHNhbHQ"),
        "{shown}"
    );
    assert_eq!(
        format!("{:?}", Answer::Verified { tag: 9, ok: true }),
        "Verified { tag: 9, ok: true }"
    );
}

#[test]
fn ct_eq_compares_whole_secrets() {
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"secret", b"secret"));
    assert!(!ct_eq(b"secret", b"secreT"));
    assert!(!ct_eq(b"secret", b"Secret"));
    assert!(!ct_eq(b"secret", b"secret\0"));
    assert!(!ct_eq(b"secret\0", b"secret"));
    assert!(!ct_eq(b"", b"\0"));
    assert!(!ct_eq(b"secret", b""));
    // A prefix, however long, is not the secret.
    assert!(!ct_eq(&[1; 255], &[1; 256]));
}

mod password_file {
    use super::*;
    use std::fs;

    #[track_caller]
    fn read(content: &[u8]) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pass");
        fs::write(&path, content).unwrap();
        read_password_file(&path).map_err(|e| {
            assert!(e.contains(&path.display().to_string()), "{e}");
            e
        })
    }

    #[test]
    fn one_trailing_newline_is_not_part_of_the_password() {
        assert_eq!(read(b"s3cret\n").unwrap(), b"s3cret");
        assert_eq!(read(b"s3cret\r\n").unwrap(), b"s3cret");
        assert_eq!(read(b"s3cret").unwrap(), b"s3cret");
    }

    #[test]
    fn inner_and_edge_whitespace_is_kept() {
        assert_eq!(read(b" two words\t\n").unwrap(), b" two words\t");
        assert_eq!(read(b"a:b c\n").unwrap(), b"a:b c");
    }

    #[test]
    fn an_empty_password_is_an_error_naming_the_file() {
        for content in [&b""[..], b"\n", b"\r\n"] {
            let e = read(content).unwrap_err();
            assert!(e.contains("empty"), "{e}");
        }
    }

    #[test]
    fn a_second_line_is_an_error_naming_the_file() {
        for content in [
            &b"s3cret\n\n"[..],
            b"one\ntwo\n",
            b"s3cret\r",
            b"s3cret\n\r\n",
        ] {
            let e = read(content).unwrap_err();
            assert!(e.contains("one line"), "{content:?}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.pass");
        let e = read_password_file(&path).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("cannot read"), "{e}");
    }
}

/// The real parameters' cost on this machine. Run in release:
/// `cargo test --release --lib auth::tests::real_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measures seconds of real Argon2 work; run by hand in release"]
fn real_cost() {
    let engine = Engine::new(PARAMS);
    let counters = Counters::default();
    let t = Instant::now();
    let phc = engine.hash(b"correct horse battery").unwrap();
    let one_hash = t.elapsed();
    let n = 30;
    let t = Instant::now();
    for _ in 0..n {
        assert!(engine.verify(b"correct horse battery", Some(&phc), &counters));
    }
    let per_verify = t.elapsed() / n;
    let t = Instant::now();
    engine.verify(b"correct horse battery", None, &counters);
    let first_dummy = t.elapsed();
    let t = Instant::now();
    engine.verify(b"correct horse battery", None, &counters);
    let dummy = t.elapsed();
    println!(
        "m={} KiB t={} p={}: one hash {one_hash:?}; one verification {per_verify:?} \
         ({:.1}/s on one thread); unknown name {dummy:?} (first, computing the dummy: \
         {first_dummy:?})",
        M_COST_KIB,
        T_COST,
        P_COST,
        1.0 / per_verify.as_secs_f64()
    );
}
