//! The pure part of the media engine: decisions about packets, told the time, never asking.
//!
//! Nothing here touches sockets, tokio, `rtc` connections or the clock. Each type takes packets,
//! feedback and `Instant`s and returns small decisions that the driver applies. That is what makes
//! them testable exhaustively (wrap-around, reordering, loss) without a network.

pub mod classify;
pub mod codec;
pub mod data;
pub mod keyframe;
pub mod layers;
pub mod retransmit;
pub mod rewriter;
pub mod seq;
pub mod simulcast;
pub mod speaker;
pub mod vp8;
