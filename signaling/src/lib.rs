//! Fanout's signaling front end and server shell.
//!
//! # Layout
//! - `config`: every setting, merged from defaults, a file, the environment and flags.
//! - `cli`: the `fanout` command line (`serve`, `config`, `token create`).
//! - `auth`: access tokens (JWT, HS256) and their grants.
//! - `protocol`: the WebSocket wire types and their parsing (one file; see `docs/protocol.md`).
//! - `session`: one client's signaling session, a state machine between the socket and the
//!   engine; the drain state.
//! - `rooms`: the room registry (limits, participants by identity, lifecycle events).
//! - `admin`: the admin REST API (`docs/openapi.yaml`).
//! - `webhooks`: signed lifecycle events POSTed to configured URLs.
//! - `metrics`: `/metrics` (Prometheus).
//! - `cluster`: multi-node mode, the Redis directory of nodes and rooms (placement, claims).
//! - `proxy`: a join for a room on another node, relayed to that node.
//! - `server`: the axum router, `build` (engine + registry + webhooks from the settings),
//!   serving (plain or TLS) and the drain.
//!
//! The media engine is the `sfu` crate; this crate never touches an RTP packet.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod ice;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod rooms;
pub mod server;
pub mod session;
pub mod stun;
pub mod turn;
pub mod webhooks;
pub mod whip;
