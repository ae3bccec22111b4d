//! Running out of file descriptors: `accept` fails with EMFILE, the server pauses
//! accepting and retries from a timer. Nothing else would wake it: the listener is
//! edge-triggered and no new connection arrives, so without the timer the waiting
//! connections would never be accepted.

mod util;

use std::time::{Duration, Instant};

use util::{Binary, Client};

/// Sets the soft open-files limit of process `pid` (the hard limit stays).
fn set_soft_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads and writes only the structs we pass.
    unsafe {
        let pid = pid as libc::pid_t;
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()),
            0
        );
    }
}

/// Descriptors process `pid` has open.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

#[test]
fn accept_resumes_from_a_timer_after_running_out_of_descriptors() {
    let bin = Binary::start(&["--exempt", "127.0.0.0/8"]);
    let pid = bin.child.id();
    // Leave the server no descriptor to spare: its accept now fails with EMFILE.
    set_soft_nofile(pid, open_fds(pid));
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect_raw(bin.addr)).collect();
    wait_logged(&bin, "pausing accepts");
    // Give the descriptors back. No new connection arrives from here on: only the
    // server's retry timer can make it accept the waiting ones.
    set_soft_nofile(pid, 20_000.min(hard_limit()));
    for c in &mut clients {
        c.expect_line(util::GREETING);
    }
    wait_logged(&bin, "accepting again");
    clients[0].send(b"JOIN:bob\n");
    clients[0].expect_line("SERVER:you are bob in #lobby\n");
}

/// Waits (bounded) until the server's log has a line containing `needle`.
#[track_caller]
fn wait_logged(bin: &Binary, needle: &str) {
    let deadline = Instant::now() + util::TIMEOUT;
    while !bin.logged(needle) {
        assert!(
            Instant::now() < deadline,
            "the server never logged {needle:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// This process's hard open-files limit (the server inherited it).
fn hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max
}
