//! Fanout's signaling front end and server shell.
//!
//! # Layout
//! Listed from the bottom up: a module imports only those above it in this list (except `rooms`
//! and `webhooks`, which share each other's types).
//! - `stun`: the server's public address, asked of a STUN server at start-up.
//! - `config`: every setting, merged from defaults, a file, the environment and flags.
//! - `cli`: the `fanout` command line (`serve`, `config`, `token create`).
//! - `auth`: access tokens (JWT, HS256) and their grants.
//! - `error`: every error code (WebSocket, WHIP/WHEP, admin API), and the HTTP API's JSON error.
//! - `protocol`: the WebSocket wire types and their parsing (one file; see `docs/protocol.md`).
//! - `ice`: the ICE servers handed to clients (TURN credentials from a shared secret).
//! - `turn`: the embedded TURN server.
//! - `drain`: the drain state (joins refused, readiness failing, sessions told to close).
//! - `rooms`: the room registry (limits, participants by identity, lifecycle events).
//! - `webhooks`: signed lifecycle events POSTed to configured URLs.
//! - `metrics`: `/metrics` (Prometheus).
//! - `cluster`: multi-node mode, the Redis directory of nodes and rooms (placement, claims).
//! - `outbox`: what a client is sent, queued (bounded) to a writer of its own, so a client that
//!   stops reading holds up nothing else.
//! - `proxy`: a join for a room on another node, its WebSocket relayed to that node.
//! - `session`: one client's signaling session, a state machine between the socket and the
//!   engine.
//! - `whip_sessions`: the registry of live WHIP/WHEP sessions.
//! - `state`: `AppState`, what every HTTP handler is given.
//! - `forward`: an HTTP request for a room on another node, forwarded to that node.
//! - `admin`: the admin REST API (`docs/openapi.yaml`).
//! - `whip`: WHIP ingest and WHEP egress.
//! - `server`: the axum router, `build` (engine + registry + webhooks from the settings),
//!   serving (plain or TLS) and the drain.
//!
//! The media engine is the `sfu` crate; this crate never touches an RTP packet.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
pub mod forward;
pub mod ice;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod proxy;
pub mod recordings;
pub mod rooms;
pub mod server;
pub mod session;
pub mod sockets;
pub mod state;
pub mod stun;
pub mod turn;
pub mod webhooks;
pub mod whip;
pub mod whip_sessions;
