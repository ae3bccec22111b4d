//! Client socket set-up for the harness: open a non-blocking socket from a chosen
//! source address, tell when its connect has finished, and put connect errors in words
//! a user can act on.
//!
//! It owns no connection state: the worker keeps the sockets, registers them with its
//! poll and decides what a failure means for the run.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

/// Opens a non-blocking socket, binds it to `src` (if any) and starts connecting.
/// `small_rcvbuf` shrinks its receive buffer (for a client that will stop reading).
pub fn open(addr: SocketAddr, src: Option<IpAddr>, small_rcvbuf: bool) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // Small messages must not wait for Nagle: latency is what we measure.
    socket.set_tcp_nodelay(true)?;
    if small_rcvbuf {
        // A stalled client should fill up quickly, so the server's own output cap (not
        // the kernel's buffers) is what it runs into.
        socket.set_recv_buffer_size(4096)?;
    }
    if let Some(ip) = src {
        bind_no_port(&socket);
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(socket)))
}

/// Whether a connecting socket is now connected, after an event on it (mio's documented
/// sequence: `take_error`, then `peer_addr`). `Ok(false)`: still in progress (events can
/// be spurious); `Err`: the connect failed.
pub fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Asks Linux to pick the source port at connect time, not at bind time, so a port is
/// unique per (source, destination) pair rather than per source address.
#[cfg(target_os = "linux")]
fn bind_no_port(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a c_int of the size we pass. Failure
    // (an old kernel) only means ports are chosen at bind time.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_no_port(_socket: &socket2::Socket) {}

/// A connect error in words a user can act on.
pub fn connect_error(e: &io::Error, addr: SocketAddr) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => {
            format!("connection refused by {addr} (is the server running?)")
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "out of file descriptors (open files limit)".into()
        }
        Some(libc::EADDRNOTAVAIL) => {
            "no free local port (EADDRNOTAVAIL): add source addresses with --source-ips".into()
        }
        Some(libc::ETIMEDOUT) => format!("connect to {addr} timed out"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_say_what_to_do() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            connect_error(&refused, addr),
            "connection refused by 127.0.0.1:9 (is the server running?)"
        );
        let ports = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert!(connect_error(&ports, addr).contains("--source-ips"));
    }
}
