//! Active speaker detection through the real server: two publishers send Opus-typed RTP with the
//! audio-level header extension (RFC 6464), one loud and one silent, then the other way round; a
//! subscriber is told who the active speaker is each time, and silence changes nothing.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{RtcClient, TestServer, URI_AUDIO_LEVEL};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::time::{timeout, Instant};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

const ROOM: &str = "speaker";
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
const LOUD: u8 = 25; // -25 dBov: speech
const SILENT: u8 = 127;

/// Joins, publishes one audio track and, once `go` turns true, streams 50 packets/s whose
/// audio-level extension carries the value in `level` (changed by the test). Every speaker joins
/// and negotiates before anyone sends: a join while another participant's track is already
/// published gets the server's offer for it while its own publishing offer is under way, and in
/// a few runs in thirty the server then never saw the newcomer's audio track open, although its
/// connection was up (not diagnosed: the webrtc-rs client or rtc; see the issue note).
async fn speaker(
    url: &str,
    name: &str,
    level: Arc<AtomicU8>,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> (RtcClient, tokio::task::JoinHandle<()>) {
    let mut client = RtcClient::join(url, ROOM, name).await;
    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{name}-stream"),
        format!("{name}-audio"),
        format!("{name}-audio"),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    let sender = client
        .pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .expect("add_track");
    client.publish(SIGNAL_TIMEOUT).await;
    client.wait_connected(SIGNAL_TIMEOUT).await;
    let sdp = client.pc.local_description().await.expect("local sdp").sdp;
    let ext_id = common::sdp_extension_id(&sdp, URI_AUDIO_LEVEL);
    let pt = common::negotiated_pt(&sender).await;
    let task = tokio::spawn(async move {
        let _ = go.wait_for(|go| *go).await;
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
        loop {
            ticker.tick().await;
            let mut header = rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            };
            let v = level.load(Ordering::Relaxed);
            header
                .set_extension(ext_id, vec![0x80 | v].into())
                .expect("audio level extension");
            let _ = track
                .write_rtp(rtp::Packet {
                    header,
                    payload: vec![0x78; 60].into(),
                })
                .await;
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(960);
        }
    });
    (client, task)
}

/// The next `active_speaker` within `within`, or `None`.
async fn next_speaker(sub: &mut RtcClient, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let m = sub
            .recv_any(deadline.saturating_duration_since(Instant::now()))
            .await?;
        if m["type"] == "active_speaker" {
            return Some(m["participant_id"].as_str().unwrap().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_voice_is_the_active_speaker_and_silence_keeps_it() {
    loudest_voice_wins(1).await;
}

/// With two media drivers the subscriber and B share one and A is on the other: levels of
/// remote publishers count as much as local ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_speaker_is_chosen_across_two_media_drivers() {
    loudest_voice_wins(2).await;
}

async fn loudest_voice_wins(drivers: usize) {
    common::init_logging();
    timeout(Duration::from_secs(60), async {
        let server = TestServer::start_drivers(drivers).await;
        let url = server.ws_url().to_owned();
        let mut sub = RtcClient::join(&url, ROOM, "S").await;
        let level_a = Arc::new(AtomicU8::new(LOUD));
        let level_b = Arc::new(AtomicU8::new(SILENT));
        let (go, gate) = tokio::sync::watch::channel(false);
        let (a, task_a) = speaker(&url, "A", level_a.clone(), gate.clone()).await;
        let (b, task_b) = speaker(&url, "B", level_b.clone(), gate).await;
        go.send_replace(true);

        assert_eq!(
            next_speaker(&mut sub, Duration::from_secs(3))
                .await
                .as_deref(),
            Some(a.participant_id.as_str()),
            "A speaks"
        );
        level_a.store(SILENT, Ordering::Relaxed);
        level_b.store(LOUD, Ordering::Relaxed);
        assert_eq!(
            next_speaker(&mut sub, Duration::from_secs(3))
                .await
                .as_deref(),
            Some(b.participant_id.as_str()),
            "B takes over"
        );
        level_b.store(SILENT, Ordering::Relaxed);
        assert_eq!(
            next_speaker(&mut sub, Duration::from_secs(1)).await,
            None,
            "silence keeps the last speaker"
        );
        task_a.abort();
        task_b.abort();
        sub.close().await;
        a.close().await;
        b.close().await;
    })
    .await
    .expect("within 60 s");
}
