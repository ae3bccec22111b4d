//! The full-screen client: `loopchat client` on a terminal.
//!
//! Its parts, each with the one job its name says:
//!
//! - [`app`]: the model: every state and every rule, no I/O, time passed in;
//! - [`scrollback`], [`editor`], [`members`], [`identity`], [`reconnect`]: the
//!   model's pieces (the message pane's lines, the input line, the member list, what a
//!   reconnect takes back, the connection's states and backoff);
//! - [`layout`] and [`view`]: how entries wrap into rows, and drawing the model;
//! - [`net`]: connection threads, each reporting to the event queue;
//! - [`term`]: taking over and giving back the terminal, and reading its keys.
//!
//! This module is the loop that joins them. Three kinds of thread feed one bounded
//! queue of [`UiEvent`]s: the terminal reader, the current connection, and a signal
//! thread (SIGINT, SIGTERM, SIGHUP mean leave). The loop takes one event, then
//! whatever else is already queued for a few milliseconds, and draws once: a flood of
//! lines costs one frame per batch, never one per line, and a key typed meanwhile is
//! handled in the same batch. The socket I/O never waits for drawing, and drawing
//! never waits for the socket.
//!
//! The first connection is made before the screen changes, so a wrong address or a
//! certificate that does not verify ends the client with the line client's message
//! and exit status. After that the client stays up: a lost connection is retried with
//! backoff, and the status line says where it is.

mod app;
mod editor;
mod identity;
mod layout;
mod members;
mod net;
mod reconnect;
mod scrollback;
mod term;
mod view;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::link::Outbox;
use super::{ClientArgs, spawn, tls_setup};
use app::{App, Effect, Key, Settings};
use net::{Dialer, NetEvent};
use reconnect::State;
use term::Screen;

/// Events queued for the loop. Bounded, so a flooding server waits for the interface
/// rather than growing memory; the loop drains it far faster than a person types.
const EVENTS: usize = 1024;

/// How long one batch may take events from the queue before drawing, so the screen
/// keeps up even while events keep coming.
const BATCH: Duration = Duration::from_millis(20);

/// While waiting to reconnect, the status line counts down: redraw this often.
const COUNTDOWN: Duration = Duration::from_millis(500);

/// What the loop hears about.
#[derive(Debug)]
enum UiEvent {
    /// A terminal event (a key, a paste, the wheel, a resize).
    Term(crossterm::event::Event),
    /// Terminal input failed: there is nobody left to type.
    TermGone,
    /// News from connection `n`.
    Net(u64, NetEvent),
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
}

/// Runs the full-screen client until it ends; returns the process exit status (as the
/// line client's: 0 left, 1 could not connect or the terminal failed, 130 a second
/// Ctrl-C while leaving).
pub(super) fn run(args: &ClientArgs) -> ExitCode {
    match start(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loopchat: {message}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: &ClientArgs) -> Result<ExitCode, String> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let dialer = Arc::new(Dialer {
        addr: args.addr.clone(),
        tls: tls_setup(args)?,
        timeout: args.connect_timeout,
    });
    let first = dialer.dial()?;
    let (events_tx, events) = mpsc::sync_channel(EVENTS);
    let signal_tx = events_tx.clone();
    spawn("signals", move || {
        for _ in signals.forever() {
            if signal_tx.send(UiEvent::Signal).is_err() {
                break;
            }
        }
    })?;
    let settings = Settings {
        server: args.addr.clone(),
        name: args.name.clone(),
        leave_timeout: args.leave_timeout,
        announce_limit: args.announce_limit,
        utc_offset_s: utc_offset_s(),
    };
    let mut app = App::new(settings, seed());
    let outbox = net::start(
        Arc::clone(&dialer),
        app.generation(),
        Some(first),
        events_tx.clone(),
    )
    .map_err(|e| format!("cannot start the connection thread: {e}"))?;
    let mut screen = Screen::enter().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let terminal_tx = events_tx.clone();
    spawn("terminal", move || read_terminal(&terminal_tx))?;
    let mut lp = Loop {
        app: &mut app,
        events,
        events_tx,
        dialer,
        outbox,
    };
    let result = lp.run(&mut screen);
    drop(screen);
    let (why, status) = app.ending();
    match result {
        Ok(()) if status == 0 => eprintln!("loopchat: left {} ({why})", args.addr),
        Ok(()) => eprintln!("loopchat: {why}; closing now"),
        Err(e) => return Err(format!("the terminal failed: {e}")),
    }
    Ok(ExitCode::from(status))
}

/// The terminal reader thread: every event goes to the loop as it comes.
fn read_terminal(events: &SyncSender<UiEvent>) {
    loop {
        let event = match crossterm::event::read() {
            Ok(event) => UiEvent::Term(event),
            Err(_) => UiEvent::TermGone,
        };
        let gone = matches!(event, UiEvent::TermGone);
        if events.send(event).is_err() || gone {
            return;
        }
    }
}

/// The loop's state besides the model.
struct Loop<'a> {
    app: &'a mut App,
    events: Receiver<UiEvent>,
    /// For the connection threads it starts.
    events_tx: SyncSender<UiEvent>,
    dialer: Arc<Dialer>,
    /// The current connection's frame queue.
    outbox: Outbox,
}

impl Loop<'_> {
    fn run(&mut self, screen: &mut Screen) -> std::io::Result<()> {
        loop {
            let now = Instant::now();
            self.app.tick(now);
            for effect in self.app.take_effects() {
                match effect {
                    Effect::Send(frame) => {
                        if !self.outbox.try_send(frame) {
                            self.app
                                .note(unix_ms(), "the connection is not taking more; not sent");
                        }
                    }
                    Effect::Connect(generation) => self.connect(generation),
                    Effect::Redraw => screen.terminal.clear()?,
                }
            }
            if self.app.is_done() {
                return Ok(());
            }
            self.draw(screen, now)?;
            let wait = match self.app.state() {
                State::Waiting { .. } => Some(COUNTDOWN),
                _ => None,
            };
            let wait = match (wait, self.app.deadline()) {
                (Some(w), Some(d)) => Some(w.min(d.saturating_duration_since(now))),
                (w, d) => w.or(d.map(|d| d.saturating_duration_since(now))),
            };
            let first = match wait {
                Some(wait) => self.events.recv_timeout(wait),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => continue,
                // Every sender is gone, which the loop's own sender prevents.
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let batch = Instant::now();
            while batch.elapsed() < BATCH {
                match self.events.try_recv() {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                }
            }
        }
    }

    fn draw(&mut self, screen: &mut Screen, now: Instant) -> std::io::Result<()> {
        let size = screen.terminal.size()?;
        let panes = view::panes(ratatui::layout::Rect::new(0, 0, size.width, size.height));
        self.app.set_viewport(
            usize::from(panes.messages.width),
            usize::from(panes.messages.height),
        );
        let app = &*self.app;
        screen.terminal.draw(|frame| view::draw(frame, app, now))?;
        Ok(())
    }

    fn handle(&mut self, event: UiEvent) {
        let (now, at) = (Instant::now(), unix_ms());
        let app = &mut *self.app;
        match event {
            UiEvent::Term(event) => {
                if let Some(key) = term::key(&event) {
                    app.key(key, now, at);
                }
            }
            UiEvent::TermGone | UiEvent::Signal => app.key(Key::Interrupt, now, at),
            UiEvent::Net(generation, event) => match event {
                NetEvent::Connected(about) => app.connected(generation, about, now, at),
                NetEvent::Lines(lines) => app.lines(generation, &lines, at),
                NetEvent::Skipped(count) if generation == app.generation() => {
                    app.skipped(count, at)
                }
                NetEvent::Skipped(_) => {}
                NetEvent::Failed(why) => app.connect_failed(generation, &why, now),
                NetEvent::Closed { broken, last_error } => app.closed(
                    generation,
                    broken.as_deref(),
                    last_error.as_deref(),
                    now,
                    at,
                ),
            },
        }
    }

    fn connect(&mut self, generation: u64) {
        let started = net::start(
            Arc::clone(&self.dialer),
            generation,
            None,
            self.events_tx.clone(),
        );
        match started {
            Ok(outbox) => self.outbox = outbox,
            Err(e) => {
                let why = format!("cannot start a connection thread: {e}");
                self.app.connect_failed(generation, &why, Instant::now());
            }
        }
    }
}

/// The wall clock in Unix milliseconds, for timestamps.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A seed for the reconnect jitter: different for every process.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ 0x9e37_79b9_7f4a_7c15
}

/// The local time zone's offset from UTC in seconds, for timestamps (0 if unknown).
fn utc_offset_s() -> i64 {
    let now = unix_ms() / 1000;
    let t = libc::time_t::try_from(now).unwrap_or(0);
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads `t` and writes only the `tm` it is given, which is
    // zero-initialised and lives across the call; it returns null on failure.
    let converted = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if converted.is_null() {
        return 0;
    }
    // SAFETY: localtime_r succeeded, so it filled `tm` (and it was zeroed anyway).
    unsafe { tm.assume_init() }.tm_gmtoff
}
