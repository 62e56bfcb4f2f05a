//! The MCU beside the SFU: recording, mixed audio and a composite picture.
//!
//! Nothing here runs on a media driver's thread: a driver hands copies of a track's packets to a
//! bounded queue (a *tap*, `driver/tap.rs`), and the threads here depacketize, decode, mix,
//! composite, encode and write files.
//!
//! - `audio`: a room's mixed audio: decode, jitter buffers, mix-minus per listener, encode.
//! - `mix`: the audio mixer (sums with clipping, mix-minus per listener, inputs that drop out).
//! - `layout`: where each picture goes in a composite (a grid, the speaker larger, a screen share
//!   as the main picture).
//! - `canvas`: I420 pictures and scaling one into a rectangle of another.
//! - `composite`: a room's composite picture: inputs decoded, laid out, drawn and encoded once;
//!   `composer`: its thread. `mixer`: the thread of `audio`.
//! - `depacketize`: RTP packets back into whole frames (reordering, VP8 frame assembly).
//! - `packetize`: whole VP8 frames into RTP payloads (RFC 7741), for the composite.
//! - `record`: one track into a WebM file without transcoding; `record_room`: a room's
//!   composite and mix into one; `recording`: the engine's API for both
//!   ([`crate::Sfu::record_track`], [`crate::Sfu::record_room`]).

pub mod audio;
pub mod canvas;
pub mod composer;
pub mod composite;
pub mod depacketize;
pub mod layout;
pub mod mix;
pub mod mixer;
pub mod packetize;
pub mod record;
pub mod record_room;
mod recording;

pub use record::RecordingSummary;
pub use recording::TrackRecording;
