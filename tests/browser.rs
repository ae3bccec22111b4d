//! The built-in page in a real browser: Debian's Chromium, headless, driven through
//! chromedriver's WebDriver HTTP API (a few JSON requests written by hand). The page
//! joins the lobby, sends a line a TCP client receives, and shows a line the TCP client
//! sends, with `<script>` in it shown as text.
//!
//! `.ci/run` installs `chromium` and `chromium-driver`; where they are missing the test
//! says so and passes without a browser.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loopchat::{Server, ServerConfig};
use util::{Client, TIMEOUT};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The WebDriver key code for Enter.
const ENTER: &str = "\\uE007";

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, addr }
    }

    /// One WebDriver request; the response body.
    fn call(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // The driver may keep the connection open: read the head, then exactly
        // Content-Length bytes.
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                }
            }
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                return String::new();
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The string value that follows `"key":` in a JSON text.
fn json_str(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = &json[at + key.len() + 2..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// A browser session on the driver.
struct Session<'d> {
    driver: &'d Driver,
    id: String,
}

impl Session<'_> {
    fn element(&self, css: &str) -> String {
        let body = format!("{{\"using\":\"css selector\",\"value\":\"{css}\"}}");
        let answer = self
            .driver
            .call("POST", &format!("/session/{}/element", self.id), &body);
        json_str(&answer, "element-6066-11e4-a52e-4f735466cecf")
            .unwrap_or_else(|| panic!("no element {css}: {answer}"))
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        let body = format!("{{\"text\":\"{text}\"}}");
        self.driver.call(
            "POST",
            &format!("/session/{}/element/{element}/value", self.id),
            &body,
        );
    }

    fn source(&self) -> String {
        self.driver
            .call("GET", &format!("/session/{}/source", self.id), "")
    }

    /// Waits until the page's source contains `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let source = self.source();
            if source.contains(needle) {
                return source;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {needle:?}:\n{source}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.driver
            .call("DELETE", &format!("/session/{}", self.id), "");
    }
}

#[test]
fn the_page_chats_with_a_tcp_client_in_a_real_browser() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is not installed (.ci/run installs them)");
        return;
    }
    util::init_logging();
    let server = Server::bind(ServerConfig {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..util::config()
    })
    .unwrap();
    let web = server.ws_addr().unwrap();
    let server = util::start_bound(server);
    let mut bob = Client::connect_named(server.addr, "bob");

    let driver = Driver::start();
    let capabilities = format!(
        "{{\"capabilities\":{{\"alwaysMatch\":{{\"goog:chromeOptions\":{{\"binary\":\"{CHROMIUM}\",\
         \"args\":[\"--headless\",\"--no-sandbox\",\"--disable-gpu\",\"--disable-dev-shm-usage\",\
         \"--disable-quic\",\"--no-first-run\",\"--disable-background-networking\",\
         \"--disable-component-update\",\"--disable-sync\"]}}}}}}}}"
    );
    let answer = driver.call("POST", "/session", &capabilities);
    let id = json_str(&answer, "sessionId").unwrap_or_else(|| panic!("no session: {answer}"));
    let session = Session {
        driver: &driver,
        id,
    };
    let url = format!("{{\"url\":\"http://{web}/\"}}");
    driver.call("POST", &format!("/session/{}/url", session.id), &url);
    session.wait_for("connected");

    session.type_into("#name", &format!("alice{ENTER}"));
    bob.expect_line("JOIN:alice\n");
    session.type_into("#line", &format!("hello from chromium{ENTER}"));
    bob.expect_line("SAY:alice:hello from chromium\n");

    bob.send_line("SAY::<script>document.title='owned'</script> <b>bold</b>");
    let source = session.wait_for("&lt;script&gt;document.title='owned'&lt;/script&gt;");
    assert!(
        source.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "markup is shown as text"
    );
    assert!(
        !source.contains("<title>owned"),
        "no script from a message ran"
    );
}
