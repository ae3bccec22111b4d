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
//! - [`config`]: the server's settings, from the command line and a TOML file.
//! - [`net`]: listening socket, open-files limit, address ranges, IP redaction.
//! - [`codec`]: bytes → lines → commands, and events → bytes; no I/O.
//! - [`notice`]: every `SERVER:`/`ERROR:` text the server sends.
//! - [`outq`]: the output queue and buffer pool (server and harness alike).
//! - [`timer`]: the hashed timer wheel; time is passed in.
//! - [`tls`]: TLS configurations from PEM files, and self-signed certificates.
//! - [`rate`]: token buckets, message and connect limits, strikes; time is passed in.
//! - [`abuse`]: per-IP connection caps, connect throttle, message rate, strikes, bans.
//! - [`hub`]: chat state (names, rooms, membership); applies commands, says who gets
//!   what; connection ids.
//! - [`conn`]: one connection: transport, line reader, output queue, interest.
//! - [`transport`]: the stream under a connection: plain TCP, TLS (rustls), or a
//!   browser's WebSocket ([`web`], framed by [`ws`]).
//! - [`server`]: the event loop (`server/mod.rs`), the connection table and output
//!   limits (`conns`), reading within budgets (`input`), accepting (`accept`), history
//!   on the loop's side (`history`), accounts and operators (`access`), the metrics
//!   endpoint (`metrics`), live reload (`reload`), the inbox for other threads (`inbox`)
//!   and the counters and summary line (`stats`).
//! - [`store`]: room history, accounts and room keys in SQLite (or, in a cluster, in
//!   Redis), on its own thread: the loop never waits on disk.
//! - [`auth`]: Argon2id password hashing on worker threads, the server password file,
//!   constant-time comparison.
//! - [`cluster`]: the Redis backplane that makes several servers one chat, on two
//!   threads beside the loop.
//! - [`client`]: `loopchat client`: the line client, and the full-screen one on a
//!   terminal.
//! - [`mod@bench`]: `loopchat bench`, the load harness.
//!
//! Data flows one way: socket → read buffer → codec → hub → encoded once → output
//! queues → flushed before the loop sleeps.

#![warn(missing_docs, rust_2018_idioms)]

pub mod abuse;
pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod conn;
pub mod hub;
pub mod net;
pub mod notice;
pub mod outq;
pub mod rate;
pub mod server;
pub mod store;
pub mod timer;
pub mod tls;
pub mod transport;
pub mod web;
pub mod ws;

pub use config::ServerConfig;
pub use server::{Server, ServerHandle};
