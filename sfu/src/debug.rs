//! A snapshot of the driver's state for the debug endpoint: every room, participant, published
//! track and layer, and for every subscription the layer forwarded, the layer targeted and why.
//! Answers "why am I seeing the low layer?" without a debugger.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub rooms: Vec<RoomSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomSnapshot {
    pub name: String,
    pub participants: Vec<ParticipantSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantSnapshot {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub connected: bool,
    /// The client's current path: the source address of its last accepted connectivity check
    /// (behind a NAT, the NAT's address).
    pub remote_addr: Option<String>,
    /// The downlink estimate (transport-wide feedback, else REMB) in bits per second.
    pub estimate_bps: Option<u64>,
    /// The budget the allocator used (the estimate, held down after congestion).
    pub budget_bps: Option<u64>,
    pub congestion_hold: bool,
    pub published: Vec<TrackSnapshot>,
    pub subscriptions: Vec<SubscriptionSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackSnapshot {
    pub id: String,
    pub kind: &'static str,
    pub source: &'static str,
    pub codec: String,
    pub mid: Option<String>,
    pub muted: bool,
    /// Ordered low to high.
    pub layers: Vec<LayerSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSnapshot {
    pub rid: String,
    pub quality: &'static str,
    pub ssrc: u32,
    pub active: bool,
    /// Asked of the publisher (dynacast); false means paused there.
    pub requested: bool,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionSnapshot {
    pub track_id: String,
    pub publisher_id: String,
    pub current: Option<&'static str>,
    pub target: Option<&'static str>,
    pub reason: &'static str,
    pub visible: bool,
    pub display_width: Option<u32>,
    pub display_height: Option<u32>,
    pub max_quality: &'static str,
}
