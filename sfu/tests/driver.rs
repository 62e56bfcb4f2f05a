//! The media driver end to end on a virtual clock (see `harness`): real `rtc` clients, in-memory
//! network, no sockets. Each test asserts what a participant would see.

mod harness;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use harness::{assert_contiguous, assert_forwarded, offered_ssrcs, Net, Received, Sent};
use sfu::api::Command;
use sfu::{
    ErrorKind, Event, LayerReport, MutedBy, Permissions, Quality, TrackSettings, TrackSource,
};

const PUB_SSRC: u32 = 0x1111;
/// The payload type of VP8 in the server's media engine (`sfu::peer::media_engine`).
const VP8_PT: u8 = 96;

/// A publisher and a subscriber in one room on driver 0, both connected and media flowing.
fn room_with_stream() -> (Net, usize, usize, String) {
    let mut net = Net::new(1);
    let p = net.join(0, "pub", "room");
    let s = net.join(0, "sub", "room");
    net.publish_video(p, &[("", PUB_SSRC)]);
    net.run_until(
        Duration::from_secs(3),
        "media reaches the subscriber",
        |n| n.clients[s].received.len() >= 10,
    );
    let track = net.clients[s]
        .published_track_id()
        .expect("track published");
    (net, p, s, track)
}

fn sent_on_layer(net: &Net, client: usize, layer: usize) -> Vec<&Sent> {
    let v = net.clients[client].video.as_ref().expect("a publisher");
    v.sent.iter().filter(|s| s.layer == layer).collect()
}

fn no_client_errors(net: &Net) {
    for c in &net.clients {
        assert!(c.errors.is_empty(), "{}: {:?}", c.name, c.errors);
    }
}

#[test]
fn join_lists_the_others_and_tells_them() {
    let mut net = Net::new(1);
    let a = net.join(0, "alice", "room");
    let b = net.join(0, "bob", "room");
    let c = net.join(0, "carol", "elsewhere");
    net.run_for(Duration::from_millis(10));
    let id = |i: usize| net.clients[i].join_info.participant_id.clone();
    assert!(net.clients[a].join_info.participants.is_empty());
    let others: Vec<_> = net.clients[b]
        .join_info
        .participants
        .iter()
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(others, [id(a)]);
    assert_eq!(net.clients[b].join_info.participants[0].identity, "alice");
    assert!(net.clients[a].saw(|e| matches!(e, Event::ParticipantJoined(p) if p.id == id(b))));
    assert!(!net.clients[a].saw(|e| matches!(e, Event::ParticipantJoined(p) if p.id == id(c))));
    assert!(net.clients[c].join_info.participants.is_empty());
    assert_eq!(net.stats(0).rooms, 2);
}

#[test]
fn publish_tells_the_room_and_offers_the_subscriber() {
    let mut net = Net::new(1);
    let p = net.join(0, "pub", "room");
    let s = net.join(0, "sub", "room");
    net.publish_video(p, &[("", PUB_SSRC)]);
    net.run_until(Duration::from_secs(2), "subscriber offered", |n| {
        n.clients[s].saw(|e| matches!(e, Event::Offer(_)))
    });
    let pub_id = net.clients[p].join_info.participant_id.clone();
    let track = net.clients[s].events.iter().find_map(|e| match e {
        Event::TrackPublished {
            participant_id,
            track,
        } if *participant_id == pub_id => Some(track.clone()),
        _ => None,
    });
    let track = track.expect("the room is told the track is published");
    assert_eq!(track.kind, sfu::MediaKind::Video);
    assert!(!track.muted);
    assert!(
        net.clients[p].saw(|e| matches!(e, Event::Answer(_))),
        "publisher answered"
    );
    assert!(
        !net.clients[p].saw(|e| matches!(e, Event::TrackPublished { .. })),
        "not told of its own track"
    );
    let offer = net.clients[s].events.iter().find_map(|e| match e {
        Event::Offer(sdp) => Some(sdp.clone()),
        _ => None,
    });
    let offer = offer.expect("an offer");
    assert!(
        offer.contains("m=video") && offer.contains("a=sendonly"),
        "{offer}"
    );
    assert!(
        offer.contains(&format!("msid:{pub_id} {}", track.id)),
        "msid names publisher and track: {offer}"
    );
    net.run_until(Duration::from_secs(2), "both connected", |n| {
        n.clients[p].connected && n.clients[s].connected
    });
    assert_eq!(net.stats(0).published_tracks, 1);
    no_client_errors(&net);
}

#[test]
fn forward_delivers_identical_payloads_in_order() {
    let (mut net, p, s, track) = room_with_stream();
    net.run_for(Duration::from_secs(2));
    let got = net.clients[s].received_on(&track);
    let ssrc = assert_forwarded(&sent_on_layer(&net, p, 0), &got, VP8_PT);
    assert_ne!(ssrc, PUB_SSRC, "rewritten to the subscriber's SSRC");
    assert_eq!(
        offered_ssrcs(&net.clients[s]),
        [ssrc],
        "the SSRC the server offered"
    );
    assert!(got.len() > 150, "2 s of 90 packets/s: {}", got.len());
    let plis = net.clients[p].video.as_ref().unwrap().plis;
    assert!(plis >= 1, "the new subscriber's start asked for a keyframe");
    let received = got.len() as u64;
    let stats = net.stats(0);
    assert_eq!(stats.rtp_forwarded, received);
    assert_eq!((stats.forward_errors, stats.handle_read_errors), (0, 0));
    no_client_errors(&net);
}

#[test]
fn layer_switch_waits_for_a_keyframe_and_keeps_the_stream_continuous() {
    let mut net = Net::new(1);
    let p = net.join(0, "pub", "room");
    let s = net.join(0, "sub", "room");
    net.publish_video(p, &[("q", 0x100), ("h", 0x200), ("f", 0x300)]);
    net.run_until(Duration::from_secs(3), "the top layer flows", |n| {
        n.clients[s].received.len() >= 30
    });
    let track = net.clients[s].published_track_id().expect("published");
    let layers = |got: &[&Received]| -> Vec<usize> {
        got.iter().map(|r| harness::layer_of(&r.payload)).collect()
    };
    assert!(
        layers(&net.clients[s].received_on(&track))
            .iter()
            .all(|&l| l == 2),
        "f first"
    );
    // From now on keyframes come only every 30 frames: the switch has to wait for one.
    net.clients[p].video.as_mut().unwrap().answer_plis = false;
    let before = net.clients[s].received.len();
    let key = net.clients[s].key;
    let settings = TrackSettings {
        track_id: track.clone(),
        max_quality: Some(Quality::Low),
        ..Default::default()
    };
    net.command(0, Command::TrackSettings { key, settings });
    net.run_for(Duration::from_secs(2));

    let got = net.clients[s].received_on(&track);
    assert_contiguous(&got);
    let on = layers(&got);
    let switch = on.iter().position(|&l| l == 0).expect("switched to q");
    assert!(on[..switch].iter().all(|&l| l == 2) && on[switch..].iter().all(|&l| l == 0));
    assert!(switch > before, "f is forwarded until q's keyframe");
    let first = &got[switch].payload;
    assert!(
        sfu::engine::codec::vp8_is_keyframe_start(first),
        "switch on a keyframe"
    );
    assert_eq!(
        sfu::engine::vp8::keyframe_size(first),
        Some(harness::layer_size(0))
    );
    // After the switch: every q packet from that keyframe on, payloads identical but for the
    // descriptor, whose picture ids continue where f's stopped.
    let sent: Vec<&Sent> = sent_on_layer(&net, p, 0);
    let tail = |b: &[u8]| b[harness::VP8_DESCRIPTOR_LEN..].to_vec();
    let from = sent
        .iter()
        .position(|x| tail(&x.payload) == tail(first))
        .expect("sent");
    let expected: Vec<Vec<u8>> = sent[from..].iter().map(|x| tail(&x.payload)).collect();
    let after: Vec<Vec<u8>> = got[switch..].iter().map(|r| tail(&r.payload)).collect();
    assert_eq!(after, expected);
    for w in got.windows(2) {
        let same_frame = w[0].header.timestamp == w[1].header.timestamp;
        let step =
            harness::picture_id(&w[1].payload).wrapping_sub(harness::picture_id(&w[0].payload));
        assert_eq!(
            step & 0x7fff,
            u16::from(!same_frame),
            "picture ids continue"
        );
        assert_eq!(w[0].header.marker, !same_frame, "a marker ends each frame");
        let advance = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
        assert!(
            same_frame || (1..1 << 31).contains(&advance),
            "timestamps advance"
        );
    }
    let reports: Vec<LayerReport> = net.clients[s]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TrackLayer(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let last = reports.last().expect("layer reports");
    assert_eq!(
        (last.current, last.target),
        (Some(Quality::Low), Some(Quality::Low))
    );
    assert_eq!((last.width, last.height), (Some(320), Some(180)));
    assert_eq!(last.reason, sfu::Reason::Preference);
    assert!(reports.iter().any(|r| r.current == Some(Quality::High)));
    assert_eq!(net.stats(0).layer_switches, 1);
    no_client_errors(&net);
}

#[test]
fn nack_recovers_every_packet_lost_to_the_subscriber() {
    let (mut net, p, s, track) = room_with_stream();
    let dropped: Rc<RefCell<BTreeSet<u16>>> = Rc::default();
    let log = dropped.clone();
    net.drop_down = Some(Box::new(move |d| {
        let Some((seq, _)) = d.rtp() else {
            return false;
        };
        // Every seventh packet to the subscriber, once (its retransmission goes through).
        d.client == s && seq % 7 == 3 && log.borrow_mut().insert(seq)
    }));
    net.run_for(Duration::from_secs(2));
    net.drop_down = None;
    net.run_for(Duration::from_millis(500));
    assert!(dropped.borrow().len() >= 20, "lost {:?}", dropped.borrow());
    let got = net.clients[s].received_on(&track);
    let seqs: BTreeSet<u16> = got.iter().map(|r| r.header.sequence_number).collect();
    let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    let missing: Vec<u16> = (first..=last).filter(|q| !seqs.contains(q)).collect();
    assert!(missing.is_empty(), "never recovered: {missing:?}");
    assert!(dropped.borrow().iter().all(|q| seqs.contains(q)));
    // The resent packets are the originals.
    let sent = harness::by_payload(&net.clients[p].video.as_ref().unwrap().sent);
    assert!(got.iter().all(|r| sent.contains_key(&r.payload)));
    let stats = net.stats(0);
    assert!(stats.nacks_received > 0, "{stats:?}");
    assert!(
        stats.retransmissions_sent >= dropped.borrow().len() as u64,
        "{stats:?}"
    );
}

#[test]
fn leave_tells_the_room_and_stops_its_packets() {
    let (mut net, p, s, track) = room_with_stream();
    let pub_id = net.clients[p].join_info.participant_id.clone();
    net.leave(p);
    net.run_for(Duration::from_millis(100));
    let sub = &net.clients[s];
    assert!(sub.saw(
        |e| matches!(e, Event::TrackUnpublished { participant_id, track_id }
        if *participant_id == pub_id && *track_id == track)
    ));
    assert!(sub.saw(
        |e| matches!(e, Event::ParticipantLeft { participant_id } if *participant_id == pub_id)
    ));
    assert!(net.clients[p].saw(|e| matches!(e, Event::Closed { reason } if reason == "left")));
    let received = net.clients[s].received.len();
    let unknown = net.stats(0).datagrams_unknown_source;
    // The publisher keeps sending: the driver no longer knows it, and nothing reaches the
    // subscriber.
    let sent = net.clients[p].video.as_ref().unwrap().sent.len();
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[p].video.as_ref().unwrap().sent.len() > sent + 50);
    assert_eq!(net.clients[s].received.len(), received, "its packets stop");
    let stats = net.stats(0);
    assert!(stats.datagrams_unknown_source > unknown, "{stats:?}");
    assert_eq!(
        (
            stats.participants,
            stats.published_tracks,
            stats.subscriptions
        ),
        (1, 0, 0)
    );
}

#[test]
fn consent_timeout_removes_a_silent_client() {
    let (mut net, p, s, _) = room_with_stream();
    let timeout = net.config.consent_timeout;
    let sub_id = net.clients[s].join_info.participant_id.clone();
    net.clients[s].silent = true;
    let closed = |n: &Net| n.clients[s].saw(|e| matches!(e, Event::Closed { .. }));
    net.run_for(timeout - Duration::from_secs(1));
    assert!(!closed(&net), "still within consent");
    assert_eq!(net.stats(0).participants, 2);
    net.run_until(
        Duration::from_secs(5),
        "the silent client is removed",
        closed,
    );
    let reason = net.clients[s].events.iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("consent"));
    assert!(net.clients[p].saw(
        |e| matches!(e, Event::ParticipantLeft { participant_id } if *participant_id == sub_id)
    ));
    assert_eq!(net.stats(0).participants, 1);
}

#[test]
fn mesh_room_forwards_from_one_driver_to_another() {
    let mut net = Net::new(2);
    let p = net.join(0, "pub", "room");
    net.run_for(Duration::from_millis(1));
    let s = net.join(1, "sub", "room");
    let pub_id = net.clients[p].join_info.participant_id.clone();
    let listed: Vec<_> = net.clients[s]
        .join_info
        .participants
        .iter()
        .map(|x| x.id.clone())
        .collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&pub_id),
        "JoinInfo lists the other driver's participant"
    );
    net.publish_video(p, &[("", PUB_SSRC)]);
    net.run_until(Duration::from_secs(3), "media crosses drivers", |n| {
        n.clients[s].received.len() >= 10
    });
    net.run_for(Duration::from_secs(1));
    let sub_id = net.clients[s].join_info.participant_id.clone();
    assert!(net.clients[p].saw(|e| matches!(e, Event::ParticipantJoined(x) if x.id == sub_id)));
    assert!(net.clients[s].saw(
        |e| matches!(e, Event::TrackPublished { participant_id, .. } if *participant_id == pub_id)
    ));
    let track = net.clients[s].published_track_id().unwrap();
    let got = net.clients[s].received_on(&track);
    let ssrc = assert_forwarded(&sent_on_layer(&net, p, 0), &got, VP8_PT);
    assert_eq!(offered_ssrcs(&net.clients[s]), [ssrc]);
    let received = got.len() as u64;
    let (d0, d1) = (net.stats(0), net.stats(1));
    assert_eq!((d0.participants, d1.participants), (1, 1));
    assert!(
        d0.mesh_packets_out > 0 && d1.mesh_packets_in >= d0.mesh_packets_out / 2,
        "{d0:?} {d1:?}"
    );
    assert_eq!(d1.rtp_forwarded, received);
    assert_eq!(d0.rtp_forwarded, 0, "driver 0 has no local subscriber");
    no_client_errors(&net);
}

#[test]
fn shared_port_crosses_datagrams_to_the_owning_driver() {
    // Two drivers on one port; each client's datagrams reach the other driver's socket.
    let mut net = Net::shared_port(2);
    let p = net.join(0, "pub", "room");
    let s = net.join(1, "sub", "room");
    net.publish_video(p, &[("", PUB_SSRC)]);
    net.run_until(Duration::from_secs(3), "media through crossed flows", |n| {
        n.clients[s].received.len() >= 10
    });
    net.run_for(Duration::from_secs(1));
    let track = net.clients[s].published_track_id().unwrap();
    let got = net.clients[s].received_on(&track);
    assert_forwarded(&sent_on_layer(&net, p, 0), &got, VP8_PT);
    let (d0, d1) = (net.stats(0), net.stats(1));
    // Every datagram of each client arrived on the other driver and crossed once.
    assert!(
        d0.datagrams_crossed > 0 && d1.datagrams_crossed > 0,
        "{d0:?} {d1:?}"
    );
    assert_eq!(
        d0.datagrams_crossed + d1.datagrams_crossed,
        d0.datagrams_in + d1.datagrams_in
    );
    assert_eq!(d0.datagrams_unknown_source + d1.datagrams_unknown_source, 0);
    assert_eq!(net.undeliverable, 0);
    no_client_errors(&net);
}

/// Mutes or unmutes `track` through the command an administrator's request becomes.
fn set_muted(net: &mut Net, track: &str, muted: bool) -> bool {
    let (reply, mut rx) = tokio::sync::oneshot::channel();
    net.command(
        0,
        Command::MuteTrack {
            room: "room".to_owned(),
            track_id: track.to_owned(),
            muted,
            reply,
        },
    );
    net.run_for(Duration::from_millis(20));
    rx.try_recv().expect("the driver answers")
}

#[test]
fn mute_stops_the_track_tells_the_room_and_resumes_on_a_keyframe() {
    let (mut net, p, s, track) = room_with_stream();
    let pub_id = net.clients[p].join_info.participant_id.clone();
    assert!(set_muted(&mut net, &track, true), "the driver publishes it");
    for c in [p, s] {
        assert!(net.clients[c].saw(
            |e| matches!(e, Event::TrackMuted { participant_id, track_id, muted: true, by: MutedBy::Admin }
            if *participant_id == pub_id && *track_id == track)
        ));
    }
    let received = net.clients[s].received.len();
    let sent = net.clients[p].video.as_ref().unwrap().sent.len();
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[p].video.as_ref().unwrap().sent.len() > sent + 50);
    assert_eq!(
        net.clients[s].received.len(),
        received,
        "nothing while muted"
    );
    assert!(net.stats(0).rtp_dropped_muted > 50);

    let plis = net.clients[p].video.as_ref().unwrap().plis;
    assert!(set_muted(&mut net, &track, false));
    assert!(net.clients[s].saw(|e| matches!(e, Event::TrackMuted { muted: false, .. })));
    net.run_for(Duration::from_millis(500));
    let got = net.clients[s].received_on(&track);
    assert!(got.len() > received + 10, "media again");
    assert!(
        net.clients[p].video.as_ref().unwrap().plis > plis,
        "a keyframe is asked for on unmute"
    );
    assert!(
        sfu::engine::codec::vp8_is_keyframe_start(&got[received].payload),
        "resumes on a keyframe"
    );
    // The subscriber's stream goes on where it stopped: no gap in sequence numbers.
    assert_contiguous(&got);
    no_client_errors(&net);
}

/// The publisher's first transceiver mid (its one video track).
fn published_mid(net: &Net, client: usize) -> String {
    let sdp = net.clients[client]
        .pc
        .local_description()
        .expect("offered")
        .sdp;
    let mid = sdp.lines().find_map(|l| l.strip_prefix("a=mid:"));
    mid.expect("a mid").trim().to_owned()
}

fn self_mute(net: &mut Net, client: usize, muted: bool) {
    let mid = published_mid(net, client);
    let (driver, key) = (net.clients[client].driver, net.clients[client].key);
    net.command(driver, Command::Mute { key, mid, muted });
    net.run_for(Duration::from_millis(20));
}

#[test]
fn a_publisher_mutes_itself_on_any_driver_and_cannot_lift_an_admin_mute() {
    // The subscriber is on the other driver: the mute crosses to the track's proxy there.
    let mut net = Net::new(2);
    let p = net.join(0, "pub", "room");
    net.run_for(Duration::from_millis(1));
    let s = net.join(1, "sub", "room");
    net.publish_video(p, &[("", PUB_SSRC)]);
    net.run_until(Duration::from_secs(3), "media crosses drivers", |n| {
        n.clients[s].received.len() >= 10
    });
    let track = net.clients[s].published_track_id().unwrap();
    self_mute(&mut net, p, true);
    for c in [p, s] {
        assert!(net.clients[c].saw(|e| matches!(e, Event::TrackMuted { track_id, muted: true, by: MutedBy::Publisher, .. } if *track_id == track)));
    }
    net.run_for(Duration::from_millis(100));
    let received = net.clients[s].received.len();
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.clients[s].received.len(),
        received,
        "nothing while muted"
    );

    let plis = net.clients[p].video.as_ref().unwrap().plis;
    self_mute(&mut net, p, false);
    assert!(net.clients[s].saw(|e| matches!(
        e,
        Event::TrackMuted {
            muted: false,
            by: MutedBy::Publisher,
            ..
        }
    )));
    assert!(
        net.clients[p].video.as_ref().unwrap().plis > plis,
        "a keyframe is asked for within 20 ms of the unmute"
    );
    net.run_for(Duration::from_millis(500));
    let got = net.clients[s].received_on(&track);
    assert!(got.len() > received + 10, "media again");
    assert!(sfu::engine::codec::vp8_is_keyframe_start(
        &got[received].payload
    ));

    // An administrator's mute holds against the publisher's unmute (the engine handle sends it
    // to every driver, as the admin API does).
    for driver in 0..2 {
        let (reply, _rx) = tokio::sync::oneshot::channel();
        let track_id = track.clone();
        let room = "room".to_owned();
        net.command(
            driver,
            Command::MuteTrack {
                room,
                track_id,
                muted: true,
                reply,
            },
        );
    }
    net.run_for(Duration::from_millis(20));
    self_mute(&mut net, p, false);
    assert!(net.clients[p].saw(|e| matches!(
        e,
        Event::Error {
            kind: ErrorKind::MutedByAdmin,
            ..
        }
    )));
    let received = net.clients[s].received.len();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.clients[s].received.len(), received, "still muted");
    // A mid with nothing on it.
    let key = net.clients[p].key;
    net.command(
        0,
        Command::Mute {
            key,
            mid: "77".into(),
            muted: true,
        },
    );
    net.run_for(Duration::from_millis(20));
    assert!(net.clients[p].saw(|e| matches!(
        e,
        Event::Error {
            kind: ErrorKind::UnknownTrack,
            ..
        }
    )));
    assert!(net.clients.iter().all(|c| c.errors.is_empty()));
}

/// What the publisher was last told to send and to pause (dynacast), as sets of rids.
fn last_layers(net: &Net, client: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let last = net.clients[client]
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::PublisherLayers { active, paused, .. } => Some((active, paused)),
            _ => None,
        });
    let (active, paused) = last.expect("the publisher is told");
    (
        active.iter().cloned().collect(),
        paused.iter().cloned().collect(),
    )
}

fn rids(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|r| r.to_string()).collect()
}

#[test]
fn dynacast_pauses_layers_nobody_receives_and_restores_them() {
    let mut net = Net::new(1);
    let p = net.join(0, "pub", "room");
    let s = net.join(0, "sub", "room");
    net.publish_video(p, &[("q", 0x100), ("h", 0x200), ("f", 0x300)]);
    net.run_until(Duration::from_secs(3), "the top layer flows", |n| {
        n.clients[s].received.len() >= 30
    });
    let track = net.clients[s].published_track_id().expect("published");
    let key = net.clients[s].key;
    let ask = |net: &mut Net, q: Quality| {
        let settings = TrackSettings {
            track_id: track.clone(),
            max_quality: Some(q),
            ..Default::default()
        };
        net.command(0, Command::TrackSettings { key, settings });
    };
    // The subscriber receives f: q and h are paused once nobody needed them for the hold.
    net.run_for(Duration::from_secs(3));
    assert_eq!(last_layers(&net, p), (rids(&["f"]), rids(&["q", "h"])));
    ask(&mut net, Quality::Low);
    net.run_for(Duration::from_millis(1500));
    // q is asked for at once; f stays on until nobody needed it for the hold.
    assert_eq!(last_layers(&net, p), (rids(&["q", "f"]), rids(&["h"])));
    net.run_for(Duration::from_secs(1));
    assert_eq!(last_layers(&net, p), (rids(&["q"]), rids(&["h", "f"])));
    ask(&mut net, Quality::High);
    net.run_for(Duration::from_millis(500));
    let (active, _) = last_layers(&net, p);
    assert!(active.contains("f"), "f is asked for again: {active:?}");
    assert!(net.stats(0).dynacast_updates >= 2);
    no_client_errors(&net);
}

#[test]
fn joiners_on_two_drivers_at_one_instant_learn_of_each_other() {
    let mut net = Net::new(2);
    let a = net.join(0, "alice", "room");
    let b = net.join(1, "bob", "room");
    net.run_for(Duration::from_millis(50));
    let knows = |net: &Net, who: usize, of: usize| {
        let id = net.clients[of].join_info.participant_id.clone();
        net.clients[who]
            .join_info
            .participants
            .iter()
            .any(|p| p.id == id)
            || net.clients[who].saw(|e| matches!(e, Event::ParticipantJoined(p) if p.id == id))
    };
    assert!(knows(&net, a, b), "alice knows of bob");
    assert!(knows(&net, b, a), "bob knows of alice");
}

#[test]
fn a_camera_labelled_microphone_is_still_a_camera() {
    // A token limited to the microphone: its video, labelled "microphone", is refused as the
    // camera it is (issue 21: the sources grant was bypassed by relabelling).
    let mut net = Net::new(1);
    let mic_only = Permissions {
        sources: Some(vec![TrackSource::Microphone]),
        ..Permissions::default()
    };
    let p = net.join_as(0, "pub", "room", mic_only);
    let s = net.join(0, "sub", "room");
    net.publish_video(p, &[("", PUB_SSRC)]);
    let mid = published_mid(&net, p);
    let key = net.clients[p].key;
    let source = TrackSource::Microphone;
    net.command(0, Command::TrackSource { key, mid, source });
    net.run_for(Duration::from_secs(2));
    assert!(net.clients[s].received.is_empty(), "nothing forwarded");
    assert!(net.stats(0).published_tracks == 0);
    let errors: Vec<ErrorKind> = net.clients[p]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Error { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(errors, [ErrorKind::InvalidSource, ErrorKind::PublishDenied]);

    // Relabelling a published camera as a microphone is refused and changes nothing.
    let mut net = Net::new(1);
    let p = net.join(0, "pub", "room");
    let s = net.join(0, "sub", "room");
    net.publish_video(p, &[("", PUB_SSRC)]);
    net.run_until(Duration::from_secs(3), "media flows", |n| {
        n.clients[s].received.len() >= 10
    });
    let key = net.clients[p].key;
    let mid = published_mid(&net, p);
    net.command(
        0,
        Command::TrackSource {
            key,
            mid,
            source: TrackSource::Microphone,
        },
    );
    net.run_for(Duration::from_millis(100));
    assert!(net.clients[p].saw(|e| matches!(
        e,
        Event::Error {
            kind: ErrorKind::InvalidSource,
            ..
        }
    )));
    assert!(!net.clients[s].saw(|e| matches!(e, Event::ParticipantLeft { .. })));
    let got = net.clients[s].received.len();
    net.run_for(Duration::from_millis(500));
    assert!(
        net.clients[s].received.len() > got,
        "still forwarded, as a camera"
    );
}
