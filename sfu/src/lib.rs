//! Fanout's media engine.
//!
//! # Layout
//! - [`api`]: what the signaling layer uses: [`Sfu`], [`Participant`], [`Event`].
//! - `driver`: the media driver, one task on its own thread that owns one UDP socket and every
//!   `rtc` peer connection placed on it. Every driver's socket is bound to the same port
//!   (`driver/port.rs`: a datagram the kernel gives to another driver crosses to its owner). It demultiplexes datagrams (by ICE ufrag for new flows,
//!   by source address once a connectivity check was accepted), runs every connection's timers
//!   from one timer heap, and routes media: **packet in → published track → forwarders → packet
//!   out**. Other tasks talk to it only through messages; nothing on the media path takes a lock.
//! - `ice_lite`: the ICE-lite nomination rtc lacks (a first check with USE-CANDIDATE selects its
//!   pair), done by the driver around rtc.
//! - `peer`: thin glue that configures `rtc` connections (ICE-lite, codecs, interceptors).
//! - [`engine`]: the pure decisions (sequence unwrapping, rewriting, keyframe detection and
//!   throttling, datagram classification), told the time and tested without a network.
//!
//! Start reading at `driver/mod.rs`, `Driver::on_rtp`.

pub mod api;
pub mod debug;
/// Public for the deterministic harness (`sfu/tests/`), which drives drivers without sockets; not
/// an API.
#[doc(hidden)]
pub mod driver;
pub mod engine;
mod ice_lite;
/// Public only so the hot-path benchmark (`sfu/benches/hotpath.rs`) builds connections exactly as
/// the server does; not an API.
#[doc(hidden)]
pub mod peer;

pub use api::{
    Candidate, DriverStats, DroppedBytes, ErrorKind, Event, JoinInfo, JoinRequest, LayerReport,
    MediaKind, Observation, Participant, ParticipantInfo, Permissions, Quality, Reason, Sfu,
    SfuConfig, SfuError, TrackInfo, TrackSettings, TrackSource,
};
