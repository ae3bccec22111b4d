//! loopchat: a chat server on one readiness-based event loop.
//!
//! One `mio::Poll` drives a `slab` of non-blocking connections, each with its own read
//! and write buffers; lines are split and parsed by a pure codec, applied to the chat
//! state, encoded once per dialect and queued to every recipient, then flushed before
//! the loop sleeps again. Deadlines (registration, idle, bans, shutdown) live in a
//! hashed timer wheel. No thread per client, no async runtime.
//!
//! # Layout
//!
//! - [`config`]: the server's settings, built from the command line.
//! - [`net`]: listening socket, open-files limit, address ranges, IP redaction.
//! - [`codec`]: bytes → lines → commands, and events → bytes; no I/O.
//! - [`timer`]: the hashed timer wheel; time is passed in.
//! - [`rate`]: token buckets and strikes; time is passed in.
//! - [`abuse`]: per-IP connection caps, connect throttle, strikes and the ban table.
//! - [`hub`]: chat state (names, rooms, membership); applies commands, says who gets what.
//! - [`conn`]: one connection: socket, line reader, output queue, interest.
//! - [`server`]: the event loop that ties them together.
//! - [`client`]: `loopchat client`, the line client.
//! - [`bench`]: `loopchat bench`, the load harness.
//!
//! Data flows one way: socket → read buffer → codec → hub → encoded once → output
//! queues → flushed before the loop sleeps.

#![warn(missing_docs, rust_2018_idioms)]

pub mod abuse;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub mod conn;
pub mod hub;
pub mod net;
pub mod notice;
pub mod outq;
pub mod rate;
pub mod server;
pub mod timer;

pub use config::ServerConfig;
pub use server::{Server, ServerHandle};
