//! `loopchat client` full-screen, the real binary on a pseudo-terminal, against a
//! server started in-process; a plain socket peer chats with it. What the client
//! draws is read back into a screen (the `vt100` crate plays the terminal), so the
//! tests wait for text on the screen, never for a sleep.
//!
//! The pseudo-terminal comes from `openpty(3)`. Where none can be opened (a sandbox
//! without /dev/ptmx) the tests say so and pass without running.

mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use util::{Client as Peer, TIMEOUT, config, start, start_default};

/// The terminal's size.
const ROWS: u16 = 24;
const COLS: u16 = 100;

/// The client on a pseudo-terminal, and the screen it draws.
struct Tui {
    child: Child,
    /// The terminal's side of the pair: what is written here is typed.
    master: File,
    screen: Arc<Mutex<vt100::Parser>>,
}

impl Tui {
    /// Starts `loopchat client ARGS` on a new pseudo-terminal; `None` if none can be had.
    fn spawn(args: &[&str]) -> Option<Tui> {
        let (master, slave) = openpty()?;
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_loopchat"));
        command
            .arg("client")
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session,
        // with the terminal (now fd 0) as its controlling terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start loopchat client");
        drop(slave);
        let master = File::from(master);
        let size = |n| std::num::NonZeroU16::new(n).expect("a terminal size");
        let parser = vt100::Parser::new(size(ROWS), size(COLS), 0);
        let screen = Arc::new(Mutex::new(parser));
        let mut reader = master.try_clone().expect("dup the terminal");
        let parser = Arc::clone(&screen);
        thread::spawn(move || {
            let mut buf = [0; 8192];
            // Ends with EIO once the client and its terminal are gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                parser.lock().unwrap().process(&buf[..n]);
            }
        });
        Some(Tui {
            child,
            master,
            screen,
        })
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows `text`.
    #[track_caller]
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if self.contents().contains(text) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the screen never showed {text:?}; it shows:\n{}",
            self.contents()
        );
    }

    /// Types `keys` (a `\r` is Enter).
    #[track_caller]
    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
    }

    /// Waits for the client to exit.
    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for the client") {
                return status;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the client did not exit; the screen shows:\n{}",
            self.contents()
        );
    }

    /// The terminal's line discipline is back to cooked mode with echo.
    fn is_cooked(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut t = std::mem::MaybeUninit::<libc::termios>::zeroed();
        // SAFETY: tcgetattr writes only the termios it is given; on a pseudo-terminal
        // pair the master reports the terminal's settings.
        let ok = unsafe { libc::tcgetattr(self.master.as_raw_fd(), t.as_mut_ptr()) } == 0;
        // SAFETY: zero-initialised, and filled on success.
        let t = unsafe { t.assume_init() };
        ok && t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new pseudo-terminal pair of `ROWS`×`COLS`, or `None` (with a note) if there is none.
fn openpty() -> Option<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: ROWS,
        ws_col: COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two descriptors it is given and reads `size`.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        eprintln!(
            "skipping: no pseudo-terminal can be opened here ({})",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: openpty succeeded, so both are open descriptors that nothing else owns.
    Some(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

#[test]
fn full_screen_client_chats_and_gives_the_terminal_back() {
    let server = start_default();
    let addr = server.addr.to_string();
    let Some(mut tui) = Tui::spawn(&[&addr, "--name", "alice"]) else {
        return;
    };
    tui.wait_for("alice in #lobby │ connected");
    assert!(tui.screen.lock().unwrap().screen().alternate_screen());

    let mut bob = Peer::connect_named(server.addr, "bob");
    tui.wait_for("*** bob joined");
    tui.wait_for("│bob");
    bob.send_line("SAY::hello alice, 日本語 🎉");
    tui.wait_for("<bob> hello alice, 日本語 🎉");
    tui.type_keys("hi bob\r");
    bob.expect_line("SAY:alice:hi bob\n");
    tui.wait_for("<alice> hi bob");
    tui.type_keys("/msg bob psst\r");
    bob.expect_line("MSG:alice:psst\n");

    tui.type_keys("/quit bye\r");
    bob.expect_line("LEAVE:alice\n");
    let status = tui.wait_exit();
    assert!(status.success(), "{status}");
    tui.wait_for(&format!("loopchat: left {addr} (quit)"));
    let screen = tui.screen.lock().unwrap();
    assert!(!screen.screen().alternate_screen(), "alternate screen left");
    assert!(!screen.screen().hide_cursor(), "cursor shown");
    drop(screen);
    assert!(tui.is_cooked(), "raw mode off");
}

#[test]
fn full_screen_client_reconnects_and_takes_back_its_name_and_room() {
    let server = start_default();
    let addr = server.addr;
    let Some(mut tui) = Tui::spawn(&[&addr.to_string(), "--name", "alice"]) else {
        return;
    };
    tui.wait_for("alice in #lobby │ connected");
    tui.type_keys("/join #rust\r");
    tui.wait_for("alice in #rust │ connected");

    server.shutdown_and_wait(TIMEOUT);
    tui.wait_for("disconnected, retry in");
    // With history replay on, entering the lobby makes the new server load its
    // history first: the client must not ask to move meanwhile.
    let mut same_port = config();
    same_port.addr = addr;
    same_port.history_replay = 20;
    let _again = start(same_port);
    // The list counts the room's members again only once the client is back in it.
    tui.wait_for("│#rust (1)");
    tui.wait_for("alice in #rust │ connected");

    let mut bob = Peer::connect_named(addr, "bob");
    bob.send_line("JOIN:#rust");
    bob.expect_lines(&[
        "SERVER:end of history for #lobby\n",
        "SERVER:you are now in #rust\n",
        "SERVER:end of history for #rust\n",
    ]);
    bob.send_line("WHO:");
    bob.expect_line("SERVER:#rust (2): alice bob\n");
    tui.wait_for("│bob");

    tui.type_keys("\x03");
    bob.expect_line("LEAVE:alice\n");
    assert!(tui.wait_exit().success());
}

#[test]
fn a_flood_of_ten_thousand_lines_does_not_freeze_typing() {
    let server = start_default();
    let Some(mut tui) = Tui::spawn(&[&server.addr.to_string(), "--name", "alice"]) else {
        return;
    };
    tui.wait_for("alice in #lobby │ connected");
    let mut bob = Peer::connect_named(server.addr, "bob");
    tui.wait_for("*** bob joined");
    let flood: String = (0..10_000).map(|i| format!("SAY::flood {i}\n")).collect();
    bob.send(flood.as_bytes());
    tui.type_keys("still typing\r");
    bob.expect_line("SAY:alice:still typing\n");
    tui.wait_for("<bob> flood 9999");
    tui.type_keys("/quit\r");
    assert!(tui.wait_exit().success());
}
