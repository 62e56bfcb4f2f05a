//! End-to-end forwarding through the real server on loopback: two publishers, one subscriber,
//! all real webrtc-rs peers.
//!
//! P1 sends synthetic VP8 and P2 synthetic H.264 (valid payload headers; a keyframe every second
//! and on every PLI), both send Opus-typed RTP, whose payloads carry a marker (publisher, kind, counter). The
//! subscriber must get all four tracks, mapped to their publishers through the msid stream id,
//! with enough packets, every payload byte-identical to one its publisher sent, and gap-free
//! sequence numbers. Then one publisher leaves and the subscriber is told.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RtcClient, TestServer};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::Value;
use testkit::vp8::{self, Descriptor};
use tokio::time::{timeout, Instant};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

const ROOM: &str = "fwd";
const MEDIA_DURATION: Duration = Duration::from_secs(6);
const VIDEO_FRAME_INTERVAL: Duration = Duration::from_millis(33);
const AUDIO_PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// A periodic keyframe every this many frames (about 1 s), besides those asked for by PLI.
const KEYFRAME_EVERY: u32 = 30;
/// Packets of a keyframe (the first starts it); interframes are one packet.
const KEYFRAME_PACKETS: usize = 3;
const MIN_VIDEO_PACKETS: usize = 40;
const MIN_AUDIO_PACKETS: usize = 100;
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Audio,
    Video,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Audio => b'A',
            Kind::Video => b'V',
        }
    }
}

/// What identifies a payload: publisher index, kind, per-kind counter.
type Marker = (u8, Kind, u32);

/// Every payload each publisher sent, by marker.
type SentPayloads = Arc<Mutex<HashMap<Marker, Vec<u8>>>>;

/// `P<index><V|A>` + counter (big endian) + deterministic filler.
fn marked_body(publisher: u8, kind: Kind, counter: u32, filler: usize) -> Vec<u8> {
    let mut b = vec![b'P', b'0' + publisher, kind.tag()];
    b.extend_from_slice(&counter.to_be_bytes());
    b.extend((0..filler).map(|i| (counter as usize * 31 + i * 7) as u8));
    b
}

/// Finds the marker in a payload. Codec prefixes written here never contain `P` (0x50).
fn find_marker(payload: &[u8]) -> Option<Marker> {
    let at = payload.windows(3).position(|w| {
        w[0] == b'P' && (b'1'..=b'9').contains(&w[1]) && (w[2] == b'V' || w[2] == b'A')
    })?;
    let counter = u32::from_be_bytes(payload.get(at + 3..at + 7)?.try_into().ok()?);
    let kind = if payload[at + 2] == b'V' {
        Kind::Video
    } else {
        Kind::Audio
    };
    Some((payload[at + 1] - b'0', kind, counter))
}

/// A VP8 RTP payload (RFC 7741). `part` is the packet's index inside its frame: packet 0 has the
/// descriptor's S bit and the frame tag (P = 0 for a keyframe, with the keyframe start code and
/// a 640x480 size; P = 1 for an interframe); later packets are continuations (S = 0).
fn vp8_payload(publisher: u8, counter: u32, keyframe: bool, part: usize) -> Vec<u8> {
    let start = Descriptor {
        start: part == 0,
        ..Descriptor::default()
    };
    let mut p = vp8::payload_head(start, keyframe.then_some((640, 480)));
    p.extend(marked_body(publisher, Kind::Video, counter, 120));
    p
}

/// An H.264 RTP payload (RFC 6184, single NAL units): a keyframe is an SPS (packet 0) followed
/// by IDR slices; an interframe is one non-IDR slice.
fn h264_payload(publisher: u8, counter: u32, keyframe: bool, part: usize) -> Vec<u8> {
    let mut p = match (part, keyframe) {
        (0, true) => vec![0x67, 0x42, 0xe0, 0x1f], // SPS, constrained baseline 3.1
        (_, true) => vec![0x65, 0x88],             // IDR slice
        _ => vec![0x41, 0x9a],                     // non-IDR slice
    };
    p.extend(marked_body(publisher, Kind::Video, counter, 120));
    p
}

/// P1 publishes VP8 and P2 H.264, so both video codecs cross the server.
fn video_payload(publisher: u8, counter: u32, keyframe: bool, part: usize) -> Vec<u8> {
    if publisher == 2 {
        h264_payload(publisher, counter, keyframe, part)
    } else {
        vp8_payload(publisher, counter, keyframe, part)
    }
}

fn is_keyframe_start(publisher: u8, payload: &[u8]) -> bool {
    if publisher == 2 {
        payload.first() == Some(&0x67)
    } else {
        payload.len() > 1 && payload[0] & 0x10 != 0 && payload[1] & 1 == 0
    }
}

fn opus_payload(publisher: u8, counter: u32) -> Vec<u8> {
    // TOC byte of a 20 ms SILK frame, then the marker.
    let mut p = vec![0x78];
    p.extend(marked_body(publisher, Kind::Audio, counter, 60));
    p
}

fn codec(index: u8, kind: Kind) -> RTCRtpCodec {
    match kind {
        Kind::Video if index == 2 => common::h264_codec(),
        Kind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        Kind::Video => RTCRtpCodec {
            mime_type: "video/VP8".to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

struct Publisher {
    index: u8,
    client: RtcClient,
    video: LocalTrack,
    audio: LocalTrack,
}

async fn add_local_track(client: &RtcClient, index: u8, kind: Kind) -> LocalTrack {
    let ssrc = rand::random::<u32>();
    let (rtc_kind, name) = match kind {
        Kind::Audio => (RtpCodecKind::Audio, "audio"),
        Kind::Video => (RtpCodecKind::Video, "video"),
    };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("p{index}-stream"),
        format!("p{index}-{name}"),
        format!("p{index}-{name}"),
        rtc_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(index, kind),
            ..Default::default()
        }],
    )));
    let sender = client
        .pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .expect("add_track");
    LocalTrack {
        track,
        sender,
        ssrc,
    }
}

/// What a publisher did while streaming.
#[derive(Debug, Default)]
struct SendStats {
    video_packets: u32,
    audio_packets: u32,
    keyframes: u32,
    keyframes_on_request: u32,
    write_errors: u32,
}

/// Answers keyframe requests that reach the video track: the next frame is a keyframe.
fn watch_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    wanted: Arc<AtomicBool>,
    requests: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = track.poll().await {
            if packets.iter().any(|p| {
                p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
            }) {
                requests.fetch_add(1, Ordering::Relaxed);
                wanted.store(true, Ordering::Release);
            }
        }
    })
}

async fn stream_video(
    index: u8,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    sent: SentPayloads,
    keyframe_wanted: Arc<AtomicBool>,
) -> SendStats {
    let mut stats = SendStats::default();
    let mut ticker = tokio::time::interval(VIDEO_FRAME_INTERVAL);
    let mut seq = rand::random::<u16>();
    let mut timestamp = rand::random::<u32>();
    let mut counter = 0u32;
    let start = Instant::now();
    let mut frame = 0u32;
    while start.elapsed() < MEDIA_DURATION {
        ticker.tick().await;
        let requested = keyframe_wanted.swap(false, Ordering::AcqRel);
        let keyframe = frame.is_multiple_of(KEYFRAME_EVERY) || requested;
        if keyframe {
            stats.keyframes += 1;
            if requested {
                stats.keyframes_on_request += 1;
            }
        }
        let parts = if keyframe { KEYFRAME_PACKETS } else { 1 };
        for part in 0..parts {
            let payload = video_payload(index, counter, keyframe, part);
            sent.lock()
                .unwrap()
                .insert((index, Kind::Video, counter), payload.clone());
            counter += 1;
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: part + 1 == parts,
                    payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            seq = seq.wrapping_add(1);
            match track.write_rtp(packet).await {
                Ok(()) => stats.video_packets += 1,
                Err(_) => stats.write_errors += 1,
            }
        }
        timestamp = timestamp.wrapping_add(3000);
        frame += 1;
    }
    stats
}

async fn stream_audio(
    index: u8,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    sent: SentPayloads,
) -> SendStats {
    let mut stats = SendStats::default();
    let mut ticker = tokio::time::interval(AUDIO_PACKET_INTERVAL);
    let mut seq = rand::random::<u16>();
    let mut timestamp = rand::random::<u32>();
    let mut counter = 0u32;
    let start = Instant::now();
    while start.elapsed() < MEDIA_DURATION {
        ticker.tick().await;
        let payload = opus_payload(index, counter);
        sent.lock()
            .unwrap()
            .insert((index, Kind::Audio, counter), payload.clone());
        counter += 1;
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: false,
                payload_type,
                sequence_number: seq,
                timestamp,
                ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(960);
        match track.write_rtp(packet).await {
            Ok(()) => stats.audio_packets += 1,
            Err(_) => stats.write_errors += 1,
        }
    }
    stats
}

/// One packet as the subscriber received it.
struct Received {
    seq: u16,
    ssrc: u32,
    payload_type: u8,
    payload: Vec<u8>,
}

/// One remote track of the subscriber.
struct RemoteTrack {
    stream_id: String,
    track_id: String,
    kind: Kind,
    opened: bool,
    ended: bool,
    packets: Vec<Received>,
}

type Recorded = Arc<Mutex<Vec<Arc<Mutex<RemoteTrack>>>>>;

/// Records every remote track and all its packets.
fn record_tracks(
    mut tracks: tokio::sync::mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
) -> (Recorded, tokio::task::JoinHandle<()>) {
    let recorded: Recorded = Arc::default();
    let out = recorded.clone();
    let task = tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let kind = match track.kind().await {
                RtpCodecKind::Audio => Kind::Audio,
                _ => Kind::Video,
            };
            let entry = Arc::new(Mutex::new(RemoteTrack {
                stream_id: track.stream_id().await,
                track_id: track.track_id().await,
                kind,
                opened: false,
                ended: false,
                packets: Vec::new(),
            }));
            out.lock().unwrap().push(entry.clone());
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    let mut e = entry.lock().unwrap();
                    match event {
                        TrackRemoteEvent::OnOpen(_) => e.opened = true,
                        TrackRemoteEvent::OnRtpPacket(p) => e.packets.push(Received {
                            seq: p.header.sequence_number,
                            ssrc: p.header.ssrc,
                            payload_type: p.header.payload_type,
                            payload: p.payload.to_vec(),
                        }),
                        TrackRemoteEvent::OnEnded => {
                            e.ended = true;
                            break;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (recorded, task)
}

/// Reads and discards a peer's remote tracks (the publishers subscribe to each other).
fn discard_tracks(
    mut tracks: tokio::sync::mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            tokio::spawn(async move { while track.poll().await.is_some() {} });
        }
    })
}

fn participant_id(msg: &Value) -> String {
    msg["participant"]["id"]
        .as_str()
        .expect("participant id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_one_subscriber_payloads_arrive_intact() {
    common::init_logging();
    timeout(Duration::from_secs(55), scenario(1))
        .await
        .expect("the whole scenario finishes within 55 s");
}

/// The same with two media drivers: S and P2 land on one, P1 on the other, so S receives P1's
/// media through the other driver and P1 and P2 receive each other across drivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_arrive_intact_across_two_media_drivers() {
    common::init_logging();
    timeout(Duration::from_secs(55), scenario(2))
        .await
        .expect("the whole scenario finishes within 55 s");
}

async fn scenario(drivers: usize) {
    let server = TestServer::start_drivers(drivers).await;
    let url = server.ws_url().to_owned();

    // The subscriber joins first: receive-only, it never offers.
    let mut sub = RtcClient::join(&url, ROOM, "S").await;
    assert_eq!(sub.joined["participants"], serde_json::json!([]));
    let (recorded, recorder) = record_tracks(sub.take_tracks());

    let mut p1_client = RtcClient::join(&url, ROOM, "P1").await;
    let joined_p1 = sub.recv_type("participant_joined", SIGNAL_TIMEOUT).await;
    assert_eq!(participant_id(&joined_p1), p1_client.participant_id);
    let mut p2_client = RtcClient::join(&url, ROOM, "P2").await;
    let joined_p2 = sub.recv_type("participant_joined", SIGNAL_TIMEOUT).await;
    assert_eq!(participant_id(&joined_p2), p2_client.participant_id);
    let discard_p1 = discard_tracks(p1_client.take_tracks());
    let discard_p2 = discard_tracks(p2_client.take_tracks());

    // Publishers add one video and one audio track each and offer them.
    let mut publishers = Vec::new();
    for (index, client) in [(1u8, p1_client), (2u8, p2_client)] {
        let video = add_local_track(&client, index, Kind::Video).await;
        let audio = add_local_track(&client, index, Kind::Audio).await;
        client.publish(SIGNAL_TIMEOUT).await;
        publishers.push(Publisher {
            index,
            client,
            video,
            audio,
        });
    }
    for p in &mut publishers {
        p.client.wait_connected(SIGNAL_TIMEOUT).await;
    }
    let ids: HashMap<String, u8> = publishers
        .iter()
        .map(|p| (p.client.participant_id.clone(), p.index))
        .collect();

    // Stream for MEDIA_DURATION from both publishers at once.
    let sent: SentPayloads = Arc::default();
    let mut streams = Vec::new();
    let mut watchers = Vec::new();
    let mut pli_counts = Vec::new();
    for p in &publishers {
        let video_pt = common::negotiated_pt(&p.video.sender).await;
        let audio_pt = common::negotiated_pt(&p.audio.sender).await;
        let wanted = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU32::new(0));
        watchers.push(watch_keyframe_requests(
            p.video.track.clone(),
            wanted.clone(),
            requests.clone(),
        ));
        pli_counts.push((p.index, requests));
        streams.push(tokio::spawn(stream_video(
            p.index,
            p.video.track.clone(),
            p.video.ssrc,
            video_pt,
            sent.clone(),
            wanted,
        )));
        streams.push(tokio::spawn(stream_audio(
            p.index,
            p.audio.track.clone(),
            p.audio.ssrc,
            audio_pt,
            sent.clone(),
        )));
    }

    // The subscriber hears of all four tracks while media flows.
    let mut published: HashMap<String, Vec<(String, String)>> = HashMap::new(); // publisher → (track id, kind)
    for _ in 0..4 {
        let m = sub.recv_type("track_published", SIGNAL_TIMEOUT).await;
        let publisher = m["participant_id"].as_str().unwrap().to_owned();
        assert!(
            ids.contains_key(&publisher),
            "track_published names an unknown participant: {m}"
        );
        published.entry(publisher).or_default().push((
            m["track"]["id"].as_str().unwrap().to_owned(),
            m["track"]["kind"].as_str().unwrap().to_owned(),
        ));
    }
    sub.wait_connected(SIGNAL_TIMEOUT).await;

    let mut send_stats: BTreeMap<(u8, &str), SendStats> = BTreeMap::new();
    for (i, s) in streams.into_iter().enumerate() {
        let stats = timeout(MEDIA_DURATION + Duration::from_secs(10), s)
            .await
            .expect("streaming ends")
            .expect("streaming task");
        let index = publishers[i / 2].index;
        let kind = if i % 2 == 0 { "video" } else { "audio" };
        send_stats.insert((index, kind), stats);
    }
    // Let the last packets through the server.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server_stats = server.sfu.stats().await.expect("engine stats");
    println!("server stats: {server_stats:?}");
    for ((index, kind), stats) in &send_stats {
        println!("P{index} {kind} sent: {stats:?}");
    }
    for (index, n) in &pli_counts {
        println!(
            "P{index} keyframe requests received: {}",
            n.load(Ordering::Relaxed)
        );
    }

    // ── What the subscriber received ──────────────────────────────────────────────────────
    let sent = sent.lock().unwrap().clone();
    let tracks: Vec<_> = recorded.lock().unwrap().clone();
    for t in &tracks {
        let t = t.lock().unwrap();
        println!(
            "S track stream={} track={} kind={:?} opened={} packets={}",
            t.stream_id,
            t.track_id,
            t.kind,
            t.opened,
            t.packets.len()
        );
    }
    for ((index, kind), stats) in &send_stats {
        assert_eq!(
            stats.write_errors, 0,
            "P{index} {kind}: write_rtp failed {} times",
            stats.write_errors
        );
    }
    assert_eq!(
        tracks.len(),
        4,
        "the subscriber gets exactly 2 video and 2 audio tracks"
    );

    let mut seen: HashSet<(u8, Kind)> = HashSet::new();
    for t in &tracks {
        let t = t.lock().unwrap();
        let index = *ids.get(&t.stream_id).unwrap_or_else(|| {
            panic!(
                "remote track {} has msid stream id {:?}, not a publisher's participant id {:?}",
                t.track_id, t.stream_id, ids
            )
        });
        assert!(
            seen.insert((index, t.kind)),
            "two {:?} tracks from P{index}",
            t.kind
        );
        let kind_str = match t.kind {
            Kind::Audio => "audio",
            Kind::Video => "video",
        };
        assert!(
            published[&t.stream_id].contains(&(t.track_id.clone(), kind_str.to_owned())),
            "remote track {} ({kind_str}) of P{index} was not announced by track_published: {:?}",
            t.track_id,
            published[&t.stream_id]
        );

        let min = match t.kind {
            Kind::Audio => MIN_AUDIO_PACKETS,
            Kind::Video => MIN_VIDEO_PACKETS,
        };
        assert!(
            t.packets.len() >= min,
            "P{index} {:?}: subscriber received {} packets, expected at least {min}",
            t.kind,
            t.packets.len()
        );

        // Every payload is one this publisher sent for this kind, byte for byte.
        for (i, r) in t.packets.iter().enumerate() {
            let marker = find_marker(&r.payload).unwrap_or_else(|| {
                panic!(
                    "P{index} {:?} packet #{i} (seq {}) has no marker: {:02x?}",
                    t.kind, r.seq, r.payload
                )
            });
            assert_eq!(
                (marker.0, marker.1),
                (index, t.kind),
                "P{index} {:?} track carried a payload of P{} {:?}",
                t.kind,
                marker.0,
                marker.1
            );
            let original = sent
                .get(&marker)
                .unwrap_or_else(|| panic!("no payload was sent with marker {marker:?}"));
            assert_eq!(
                &r.payload, original,
                "P{index} {:?} packet #{i} (seq {}) differs from what was sent",
                t.kind, r.seq
            );
        }

        // One stream per track, gap-free on loopback.
        let first = &t.packets[0];
        for w in t.packets.windows(2) {
            assert_eq!(
                w[1].seq,
                w[0].seq.wrapping_add(1),
                "P{index} {:?}: sequence gap or reorder {} -> {}",
                t.kind,
                w[0].seq,
                w[1].seq
            );
            assert_eq!(w[1].ssrc, first.ssrc, "P{index} {:?}: SSRC changed", t.kind);
            assert_eq!(
                w[1].payload_type, first.payload_type,
                "P{index} {:?}: payload type changed",
                t.kind
            );
        }
        // Video starts at a keyframe: the first payload is a keyframe start.
        if t.kind == Kind::Video {
            assert!(
                is_keyframe_start(index, &first.payload),
                "P{index} video did not start at a keyframe: {:02x?}",
                &first.payload[..first.payload.len().min(12)]
            );
        }
    }
    assert_eq!(seen.len(), 4);

    // ── P2 leaves; the subscriber is told ─────────────────────────────────────────────────
    let p2 = publishers.pop().unwrap();
    let p2_id = p2.client.participant_id.clone();
    let mut p2_tracks: HashSet<String> =
        published[&p2_id].iter().map(|(id, _)| id.clone()).collect();
    p2.client.leave();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut other = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = sub.recv_any(left).await.unwrap_or_else(|| {
            panic!(
                "P2 left, but within 5 s S was not told (tracks not unpublished: \
                 {p2_tracks:?}; other messages: {other:?})"
            )
        });
        if m["type"] != "track_unpublished" && m["type"] != "participant_left" {
            other.push(m);
            continue;
        }
        match m["type"].as_str().unwrap() {
            "track_unpublished" => {
                assert_eq!(m["participant_id"], p2_id.as_str(), "{m}");
                let track_id = m["track_id"].as_str().unwrap();
                assert!(
                    p2_tracks.remove(track_id),
                    "unexpected track_unpublished: {m}"
                );
            }
            _ => {
                assert_eq!(m["participant_id"], p2_id.as_str(), "{m}");
                assert!(
                    p2_tracks.is_empty(),
                    "participant_left before track_unpublished for {p2_tracks:?}"
                );
                break;
            }
        }
    }

    // ── Clean up ──────────────────────────────────────────────────────────────────────────
    for w in watchers {
        w.abort();
    }
    recorder.abort();
    discard_p1.abort();
    discard_p2.abort();
    p2.client.close().await;
    for p in publishers {
        p.client.close().await;
    }
    sub.close().await;
    drop(server);
}

/// A track crosses to another media driver once for that driver, however many subscribers it
/// serves there: P is on driver 0 with S2, S1 and S3 are on driver 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_crosses_to_another_driver_once_however_many_subscribers_it_has() {
    common::init_logging();
    timeout(Duration::from_secs(40), async {
        let server = TestServer::start_drivers(2).await;
        let url = server.ws_url().to_owned();
        let mut publisher = RtcClient::join(&url, ROOM, "P").await;
        let mut subs = Vec::new();
        for name in ["S1", "S2", "S3"] {
            subs.push(RtcClient::join(&url, ROOM, name).await);
        }
        assert_eq!(
            server.sfu.driver_loads(),
            vec![2, 2],
            "placement alternates"
        );
        let audio = add_local_track(&publisher, 1, Kind::Audio).await;
        publisher.publish(SIGNAL_TIMEOUT).await;
        publisher.wait_connected(SIGNAL_TIMEOUT).await;
        let pt = common::negotiated_pt(&audio.sender).await;
        // The track is announced once its media arrives.
        let streaming = tokio::spawn(stream_audio(
            1,
            audio.track.clone(),
            audio.ssrc,
            pt,
            Arc::default(),
        ));
        let mut recorders = Vec::new();
        for s in &mut subs {
            s.recv_type("track_published", SIGNAL_TIMEOUT).await;
            recorders.push(record_tracks(s.take_tracks()));
        }
        for s in &mut subs {
            s.wait_connected(SIGNAL_TIMEOUT).await;
        }
        let stats = streaming.await.expect("streaming task");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = u64::from(stats.audio_packets);
        let drivers = server.sfu.driver_stats().await.expect("driver stats");
        println!("sent {sent}; drivers: {drivers:#?}");
        let (d0, d1) = (&drivers[0], &drivers[1]);
        assert!(
            d0.mesh_packets_out <= sent && d0.mesh_packets_out * 10 >= sent * 8,
            "driver 0 sent each packet once to driver 1: {} of {sent}",
            d0.mesh_packets_out
        );
        assert_eq!(d0.mesh_dropped, 0);
        assert_eq!(
            d1.mesh_packets_in, d0.mesh_packets_out,
            "nothing lost between drivers"
        );
        assert_eq!(d1.mesh_packets_out, 0, "driver 1 publishes nothing");
        assert!(
            d1.rtp_forwarded >= 2 * d1.mesh_packets_in * 9 / 10,
            "driver 1 fans each packet out to its two subscribers: {} forwarded of {} in",
            d1.rtp_forwarded,
            d1.mesh_packets_in
        );
        for (i, (recorded, _)) in recorders.iter().enumerate() {
            let got: usize = recorded
                .lock()
                .unwrap()
                .iter()
                .map(|t| t.lock().unwrap().packets.len())
                .sum();
            assert!(
                got as u64 * 10 >= sent * 8,
                "S{} received {got} of {sent}",
                i + 1
            );
        }
    })
    .await
    .expect("the scenario finishes within 40 s");
}
