//! What Fanout's tests, micro-benchmarks and load tester build alike, written once:
//!
//! - [`vp8`]: VP8 RTP payloads (RFC 7741): the payload descriptor the SFU reads and rewrites
//!   (picture id, TL0PICIDX, temporal layer), and the frame tag of a keyframe or interframe.
//! - [`stun`]: the STUN binding request an ICE agent sends (RFC 8489, RFC 8445), with or
//!   without MESSAGE-INTEGRITY and FINGERPRINT, and written wrong on purpose where a test needs
//!   it.
//! - [`client`]: a client peer as a browser has it: its codecs and header extensions (the media
//!   engine), and the interceptor that lets keyframe requests reach the application.
//!
//! It depends on `rtc` only (never on `fanout-sfu`), so the engine's own unit tests can use it.

pub mod client;
pub mod stun;
pub mod vp8;
