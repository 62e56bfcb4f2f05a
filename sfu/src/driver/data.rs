//! Data messages: each participant's two negotiated data channels (reliable: ordered; lossy:
//! unordered, no retransmission) and the relay of what one participant sends to the others of
//! its room, stamped with the sender (`engine::data` has the envelope and the limits).
//!
//! A participant has channels once its client offers an application section (the client library
//! creates the same two negotiated channels, stream ids 0 and 1, when its user enables data, and
//! its next offer adds the section); WHIP and WHEP sessions never do. A message to a room member on another driver crosses once per driver
//! (`MeshMsg::Data`).

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit, RTCDataChannelMessage};
use tracing::{debug, info};

use super::connections::Peer;
use super::mesh::{driver_of, MeshMsg};
use super::{guarded, Driver};
use crate::api::{DataDrops, DataMessage, ErrorKind, ParticipantKey};
use crate::engine::data::{
    parse_outgoing, write_delivery, DataLimits, RateLimiter, LOSSY_STREAM, RELIABLE_STREAM,
};

/// A participant's data channels and its sending allowance.
pub(super) struct PeerData {
    reliable: RTCDataChannelId,
    lossy: RTCDataChannelId,
    limiter: RateLimiter,
}

/// Whether an SDP has an application (SCTP) section.
pub(super) fn has_application(sdp: &str) -> bool {
    sdp.lines().any(|l| l.starts_with("m=application"))
}

/// Where a relayed message goes: which identities (all when `None`), and who not (its sender).
struct Audience<'a> {
    to: Option<&'a [String]>,
    except: Option<ParticipantKey>,
}

/// A checked message, stamped, and where it goes.
struct Relay {
    room: String,
    reliable: bool,
    delivery: Bytes,
    to: Option<Vec<String>>,
}

/// Checks a participant's message against the limits and stamps it; when refused, the drop is
/// counted and the error to tell the sender returned (once a second at most).
fn check(
    peer: &mut Peer,
    channel: RTCDataChannelId,
    data: &[u8],
    limits: &DataLimits,
    drops: &mut DataDrops,
    now: Instant,
) -> Result<Relay, Option<(ErrorKind, String)>> {
    let Some(channels) = peer.data.as_mut() else {
        return Err(None);
    };
    let reliable = if channel == channels.reliable {
        true
    } else if channel == channels.lossy {
        false
    } else {
        // A channel the client opened in-band: not ours to relay.
        drops.invalid += 1;
        return Err(None);
    };
    let max = if reliable {
        limits.max_reliable
    } else {
        limits.max_lossy
    };
    let refusal = if data.len() > max {
        drops.too_large += 1;
        Some((
            ErrorKind::DataRejected,
            format!(
                "a data message of {} bytes exceeds the {} channel's limit of {max} bytes",
                data.len(),
                if reliable { "reliable" } else { "lossy" }
            ),
        ))
    } else if !peer.permissions.data {
        drops.denied += 1;
        Some((
            ErrorKind::DataRejected,
            "this participant may not send data".to_owned(),
        ))
    } else if !channels.limiter.allow(data.len(), now) {
        drops.rate_limited += 1;
        Some((
            ErrorKind::DataRateLimited,
            format!(
                "data messages are limited to {} per second and {} bytes per second; some were dropped",
                limits.messages_per_sec, limits.bytes_per_sec
            ),
        ))
    } else {
        None
    };
    let out = match refusal {
        Some(refusal) => Err(refusal),
        None => parse_outgoing(data).map_err(|err| {
            drops.invalid += 1;
            (ErrorKind::DataRejected, err.to_string())
        }),
    };
    let out = match out {
        Ok(out) => out,
        Err(refusal) => return Err(channels.limiter.should_tell(now).then_some(refusal)),
    };
    Ok(Relay {
        room: peer.room.clone(),
        reliable,
        delivery: Bytes::from(write_delivery(
            out.text,
            out.topic,
            &peer.id,
            &peer.identity,
            out.payload,
        )),
        to: (!out.to.is_empty()).then(|| out.to.iter().map(|s| (*s).to_owned()).collect()),
    })
}

impl Driver {
    /// Creates a participant's two negotiated channels (once), before its first description
    /// with an application section is applied.
    pub(super) fn open_data_channels(&mut self, key: ParticipantKey, now: Instant) {
        let limits = &self.data_limits;
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if peer.data.is_some() || peer.answer_only {
            return;
        }
        let created = guarded(|| {
            let reliable = peer
                .pc
                .create_data_channel(
                    "fanout-reliable",
                    Some(RTCDataChannelInit {
                        negotiated: Some(RELIABLE_STREAM),
                        ..Default::default()
                    }),
                )?
                .id();
            let lossy = peer
                .pc
                .create_data_channel(
                    "fanout-lossy",
                    Some(RTCDataChannelInit {
                        ordered: false,
                        max_retransmits: Some(0),
                        negotiated: Some(LOSSY_STREAM),
                        ..Default::default()
                    }),
                )?
                .id();
            Ok::<_, rtc::shared::error::Error>((reliable, lossy))
        });
        match created {
            Some(Ok((reliable, lossy))) => {
                peer.data = Some(PeerData {
                    reliable,
                    lossy,
                    limiter: RateLimiter::new(limits, now),
                });
            }
            Some(Err(err)) => debug!(participant = %key, %err, "no data channels"),
            None => self.fail_peer(key, "panic creating data channels"),
        }
    }

    /// The client asked for its data channels (`enable_data`): the server opens its side and
    /// offers the application section. Browsers must not be left to offer it themselves: once
    /// an offer that introduced data channels is rolled back in a collision, Chromium never
    /// offers them again (every later offer lacks the section while `negotiationneeded` keeps
    /// firing) and rejects the section when the server offers it.
    pub(super) fn enable_data(&mut self, key: ParticipantKey, now: Instant) {
        let Some(peer) = self.conns.peers.get(&key) else {
            return;
        };
        if peer.data.is_some() || peer.answer_only {
            return;
        }
        self.open_data_channels(key, now);
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        if peer.data.is_some() {
            peer.negotiation_needed = true;
            self.maybe_offer(key, now);
        }
    }

    /// A message a participant sent on one of its channels: checked, stamped and relayed.
    pub(super) fn on_data_message(
        &mut self,
        key: ParticipantKey,
        channel: RTCDataChannelId,
        msg: RTCDataChannelMessage,
        now: Instant,
    ) {
        self.stats.data_messages_in += 1;
        let Some(peer) = self.conns.peers.get_mut(&key) else {
            return;
        };
        match check(
            peer,
            channel,
            &msg.data,
            &self.data_limits,
            &mut self.stats.data_dropped,
            now,
        ) {
            Ok(relay) => {
                let audience = Audience {
                    to: relay.to.as_deref(),
                    except: Some(key),
                };
                self.relay_data(&relay.room, relay.reliable, &relay.delivery, &audience, now);
                self.data_to_other_drivers(
                    &relay.room,
                    relay.reliable,
                    relay.delivery,
                    relay.to,
                    Some(key),
                );
            }
            Err(Some((kind, message))) => self.send_error(key, kind, message),
            Err(None) => {}
        }
    }

    /// A data message from the server (the admin API) to this driver's members of `room`.
    pub(super) fn send_server_data(&mut self, room: &str, m: DataMessage, now: Instant) -> usize {
        let delivery = Bytes::from(write_delivery(m.text, &m.topic, "", "", &m.payload));
        let to = (!m.to.is_empty()).then_some(&m.to[..]);
        self.relay_data(
            room,
            m.reliable,
            &delivery,
            &Audience { to, except: None },
            now,
        )
    }

    /// A data message from a participant on another driver.
    pub(super) fn on_mesh_data(
        &mut self,
        room: &str,
        reliable: bool,
        delivery: &Bytes,
        to: Option<&[String]>,
        now: Instant,
    ) {
        self.relay_data(
            room,
            reliable,
            delivery,
            &Audience { to, except: None },
            now,
        );
    }

    /// Sends the message once to every other driver with a member of `room` it is for.
    fn data_to_other_drivers(
        &mut self,
        room: &str,
        reliable: bool,
        delivery: Bytes,
        to: Option<Vec<String>>,
        except: Option<ParticipantKey>,
    ) {
        let Some(remote) = self.rooms.remote.get(room) else {
            return;
        };
        let drivers: BTreeSet<usize> = remote
            .members
            .iter()
            .filter(|(k, info)| {
                Some(**k) != except && to.as_ref().is_none_or(|to| to.contains(&info.identity))
            })
            .map(|(k, _)| driver_of(k.0))
            .filter(|&d| d != self.mesh.index)
            .collect();
        for d in drivers {
            self.mesh.send(
                d,
                MeshMsg::Data {
                    room: room.to_owned(),
                    reliable,
                    delivery: delivery.clone(),
                    to: to.clone(),
                },
            );
        }
    }

    /// Delivers a stamped message to this driver's members of `room` in `audience`; how many
    /// it reached.
    fn relay_data(
        &mut self,
        room: &str,
        reliable: bool,
        delivery: &Bytes,
        audience: &Audience<'_>,
        now: Instant,
    ) -> usize {
        let Some(members) = self.rooms.members.get(room) else {
            return 0;
        };
        let limits: &DataLimits = &self.data_limits;
        let mut reached = Vec::new();
        for &m in members {
            if Some(m) == audience.except {
                continue;
            }
            let Some(peer) = self.conns.peers.get_mut(&m) else {
                continue;
            };
            if audience.to.is_some_and(|to| !to.contains(&peer.identity)) {
                continue;
            }
            let Some(data) = peer.data.as_ref() else {
                self.stats.data_dropped.not_open += 1;
                continue;
            };
            let channel = if reliable { data.reliable } else { data.lossy };
            let Some(mut dc) = peer.pc.data_channel(channel) else {
                self.stats.data_dropped.not_open += 1;
                continue;
            };
            let backlog = dc.outstanding_bytes();
            if reliable && backlog > limits.reliable_backlog {
                // It does not read: the server will not hold its messages without bound.
                self.stats.data_dropped.backlog += 1;
                self.stats.data_backlog_disconnects += 1;
                info!(participant = %peer.id, backlog, "data backlog past the limit; disconnecting");
                self.conns
                    .removals
                    .push((m, "data channel backlog past the limit".to_owned()));
                continue;
            }
            if !reliable && backlog > limits.lossy_backlog {
                self.stats.data_dropped.backlog += 1;
                continue;
            }
            match guarded(|| dc.send(now, BytesMut::from(&delivery[..]))) {
                Some(Ok(())) => {
                    self.stats.data_messages_relayed += 1;
                    self.stats.data_bytes_relayed += delivery.len() as u64;
                    reached.push(m);
                }
                Some(Err(err)) => {
                    self.stats.data_dropped.not_open += 1;
                    debug!(participant = %peer.id, %err, "data message not sent");
                }
                None => {
                    self.stats.data_dropped.not_open += 1;
                    self.conns
                        .removals
                        .push((m, "panic sending a data message".to_owned()));
                }
            }
        }
        let n = reached.len();
        for m in reached {
            self.enqueue(m);
        }
        n
    }
}
