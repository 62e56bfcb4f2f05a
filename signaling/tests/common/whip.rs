//! WHIP and WHEP from the client side: the problem document of a refused request, a webrtc-rs
//! WHEP viewer, and waits on what a session publishes or receives.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::Value;
use webrtc::peer_connection::RTCSessionDescription;

use super::{ClientPeer, TestServer};

const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The problem document of a refused request: its status and `code`.
pub async fn problem(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{status}"
    );
    let body: Value = res.json().await.expect("problem JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// Waits until the room registry lists `n` tracks of `participant`.
pub async fn wait_tracks(
    server: &TestServer,
    room: &str,
    participant: &str,
    n: usize,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + SIGNAL_TIMEOUT;
    loop {
        let tracks: Vec<String> = server
            .state
            .rooms()
            .get(room)
            .map(|r| {
                r.tracks
                    .iter()
                    .filter(|t| t.participant_id == participant)
                    .map(|t| t.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        if tracks.len() >= n {
            return tracks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{participant} published {} of {n} tracks",
            tracks.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webrtc-rs WHEP viewer (receives audio and video) posting to `url`: the response, and the
/// peer with the answer applied if it was a 201.
pub async fn play(
    http: &reqwest::Client,
    url: &str,
) -> (ClientPeer, StatusCode, HeaderMap, String) {
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    let peer = ClientPeer::new().await;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        peer.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .expect("recvonly transceiver");
    }
    let offer = peer.pc.create_offer(None).await.expect("offer");
    peer.pc
        .set_local_description(offer.clone())
        .await
        .expect("local offer");
    let res = http
        .post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer.sdp)
        .send()
        .await
        .expect("POST");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.unwrap();
    if status == StatusCode::CREATED {
        peer.pc
            .set_remote_description(RTCSessionDescription::answer(body.clone()).unwrap())
            .await
            .expect("answer applies");
    }
    (peer, status, headers, body)
}

/// Waits for `n` tracks at a WHEP viewer and counts the RTP packets they bring: the counter and
/// the tracks' stream ids.
pub async fn count_tracks(
    viewer: &mut ClientPeer,
    n: usize,
) -> (std::sync::Arc<std::sync::atomic::AtomicU64>, Vec<String>) {
    use webrtc::media_stream::track_remote::TrackRemoteEvent;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut streams = Vec::new();
    for _ in 0..n {
        let track = tokio::time::timeout(SIGNAL_TIMEOUT, viewer.tracks.recv())
            .await
            .expect("a track within 10 s")
            .expect("track");
        streams.push(track.stream_id().await);
        let count = received.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = event {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    (received, streams)
}
