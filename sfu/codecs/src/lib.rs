//! Fanout's media codecs for the MCU: Opus audio and VP8 video behind a small safe API.
//!
//! The SFU forwards media without decoding it; the MCU beside it (recording, mixed audio, a
//! composite picture) has to decode, mix and encode again, and this crate is how it does so.
//!
//! This is the one place in the workspace with FFI. The rest of the workspace forbids
//! `unsafe_code`; here every `unsafe` block is small and carries a `// SAFETY:` comment (clippy's
//! `undocumented_unsafe_blocks` is denied), and nothing unsafe leaks into the API: callers get
//! owned Rust values and a `Result`.
//!
//! - [`OpusEncoder`] / [`OpusDecoder`] (`opus.rs`): 48 kHz Opus in 20 ms frames, thin wrappers
//!   over the `opus` crate (itself safe bindings to the system libopus), plus packet loss
//!   concealment.
//! - [`Vp8Encoder`] / [`Vp8Decoder`] (`vp8.rs`): VP8 through libvpx's C API (`env-libvpx-sys`),
//!   set up for real-time use (no lookahead, CBR, error resilient, one thread).
//! - [`I420`] (`i420.rs`): the picture type both VP8 sides use, with tightly packed planes.
//!
//! Every type is `Send`, so a codec can live on whichever thread owns its stream; none is `Sync`
//! (all methods take `&mut self`).

mod i420;
mod opus;
mod vp8;

pub use self::i420::I420;
pub use self::opus::{
    Application, Channels, OpusDecoder, OpusEncoder, FRAME_SAMPLES, MAX_PACKET, SAMPLE_RATE,
};
pub use self::vp8::{EncodedFrame, Vp8Decoder, Vp8Encoder, PTS_HZ};

/// What can go wrong in a codec call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// libopus refused a call: an invalid packet, a bitrate out of range, ...
    #[error("opus: {0}")]
    Opus(#[from] ::opus::Error),
    /// libvpx refused a call: `call` is the C function, `detail` libvpx's explanation.
    #[error("libvpx {call}: {detail}")]
    Vpx {
        /// The libvpx function that failed.
        call: &'static str,
        /// libvpx's error string, and its detail message when it gave one.
        detail: String,
    },
    /// An argument checked before it reaches C: a frame of the wrong length, a picture whose size
    /// or planes do not match, a zero size or rate.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
