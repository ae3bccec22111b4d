//! The client end of one connection as a non-blocking byte stream, plain or TLS, and
//! the TLS set-up before it: the name to verify, a bounded blocking handshake, and the
//! words for what went wrong.
//!
//! [`Transport`] reads and writes plaintext like a non-blocking socket does:
//! `WouldBlock` means "wait for readiness", `Ok(0)` from a read is the end of the
//! stream. Over TLS ([`TlsStream`]) a read pulls records from the socket through
//! rustls until plaintext comes out or the socket would block, answering what the
//! handshake owes on the way; a write hands plaintext to rustls and pushes what the
//! socket takes. Whatever rustls still holds shows in [`Transport::wants_write`], so
//! the caller asks for WRITABLE until it is gone.
//!
//! Both the line client (one connection, handshake done before its loop starts) and
//! the bench harness (thousands, handshaking inside its own mio loop) drive their
//! connections through it. It owns no loop and no registration: the caller polls the
//! socket ([`Transport::socket_mut`]) and decides what a failure means.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// What a TLS connection needs before it starts: whom to trust and the name to verify.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The client configuration (roots or no verification).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry (the host part of the address).
    pub name: ServerName<'static>,
}

impl TlsSetup {
    /// A new rustls client connection for this set-up (its ClientHello queued).
    pub fn connection(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(|e| io::Error::other(format!("TLS set-up: {e}")))
    }
}

/// The host part of `host:port`, without the brackets of an IPv6 literal
/// (`[::1]:8443` → `::1`): the name a server's certificate is verified against.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A rustls client connection over a non-blocking socket, read and written as a
/// plaintext stream.
#[derive(Debug)]
pub struct TlsStream {
    conn: ClientConnection,
    sock: TcpStream,
}

impl TlsStream {
    /// Wraps a connection (handshaking or not) and its socket.
    pub fn new(conn: ClientConnection, sock: TcpStream) -> TlsStream {
        TlsStream { conn, sock }
    }

    /// Writes queued TLS records until none is left (`Ok`) or the socket would block
    /// (`WouldBlock`; the rest stays in rustls).
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`flush_tls`](Self::flush_tls) where a full socket is no error: the caller
    /// sees [`Transport::wants_write`] and waits for WRITABLE.
    fn push_tls(&mut self) -> io::Result<()> {
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection without a TLS close_notify \
                         (the end may be cut off)",
                    ));
                }
                Err(e) => return Err(e),
            }
            // No plaintext buffered: bring in more records. After the socket's end
            // (`Ok(0)`) the reader above answers `Ok(0)` or `UnexpectedEof`, never
            // `WouldBlock`, so this ends.
            match self.conn.read_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert saying why; a last try to send it.
                let _ = self.flush_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // The handshake (or a key update) may owe the server an answer.
            self.push_tls()?;
        }
    }
}

impl Write for TlsStream {
    /// Takes what rustls's buffer takes; `WouldBlock` when it is full and the socket
    /// takes nothing more. Before the handshake is done plaintext only waits in rustls.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.conn.writer().write(buf)?;
        self.push_tls()?;
        if n == 0 {
            // rustls's buffer was full; the socket may have taken some of it now.
            n = self.conn.writer().write(buf)?;
            self.push_tls()?;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

/// One connection's byte stream: the socket itself, or TLS over it.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: a rustls connection is large, and most bench clients may be plain).
    Tls(Box<TlsStream>),
}

impl Transport {
    /// The socket, for polling and connect checks.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }

    /// The socket, for registering with a poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    /// Whether TLS records wait for the socket (ask for WRITABLE until they are gone).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Whether a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.is_handshaking(),
        }
    }

    /// Over TLS, queues a `close_notify` and sends what the socket takes (the rest
    /// goes with the next flush): this end will send nothing more. Plain: nothing.
    pub fn close_notify(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => {
                t.conn.send_close_notify();
                t.push_tls()
            }
        }
    }

    /// ` over TLS 1.3 (TLS13_AES_256_GCM_SHA384)` once a handshake is done; empty for
    /// plain TCP.
    pub fn describe(&self) -> String {
        let Transport::Tls(t) = self else {
            return String::new();
        };
        let version = match t.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
            Some(v) => format!("{v:?}"),
            None => "TLS".to_owned(),
        };
        match t.conn.negotiated_cipher_suite() {
            Some(suite) => format!(" over {version} ({:?})", suite.suite()),
            None => format!(" over {version}"),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// Runs a TLS handshake on a connected blocking socket, bounded by `timeout`, and
/// returns the socket (made non-blocking) with the finished connection. The error
/// names `addr` and what failed, in words a person can act on.
pub fn handshake(
    mut sock: std::net::TcpStream,
    setup: &TlsSetup,
    addr: &str,
    timeout: Duration,
) -> Result<Transport, String> {
    let failed = |why: String| format!("TLS handshake with {addr} failed: {why}");
    let mut conn = setup.connection().map_err(|e| failed(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failed(timed_out(addr, timeout)));
        }
        let timeouts = sock
            .set_read_timeout(Some(left))
            .and_then(|()| sock.set_write_timeout(Some(left)));
        if let Err(e) = timeouts {
            return Err(failed(e.to_string()));
        }
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(failed(handshake_error(&e, addr, timeout)));
        }
    }
    let ready = sock
        .set_read_timeout(None)
        .and_then(|()| sock.set_write_timeout(None))
        .and_then(|()| sock.set_nonblocking(true));
    if let Err(e) = ready {
        return Err(format!("connection to {addr} lost: {e}"));
    }
    Ok(Transport::Tls(Box::new(TlsStream::new(
        conn,
        TcpStream::from_std(sock),
    ))))
}

fn timed_out(addr: &str, timeout: Duration) -> String {
    format!("no answer within {timeout:?} (is {addr} a TLS port?)")
}

/// Why a handshake failed, with a hint when the fix is a flag or a port.
pub fn handshake_error(e: &io::Error, addr: &str, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return timed_out(addr, timeout),
        io::ErrorKind::UnexpectedEof => {
            return format!("the server closed the connection (is {addr} a TLS port?)");
        }
        _ => {}
    }
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(_)) => format!(
            "{e}; pass --ca FILE to trust the server's certificate (or its CA), or \
             --insecure to skip verification for testing"
        ),
        Some(rustls::Error::InvalidMessage(_)) => format!("{e} (is {addr} a TLS port?)"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_part_is_what_gets_verified() {
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("chat.example.org:6697"), "chat.example.org");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn handshake_errors_say_what_to_do() {
        let unknown = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let s = handshake_error(&unknown, "h:1", Duration::from_secs(5));
        assert!(
            s.starts_with("invalid peer certificate: UnknownIssuer; pass --ca FILE"),
            "{s}"
        );
        let plain = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        let s = handshake_error(&plain, "h:1", Duration::from_secs(5));
        assert!(s.ends_with("(is h:1 a TLS port?)"), "{s}");
        let slow = io::Error::from(io::ErrorKind::WouldBlock);
        let s = handshake_error(&slow, "h:1", Duration::from_secs(5));
        assert_eq!(s, "no answer within 5s (is h:1 a TLS port?)");
    }
}
