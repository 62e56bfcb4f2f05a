//! Mixed audio (the MCU) with real webrtc-rs peers sending real Opus tones: a participant that
//! joined with `mixed: "audio"` receives one audio track that holds every other voice and not
//! its own, instead of one track per microphone; the others still receive each microphone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{publish_tone, share_at, RtcClient, TestServer};
use serde_json::json;
use tokio::time::timeout;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

const T: Duration = Duration::from_secs(15);

/// Each track `client` receives: (stream id, kind, the payloads of its RTP packets so far).
type Received = Arc<Mutex<Vec<(String, String, Vec<Vec<u8>>)>>>;

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
                        out.lock().unwrap()[index].2.push(p.payload.to_vec());
                    }
                }
            });
        }
    });
    received
}

/// The decoded audio of `payloads` (Opus), after the first second.
fn decode(payloads: &[Vec<u8>]) -> Vec<i16> {
    let mut decoder = codecs::OpusDecoder::new(codecs::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    for p in payloads.iter().skip(50) {
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
    timeout(Duration::from_secs(90), scenario())
        .await
        .expect("within 90 s");
}

async fn scenario() {
    let server = TestServer::start().await;
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
