//! Fanout's load tester: simulated rooms of publishers and subscribers over real WebRTC.
//!
//! - [`media`]: synthetic VP8 simulcast and Opus-sized audio, stamped with send time and counter.
//! - [`client`]: one participant's `rtc` sans-IO connection on its own UDP socket.
//! - [`signal`]: the signaling backends a connection talks through.
//! - [`janus`]: the signaling backends for Janus' VideoRoom, to run the same scenarios on Janus.
//! - [`run`]: starting participants, measurement windows, ramps, the report.
//! - [`report`]: the terminal table and the ramp chart.
//! - [`procstat`]: CPU and memory from `/proc`.

pub mod client;
pub mod janus;
pub mod media;
pub mod procstat;
pub mod report;
pub mod run;
pub mod signal;
