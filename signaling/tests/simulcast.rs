//! Simulcast through the real server with real webrtc-rs peers: one publisher sends three VP8
//! layers (rids q, h, f: 320x180, 640x360, 1280x720 in their keyframe headers, each with its own
//! sequence numbers, timestamps, picture ids and TL0PICIDX), one subscriber changes how it shows
//! the video and the server must follow:
//!
//! - the displayed size picks the layer (320x180 → low, 1280x720 → high), `max_quality` caps it,
//!   a layer the publisher stops sending is replaced by the next lower one and taken back when it
//!   returns, and `visible: false` stops the media;
//! - each change is reported in `track_layer` with its reason;
//! - dynacast: the publisher is told to pause the layers nobody receives and to resume them,
//!   and a subscriber still connecting keeps the top layer on;
//! - across every switch the subscriber sees one stream: one SSRC, contiguous sequence numbers,
//!   timestamps that never go back, picture ids and TL0PICIDX that continue by at most one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RtcClient, TestServer};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use testkit::vp8::{self, Descriptor};
use tokio::time::{timeout, Instant};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

const ROOM: &str = "simulcast";
const RIDS: [&str; 3] = ["q", "h", "f"];
const SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// A periodic keyframe on every layer every this many frames, besides those asked for by PLI.
const KEYFRAME_EVERY: u32 = 90;
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound for a layer switch after a change of displayed size.
const SWITCH_WITHIN: Duration = Duration::from_secs(3);

/// Per-layer state the publisher task and the test share.
struct LayerControl {
    ssrc: u32,
    sending: AtomicBool,
    keyframe_wanted: AtomicBool,
}

/// A VP8 payload with a full descriptor (15-bit picture id, TL0PICIDX, TID 0). Packet 0 of a
/// frame starts it (S=1) with a frame tag; a keyframe's tag carries the start code and the
/// layer's size. The body marks layer and frame.
fn vp8_payload(layer: u8, frame: u32, pid: u16, tl0: u8, keyframe: bool, part: usize) -> Vec<u8> {
    let descriptor = Descriptor {
        start: part == 0,
        picture_id: Some(pid),
        tl0_pic_idx: Some(tl0),
        temporal: Some((0, false)),
    };
    let mut p = vp8::payload_head(descriptor, keyframe.then(|| SIZES[usize::from(layer)]));
    p.extend_from_slice(b"LAYER");
    p.push(layer);
    p.extend_from_slice(&frame.to_be_bytes());
    p.extend(std::iter::repeat_n(0xab, 100));
    p
}

/// The layer a received payload came from (its marker), and the descriptor's picture id and
/// TL0PICIDX.
fn inspect(payload: &[u8]) -> Option<(u8, u16, u8)> {
    let at = payload.windows(5).position(|w| w == b"LAYER")?;
    let layer = *payload.get(at + 5)?;
    let (d, _) = Descriptor::parse(payload)?;
    Some((layer, d.picture_id?, d.tl0_pic_idx?))
}

async fn stream_layers(
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
    ext_ids: (u8, u8),
    mid: String,
    layers: Arc<Vec<LayerControl>>,
    stop: Arc<AtomicBool>,
) -> u32 {
    let (mid_id, rid_id) = ext_ids;
    let mut ticker = tokio::time::interval(FRAME_INTERVAL);
    let mut seq: Vec<u16> = (0..3).map(|_| rand::random()).collect();
    let mut ts: Vec<u32> = (0..3).map(|_| rand::random()).collect();
    let mut pid: Vec<u16> = (0..3).map(|_| rand::random::<u16>() & 0x7fff).collect();
    let mut tl0: Vec<u8> = (0..3).map(|_| rand::random()).collect();
    let mut errors = 0u32;
    let mut frame = 0u32;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        for (l, control) in layers.iter().enumerate() {
            if !control.sending.load(Ordering::Relaxed) {
                continue;
            }
            let keyframe = frame.is_multiple_of(KEYFRAME_EVERY)
                || control.keyframe_wanted.swap(false, Ordering::AcqRel);
            let parts = if keyframe { 2 } else { 1 };
            for part in 0..parts {
                let mut header = rtp::header::Header {
                    version: 2,
                    marker: part + 1 == parts,
                    payload_type,
                    sequence_number: seq[l],
                    timestamp: ts[l],
                    ssrc: control.ssrc,
                    ..Default::default()
                };
                header
                    .set_extension(mid_id, mid.clone().into_bytes().into())
                    .expect("mid extension");
                header
                    .set_extension(rid_id, RIDS[l].as_bytes().to_vec().into())
                    .expect("rid extension");
                let payload = vp8_payload(l as u8, frame, pid[l], tl0[l], keyframe, part);
                seq[l] = seq[l].wrapping_add(1);
                if track
                    .write_rtp(rtp::Packet {
                        header,
                        payload: payload.into(),
                    })
                    .await
                    .is_err()
                {
                    errors += 1;
                }
            }
            ts[l] = ts[l].wrapping_add(3000);
            pid[l] = (pid[l] + 1) & 0x7fff;
            tl0[l] = tl0[l].wrapping_add(1);
        }
        frame += 1;
    }
    errors
}

/// Marks the layer whose SSRC a PLI names as wanting a keyframe.
fn watch_plis(
    track: Arc<TrackLocalStaticRTP>,
    layers: Arc<Vec<LayerControl>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = track.poll().await {
            for p in &packets {
                if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
                    for l in layers.iter().filter(|l| l.ssrc == pli.media_ssrc) {
                        l.keyframe_wanted.store(true, Ordering::Release);
                    }
                }
            }
        }
    })
}

struct Received {
    at: Instant,
    seq: u16,
    ssrc: u32,
    timestamp: u32,
    layer: u8,
    pid: u16,
    tl0: u8,
}

type Recorded = Arc<Mutex<Vec<Received>>>;

fn record_video(
    mut tracks: tokio::sync::mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
) -> (Recorded, tokio::task::JoinHandle<()>) {
    let recorded: Recorded = Arc::default();
    let out = recorded.clone();
    let task = tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = event {
                        let Some((layer, pid, tl0)) = inspect(&p.payload) else {
                            continue;
                        };
                        out.lock().unwrap().push(Received {
                            at: Instant::now(),
                            seq: p.header.sequence_number,
                            ssrc: p.header.ssrc,
                            timestamp: p.header.timestamp,
                            layer,
                            pid,
                            tl0,
                        });
                    }
                }
            });
        }
    });
    (recorded, task)
}

/// Waits for a `track_layer` matching `pred`, returning it; panics with every message seen.
async fn wait_layer(
    sub: &mut RtcClient,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_any(left).await {
            Some(m) if m["type"] == "track_layer" && pred(&m) => return m,
            Some(m) => seen.push(m),
            None => panic!("no track_layer {what} within {within:?}; saw {seen:#?}"),
        }
    }
}

/// Plays the publisher's browser: applies every `publisher_layers` to the layers it sends (pause
/// and resume encodings) and passes the lists on to the test. Returns the client when `stop`
/// fires.
fn run_publisher(
    mut publisher: RtcClient,
    layers: Arc<Vec<LayerControl>>,
    lists: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<RtcClient> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop => return publisher,
                m = publisher.recv_any(Duration::from_millis(100)) => {
                    let Some(m) = m else { continue };
                    if m["type"] != "publisher_layers" {
                        continue;
                    }
                    let active: Vec<String> = m["active"]
                        .as_array()
                        .expect("active list")
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect();
                    let paused: Vec<String> = m["paused"]
                        .as_array()
                        .expect("paused list")
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect();
                    for (l, rid) in RIDS.iter().enumerate() {
                        let (on, off) = (active.iter().any(|a| a == rid), paused.iter().any(|a| a == rid));
                        assert!(!(on && off), "{rid} both active and paused: {m}");
                        // Every layer has been seen here, so each is in exactly one list.
                        assert!(on || off, "{rid} in neither list: {m}");
                        layers[l].sending.store(on, Ordering::Relaxed);
                    }
                    let _ = lists.send(active);
                }
            }
        }
    })
}

/// Waits for a `publisher_layers` list matching `pred`.
async fn wait_dynacast(
    lists: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    within: Duration,
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, lists.recv()).await {
            Ok(Some(active)) if pred(&active) => return active,
            Ok(Some(active)) => seen.push(active),
            _ => panic!("no publisher_layers {what} within {within:?}; saw {seen:?}"),
        }
    }
}

fn layer_of_last(recorded: &Recorded) -> Option<u8> {
    recorded.lock().unwrap().last().map(|r| r.layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_follow_size_preference_availability_and_visibility_in_one_stream() {
    common::init_logging();
    timeout(Duration::from_secs(80), scenario(1))
        .await
        .expect("the scenario finishes within 80 s");
}

/// The same with the publisher and the subscriber on different media drivers: layers, keyframe
/// requests and dynacast demand cross between drivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_follow_size_preference_and_visibility_across_two_media_drivers() {
    common::init_logging();
    timeout(Duration::from_secs(80), scenario(2))
        .await
        .expect("the scenario finishes within 80 s");
}

async fn scenario(drivers: usize) {
    let server = TestServer::start_drivers(drivers).await;
    let url = server.ws_url().to_owned();

    // ── Publisher: one VP8 track, three rids ──────────────────────────────────────────────
    let mut publisher = RtcClient::join(&url, ROOM, "P").await;
    let layers: Arc<Vec<LayerControl>> = Arc::new(
        (0..3)
            .map(|_| LayerControl {
                ssrc: rand::random(),
                sending: AtomicBool::new(true),
                keyframe_wanted: AtomicBool::new(false),
            })
            .collect(),
    );
    let codec = RTCRtpCodec {
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90000,
        ..Default::default()
    };
    let encodings = layers
        .iter()
        .zip(RIDS)
        .map(|(l, rid)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: rid.to_owned(),
                ssrc: Some(l.ssrc),
                ..Default::default()
            },
            codec: codec.clone(),
            ..Default::default()
        })
        .collect();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "p-stream".into(),
        "p-video".into(),
        "p-video".into(),
        RtpCodecKind::Video,
        encodings,
    )));
    let sender: Arc<dyn RtpSender> = publisher
        .pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .expect("add_track");
    publisher.publish(SIGNAL_TIMEOUT).await;
    publisher.wait_connected(SIGNAL_TIMEOUT).await;
    let local = publisher
        .pc
        .local_description()
        .await
        .expect("publisher local description")
        .sdp;
    assert!(
        local.contains("a=simulcast:send"),
        "publisher offers simulcast: {local}"
    );
    let ext_ids = (
        common::sdp_extension_id(&local, "urn:ietf:params:rtp-hdrext:sdes:mid"),
        common::sdp_extension_id(&local, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    );
    let mid = local
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .expect("a mid")
        .trim()
        .to_owned();
    let payload_type = common::negotiated_pt(&sender).await;
    let stop = Arc::new(AtomicBool::new(false));
    let plis = watch_plis(track.clone(), layers.clone());
    let streaming = tokio::spawn(stream_layers(
        track.clone(),
        payload_type,
        ext_ids,
        mid,
        layers.clone(),
        stop.clone(),
    ));
    let (lists_tx, mut lists) = tokio::sync::mpsc::unbounded_channel();
    let (stop_publisher, stop_rx) = tokio::sync::oneshot::channel();
    let publisher = run_publisher(publisher, layers.clone(), lists_tx, stop_rx);

    // ── Subscriber ────────────────────────────────────────────────────────────────────────
    let mut sub = RtcClient::join(&url, ROOM, "S").await;
    let track_id = sub.joined["participants"][0]["tracks"]
        .as_array()
        .and_then(|t| t.first())
        .map(|t| t["id"].as_str().unwrap().to_owned());
    let track_id = match track_id {
        Some(id) => id,
        None => {
            let m = sub.recv_type("track_published", SIGNAL_TIMEOUT).await;
            m["track"]["id"].as_str().unwrap().to_owned()
        }
    };
    let (recorded, recorder) = record_video(sub.take_tracks());
    sub.wait_connected(SIGNAL_TIMEOUT).await;
    let settings = |extra: Value| {
        let mut m = json!({"type": "track_settings", "track_id": track_id});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };

    // Size unknown: the top layer, for its display size. (While the layers start one by one, a
    // report may say `publisher_not_sending` on the way.)
    let m = wait_layer(&mut sub, SIGNAL_TIMEOUT, "high before any size", |m| {
        m["current"] == "high" && m["reason"] == "display_size"
    })
    .await;
    assert_eq!(
        (m["width"].as_u64(), m["height"].as_u64()),
        (Some(1280), Some(720)),
        "{m}"
    );

    // A 320x180 tile: the low layer.
    sub.send(settings(json!({"width": 320, "height": 180})));
    let m = wait_layer(&mut sub, SWITCH_WITHIN, "low for 320x180", |m| {
        m["current"] == "low"
    })
    .await;
    assert_eq!(m["reason"], "display_size", "{m}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        layer_of_last(&recorded),
        Some(0),
        "media follows the report"
    );

    // Dynacast: nobody needs h and f any more; the publisher is told within the 2 s grace plus
    // a tick.
    let active = wait_dynacast(&mut lists, Duration::from_secs(5), "pausing h and f", |a| {
        a == ["q"]
    })
    .await;
    assert_eq!(active, ["q"]);

    // Enlarged to 1280x720: f is resumed at the publisher and forwarded within 3 s.
    let enlarged = Instant::now();
    sub.send(settings(json!({"width": 1280, "height": 720})));
    wait_dynacast(&mut lists, Duration::from_secs(1), "resuming f", |a| {
        a.iter().any(|r| r == "f")
    })
    .await;
    wait_layer(&mut sub, SWITCH_WITHIN, "high after enlarging", |m| {
        m["current"] == "high"
    })
    .await;
    assert!(enlarged.elapsed() < SWITCH_WITHIN);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(layer_of_last(&recorded), Some(2));

    // A preference caps it.
    sub.send(settings(json!({"max_quality": "medium"})));
    let m = wait_layer(&mut sub, SWITCH_WITHIN, "medium by preference", |m| {
        m["current"] == "medium"
    })
    .await;
    assert_eq!(m["reason"], "preference", "{m}");
    sub.send(settings(json!({"max_quality": "high"})));
    wait_layer(&mut sub, SWITCH_WITHIN, "back to high", |m| {
        m["current"] == "high"
    })
    .await;

    // The publisher stops sending f (its own decision, e.g. its uplink): fall back to h, then
    // back up when f returns.
    layers[2].sending.store(false, Ordering::Relaxed);
    let m = wait_layer(&mut sub, SWITCH_WITHIN, "medium while f is missing", |m| {
        m["current"] == "medium"
    })
    .await;
    assert_eq!(m["reason"], "publisher_not_sending", "{m}");
    layers[2].sending.store(true, Ordering::Relaxed);
    let m = wait_layer(&mut sub, SWITCH_WITHIN, "high when f returns", |m| {
        m["current"] == "high"
    })
    .await;
    assert_eq!(m["reason"], "display_size", "{m}");

    // Hidden: media stops at once and the report says why.
    sub.send(settings(json!({"visible": false})));
    let m = wait_layer(&mut sub, SWITCH_WITHIN, "paused when hidden", |m| {
        m["current"].is_null()
    })
    .await;
    assert_eq!(m["reason"], "hidden", "{m}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = recorded.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        recorded.lock().unwrap().len(),
        count,
        "no video reaches a subscriber that hides the track"
    );
    // And with nobody watching, every layer is paused at the publisher.
    wait_dynacast(
        &mut lists,
        Duration::from_secs(5),
        "pausing everything",
        |a| a.is_empty(),
    )
    .await;

    // Visible again, small: the low layer resumes (the publisher is asked for it again).
    sub.send(settings(
        json!({"visible": true, "width": 320, "height": 180}),
    ));
    wait_dynacast(&mut lists, Duration::from_secs(1), "resuming q", |a| {
        a.iter().any(|r| r == "q")
    })
    .await;
    wait_layer(&mut sub, SWITCH_WITHIN, "low after showing again", |m| {
        m["current"] == "low"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A subscriber still connecting (it joined, but has not answered the server's offer yet)
    // keeps the top layer on: f is resumed for it, rather than being found paused when it
    // connects a moment later. Once it has left, f is paused again.
    let mut connecting = common::SignalingClient::connect(&url).await;
    connecting.join(ROOM, "C").await;
    wait_dynacast(
        &mut lists,
        Duration::from_secs(2),
        "resuming f for a subscriber still connecting",
        |a| a.iter().any(|r| r == "f"),
    )
    .await;
    drop(connecting);
    wait_dynacast(
        &mut lists,
        Duration::from_secs(5),
        "pausing f again once it left",
        |a| a == ["q"],
    )
    .await;

    let rec: Vec<Received> = std::mem::take(&mut *recorded.lock().unwrap());
    // The subscriber's transport-wide feedback produced a downlink estimate.
    let snapshot = server.sfu.debug().await.expect("debug snapshot");
    let s_info = snapshot.rooms[0]
        .participants
        .iter()
        .find(|p| p.name == "S")
        .expect("S in the snapshot");
    assert!(
        s_info.estimate_bps.is_some_and(|e| e > 0),
        "no downlink estimate for S: {s_info:?}"
    );

    stop.store(true, Ordering::Relaxed);
    let errors = streaming.await.expect("streaming task");
    assert_eq!(errors, 0, "publisher write errors");
    let stats = server.sfu.stats().await.expect("stats");
    println!("server stats: {stats:?}");
    assert!(stats.layer_switches >= 5, "switches counted: {stats:?}");
    assert!(
        stats.dynacast_updates >= 4,
        "dynacast updates counted: {stats:?}"
    );

    // ── One continuous stream across every switch and the pause ────────────────────────────
    assert!(rec.len() > 80, "only {} video packets received", rec.len());
    let layers_seen: std::collections::BTreeSet<u8> = rec.iter().map(|r| r.layer).collect();
    assert_eq!(
        layers_seen.len(),
        3,
        "every layer was forwarded at some point"
    );
    let mut switches = 0;
    for w in rec.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert_eq!(b.ssrc, a.ssrc, "the SSRC never changes");
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence numbers are contiguous"
        );
        let dt = b.timestamp.wrapping_sub(a.timestamp);
        assert!(
            dt < 1 << 31,
            "timestamp went back: {} -> {}",
            a.timestamp,
            b.timestamp
        );
        let dpid = b.pid.wrapping_sub(a.pid) & 0x7fff;
        assert!(
            dpid <= 1,
            "picture id jumped {} -> {} (layer {} -> {})",
            a.pid,
            b.pid,
            a.layer,
            b.layer
        );
        let dtl0 = b.tl0.wrapping_sub(a.tl0);
        assert!(dtl0 <= 1, "TL0PICIDX jumped {} -> {}", a.tl0, b.tl0);
        if a.layer != b.layer {
            switches += 1;
            // Timestamps advance by about the wall-clock time between the two packets.
            let wall = b.at.saturating_duration_since(a.at).as_secs_f64() * 90_000.0;
            assert!(
                dt >= 1 && f64::from(dt) < wall + 90_000.0 * 0.2,
                "timestamp step {dt} at a switch {} ms apart",
                wall / 90.0
            );
        }
    }
    assert!(
        switches >= 5,
        "only {switches} layer changes seen by the subscriber"
    );

    plis.abort();
    recorder.abort();
    sub.close().await;
    let _ = stop_publisher.send(());
    publisher.await.expect("publisher task").close().await;
    drop(server);
}
