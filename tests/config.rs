//! Running as a service: the configuration file (every key, the command line over it,
//! errors with file, line and key), `--print-config` read back, SIGHUP applying a
//! changed file to a running server (and a bad file changing nothing), and the
//! systemd unit and Dockerfile in `contrib/`.

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use loopchat::{ServerConfig, config::ConfigError};
use util::{Binary, Client, GREETING, TIMEOUT, TestServer};

/// A configuration file that sets every key to something other than its default.
const EVERY_KEY: &str = r#"
addr = "0.0.0.0:7000"
tls-listen = "0.0.0.0:7443"
tls-cert = "/etc/loopchat/cert.pem"
tls-key = "/etc/loopchat/key.pem"
no-plain = true
ws-listen = "0.0.0.0:7080"
wss-listen = "0.0.0.0:7444"
ws-origin = ["https://chat.example.org"]
metrics = "127.0.0.1:9100"
cluster = "redis://10.0.0.5:6379/2"
node-id = "chat-1"
cluster-ttl = "30s"
reuse-port = true
db = "/var/lib/loopchat/loopchat.db"
db-flush = "100ms"
history-replay = 50
history-retain = "7d"
password-file = "/etc/loopchat/password"
admin = ["alice", "bob"]
auth-threads = 2
max-line = "8KiB"
max-output = "2MiB"
max-output-soft = "512KiB"
slow-grace = "5s"
max-output-total = "1GiB"
send-buffer = 0
max-clients = 5000
register-timeout = "30s"
idle-timeout = "1h"
announce-limit = 200
backlog = 1024
summary-interval = "5m"
coalesce = "2ms"
linger = "1s"
rate = 2.5
burst = 8
msg-in-rate = 4
msg-in-burst = 6
ip-rate = 30
ip-burst = 60
max-strikes = 3
strike-decay = "1m"
ban-time = "1h"
max-bans = 5000
max-conns-per-ip = 16
connect-rate = 5
connect-burst = 10
exempt = ["10.0.0.0/8", "::1"]
redact-ips = true
"#;

/// A directory of its own for one test's files, removed at the end.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new() -> TempDir {
        TempDir(tempfile::tempdir().expect("make a temporary directory"))
    }

    /// Writes `text` to `name` in the directory and returns its path.
    #[track_caller]
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }
}

/// `ServerConfig::from_args` for `loopchat server <args>`.
fn from_args(args: &[&str]) -> Result<ServerConfig, ConfigError> {
    ServerConfig::from_args(std::iter::once("loopchat server").chain(args.iter().copied()))
}

/// [`from_args`] that must succeed.
#[track_caller]
fn parsed(args: &[&str]) -> ServerConfig {
    from_args(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The settings alone: where they came from (file, command line) left out.
fn settings(config: &ServerConfig) -> ServerConfig {
    ServerConfig {
        config_file: None,
        overrides: Default::default(),
        ..config.clone()
    }
}

/// The error that `text` as a configuration file gives.
#[track_caller]
fn file_error(text: &str) -> (ConfigError, PathBuf) {
    let dir = TempDir::new();
    let path = dir.write("loopchat.toml", text);
    match from_args(&["--config", path.to_str().unwrap()]) {
        Ok(_) => panic!("{text:?} was accepted"),
        Err(e) => (e, path),
    }
}

// ----- the file ----------------------------------------------------------------------

#[test]
fn every_key_is_read_from_the_file() {
    let dir = TempDir::new();
    let path = dir.write("every.toml", EVERY_KEY);
    let c = parsed(&["--config", path.to_str().unwrap()]);
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    assert_eq!(c.addr, "0.0.0.0:7000".parse().unwrap());
    assert_eq!(c.tls_listen, Some("0.0.0.0:7443".parse().unwrap()));
    assert_eq!(c.cluster.as_deref(), Some("redis://10.0.0.5:6379/2"));
    assert_eq!(c.node_id.as_deref(), Some("chat-1"));
    assert_eq!(c.cluster_ttl, secs(30));
    assert!(c.reuse_port);
    assert_eq!(c.tls_cert, Some("/etc/loopchat/cert.pem".into()));
    assert_eq!(c.tls_key, Some("/etc/loopchat/key.pem".into()));
    assert!(c.no_plain);
    assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(c.db, "/var/lib/loopchat/loopchat.db");
    assert_eq!(c.db_flush, ms(100));
    assert_eq!(c.history_replay, 50);
    assert_eq!(c.history_retain, secs(7 * 86400));
    assert_eq!(c.password_file, Some("/etc/loopchat/password".into()));
    assert_eq!(c.admins, ["alice", "bob"]);
    assert_eq!(c.auth_threads, 2);
    assert_eq!(c.max_line, 8 << 10);
    assert_eq!(c.max_output, 2 << 20);
    assert_eq!(c.max_output_soft, 512 << 10);
    assert_eq!(c.slow_grace, secs(5));
    assert_eq!(c.max_output_total, 1 << 30);
    assert_eq!(c.send_buffer, 0);
    assert_eq!(c.max_clients, 5000);
    assert_eq!(c.register_timeout, secs(30));
    assert_eq!(c.idle_timeout, secs(3600));
    assert_eq!(c.announce_limit, 200);
    assert_eq!(c.backlog, 1024);
    assert_eq!(c.summary_interval, secs(300));
    assert_eq!(c.coalesce, ms(2));
    assert_eq!(c.linger, secs(1));
    assert_eq!(c.rate, 2.5);
    assert_eq!(c.burst, 8.0);
    assert_eq!(c.msg_in_rate, 4.0);
    assert_eq!(c.msg_in_burst, 6.0);
    assert_eq!(c.ip_rate, 30.0);
    assert_eq!(c.ip_burst, 60.0);
    assert_eq!(c.max_strikes, 3);
    assert_eq!(c.strike_decay, secs(60));
    assert_eq!(c.ban_time, secs(3600));
    assert_eq!(c.max_bans, 5000);
    assert_eq!(c.max_conns_per_ip, 16);
    assert_eq!(c.connect_rate, 5.0);
    assert_eq!(c.connect_burst, 10.0);
    let exempt: Vec<String> = c.exempt.iter().map(ToString::to_string).collect();
    assert_eq!(exempt, ["10.0.0.0/8", "::1/128"]);
    assert!(c.redact_ips);
    assert_eq!(c.config_file, Some(path));
}

#[test]
fn the_full_example_sets_every_key_away_from_its_default() {
    let dir = TempDir::new();
    let path = dir.write("every.toml", EVERY_KEY);
    let every = parsed(&["--config", path.to_str().unwrap()])
        .to_table()
        .unwrap();
    let default = ServerConfig::default().to_table().unwrap();
    for key in ServerConfig::keys() {
        assert!(every.contains_key(&key), "EVERY_KEY lacks {key}");
        assert_ne!(every.get(&key), default.get(&key), "{key} is its default");
    }
}

#[test]
fn every_flag_is_a_key_of_the_same_name() {
    let keys = ServerConfig::keys();
    let cmd = ServerConfig::augment_args(clap::Command::new("loopchat server"));
    for arg in cmd.get_arguments() {
        let name = match (arg.get_long(), arg.get_id().as_str()) {
            (_, "config_file") => continue,
            (Some(long), _) => long.to_string(),
            (None, id) => id.to_string(),
        };
        assert!(keys.contains(&name), "--{name} has no key in the file");
    }
    assert_eq!(keys.len(), cmd.get_arguments().count() - 1, "{keys:?}");
    // And --print-config shows each one, set or commented out.
    let printed = ServerConfig::default().to_toml().unwrap();
    for key in &keys {
        assert!(
            printed.contains(&format!("\n{key} = ")) || printed.contains(&format!("\n# {key} = ")),
            "--print-config lacks {key}"
        );
    }
}

#[test]
fn every_key_takes_the_same_spelling_as_its_flag() {
    let dir = TempDir::new();
    let path = dir.write("every.toml", EVERY_KEY);
    let from_file = parsed(&["--config", path.to_str().unwrap()]);
    let table = from_file.to_table().unwrap();
    let cmd = ServerConfig::augment_args(clap::Command::new("loopchat server"));
    let mut args: Vec<String> = Vec::new();
    for arg in cmd.get_arguments() {
        let key = arg
            .get_long()
            .map_or_else(|| arg.get_id().to_string(), str::to_string);
        let Some(value) = table.get(&key) else {
            continue;
        };
        let values = match value {
            toml::Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Boolean(true) => {
                    args.push(format!("--{key}"));
                    continue;
                }
                other => other.to_string(),
            };
            if !arg.is_positional() {
                args.push(format!("--{key}"));
            }
            args.push(text);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(parsed(&args), settings(&from_file), "{args:?}");
}

#[test]
fn an_empty_file_is_the_defaults() {
    let dir = TempDir::new();
    let path = dir.write("empty.toml", "# nothing yet\n");
    let c = parsed(&["--config", path.to_str().unwrap()]);
    assert_eq!(settings(&c), ServerConfig::default());
}

#[test]
fn the_command_line_overrides_the_file() {
    let dir = TempDir::new();
    let path = dir.write(
        "loopchat.toml",
        "addr = \"0.0.0.0:7000\"\nrate = 2\nmax-output = \"2MiB\"\nadmin = [\"alice\", \"bob\"]\n\
         idle-timeout = \"5m\"\n",
    );
    let c = parsed(&[
        "127.0.0.1:9000",
        "--config",
        path.to_str().unwrap(),
        "--rate",
        "3",
        "--admin",
        "carol",
        "--redact-ips",
    ]);
    // Given on the command line: the flag wins, and a list replaces the file's.
    assert_eq!(c.addr, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.rate, 3.0);
    assert_eq!(c.admins, ["carol"]);
    assert!(c.redact_ips);
    // Only in the file: the file wins over the default.
    assert_eq!(c.max_output, 2 << 20);
    assert_eq!(c.idle_timeout, Duration::from_secs(300));
    // Neither: the default.
    assert_eq!(c.burst, ServerConfig::default().burst);
    let mut given: Vec<&str> = c.overrides.keys().collect();
    given.sort_unstable();
    assert_eq!(given, ["addr", "admin", "rate", "redact-ips"]);
}

#[test]
fn a_flag_at_its_default_value_still_overrides_the_file() {
    let dir = TempDir::new();
    let path = dir.write("loopchat.toml", "rate = 2\n");
    let c = parsed(&["--config", path.to_str().unwrap(), "--rate", "5"]);
    assert_eq!(c.rate, 5.0);
}

#[test]
fn the_file_path_is_made_absolute() {
    let dir = TempDir::new();
    dir.write("loopchat.toml", "rate = 2\n");
    let here = std::env::current_dir().unwrap();
    let relative = pathdiff(&dir.0.path().join("loopchat.toml"), &here);
    let c = parsed(&["--config", relative.to_str().unwrap()]);
    let file = c.config_file.expect("a file");
    assert!(file.is_absolute(), "{}", file.display());
    assert_eq!(c.rate, 2.0);
}

/// `path` relative to `base` (both absolute), through `..` as needed.
fn pathdiff(path: &Path, base: &Path) -> PathBuf {
    let common = path
        .components()
        .zip(base.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in base.components().skip(common) {
        out.push("..");
    }
    for part in path.components().skip(common) {
        out.push(part);
    }
    out
}

#[test]
fn sizes_take_units_on_the_command_line_and_plain_numbers_still_work() {
    let c = parsed(&[
        "--max-output",
        "64KiB",
        "--max-output-soft",
        "1024",
        "--max-output-total",
        "1GiB",
        "--send-buffer",
        "0",
        "--max-line",
        "2KiB",
    ]);
    assert_eq!(c.max_output, 64 << 10);
    assert_eq!(c.max_output_soft, 1024);
    assert_eq!(c.max_output_total, 1 << 30);
    assert_eq!(c.send_buffer, 0);
    assert_eq!(c.max_line, 2048);
    let e = from_args(&["--max-output", "1MB"]).unwrap_err();
    assert!(e.to_string().contains("KiB"), "{e}");
}

#[test]
fn a_file_takes_whole_seconds_and_plain_byte_counts() {
    let dir = TempDir::new();
    let path = dir.write("loopchat.toml", "idle-timeout = 90\nmax-output = 65536\n");
    let c = parsed(&["--config", path.to_str().unwrap()]);
    assert_eq!(c.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.max_output, 65536);
}

#[test]
fn an_unknown_key_names_the_file_the_line_and_the_key() {
    let (e, path) = file_error("rate = 2\n\nrat = 3\n");
    assert_eq!(e.file.as_deref(), Some(path.as_path()));
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("rat"));
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:3: key `rat`: unknown key", path.display())),
        "{shown}"
    );
}

#[test]
fn a_table_is_an_unknown_key_since_keys_are_flat() {
    let (e, _) = file_error("rate = 2\n[tls]\ncert = \"cert.pem\"\n");
    assert_eq!(e.key.as_deref(), Some("tls"));
    assert_eq!(e.line, Some(2));
}

#[test]
fn a_wrong_type_names_its_line_and_key() {
    let (e, path) = file_error("burst = 4\nrate = \"fast\"\n");
    assert_eq!(e.file.as_deref(), Some(path.as_path()));
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key.as_deref(), Some("rate"));
    assert!(e.message.contains("invalid type"), "{e}");

    let (e, _) = file_error("\n\nadmin = \"alice\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("admin")));
}

#[test]
fn a_bad_value_names_its_line_and_key() {
    let (e, _) = file_error("rate = 1\nidle-timeout = \"5w\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("idle-timeout")));
    assert!(e.message.contains("unit"), "{e}");

    let (e, _) = file_error("max-output = \"1MB\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("max-output")));

    let (e, _) = file_error("exempt = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/99\",\n]\n");
    assert_eq!(e.key.as_deref(), Some("exempt"));
    assert!(e.message.contains("prefix"), "{e}");

    let (e, _) = file_error("backlog = 99999999999\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("backlog")));

    let (e, _) = file_error("addr = \"localhost\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("addr")));
}

#[test]
fn a_file_that_is_not_toml_names_its_line() {
    let (e, _) = file_error("rate = 2\nburst = \n");
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key.as_deref(), Some("burst"));
}

#[test]
fn a_missing_file_is_an_error_that_names_it() {
    let e = from_args(&["--config", "/nonexistent/loopchat.toml"]).unwrap_err();
    assert_eq!(e.file, Some("/nonexistent/loopchat.toml".into()));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/loopchat.toml: cannot read")
    );
}

// ----- --print-config ----------------------------------------------------------------

/// `config` printed, then read back as a file.
#[track_caller]
fn printed_and_read_back(config: &ServerConfig) -> ServerConfig {
    let dir = TempDir::new();
    let path = dir.write("printed.toml", &config.to_toml().unwrap());
    parsed(&["--config", path.to_str().unwrap()])
}

#[test]
fn print_config_reads_back_as_the_same_configuration() {
    let default = ServerConfig::default();
    assert_eq!(settings(&printed_and_read_back(&default)), default);

    let dir = TempDir::new();
    let path = dir.write("every.toml", EVERY_KEY);
    let every = parsed(&["--config", path.to_str().unwrap(), "--rate", "0.125"]);
    assert_eq!(settings(&printed_and_read_back(&every)), settings(&every));

    // Values no one would write, printed exactly all the same.
    let odd = ServerConfig {
        max_output: 1_000_001,
        coalesce: Duration::from_nanos(1_500),
        history_retain: Duration::new(86_401, 1),
        linger: Duration::ZERO,
        ..ServerConfig::default()
    };
    assert_eq!(settings(&printed_and_read_back(&odd)), odd);
}

#[test]
fn print_config_of_the_binary_is_the_effective_configuration() {
    let dir = TempDir::new();
    let path = dir.write("loopchat.toml", "rate = 2\nmax-output = \"2MiB\"\n");
    let args = ["--config", path.to_str().unwrap(), "--burst", "3"];
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .arg("server")
        .args(args)
        .arg("--print-config")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("\nrate = 2.0\n"), "{printed}");
    assert!(printed.contains("\nmax-output = \"2MiB\"\n"), "{printed}");
    assert!(printed.contains("\nburst = 3.0\n"), "{printed}");
    assert!(printed.contains("\n# tls-cert = \"FILE\"\n"), "{printed}");
    let again = dir.write("printed.toml", &printed);
    let read_back = parsed(&["--config", again.to_str().unwrap()]);
    assert_eq!(settings(&read_back), settings(&parsed(&args)));
}

#[test]
fn the_binary_refuses_a_bad_file_with_status_2_before_listening() {
    let dir = TempDir::new();
    let path = dir.write("loopchat.toml", "rate = 2\nmax-outptu = \"1MiB\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(["server", "127.0.0.1:0", "--db", "none", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("{}:2: key `max-outptu`", path.display())),
        "{said}"
    );
    assert!(!said.contains("listening on"), "{said}");
}

// ----- reloading ---------------------------------------------------------------------

/// Every limit off but those a test sets, as `util::config` has it, in file form.
const QUIET: &str = "rate = 0\nip-rate = 0\nmsg-in-rate = 0\nconnect-rate = 0\n\
                     max-conns-per-ip = 0\nmax-strikes = 0\nlinger = \"500ms\"\n";

/// A server configured by `dir/loopchat.toml` (with `text`), on an ephemeral port
/// with history in memory.
fn start_with_file(dir: &TempDir, text: &str) -> (TestServer, PathBuf) {
    let path = dir.write("loopchat.toml", text);
    let config = parsed(&[
        "127.0.0.1:0",
        "--db",
        "none",
        "--history-replay",
        "0",
        "--config",
        path.to_str().unwrap(),
    ]);
    (util::start(config), path)
}

/// Reloads and waits until the loop has seen it: the reload is in the inbox before
/// the barrier's line is sent, so it is handled no later than the batch that reads
/// that line, whose reply is written after the batch.
#[track_caller]
fn reload_seen_by(server: &TestServer, barrier: &mut Client) {
    server.handle.reload();
    barrier.barrier();
}

/// [`reload_seen_by`] a new connection: its line costs no one else a token.
#[track_caller]
fn reload(server: &TestServer) {
    reload_seen_by(server, &mut Client::connect(server.addr));
}

#[test]
fn reload_tightens_the_rate_limit_for_new_messages() {
    let dir = TempDir::new();
    let (server, path) = start_with_file(&dir, QUIET);
    let [mut alice, mut bob] = util::named(server.addr, ["alice", "bob"]);
    for i in 0..5 {
        alice.send_line(&format!("SAY::before {i}"));
        bob.expect_line(&format!("SAY:alice:before {i}\n"));
    }

    // One message, then (almost) never again. (`rate` is QUIET's first line.)
    let tight = QUIET.replacen("rate = 0\n", "rate = 0.001\nburst = 1\n", 1);
    std::fs::write(&path, tight).unwrap();
    reload(&server);
    alice.send_line("SAY::after 0");
    bob.expect_line("SAY:alice:after 0\n");
    alice.send_line("SAY::after 1");
    alice.expect_prefix("ERROR:rate limit exceeded (0.001 messages/s)");

    // A bad file, though it would lift the limit, changes nothing.
    std::fs::write(&path, format!("{QUIET}ratee = 1\n")).unwrap();
    reload(&server);
    alice.send_line("SAY::after 2");
    alice.expect_prefix("ERROR:rate limit exceeded (0.001 messages/s)");

    // A good one does.
    std::fs::write(&path, QUIET).unwrap();
    reload(&server);
    alice.send_line("SAY::after 3");
    bob.expect_line("SAY:alice:after 3\n");
}

#[test]
fn reload_makes_an_exempt_range_take_effect_and_counts_stay_right() {
    let dir = TempDir::new();
    let one_each = QUIET.replace("max-conns-per-ip = 0", "max-conns-per-ip = 1");
    let (server, path) = start_with_file(&dir, &one_each);
    let mut first = Client::connect(server.addr);
    let mut refused = Client::connect_raw(server.addr);
    refused.expect_line("ERROR:too many connections from your address\n");

    std::fs::write(&path, format!("{one_each}exempt = [\"127.0.0.0/8\"]\n")).unwrap();
    reload_seen_by(&server, &mut first);
    let mut second = Client::connect(server.addr);
    let third = Client::connect(server.addr);

    // Exempt no more: the three open connections count again, so a fourth is over.
    std::fs::write(&path, &one_each).unwrap();
    reload_seen_by(&server, &mut second);
    let mut fourth = Client::connect_raw(server.addr);
    fourth.expect_line("ERROR:too many connections from your address\n");

    // Once all three have gone, the address has room for exactly one again.
    for mut c in [first, second, third] {
        c.send_line("LEAVE:");
        c.read_to_close();
    }
    let mut next = connect_when_counted_out(server.addr);
    next.barrier();
    let mut over = Client::connect_raw(server.addr);
    over.expect_line("ERROR:too many connections from your address\n");
}

/// Connects once the server has counted the closes it has been told of: a close is
/// released at the loop's next safe point, so `too many connections` is retried.
#[track_caller]
fn connect_when_counted_out(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut c = Client::connect_raw(addr);
        let line = c.read_line();
        if line == GREETING {
            return c;
        }
        assert_eq!(line, "ERROR:too many connections from your address\n");
        assert!(Instant::now() < deadline, "the closes were never counted");
        // The refusal was a round trip through the loop; the close may be the next.
        c.read_to_close();
    }
}

#[test]
fn reload_gives_and_takes_operator_rights_without_a_new_login() {
    let dir = TempDir::new();
    let (server, path) = start_with_file(&dir, QUIET);
    let mut root = Client::connect(server.addr);
    root.send_line("REGISTER:root:operator password");
    root.expect_line("SERVER:logged in as root\n");
    root.expect_line("SERVER:you are root in #lobby\n");
    let mut bob = Client::connect_named(server.addr, "bob");
    root.expect_line("JOIN:bob\n");
    root.send_line("KICK:bob:now");
    root.expect_line("ERROR:not allowed\n");

    std::fs::write(&path, format!("{QUIET}admin = [\"root\"]\n")).unwrap();
    reload(&server);
    root.send_line("KICK:bob:now");
    bob.expect_line("ERROR:kicked by root: now, closing\n");
    root.expect_line("LEAVE:bob\n");

    std::fs::write(&path, QUIET).unwrap();
    reload(&server);
    let _carol = Client::connect_named(server.addr, "carol");
    root.expect_line("JOIN:carol\n");
    root.send_line("KICK:carol:now");
    root.expect_line("ERROR:not allowed\n");
}

/// Waits (bounded) until the server's log has a line containing `needle`.
#[track_caller]
fn wait_logged(bin: &Binary, needle: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !bin.logged(needle) {
        assert!(
            Instant::now() < deadline,
            "the server never logged {needle:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sighup_logs_what_changed_and_what_needs_a_restart_and_a_bad_file_changes_nothing() {
    let dir = TempDir::new();
    let path = dir.write("loopchat.toml", "rate = 5\nbacklog = 128\n");
    let bin = Binary::start(&["--config", path.to_str().unwrap()]);

    std::fs::write(&path, "rate = 1\nbacklog = 256\n").unwrap();
    bin.signal(libc::SIGHUP);
    wait_logged(&bin, "reload: rate = 1.0 (was 5.0)");
    wait_logged(
        &bin,
        "reload: backlog needs a restart; keeping 128 (the file says 256)",
    );
    assert!(
        bin.logged("WARN") && !bin.logged("reload: addr"),
        "the restart is a warning; the address came from the command line"
    );

    std::fs::write(&path, "rate = 2\nrate-limit = 3\n").unwrap();
    bin.signal(libc::SIGHUP);
    wait_logged(&bin, ":2: key `rate-limit`: unknown key");
    wait_logged(&bin, "nothing changed");
    assert!(!bin.logged("reload: rate = 2.0"));

    // The server still serves, with the limit of the last good file.
    let mut c = Client::connect(bin.addr);
    c.barrier();
}

// ----- contrib/ ----------------------------------------------------------------------

/// The repository's `contrib/` folder.
fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name)
}

/// Whether `program` can be run (it answers `--version`).
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_systemd_unit_verifies() {
    if !installed("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // The unit names /usr/local/bin/loopchat, which `verify` checks exists: a copy of
    // the unit pointing at the binary just built is what is verified. The template
    // (one process per core) is verified as one of its instances.
    let dir = TempDir::new();
    for (file, name) in [
        ("loopchat.service", "loopchat.service"),
        ("loopchat@.service", "loopchat@core0.service"),
    ] {
        let unit = std::fs::read_to_string(contrib(file)).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/local/bin/loopchat server"),
            "{unit}"
        );
        let unit = unit.replace("/usr/local/bin/loopchat", env!("CARGO_BIN_EXE_loopchat"));
        let path = dir.write(name, &unit);
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        // Inside a container with no systemd running, verify may complain about the
        // environment, not the unit: only complaints that name the unit count.
        let about_unit: Vec<&str> = said.lines().filter(|l| l.contains(name)).collect();
        assert!(about_unit.is_empty(), "{said}");
    }
}

#[test]
fn the_dockerfile_lints() {
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    assert!(dockerfile.exists());
    if !installed("hadolint") {
        eprintln!("skipped: hadolint is not installed; the Dockerfile is left to review");
        return;
    }
    let out = Command::new("hadolint").arg(&dockerfile).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
