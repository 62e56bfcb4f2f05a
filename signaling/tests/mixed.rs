//! Mixed audio (the MCU) with real webrtc-rs peers sending real Opus tones: a participant that
//! joined with `mixed: "audio"` receives one audio track that holds every other voice and not
//! its own, instead of one track per microphone; the others still receive each microphone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{publish_tone, RtcClient, TestServer};
use serde_json::json;
use sfu::mcu::mix::share_at;
use tokio::time::timeout;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

const T: Duration = Duration::from_secs(15);

/// One received RTP packet: (sequence number, marker, payload).
type Rtp = (u16, bool, Vec<u8>);

/// Each track `client` receives: (stream id, kind, its RTP packets so far).
type Received = Arc<Mutex<Vec<(String, String, Vec<Rtp>)>>>;

fn collect(client: &mut RtcClient) -> Received {
    let received = Received::default();
    let mut tracks = client.take_tracks();
    let out = received.clone();
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let stream = track.stream_id().await;
            let kind = format!("{:?}", track.kind().await).to_lowercase();
            let index = {
                let mut all = out.lock().unwrap();
                all.push((stream, kind, Vec::new()));
                all.len() - 1
            };
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = event {
                        out.lock().unwrap()[index].2.push((
                            p.header.sequence_number,
                            p.header.marker,
                            p.payload.to_vec(),
                        ));
                    }
                }
            });
        }
    });
    received
}

/// The decoded audio of `payloads` (Opus), after the first second.
fn decode(packets: &[Rtp]) -> Vec<i16> {
    let mut decoder = codecs::OpusDecoder::new(codecs::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    for (_, _, p) in packets.iter().skip(50) {
        let mut frame = [0i16; 960];
        if let Ok(n) = decoder.decode(p, &mut frame) {
            pcm.extend_from_slice(&frame[..n]);
        }
    }
    pcm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_listener_hears_every_other_voice_in_one_track_and_not_its_own() {
    common::init_logging();
    timeout(Duration::from_secs(90), scenario(TestServer::start().await))
        .await
        .expect("within 90 s");
}

/// The same with two media drivers: participants are spread over both, so the listener's
/// driver mixes voices published on the other (through its proxies of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_holds_voices_published_on_another_media_driver() {
    common::init_logging();
    timeout(
        Duration::from_secs(90),
        scenario(TestServer::start_drivers(2).await),
    )
    .await
    .expect("within 90 s");
}

async fn scenario(server: TestServer) {
    let url = server.ws_url().to_owned();
    // Three voices, and a fourth participant who asks for the mix and speaks too.
    let mut senders = Vec::new();
    let mut clients = Vec::new();
    for (name, hz) in [("a", 440.0), ("b", 660.0), ("c", 1000.0)] {
        let c = RtcClient::join(&url, "mix", name).await;
        senders.push(publish_tone(&c, hz, T).await);
        clients.push(c);
    }
    let mut listener = RtcClient::join_with(&url, "mix", "l", json!({ "mixed": "audio" })).await;
    let heard = collect(&mut listener);
    senders.push(publish_tone(&listener, 1500.0, T).await);
    // A forwarding participant, for comparison: it receives each microphone.
    let mut plain = RtcClient::join(&url, "mix", "p").await;
    let plain_heard = collect(&mut plain);

    // 4 s of audio.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let enough = heard
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, ps)| ps.len() >= 250);
        if enough {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "4 s of mixed audio; got {:?}",
            heard
                .lock()
                .unwrap()
                .iter()
                .map(|(s, k, ps)| (s.clone(), k.clone(), ps.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tracks = heard.lock().unwrap().clone();
    let summary: Vec<(String, String, usize)> = tracks
        .iter()
        .map(|(s, k, ps)| (s.clone(), k.clone(), ps.len()))
        .collect();
    let audio: Vec<_> = tracks.iter().filter(|(_, k, _)| k == "audio").collect();
    assert_eq!(audio.len(), 1, "one audio track: {summary:?}");
    assert_eq!(audio[0].0, "mixed", "{summary:?}");
    let pcm = decode(&audio[0].2);
    let shares: Vec<(f64, f64)> = [440.0, 660.0, 1000.0, 1500.0]
        .into_iter()
        .map(|hz| (hz, share_at(&pcm, hz)))
        .collect();
    println!("mixed audio, share of each tone: {shares:?}");
    for &(hz, share) in &shares[..3] {
        assert!(share > 0.1, "{hz} Hz is in the mix: {shares:?}");
    }
    assert!(shares[3].1 < 0.01, "its own 1500 Hz is not: {shares:?}");

    // The forwarding participant receives the four microphones, one track each.
    let plain_audio = plain_heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, k, ps)| k == "audio" && s != "mixed" && !ps.is_empty())
        .count();
    assert_eq!(plain_audio, 4);

    for s in senders {
        s.abort();
    }
    for c in clients {
        c.close().await;
    }
    listener.close().await;
    plain.close().await;
}

/// The share of `picture`'s pixels whose chroma is within 20 of `(u, v)`.
fn chroma_share(picture: &codecs::I420, (u, v): (u8, u8)) -> f64 {
    let near = picture
        .u
        .iter()
        .zip(&picture.v)
        .filter(|(&pu, &pv)| pu.abs_diff(u) < 20 && pv.abs_diff(v) < 20)
        .count();
    near as f64 / picture.u.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_viewer_gets_one_picture_holding_every_camera() {
    common::init_logging();
    timeout(Duration::from_secs(90), composite_scenario())
        .await
        .expect("within 90 s");
}

async fn composite_scenario() {
    let server = TestServer::start().await;
    let url = server.ws_url().to_owned();
    // Two cameras, red and blue, really VP8-encoded; a viewer that asks for everything mixed.
    let red = RtcClient::join(&url, "comp", "red").await;
    let red_sending = common::publish_colour(&red, (81, 90, 240), T).await;
    let blue = RtcClient::join(&url, "comp", "blue").await;
    let blue_sending = common::publish_colour(&blue, (41, 240, 110), T).await;
    let mut viewer = RtcClient::join_with(&url, "comp", "v", json!({ "mixed": "all" })).await;
    let heard = collect(&mut viewer);

    // The viewer's tracks: one video (the composite) and one audio (the mix), both `mixed`.
    let deadline = tokio::time::Instant::now() + T;
    let picture = loop {
        let tracks = heard.lock().unwrap().clone();
        let video: Vec<_> = tracks.iter().filter(|(_, k, _)| k == "video").collect();
        if let [(stream, _, payloads)] = video.as_slice() {
            assert_eq!(stream, "mixed");
            // Depacketize and decode what arrived; the latest picture.
            let mut depacketizer =
                sfu::mcu::depacketize::Depacketizer::new(sfu::engine::codec::Codec::Vp8);
            let mut decoder = codecs::Vp8Decoder::new().unwrap();
            let mut frames = Vec::new();
            for (seq, marker, payload) in payloads.iter() {
                depacketizer.push(*seq, 0, *marker, payload.clone().into(), &mut frames);
            }
            let mut latest = None;
            for f in frames {
                if let Ok(Some(p)) = decoder.decode(&f.data) {
                    latest = Some(p);
                }
            }
            if let Some(p) = latest
                .filter(|p| chroma_share(p, (90, 240)) > 0.05 && chroma_share(p, (240, 110)) > 0.05)
            {
                break p;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a composite with both cameras; tracks {:?}",
            tracks
                .iter()
                .map(|(s, k, ps)| (s.clone(), k.clone(), ps.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!((picture.width, picture.height), (640, 360));
    let tracks = heard.lock().unwrap().clone();
    assert_eq!(
        tracks.iter().filter(|(_, k, _)| k == "video").count(),
        1,
        "one video track, not each camera"
    );
    red_sending.abort();
    blue_sending.abort();
    red.close().await;
    blue.close().await;
    viewer.close().await;
}
