//! Retransmission to subscribers: the server drops 10 % of the RTP datagrams it sends (test-only
//! fault injection on its output, retransmissions included); the webrtc-rs subscriber NACKs the
//! gaps and the server must answer from its send buffer, so in the end the subscriber holds every
//! packet of the stream.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RtcClient, TestServer};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sfu::SfuConfig;
use tokio::time::timeout;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
const FRAMES: u32 = 150; // 5 s at 30 fps

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_nacks_are_answered_and_fill_every_gap() {
    common::init_logging();
    timeout(Duration::from_secs(60), scenario())
        .await
        .expect("within 60 s");
}

async fn scenario() {
    let server = TestServer::start_with(SfuConfig {
        media_bind: "127.0.0.1:0".parse().unwrap(),
        inject_loss_out: 0.10,
        ..SfuConfig::default()
    })
    .await;
    let url = server.ws_url().to_owned();
    let mut sub = RtcClient::join(&url, "nack", "S").await;
    let mut tracks = sub.take_tracks();
    let received: Arc<Mutex<BTreeSet<u16>>> = Arc::default();
    let out = received.clone();
    let recorder = tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = event {
                        out.lock().unwrap().insert(p.header.sequence_number);
                    }
                }
            });
        }
    });

    let publisher = RtcClient::join(&url, "nack", "P").await;
    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "p".into(),
        "p-video".into(),
        "p-video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90000,
                ..Default::default()
            },
            ..Default::default()
        }],
    )));
    let sender = publisher
        .pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .expect("add_track");
    publisher.publish(SIGNAL_TIMEOUT).await;
    let pt = common::negotiated_pt(&sender).await;
    // Every frame is a keyframe, so forwarding starts at once whatever is lost.
    let sending = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(33));
        let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
        for frame in 0..FRAMES {
            ticker.tick().await;
            let mut payload = vec![
                0x10, 0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
            ];
            payload.extend_from_slice(&frame.to_be_bytes());
            payload.extend(std::iter::repeat_n(0xcd, 200));
            track
                .write_rtp(rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: true,
                        payload_type: pt,
                        sequence_number: seq,
                        timestamp: ts,
                        ssrc,
                        ..Default::default()
                    },
                    payload: payload.into(),
                })
                .await
                .expect("write_rtp");
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(3000);
        }
    });
    sub.recv_type("track_published", SIGNAL_TIMEOUT).await;
    sub.wait_connected(SIGNAL_TIMEOUT).await;
    sending.await.expect("sending task");
    // Time for the last NACK rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stats = server.sfu.stats().await.expect("stats");
    println!("server stats: {stats:?}");
    assert!(
        stats.datagrams_dropped_injected_out >= 3,
        "the fault injection dropped too little to test anything: {stats:?}"
    );
    let got = received.lock().unwrap().clone();
    assert!(got.len() > 100, "only {} packets arrived", got.len());
    // Sequence numbers are random per leg: find the run (across the 16-bit wrap) and its holes.
    let mut sorted: Vec<u16> = got.iter().copied().collect();
    sorted.sort_unstable();
    let wrap_gap = sorted
        .windows(2)
        .position(|w| w[1] - w[0] > 30_000)
        .map(|i| i + 1)
        .unwrap_or(0);
    sorted.rotate_left(wrap_gap);
    let holes: Vec<u16> = sorted
        .windows(2)
        .flat_map(|w| {
            let (a, b) = (w[0], w[1]);
            (1..b.wrapping_sub(a)).map(move |d| a.wrapping_add(d))
        })
        .collect();
    assert!(
        holes.is_empty(),
        "packets never recovered after {} injected drops: {holes:?}",
        stats.datagrams_dropped_injected_out
    );
    recorder.abort();
    sub.close().await;
    publisher.close().await;
}
