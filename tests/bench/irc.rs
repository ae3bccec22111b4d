//! `--dialect irc`: against a tiny IRC server written here (a thread per connection,
//! std sockets, just NICK/USER/JOIN/PRIVMSG/PING/PONG), and against ngIRCd when it is
//! installed (skipped with a message otherwise).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use loopchat::bench::{BenchConfig, BenchDialect};

use super::{run, small};

/// An IRC run's configuration against `addr`.
fn irc(addr: SocketAddr) -> BenchConfig {
    let mut c = small(addr);
    c.dialect = BenchDialect::Irc;
    c
}

#[test]
fn irc_dialect_registers_joins_answers_pings_and_counts_every_delivery() {
    let server = IrcServer::start(false);
    let r = run(&irc(server.addr));
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!(r.dialect, "irc");
    assert_eq!((r.established, r.joined), (20, 20));
    // Two channels of ten: each PRIVMSG is owed to the nine other members.
    assert!(r.sent > 0);
    assert_eq!(r.expected, r.sent * 9);
    assert_eq!(r.received, r.expected);
    assert_eq!((r.duplicated, r.out_of_order, r.misrouted), (0, 0, 0));
    // The server sent each client a PING after its welcome; every one was answered.
    assert_eq!(server.pongs.load(Ordering::SeqCst), 20);
    // Two channels, named from the room index, ten members each.
    let mut channels = server.channels.lock().unwrap().clone();
    channels.sort();
    assert_eq!(channels.len(), 20, "{channels:?}");
    assert!(
        channels[0].ends_with("-0") && channels[19].ends_with("-1"),
        "{channels:?}"
    );
}

#[test]
fn irc_dialect_fails_a_join_with_the_servers_error_line() {
    let server = IrcServer::start(true);
    let r = run(&irc(server.addr));
    assert_eq!((r.established, r.joined, r.join_failed), (20, 0, 20));
    assert!(
        r.failures
            .iter()
            .any(|(why, n)| *n == 20 && why == "join: server said 433 Nickname is already in use"),
        "{r}"
    );
    assert!(!r.ok());
}

#[test]
fn irc_dialect_against_ngircd_if_installed() {
    let Some(ngircd) = Ngircd::start() else {
        eprintln!("skipping: ngircd is not installed (apt-get install ngircd)");
        return;
    };
    let mut config = irc(ngircd.addr);
    config.server_pids = vec![ngircd.child.id()];
    let r = run(&config);
    assert!(r.ok(), "problems: {:?}\n{r}", r.problems);
    assert_eq!(r.received, r.expected);
    assert_eq!(r.expected, r.sent * 9);
}

// ---- a tiny IRC server ------------------------------------------------------------

struct Member {
    nick: String,
    channels: Vec<String>,
    stream: TcpStream,
}

struct IrcServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    members: Arc<Mutex<Vec<Option<Member>>>>,
    pongs: Arc<AtomicU64>,
    /// Every (member, channel) join, as the channel name.
    channels: Arc<Mutex<Vec<String>>>,
}

impl IrcServer {
    /// Starts the server; with `nick_taken` every NICK is refused with 433.
    fn start(nick_taken: bool) -> IrcServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind IRC server");
        listener.set_nonblocking(true).expect("nonblocking");
        let server = IrcServer {
            addr: listener.local_addr().expect("IRC server addr"),
            stop: Arc::new(AtomicBool::new(false)),
            members: Arc::new(Mutex::new(Vec::new())),
            pongs: Arc::new(AtomicU64::new(0)),
            channels: Arc::new(Mutex::new(Vec::new())),
        };
        let (stop, members, pongs, channels) = (
            server.stop.clone(),
            server.members.clone(),
            server.pongs.clone(),
            server.channels.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let Ok(write_half) = stream.try_clone() else {
                    continue;
                };
                let id = {
                    let mut m = members.lock().unwrap();
                    m.push(Some(Member {
                        nick: "*".into(),
                        channels: Vec::new(),
                        stream: write_half,
                    }));
                    m.len() - 1
                };
                let (members, pongs, channels) = (members.clone(), pongs.clone(), channels.clone());
                thread::spawn(move || {
                    serve_irc(id, stream, nick_taken, &members, &pongs, &channels)
                });
            }
        });
        server
    }
}

impl Drop for IrcServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for m in self.members.lock().unwrap().iter().flatten() {
            let _ = m.stream.shutdown(Shutdown::Both);
        }
    }
}

fn serve_irc(
    id: usize,
    stream: TcpStream,
    nick_taken: bool,
    members: &Mutex<Vec<Option<Member>>>,
    pongs: &AtomicU64,
    channels: &Mutex<Vec<String>>,
) {
    let to_me = |line: String| {
        if let Some(Some(m)) = members.lock().unwrap().get_mut(id) {
            let _ = m.stream.write_all(line.as_bytes());
        }
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let nick = match members.lock().unwrap().get(id) {
            Some(Some(m)) => m.nick.clone(),
            _ => break,
        };
        let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match command {
            "NICK" if nick_taken => {
                to_me(format!(
                    ":irc.test 433 * {rest} :Nickname is already in use\r\n"
                ));
            }
            "NICK" => {
                if let Some(Some(m)) = members.lock().unwrap().get_mut(id) {
                    m.nick = rest.to_string();
                }
            }
            "USER" if nick != "*" => {
                to_me(format!(":irc.test 001 {nick} :Welcome to the test net\r\n"));
                to_me(format!(":irc.test 372 {nick} :- a motd line\r\n"));
                to_me(format!("PING :irc.test-{id}\r\n"));
            }
            "PONG" if rest == format!(":irc.test-{id}") => {
                pongs.fetch_add(1, Ordering::SeqCst);
            }
            "PING" => to_me(format!(":irc.test PONG irc.test {rest}\r\n")),
            "JOIN" => {
                let chan = rest.to_string();
                channels.lock().unwrap().push(chan.clone());
                let echo = format!(":{nick}!lcb@127.0.0.1 JOIN :{chan}\r\n");
                let mut m = members.lock().unwrap();
                if let Some(Some(me)) = m.get_mut(id) {
                    me.channels.push(chan.clone());
                }
                for other in m.iter_mut().flatten() {
                    if other.channels.contains(&chan) {
                        let _ = other.stream.write_all(echo.as_bytes());
                    }
                }
                drop(m);
                to_me(format!(":irc.test 353 {nick} = {chan} :{nick}\r\n"));
                to_me(format!(
                    ":irc.test 366 {nick} {chan} :End of NAMES list\r\n"
                ));
            }
            "PRIVMSG" => {
                let (chan, _) = rest.split_once(' ').unwrap_or((rest, ""));
                let out = format!(":{nick}!lcb@127.0.0.1 PRIVMSG {rest}\r\n");
                let mut m = members.lock().unwrap();
                for (j, other) in m.iter_mut().enumerate() {
                    if let Some(other) = other
                        && j != id
                        && other.channels.iter().any(|c| c == chan)
                    {
                        let _ = other.stream.write_all(out.as_bytes());
                    }
                }
            }
            _ => {}
        }
    }
}

// ---- ngIRCd -------------------------------------------------------------------------

/// An ngIRCd on a free loopback port with a throwaway configuration (flood limits
/// lifted, no lookups); killed when dropped.
struct Ngircd {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Ngircd {
    /// `None` when ngircd is not installed.
    fn start() -> Option<Ngircd> {
        let found = Command::new("ngircd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return None;
        }
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("loopchat-ngircd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("ngircd.conf");
        std::fs::write(
            &conf,
            format!(
                "[Global]\nName = bench.test\nInfo = test\nListen = 127.0.0.1\nPorts = {}\n\
                 MotdPhrase = test\nPidFile = {}\nAdminInfo1 = test\nAdminInfo2 = test\n\
                 AdminEMail = root@localhost\n[Limits]\nMaxConnectionsIP = 0\nMaxJoins = 0\n\
                 MaxPenaltyTime = 0\n[Options]\nDNS = no\nIdent = no\nPAM = no\n",
                addr.port(),
                dir.join("ngircd.pid").display()
            ),
        )
        .expect("write ngircd.conf");
        let child = Command::new("ngircd")
            .arg("--nodaemon")
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ngircd");
        let ngircd = Ngircd { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "ngircd did not listen on {addr}");
            thread::sleep(Duration::from_millis(20));
        }
        Some(ngircd)
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
