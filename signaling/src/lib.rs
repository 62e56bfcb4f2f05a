//! Fanout's signaling front end and server shell.
//!
//! # Layout
//! - `cli`: the `fanout` command line (flags and `FANOUT_…` environment variables).
//! - `protocol`: the WebSocket wire types and their parsing (one file; see `docs/protocol.md`).
//! - `session`: one client's signaling session, a state machine between the socket and the engine.
//! - `server`: the axum router (`/ws`, `/healthz`, the demo page) and `run`.
//!
//! The media engine is the `sfu` crate; this crate never touches an RTP packet.

pub mod cli;
pub mod protocol;
pub mod server;
pub mod session;
