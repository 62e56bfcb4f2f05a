//! `/metrics`: Prometheus text format, every name prefixed `fanout_` (listed with their meaning
//! in `docs/operations.md`).
//!
//! Signaling metrics (WebSocket connections, join latency, errors by code, webhook deliveries)
//! are updated where they happen. The media engine's counters live in its drivers, which share
//! nothing with other threads on the media path; a scrape asks every driver for its counters
//! (one message round trip each) and brings these metrics up to date before encoding them.

use prometheus::core::{AtomicU64, GenericCounter};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sfu::{DriverStats, Sfu};

use crate::error::ErrorCode;
use crate::rooms::Rooms;

type Counter = GenericCounter<AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub websocket_connections: IntGauge,
    pub join_latency: Histogram,
    pub signaling_errors: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub admin_requests: IntCounterVec,
    pub draining: IntGauge,
    /// Several nodes: 1 while the last heartbeat reached Redis.
    pub cluster_directory_up: IntGauge,
    /// Several nodes: signaling sessions relayed from this node to their room's node.
    pub proxied_sessions: IntGauge,
    rooms: IntGauge,
    participants: IntGauge,
    published_tracks: IntGauge,
    subscriptions: IntGauge,
    driver_participants: IntGaugeVec,
    packets_in: Counter,
    bytes_in: Counter,
    packets_out: Counter,
    bytes_out: Counter,
    packets_forwarded: Counter,
    bytes_forwarded: Counter,
    packets_dropped: IntCounterVec,
    bytes_dropped: IntCounterVec,
    nacks: Counter,
    retransmissions: IntCounterVec,
    plis_received: Counter,
    keyframe_requests: Counter,
    layer_switches: Counter,
    datagrams_crossed: Counter,
    layers_paused: IntGauge,
    data_received: Counter,
    data_relayed: Counter,
    data_bytes_relayed: Counter,
    data_dropped: IntCounterVec,
    data_backlog_disconnects: Counter,
    /// Serializes scrapes, so that two never move the same counter twice.
    scrape: tokio::sync::Mutex<()>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> Counter {
    let c = Counter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

/// Moves a counter up to the engine's running total.
fn advance(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "fanout",
            );
            let _ = r.register(Box::new(process));
        }
        let join_latency = Histogram::with_opts(
            HistogramOpts::new(
                "fanout_join_latency_seconds",
                "Time from a join message to the joined reply (token check, room registry, engine)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(join_latency.clone()))
            .expect("unique metric");
        let vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            r.register(Box::new(v.clone())).expect("unique metric");
            v
        };
        let signaling_errors = vec(
            "fanout_signaling_errors_total",
            "Errors sent to signaling clients, by error code (refused joins among them)",
            "code",
        );
        let retransmissions = vec(
            "fanout_retransmissions_total",
            "Retransmissions to subscribers: sent, or held back by the storm guard (too old, \
             resent within the round trip, or over the retransmission budget)",
            "result",
        );
        let webhook_deliveries = vec(
            "fanout_webhook_deliveries_total",
            "Webhook delivery outcomes: delivered, retried, failed (gave up), dropped (queue full)",
            "result",
        );
        let admin_requests = vec(
            "fanout_admin_requests_total",
            "Admin API requests, by HTTP status",
            "status",
        );
        let packets_dropped = vec(
            "fanout_packets_dropped_total",
            "Datagrams and RTP packets dropped, by reason",
            "reason",
        );
        let bytes_dropped = vec(
            "fanout_bytes_dropped_total",
            "Bytes of the datagrams and RTP payloads dropped, by reason",
            "reason",
        );
        let data_dropped = vec(
            "fanout_data_messages_dropped_total",
            "Data messages dropped, by reason: too_large, invalid (not an envelope, or an unknown \
             channel), denied (no data grant), rate_limited, backlog (a receiver's queue full), \
             not_open (a receiver's channel not open)",
            "reason",
        );
        let driver_participants = IntGaugeVec::new(
            Opts::new(
                "fanout_driver_participants",
                "Participants on each media driver",
            ),
            &["driver"],
        )
        .expect("valid metric");
        r.register(Box::new(driver_participants.clone()))
            .expect("unique metric");
        Metrics {
            websocket_connections: gauge(
                &r,
                "fanout_websocket_connections",
                "Open signaling WebSockets",
            ),
            draining: gauge(
                &r,
                "fanout_draining",
                "1 while the server drains (refuses new joins)",
            ),
            rooms: gauge(&r, "fanout_rooms", "Rooms that exist"),
            participants: gauge(&r, "fanout_participants", "Participants in rooms"),
            published_tracks: gauge(&r, "fanout_published_tracks", "Tracks being published"),
            subscriptions: gauge(
                &r,
                "fanout_subscriptions",
                "Subscriptions (one per subscriber per track)",
            ),
            packets_in: counter(
                &r,
                "fanout_packets_in_total",
                "Datagrams received on the media ports",
            ),
            bytes_in: counter(
                &r,
                "fanout_bytes_in_total",
                "Bytes received on the media ports",
            ),
            packets_out: counter(
                &r,
                "fanout_packets_out_total",
                "Datagrams sent from the media ports",
            ),
            bytes_out: counter(
                &r,
                "fanout_bytes_out_total",
                "Bytes sent from the media ports",
            ),
            packets_forwarded: counter(
                &r,
                "fanout_packets_forwarded_total",
                "RTP packets forwarded to subscribers",
            ),
            bytes_forwarded: counter(
                &r,
                "fanout_bytes_forwarded_total",
                "RTP payload bytes forwarded to subscribers",
            ),
            nacks: counter(
                &r,
                "fanout_nacks_total",
                "NACK packets received from subscribers (answered with retransmissions)",
            ),
            retransmissions,
            plis_received: counter(
                &r,
                "fanout_plis_total",
                "Keyframe requests (PLI, FIR) received from subscribers",
            ),
            keyframe_requests: counter(
                &r,
                "fanout_keyframe_requests_total",
                "Keyframe requests (PLI) sent to publishers",
            ),
            layer_switches: counter(
                &r,
                "fanout_layer_switches_total",
                "Simulcast layer switches of subscribers",
            ),
            datagrams_crossed: counter(
                &r,
                "fanout_datagrams_crossed_total",
                "Datagrams a media driver's socket received for another driver's connection and \
                 sent on to it (every driver on one UDP port)",
            ),
            cluster_directory_up: gauge(
                &r,
                "fanout_cluster_directory_up",
                "Several nodes: 1 while this node's last heartbeat reached the Redis directory, else 0",
            ),
            proxied_sessions: gauge(
                &r,
                "fanout_proxied_sessions",
                "Several nodes: signaling sessions this node relays to the node holding their room",
            ),
            layers_paused: gauge(
                &r,
                "fanout_layers_paused",
                "Simulcast layers paused at their publishers (dynacast)",
            ),
            data_received: counter(
                &r,
                "fanout_data_messages_received_total",
                "Data messages received from participants (both channels)",
            ),
            data_relayed: counter(
                &r,
                "fanout_data_messages_relayed_total",
                "Data messages delivered to participants (one per receiver)",
            ),
            data_bytes_relayed: counter(
                &r,
                "fanout_data_bytes_relayed_total",
                "Bytes of the data messages delivered to participants (envelopes included)",
            ),
            data_dropped,
            data_backlog_disconnects: counter(
                &r,
                "fanout_data_backlog_disconnects_total",
                "Participants disconnected because they did not read their reliable data channel",
            ),
            packets_dropped,
            bytes_dropped,
            driver_participants,
            join_latency,
            signaling_errors,
            webhook_deliveries,
            admin_requests,
            scrape: tokio::sync::Mutex::new(()),
            registry: r,
        }
    }

    pub fn signaling_error(&self, code: ErrorCode) {
        self.signaling_errors
            .with_label_values(&[code.as_str()])
            .inc();
    }

    fn update(&self, rooms: &Rooms, stats: &[DriverStats]) {
        let (room_count, participant_count) = rooms.counts();
        self.rooms.set(room_count as i64);
        self.participants.set(participant_count as i64);
        let mut total = DriverStats::default();
        for (i, s) in stats.iter().enumerate() {
            self.driver_participants
                .with_label_values(&[i.to_string().as_str()])
                .set(s.participants as i64);
            total.add(s);
        }
        self.published_tracks.set(total.published_tracks as i64);
        self.subscriptions.set(total.subscriptions as i64);
        advance(&self.packets_in, total.datagrams_in);
        advance(&self.bytes_in, total.bytes_in);
        advance(&self.packets_out, total.datagrams_out);
        advance(&self.bytes_out, total.bytes_out);
        advance(&self.packets_forwarded, total.rtp_forwarded);
        advance(&self.bytes_forwarded, total.rtp_forwarded_bytes);
        advance(&self.nacks, total.nacks_received);
        advance(&self.plis_received, total.keyframe_requests_received);
        advance(
            &self.retransmissions.with_label_values(&["sent"]),
            total.retransmissions_sent,
        );
        advance(
            &self.retransmissions.with_label_values(&["held_back"]),
            total.retransmissions_held_back,
        );
        advance(&self.keyframe_requests, total.keyframe_requests);
        advance(&self.layer_switches, total.layer_switches);
        advance(&self.datagrams_crossed, total.datagrams_crossed);
        self.layers_paused.set(total.layers_paused as i64);
        advance(&self.data_received, total.data_messages_in);
        advance(&self.data_relayed, total.data_messages_relayed);
        advance(&self.data_bytes_relayed, total.data_bytes_relayed);
        advance(
            &self.data_backlog_disconnects,
            total.data_backlog_disconnects,
        );
        for (reason, n) in total.data_dropped.by_reason() {
            advance(&self.data_dropped.with_label_values(&[reason]), n);
        }
        for (reason, n) in [
            ("unknown_source", total.datagrams_unknown_source),
            ("rejected", total.handle_read_errors),
            ("muted", total.rtp_dropped_muted),
            ("driver_queue_full", total.mesh_dropped),
            ("forward_error", total.forward_errors),
            (
                "injected",
                total.datagrams_dropped_injected + total.datagrams_dropped_injected_out,
            ),
            ("crossing_queue_full", total.datagrams_dropped_crossing),
        ] {
            advance(&self.packets_dropped.with_label_values(&[reason]), n);
        }
        let b = total.bytes_dropped;
        for (reason, n) in [
            ("unknown_source", b.unknown_source),
            ("rejected", b.rejected),
            ("muted", b.muted),
            ("driver_queue_full", b.driver_queue_full),
            ("forward_error", b.forward_error),
            ("injected", b.injected),
            ("crossing_queue_full", b.crossing),
        ] {
            advance(&self.bytes_dropped.with_label_values(&[reason]), n);
        }
    }

    /// Brings the engine's counters up to date and renders everything.
    pub async fn render(&self, sfu: &Sfu, rooms: &Rooms) -> Result<String, String> {
        let _guard = self.scrape.lock().await;
        let stats = sfu.driver_stats().await.map_err(|e| e.to_string())?;
        self.update(rooms, &stats);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}
