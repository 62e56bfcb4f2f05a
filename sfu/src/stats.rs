//! What a media driver counts: its participants, datagrams, forwarded and dropped media, data
//! messages. Summed over drivers by the engine handle ([`DriverStats::add`]) and exported as
//! metrics by signaling.

/// Counters of one media driver, for tests and (later) metrics.
#[derive(Debug, Clone, Default)]
pub struct DriverStats {
    pub participants: usize,
    pub rooms: usize,
    pub published_tracks: usize,
    /// Forwarders (one per subscriber per track) on this driver.
    pub subscriptions: usize,
    pub datagrams_in: u64,
    pub bytes_in: u64,
    /// Datagrams and bytes written to the media socket (media, RTCP, STUN, DTLS).
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Datagrams the driver queued that its socket refused (a full send buffer, a closed
    /// ICE-TCP connection); also counted in `datagrams_out`.
    pub datagrams_send_failed: u64,
    /// Payload bytes of the RTP packets forwarded to subscribers.
    pub rtp_forwarded_bytes: u64,
    /// Publisher RTP dropped because the track is muted.
    pub rtp_dropped_muted: u64,
    /// NACK (generic transport feedback) packets received from subscribers.
    pub nacks_received: u64,
    /// PLI and FIR packets received from subscribers.
    pub keyframe_requests_received: u64,
    /// Retransmissions sent to subscribers in answer to NACKs, and those held back because they
    /// would have fed a retransmission storm (too old, resent within the round trip, or over the
    /// retransmission budget; see `engine::retransmit`).
    pub retransmissions_sent: u64,
    pub retransmissions_held_back: u64,
    pub datagrams_unknown_source: u64,
    pub datagrams_dropped_injected: u64,
    pub datagrams_dropped_injected_out: u64,
    pub rtp_forwarded: u64,
    pub forward_errors: u64,
    pub keyframe_requests: u64,
    /// Forwarders that started a new epoch on a different layer than their last one.
    pub layer_switches: u64,
    /// Simulcast layers paused at their publisher now (dynacast).
    pub layers_paused: u64,
    /// Dynacast updates sent to publishers.
    pub dynacast_updates: u64,
    pub handle_read_errors: u64,
    pub connection_panics: u64,
    /// Packets sent to other drivers (once per driver holding a proxy of the track), received
    /// from them, and dropped because a driver's queue was full.
    pub mesh_packets_out: u64,
    pub mesh_packets_in: u64,
    pub mesh_dropped: u64,
    /// Shared port: datagrams this driver's socket received for another driver's connection and
    /// sent on to it, and those dropped because that driver's queue was full.
    pub datagrams_crossed: u64,
    pub datagrams_dropped_crossing: u64,
    /// Bytes of what was dropped, by reason (the packet counters above count the same drops).
    pub bytes_dropped: DroppedBytes,
    /// Data messages received from participants (both channels).
    pub data_messages_in: u64,
    /// Data messages delivered to participants (one per receiver), and their bytes.
    pub data_messages_relayed: u64,
    pub data_bytes_relayed: u64,
    /// Data messages dropped, by reason.
    pub data_dropped: DataDrops,
    /// Receivers disconnected because their reliable channel's backlog passed the limit.
    pub data_backlog_disconnects: u64,
}

/// Bytes dropped on purpose, by reason: datagrams from unknown sources or rejected by their
/// connection (whole datagrams), RTP of muted tracks, RTP that found another driver's queue
/// full or could not be written to a subscriber (payloads), and test fault injection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedBytes {
    pub unknown_source: u64,
    pub rejected: u64,
    pub muted: u64,
    pub driver_queue_full: u64,
    pub forward_error: u64,
    pub injected: u64,
    pub crossing: u64,
}

impl DroppedBytes {
    fn add(&mut self, o: &DroppedBytes) {
        // Destructured, so a counter added later cannot be left out of the sum.
        let DroppedBytes {
            unknown_source,
            rejected,
            muted,
            driver_queue_full,
            forward_error,
            injected,
            crossing,
        } = o;
        self.unknown_source += unknown_source;
        self.rejected += rejected;
        self.muted += muted;
        self.driver_queue_full += driver_queue_full;
        self.forward_error += forward_error;
        self.injected += injected;
        self.crossing += crossing;
    }
}

impl DriverStats {
    /// Adds another driver's counters to these.
    pub fn add(&mut self, o: &DriverStats) {
        // Destructured, so a counter added later cannot be left out of the sum.
        let DriverStats {
            participants,
            rooms,
            published_tracks,
            subscriptions,
            datagrams_in,
            bytes_in,
            datagrams_out,
            bytes_out,
            datagrams_send_failed,
            rtp_forwarded_bytes,
            rtp_dropped_muted,
            nacks_received,
            keyframe_requests_received,
            retransmissions_sent,
            retransmissions_held_back,
            datagrams_unknown_source,
            datagrams_dropped_injected,
            datagrams_dropped_injected_out,
            rtp_forwarded,
            forward_errors,
            keyframe_requests,
            layer_switches,
            layers_paused,
            dynacast_updates,
            handle_read_errors,
            connection_panics,
            mesh_packets_out,
            mesh_packets_in,
            mesh_dropped,
            datagrams_crossed,
            datagrams_dropped_crossing,
            bytes_dropped,
            data_messages_in,
            data_messages_relayed,
            data_bytes_relayed,
            data_dropped,
            data_backlog_disconnects,
        } = o;
        self.participants += participants;
        self.rooms += rooms;
        self.published_tracks += published_tracks;
        self.subscriptions += subscriptions;
        self.datagrams_in += datagrams_in;
        self.bytes_in += bytes_in;
        self.datagrams_out += datagrams_out;
        self.bytes_out += bytes_out;
        self.datagrams_send_failed += datagrams_send_failed;
        self.rtp_forwarded_bytes += rtp_forwarded_bytes;
        self.rtp_dropped_muted += rtp_dropped_muted;
        self.nacks_received += nacks_received;
        self.keyframe_requests_received += keyframe_requests_received;
        self.retransmissions_sent += retransmissions_sent;
        self.retransmissions_held_back += retransmissions_held_back;
        self.datagrams_unknown_source += datagrams_unknown_source;
        self.datagrams_dropped_injected += datagrams_dropped_injected;
        self.datagrams_dropped_injected_out += datagrams_dropped_injected_out;
        self.rtp_forwarded += rtp_forwarded;
        self.forward_errors += forward_errors;
        self.keyframe_requests += keyframe_requests;
        self.layer_switches += layer_switches;
        self.layers_paused += layers_paused;
        self.dynacast_updates += dynacast_updates;
        self.handle_read_errors += handle_read_errors;
        self.connection_panics += connection_panics;
        self.mesh_packets_out += mesh_packets_out;
        self.mesh_packets_in += mesh_packets_in;
        self.mesh_dropped += mesh_dropped;
        self.datagrams_crossed += datagrams_crossed;
        self.datagrams_dropped_crossing += datagrams_dropped_crossing;
        self.bytes_dropped.add(bytes_dropped);
        self.data_messages_in += data_messages_in;
        self.data_messages_relayed += data_messages_relayed;
        self.data_bytes_relayed += data_bytes_relayed;
        self.data_dropped.add(data_dropped);
        self.data_backlog_disconnects += data_backlog_disconnects;
    }
}

/// Data messages dropped, by reason: larger than the channel's limit, an envelope that does not
/// parse, a sender without the `data` grant, over the sender's rate, a receiver's lossy backlog
/// full (or its reliable backlog past the limit), a receiver whose channel is not open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataDrops {
    pub too_large: u64,
    pub invalid: u64,
    pub denied: u64,
    pub rate_limited: u64,
    pub backlog: u64,
    pub not_open: u64,
}

impl DataDrops {
    fn add(&mut self, o: &DataDrops) {
        // Destructured, so a counter added later cannot be left out of the sum.
        let DataDrops {
            too_large,
            invalid,
            denied,
            rate_limited,
            backlog,
            not_open,
        } = o;
        self.too_large += too_large;
        self.invalid += invalid;
        self.denied += denied;
        self.rate_limited += rate_limited;
        self.backlog += backlog;
        self.not_open += not_open;
    }

    /// Every reason with its count, for metrics.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("too_large", self.too_large),
            ("invalid", self.invalid),
            ("denied", self.denied),
            ("rate_limited", self.rate_limited),
            ("backlog", self.backlog),
            ("not_open", self.not_open),
        ]
    }
}
