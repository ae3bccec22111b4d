//! The event loop. (Being written.)

use std::io;
use std::net::SocketAddr;

use crate::config::ServerConfig;

/// A bound, not yet running server.
pub struct Server {
    addr: SocketAddr,
}

/// Asks a running server to shut down from another thread.
#[derive(Clone)]
pub struct ServerHandle {}

impl Server {
    /// Binds the listener.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        Ok(Server { addr: config.addr })
    }
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {}
    }
    /// Runs the loop until shutdown.
    pub fn run(self) -> io::Result<()> {
        Ok(())
    }
}

impl ServerHandle {
    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {}
}
