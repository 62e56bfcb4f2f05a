//! Negotiation: a subscription adds a sender to the subscriber's connection and the server
//! offers (one offer outstanding at a time; the server is the impolite side of perfect
//! negotiation); client offers and answers, trickled candidates, the server's candidates sent
//! once, and starting the forwarders of a connected subscriber once negotiated.

use std::time::Instant;

use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tracing::{debug, warn};

use super::data::has_application;
use super::forward::Forwarder;
use super::{guarded, Driver, TrackKey};
use crate::api::{Candidate, ErrorKind, Event, MediaKind, ParticipantKey};
use crate::engine::layers::{Reason, Wants};
use crate::engine::rewriter::RtpRewriter;
use crate::peer::{self};

pub(super) struct Subscription {
    /// Included in an offer the client has not answered yet.
    pub(super) offered: bool,
    /// Included in an offer the client answered.
    pub(super) negotiated: bool,
    /// The sender's encoding carries the track's codec (see [`Driver::pin_sender_codecs`]).
    pub(super) codec_pinned: bool,
}

/// The mids of the media sections of an SDP that send nothing: rejected (port 0), `inactive`
/// or `recvonly` (a client that removed a track, e.g. a stopped screen share).
pub(super) fn silent_mids(sdp: &str) -> Vec<String> {
    let mut silent = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let rejected = section.split_whitespace().nth(1) == Some("0");
        let mut mid = None;
        let mut quiet = rejected;
        for line in section.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            }
            quiet |= line == "a=inactive" || line == "a=recvonly";
        }
        if let (true, Some(mid)) = (quiet, mid) {
            silent.push(mid);
        }
    }
    silent
}

pub(super) fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned())
}

/// Remote ICE candidates taken per ICE generation of a participant (a browser gathers a few per
/// network interface; each taken one costs a pair to check and memory for the connection's life).
pub(super) const MAX_REMOTE_CANDIDATES: u32 = 40;

impl Driver {
    /// Adds the track to the subscriber's connection and renegotiates.
    pub(super) fn subscribe(&mut self, sub_key: ParticipantKey, tkey: TrackKey, now: Instant) {
        let Some(track) = self.tracks.all.get_mut(&tkey) else {
            return;
        };
        let publisher_id = track.publisher_id.clone();
        let Some(sub) = self.conns.peers.get_mut(&sub_key) else {
            return;
        };
        // A mix is its listener's alone; a mixed listener hears the room only through its mix.
        let mixed_out = if track.composite {
            !sub.mixed_video
        } else {
            match track.mix_for {
                Some(listener) => listener != sub_key,
                None => match track.kind {
                    MediaKind::Audio => sub.mixed_audio,
                    MediaKind::Video => sub.mixed_video,
                },
            }
        };
        if mixed_out
            || !sub.permissions.subscribe
            || sub
                .subscribe_to
                .as_ref()
                .is_some_and(|p| *p != track.publisher_id)
            || (sub.answer_only && sub.remote_set)
        {
            return;
        }
        let ssrc = self.rng.random::<u32>();
        let kind = match track.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        // The publisher's participant id is the MediaStream id (msid), so the client can tell
        // whose media an incoming track is.
        let local_track = MediaStreamTrack::new(
            publisher_id.clone(),
            track.id.clone(),
            track.id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                // No codec here: a codec on the encoding becomes the m-line's only codec, and
                // rtc then restricts the whole connection to what that m-line negotiated, so a
                // later track in another codec (VP8 next to H.264) could not be added. The
                // forwarder picks the payload type by MIME type after negotiation.
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![publisher_id],
            send_encodings: vec![],
        };
        let added = guarded(|| {
            let tid = sub.pc.add_transceiver_from_track(local_track, Some(init))?;
            Ok::<_, rtc::shared::error::Error>(sub.pc.rtp_transceiver(tid).and_then(|t| t.sender()))
        });
        let sender_id = match added {
            Some(Ok(Some(id))) => id,
            Some(Ok(None)) => return,
            Some(Err(err)) => {
                warn!(%err, "could not add a track to a subscriber");
                return;
            }
            None => {
                self.fail_peer(sub_key, "panic in add_transceiver");
                return;
            }
        };
        sub.subscribed.insert(
            tkey,
            Subscription {
                offered: false,
                negotiated: false,
                codec_pinned: false,
            },
        );
        sub.track_by_ssrc.insert(ssrc, tkey);
        sub.negotiation_needed = true;
        track.forwarders.push(Forwarder {
            subscriber: sub_key,
            sender_id,
            ssrc,
            payload_type: 0,
            active: false,
            created_ms: u32::try_from(
                now.saturating_duration_since(track.published_at)
                    .as_millis(),
            )
            .unwrap_or(u32::MAX),
            rewriter: RtpRewriter::new(self.rng.random(), track.rtc_codec.clock_rate),
            wants: Wants::default(),
            ideal: None,
            reason: Reason::DisplaySize,
            reported: None,
        });
        self.maybe_offer(sub_key, now);
    }

    /// Sends the server's offer if the subscriber's tracks changed and no offer is outstanding.
    pub(super) fn maybe_offer(&mut self, key: ParticipantKey, now: Instant) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if !peer.negotiation_needed || peer.offer_outstanding || peer.answer_only {
            return;
        }
        let result = guarded(|| {
            let offer = peer.pc.create_offer(None)?;
            peer.pc.set_local_description(now, offer)?;
            Ok::<_, rtc::shared::error::Error>(peer.pc.local_description().map(|d| d.sdp))
        });
        match result {
            Some(Ok(Some(sdp))) => {
                peer.negotiation_needed = false;
                peer.offer_outstanding = true;
                for sub in peer.subscribed.values_mut() {
                    sub.offered = true;
                }
                self.events.tell(key, Event::Offer(sdp));
                self.pin_sender_codecs(key);
                self.send_candidates_once(key);
            }
            Some(Ok(None)) => {}
            Some(Err(err)) => {
                warn!(participant = %key, %err, "could not create an offer");
                self.send_error(
                    key,
                    ErrorKind::Internal,
                    format!("server offer failed: {err}"),
                );
            }
            None => self.fail_peer(key, "panic in create_offer"),
        }
        self.enqueue(key);
    }

    /// Gives each newly offered subscriber sender's encoding the track's codec, between the offer
    /// and the answer. Senders are created without one (a codec on the encoding at offer time
    /// pins the m-line to it and, through the answer, narrows the codecs of the whole
    /// connection), but rtc binds a sender's stream to the interceptors (NACK responder, sender
    /// reports, transport-wide sequence numbers for the bandwidth estimate) only when its
    /// encoding's codec matches a negotiated one, which it checks when the answer arrives.
    pub(super) fn pin_sender_codecs(&mut self, key: ParticipantKey) {
        let Some(peer) = self.conns.peers.get(&key) else {
            return;
        };
        let mut pins = Vec::new();
        for (tkey, sub) in &peer.subscribed {
            if sub.codec_pinned || !sub.offered {
                continue;
            }
            let Some(track) = self.tracks.all.get(tkey) else {
                continue;
            };
            let Some(fwd) = track.forwarders.iter().find(|f| f.subscriber == key) else {
                continue;
            };
            let publisher_id = track.publisher_id.clone();
            let kind = match track.kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let coded = MediaStreamTrack::new(
                publisher_id,
                track.id.clone(),
                track.id.clone(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(fwd.ssrc),
                        ..Default::default()
                    },
                    codec: track.rtc_codec.clone(),
                    ..Default::default()
                }],
            );
            pins.push((*tkey, fwd.sender_id, coded));
        }
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        for (tkey, sender_id, coded) in pins {
            let replaced = guarded(|| {
                peer.pc
                    .rtp_sender(sender_id)
                    .map(|mut s| s.replace_track(coded))
            });
            match replaced {
                Some(Some(Ok(()))) => {
                    if let Some(sub) = peer.subscribed.get_mut(&tkey) {
                        sub.codec_pinned = true;
                    }
                }
                other => debug!(participant = %key, ?other, "could not pin a sender codec"),
            }
        }
    }

    /// The server's host candidates, trickled once after the first SDP it sends.
    pub(super) fn send_candidates_once(&mut self, key: ParticipantKey) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if peer.candidates_sent {
            return;
        }
        peer.candidates_sent = true;
        let mid = peer.pc.local_description().and_then(|d| first_mid(&d.sdp));
        let Ok(inits) =
            peer::host_candidate_inits(&self.conns.host_candidates, &self.conns.tcp_candidates)
        else {
            return;
        };
        for init in inits {
            self.events.tell(
                key,
                Event::Candidate(Candidate {
                    candidate: format!(
                        "candidate:{}",
                        init.candidate.trim_start_matches("candidate:")
                    ),
                    sdp_mid: mid.clone(),
                    sdp_mline_index: Some(0),
                    username_fragment: Some(peer.ufrag.clone()),
                }),
            );
        }
    }

    pub(super) fn on_remote_offer(&mut self, key: ParticipantKey, sdp: String, now: Instant) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if peer.offer_outstanding {
            // Perfect negotiation: the server is impolite and ignores a colliding offer; the
            // client rolls back, answers ours, and offers again.
            debug!(participant = %peer.id, "ignoring colliding client offer");
            return;
        }
        if peer.data.is_none() && has_application(&sdp) {
            // The client's data channels are negotiated (fixed stream ids): the server's must
            // exist before the offer that carries their SCTP association is applied.
            self.open_data_channels(key, now);
        }
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        let silent = silent_mids(&sdp);
        let applied = guarded(|| {
            let offer =
                RTCSessionDescription::offer(sdp).map_err(|e| (ErrorKind::InvalidSdp, e))?;
            peer.pc
                .set_remote_description(now, offer)
                .map_err(|e| (ErrorKind::InvalidSdp, e))
        });
        match applied {
            Some(Ok(())) => {}
            Some(Err((kind, err))) => {
                self.send_error(key, kind, format!("offer rejected: {err}"));
                self.enqueue(key);
                return;
            }
            None => {
                self.fail_peer(key, "panic applying an offer");
                return;
            }
        }
        self.unpublish_silent(key, &silent, now);
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        let answer_only = peer.answer_only;
        if answer_only {
            // The client's offer negotiates the subscriptions (rtc pairs its m-lines with the
            // senders already added): their codecs go on the encodings before the answer, as
            // between a server offer and its answer.
            for sub in peer.subscribed.values_mut() {
                sub.offered = true;
            }
            self.pin_sender_codecs(key);
        }
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        let result = guarded(|| {
            let answer = peer
                .pc
                .create_answer(None)
                .map_err(|e| (ErrorKind::InvalidSdp, e))?;
            peer.pc
                .set_local_description(now, answer)
                .map_err(|e| (ErrorKind::Internal, e))?;
            Ok(peer.pc.local_description().map(|d| d.sdp))
        });
        if answer_only && matches!(result, Some(Ok(Some(_)))) {
            for sub in peer.subscribed.values_mut() {
                sub.negotiated = sub.offered;
            }
        }
        match result {
            Some(Ok(Some(sdp))) => {
                self.events.tell(key, Event::Answer(sdp));
                let early = std::mem::take(&mut peer.early_candidates);
                for c in early {
                    let _ = guarded(|| peer.pc.add_remote_candidate(c));
                }
                self.replay_early_checks(key, now);
                self.send_candidates_once(key);
                if answer_only {
                    self.activate_forwarders(key, now);
                }
                // Subscriptions offered before may now be negotiated too (an answer covers them).
                self.maybe_offer(key, now);
            }
            Some(Ok(None)) => {}
            Some(Err((kind, err))) => {
                self.send_error(key, kind, format!("offer rejected: {err}"));
            }
            None => self.fail_peer(key, "panic applying an offer"),
        }
        self.enqueue(key);
    }

    pub(super) fn on_remote_answer(&mut self, key: ParticipantKey, sdp: String, now: Instant) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if !peer.offer_outstanding {
            self.send_error(
                key,
                ErrorKind::InvalidSdp,
                "answer without an outstanding offer".into(),
            );
            return;
        }
        let result = guarded(|| {
            let answer = RTCSessionDescription::answer(sdp)?;
            peer.pc.set_remote_description(now, answer)
        });
        match result {
            Some(Ok(())) => {
                peer.offer_outstanding = false;
                for sub in peer.subscribed.values_mut() {
                    if sub.offered {
                        sub.negotiated = true;
                    }
                }
                let early = std::mem::take(&mut peer.early_candidates);
                for c in early {
                    let _ = guarded(|| peer.pc.add_remote_candidate(c));
                }
                self.replay_early_checks(key, now);
                self.activate_forwarders(key, now);
                self.maybe_offer(key, now);
            }
            Some(Err(err)) => {
                self.send_error(
                    key,
                    ErrorKind::InvalidSdp,
                    format!("answer rejected: {err}"),
                );
            }
            None => self.fail_peer(key, "panic applying an answer"),
        }
        self.enqueue(key);
    }

    pub(super) fn on_remote_candidate(&mut self, key: ParticipantKey, c: Candidate) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        if init.candidate.is_empty() {
            return; // end of candidates
        }
        // At most MAX_REMOTE_CANDIDATES per ICE generation (its ufrag): each one is checked
        // against, and kept, for the connection's life.
        let (ufrag, count) = &mut peer.remote_candidates;
        if let Some(u) = init.username_fragment.as_ref().filter(|u| *u != ufrag) {
            (*ufrag, *count) = (u.clone(), 0);
        }
        *count += 1;
        if *count > MAX_REMOTE_CANDIDATES {
            if *count == MAX_REMOTE_CANDIDATES + 1 {
                self.send_error(
                    key,
                    ErrorKind::InvalidCandidate,
                    format!(
                        "too many candidates: {MAX_REMOTE_CANDIDATES} per ICE generation; the rest are dropped"
                    ),
                );
                self.enqueue(key);
            }
            return;
        }
        if peer.pc.remote_description().is_none() {
            peer.early_candidates.push(init);
            return;
        }
        match guarded(|| peer.pc.add_remote_candidate(init)) {
            Some(Ok(())) => {}
            Some(Err(err)) => self.send_error(
                key,
                ErrorKind::InvalidCandidate,
                format!("candidate rejected: {err}"),
            ),
            None => self.fail_peer(key, "panic adding a candidate"),
        }
        self.enqueue(key);
    }

    /// Starts forwarding every negotiated subscription of a connected subscriber, asking each
    /// video publisher for a keyframe so the new leg starts with a picture.
    pub(super) fn activate_forwarders(&mut self, key: ParticipantKey, now: Instant) {
        let Some(sub) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if !sub.connected {
            return;
        }
        let mut to_request = Vec::new();
        for (&tkey, subscription) in &sub.subscribed {
            if !subscription.negotiated {
                continue;
            }
            let Some(track) = self.tracks.all.get_mut(&tkey) else {
                continue;
            };
            let Some(fwd) = track.forwarders.iter_mut().find(|f| f.subscriber == key) else {
                continue;
            };
            if fwd.active {
                continue;
            }
            let mime = &track.rtc_codec.mime_type;
            let pt = sub.pc.rtp_sender(fwd.sender_id).and_then(|mut s| {
                let codecs = &s.get_parameters().rtp_parameters.codecs;
                codecs
                    .iter()
                    .find(|c| {
                        c.rtp_codec.mime_type.eq_ignore_ascii_case(mime)
                            && c.rtp_codec.sdp_fmtp_line == track.rtc_codec.sdp_fmtp_line
                    })
                    .or_else(|| {
                        codecs
                            .iter()
                            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    })
                    .map(|c| c.payload_type)
            });
            let Some(pt) = pt else {
                warn!(participant = %sub.id, %mime, "subscriber leg has no matching codec");
                continue;
            };
            fwd.payload_type = pt;
            fwd.active = true;
            if track.kind == MediaKind::Audio && !track.muted {
                fwd.rewriter.set_target(Some(0));
            }
            to_request.push(tkey);
        }
        if !to_request.is_empty() {
            // Choose layers now rather than at the next tick; a keyframe of each target layer
            // is requested by the first packets that find the forwarder waiting.
            self.allocate_subscriber(key, now);
        }
    }

    /// A remote description was applied: hand rtc the checks that came before it.
    pub(super) fn replay_early_checks(&mut self, key: ParticipantKey, now: Instant) {
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if !peer.remote_set {
            peer.negotiated_at = Some(now);
        }
        peer.remote_set = true;
        let early = std::mem::take(&mut peer.early_checks);
        for (data, flow) in early {
            self.on_datagram_from(&data, flow, now, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::silent_mids;

    #[test]
    fn silent_mids_are_rejected_inactive_or_receive_only_sections() {
        let sdp = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:4\r\na=sendrecv\r\n";
        assert_eq!(silent_mids(sdp), ["1", "2", "3"]);
    }
}
