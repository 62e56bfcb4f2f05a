//! Fanout's media engine.
//!
//! # A packet's way (one file per step)
//! 1. `driver/runtime.rs`: the socket loop reads a batch of datagrams and hands each to the
//!    driver with the time it arrived ([`driver::Driver::handle_datagram`]).
//! 2. `driver/connections.rs`: the datagram finds its connection (pinned source address, else
//!    the ufrag of a STUN check; a shared port's datagram for another driver crosses to it,
//!    `driver/port.rs`), goes into `rtc`, and the connection is *serviced*: what rtc wrote is
//!    queued to send, its events and decrypted media handled.
//! 3. `driver/forward.rs`: a publisher's RTP packet is ingested once on its track and each
//!    subscriber's forwarder decides ([`engine::rewriter`]) and writes it to that subscriber's
//!    connection (`forward_step`, the hot path); to other drivers once each (`driver/mesh.rs`).
//! 4. back in `driver/runtime.rs`: every 16 datagrams the driver is settled and what it queued
//!    is sent ([`driver::Driver::poll_transmit`]), in order.
//!
//! Around that way: `driver/tracks.rs` (publish, unpublish, mute, keyframe requests),
//! `driver/negotiation.rs` (subscriptions, offers and answers), `driver/rooms.rs` (join, leave,
//! telling a room), `driver/select.rs` (layer choice per subscriber every tick, dynacast,
//! speakers), `driver/mesh.rs` (rooms across drivers), `driver/timers.rs`, `driver/tcp.rs`
//! (ICE-TCP framing), `driver/data.rs` (data messages: each participant's two channels and the
//! relay to the room).
//!
//! # Modules
//! - [`api`]: what the signaling layer uses: [`Sfu`], [`Participant`], [`Event`].
//! - [`driver`]: the media driver, socket-free, one per core on a thread of its own with its
//!   runtime (`driver/runtime.rs`); other tasks talk to it only through messages, and nothing on
//!   the media path takes a lock.
//! - `ice_lite`: the ICE-lite nomination rtc lacks, done by the driver around rtc.
//! - `peer`: thin glue that configures `rtc` connections (ICE-lite, codecs, interceptors).
//! - [`engine`]: the pure decisions (sequence unwrapping, rewriting, keyframes, layers,
//!   simulcast ranking and dynacast, speakers, datagram classification, the data envelope and rate limits), told the time and
//!   tested without a network.
//! - `debug`: the snapshot behind `/debug/rooms`; `stats`: what a driver counts.
//!
//! Start reading at `driver/forward.rs` (`Driver::route` and `forward_step`); the driver's
//! inputs and outputs are at the top of `driver/mod.rs`. `sfu/tests/` drives drivers on a
//! virtual clock without sockets.

pub mod api;
pub mod debug;
/// Public for the deterministic harness (`sfu/tests/`), which drives drivers without sockets; not
/// an API.
#[doc(hidden)]
pub mod driver;
pub mod engine;
mod ice_lite;
pub mod mcu;
/// Public only so the hot-path benchmark (`sfu/benches/hotpath/`) builds connections exactly as
/// the server does; not an API.
#[doc(hidden)]
pub mod peer;
mod stats;

pub use mcu::{RecordingSummary, TrackRecording};

pub use api::{
    Candidate, DataDrops, DataLimits, DataMessage, DriverStats, DroppedBytes, ErrorKind, Event,
    JoinInfo, JoinRequest, LayerReport, MediaKind, MutedBy, Observation, Participant,
    ParticipantInfo, Permissions, Quality, Reason, Sfu, SfuConfig, SfuError, TrackInfo,
    TrackSettings, TrackSource,
};
