//! The byte stream under a connection: plain TCP, or a TLS session over TCP driven by
//! the same loop.
//!
//! A [`Transport`] reads plaintext, writes a connection's output queue, says whether it
//! has bytes of its own to send (handshake records, alerts) and shuts its write side
//! cleanly (`close_notify`, then a FIN). The loop never knows which kind it drives.
//!
//! TLS follows rustls's own non-blocking pattern (`read_tls` → `process_new_packets`
//! → `reader()`; `writer()` → `write_tls`), with rustls's buffers kept small
//! ([`crate::tls::SERVER_BUFFER_LIMIT`]): whatever does not fit stays in the
//! connection's queue, where the output caps see it.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use rustls::ServerConnection;

use crate::outq::{BufferPool, OutQueue, Written};

/// The stream under one connection.
#[derive(Debug)]
pub enum Transport {
    /// A plain TCP socket.
    Plain(TcpStream),
    /// TLS over TCP (boxed: a plain connection should not pay for its size).
    Tls(Box<TlsStream>),
    /// A browser: HTTP, then WebSocket, over plain TCP or TLS.
    Ws(Box<crate::web::WsStream>),
}

/// A TLS session and its socket.
#[derive(Debug)]
pub struct TlsStream {
    socket: TcpStream,
    session: ServerConnection,
    /// Plaintext handed to rustls and not known to be on the wire yet (an upper
    /// bound; zero once rustls has nothing left to send).
    in_session: usize,
}

/// What one read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// `plain` bytes of plaintext in the buffer, from `raw` bytes taken off the socket
    /// (a TLS handshake takes bytes and gives no plaintext).
    Data {
        /// Plaintext bytes at the front of the buffer.
        plain: usize,
        /// Bytes read from the socket.
        raw: usize,
    },
    /// The peer ended its input (a FIN, or a TLS `close_notify`).
    Eof,
}

impl Transport {
    /// A TLS session over `socket`, its buffers limited for chat.
    pub fn tls(socket: TcpStream, mut session: ServerConnection) -> Transport {
        session.set_buffer_limit(Some(crate::tls::SERVER_BUFFER_LIMIT));
        Transport::Tls(Box::new(TlsStream {
            socket,
            session,
            in_session: 0,
        }))
    }

    /// Reads once. `WouldBlock` means no input now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Got> {
        match self {
            Transport::Plain(s) => match s.read(buf)? {
                0 => Ok(Got::Eof),
                n => Ok(Got::Data { plain: n, raw: n }),
            },
            Transport::Tls(t) => t.read(buf),
            Transport::Ws(w) => w.read(buf),
        }
    }

    /// Writes `out` until it is empty or the socket would block.
    pub fn write_from(&mut self, out: &mut OutQueue, pool: &mut BufferPool) -> io::Result<Written> {
        match self {
            Transport::Plain(s) => out.write_to(s, pool),
            Transport::Tls(t) => t.write_from(out, pool),
            Transport::Ws(w) => w.write_from(out, pool),
        }
    }

    /// Whether a read shorter than the buffer proves the socket is drained, so the
    /// next read would only say `WouldBlock`. True for TCP (epoll(7): for stream sockets
    /// a short read means the input is exhausted, and new data raises a new edge); not
    /// for TLS, whose plaintext comes out in records of its own size.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Whether the transport itself has bytes to send (handshake records, alerts,
    /// output it buffers).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.session.wants_write(),
            Transport::Ws(w) => w.wants_write(),
        }
    }

    /// Keepalive for a browser connection: `None` for any other, else whether it
    /// answered the last ping (a new ping, or a close, is queued).
    pub fn keepalive(&mut self) -> Option<bool> {
        match self {
            Transport::Ws(w) => Some(w.keepalive()),
            Transport::Plain(_) | Transport::Tls(_) => None,
        }
    }

    /// Whether a TLS handshake (or a browser's HTTP request) is still going on.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.session.is_handshaking(),
            Transport::Ws(w) => w.is_handshaking(),
        }
    }

    /// Output bytes the transport holds beside the connection's queue.
    pub fn buffered(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
            Transport::Tls(t) => t.in_session,
            Transport::Ws(w) => w.buffered(),
        }
    }

    /// The socket, to register with the poller.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.socket,
            Transport::Ws(w) => w.socket(),
        }
    }

    /// Ends the write side: a WebSocket close frame and a TLS `close_notify` (written
    /// now if the socket takes them), then a FIN.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown(Shutdown::Write),
            Transport::Ws(w) => w.shutdown_write(),
            Transport::Tls(t) => {
                t.session.send_close_notify();
                while t.session.wants_write() {
                    match t.session.write_tls(&mut t.socket) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // The alert is a courtesy; the FIN below still ends the stream.
                        Err(_) => break,
                    }
                }
                t.socket.shutdown(Shutdown::Write)
            }
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Got> {
        let mut raw = 0;
        loop {
            match self.session.reader().read(buf) {
                Ok(0) => return Ok(Got::Eof),
                Ok(plain) => return Ok(Got::Data { plain, raw }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without a close_notify: still its end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Got::Eof),
                Err(e) => return Err(e),
            }
            if raw >= buf.len() {
                // Bytes taken but no plaintext yet (a handshake): report progress, so
                // the read budget counts them.
                return Ok(Got::Data { plain: 0, raw });
            }
            match self.session.read_tls(&mut self.socket) {
                Ok(0) => return Ok(Got::Eof),
                Ok(n) => {
                    raw += n;
                    self.session
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && raw > 0 => {
                    return Ok(Got::Data { plain: 0, raw });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write_from(&mut self, out: &mut OutQueue, pool: &mut BufferPool) -> io::Result<Written> {
        let mut done = Written { calls: 0, bytes: 0 };
        loop {
            let moved = if out.is_empty() {
                0
            } else {
                self.session.writer().write(out.as_slice())?
            };
            if moved > 0 {
                out.consume(moved, pool);
                done.bytes += moved;
                self.in_session += moved;
            }
            if self.session.wants_write() {
                done.calls += 1;
                match self.session.write_tls(&mut self.socket) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if moved == 0 {
                break;
            }
        }
        if !self.session.is_handshaking() {
            // Everything rustls held is on the wire.
            self.in_session = 0;
        }
        Ok(done)
    }
}
