//! Synthetic media: tracks that send VP8 keyframes or Opus-sized audio through a real client
//! peer, and counters of what a client receives.

use std::sync::Arc;
use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use tokio::time::Instant;
use webrtc::peer_connection::PeerConnection;

use super::{negotiated_pt, RtcClient};

/// Adds a track of `kind` (VP8 keyframes at 30 fps, or Opus-sized audio at 50 packets/s) to
/// `publisher`, negotiates it, and sends until the returned task is aborted.
pub async fn publish_synthetic(
    publisher: &RtcClient,
    kind: RtpCodecKind,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    let synthetic = SyntheticTrack::add(&publisher.pc, &publisher.name, kind).await;
    publisher.publish(timeout).await;
    synthetic.start().await
}

/// A synthetic track on a client peer: added before an offer, started once negotiated.
pub struct SyntheticTrack {
    track: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    ssrc: u32,
    video: bool,
}

impl SyntheticTrack {
    /// Adds a track of `kind` to `pc` (stream id `stream`).
    pub async fn add(
        pc: &Arc<dyn PeerConnection>,
        stream: &str,
        kind: RtpCodecKind,
    ) -> SyntheticTrack {
        use rtc::media_stream::MediaStreamTrack;
        use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
        use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
        use webrtc::media_stream::track_local::TrackLocal;

        let ssrc = rand::random::<u32>();
        let video = kind == RtpCodecKind::Video;
        let (mime, clock) = if video {
            ("video/VP8", 90000)
        } else {
            ("audio/opus", 48000)
        };
        let id = format!("{stream}-{}", if video { "video" } else { "audio" });
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.to_owned(),
            id.clone(),
            id,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: mime.into(),
                    clock_rate: clock,
                    channels: if video { 0 } else { 2 },
                    ..Default::default()
                },
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add_track");
        SyntheticTrack {
            track,
            sender,
            ssrc,
            video,
        }
    }

    /// Sends (once negotiated) until the returned task is aborted.
    pub async fn start(self) -> tokio::task::JoinHandle<()> {
        let video = self.video;
        let mut writer = self.writer().await;
        tokio::spawn(async move {
            let (period, step) = if video { (33, 3000) } else { (20, 960) };
            let mut ticker = tokio::time::interval(Duration::from_millis(period));
            let mut ts = rand::random::<u32>();
            loop {
                ticker.tick().await;
                let mut payload = if video {
                    // A VP8 keyframe start (every frame), so forwarding starts at once.
                    vec![
                        0x10, 0x30, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
                    ]
                } else {
                    vec![0xfc]
                };
                payload.extend(std::iter::repeat_n(0xcd, if video { 300 } else { 80 }));
                if !writer.write(ts, true, payload.into()).await {
                    return;
                }
                ts = ts.wrapping_add(step);
            }
        })
    }

    /// The track's RTP writer, once negotiated.
    async fn writer(self) -> RtpWriter {
        let pt = negotiated_pt(&self.sender).await;
        RtpWriter {
            track: self.track,
            pt,
            ssrc: self.ssrc,
            seq: rand::random(),
        }
    }
}

/// Writes a negotiated track's packets: its payload type, its SSRC, the next sequence number.
struct RtpWriter {
    track: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    pt: u8,
    ssrc: u32,
    seq: u16,
}

impl RtpWriter {
    /// Adds a track of `kind` to `publisher` and negotiates it.
    async fn publish(publisher: &RtcClient, kind: RtpCodecKind, timeout: Duration) -> RtpWriter {
        let synthetic = SyntheticTrack::add(&publisher.pc, &publisher.name, kind).await;
        publisher.publish(timeout).await;
        synthetic.writer().await
    }

    /// Sends one packet; false once the track is gone.
    async fn write(&mut self, timestamp: u32, marker: bool, payload: bytes::Bytes) -> bool {
        use webrtc::media_stream::track_local::TrackLocal;

        let written = self
            .track
            .write_rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker,
                    payload_type: self.pt,
                    sequence_number: self.seq,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload,
            })
            .await;
        self.seq = self.seq.wrapping_add(1);
        written.is_ok()
    }
}

/// Adds an audio track to `publisher` that sends a sine tone of `hz`, really Opus-encoded
/// (libopus), 20 ms a packet, until the returned task is aborted.
pub async fn publish_tone(
    publisher: &RtcClient,
    hz: f64,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut writer = RtpWriter::publish(publisher, RtpCodecKind::Audio, timeout).await;
    tokio::spawn(async move {
        let mut encoder =
            codecs::OpusEncoder::new(codecs::Channels::Mono, codecs::Application::Audio)
                .expect("an Opus encoder");
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let mut ts = rand::random::<u32>();
        let mut n = 0usize;
        loop {
            ticker.tick().await;
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (n + i) as f64 / 48_000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            n += 960;
            let payload = encoder.encode(&pcm).expect("encoded");
            if !writer.write(ts, false, payload.into()).await {
                return;
            }
            ts = ts.wrapping_add(960);
        }
    })
}

/// Adds a video track to `publisher` that sends a solid picture of colour `yuv` (320x180),
/// really VP8-encoded (libvpx), 15 frames a second with a keyframe every second, until the
/// returned task is aborted.
pub async fn publish_colour(
    publisher: &RtcClient,
    yuv: (u8, u8, u8),
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut writer = RtpWriter::publish(publisher, RtpCodecKind::Video, timeout).await;
    tokio::spawn(async move {
        let mut encoder = codecs::Vp8Encoder::new(320, 180, 300, 15).expect("a VP8 encoder");
        let mut picture = codecs::I420::new(320, 180);
        picture.fill(yuv.0, yuv.1, yuv.2);
        let mut packetizer = sfu::mcu::packetize::Vp8Packetizer::new(1100);
        let mut ticker = tokio::time::interval(Duration::from_millis(66));
        let ts0 = rand::random::<u32>();
        let mut payloads = Vec::new();
        for n in 0i64.. {
            ticker.tick().await;
            let frames = encoder
                .encode(&picture, n * 6000, n % 15 == 0)
                .expect("encoded");
            for frame in frames {
                payloads.clear();
                packetizer.packetize(&frame.data, &mut payloads);
                let last = payloads.len().saturating_sub(1);
                let ts = ts0.wrapping_add((n * 6000) as u32);
                for (i, payload) in payloads.drain(..).enumerate() {
                    if !writer.write(ts, i == last, payload).await {
                        return;
                    }
                }
            }
        }
    })
}

/// Counts the RTP packets `client` receives, over all its tracks.
pub fn count_received(client: &mut RtcClient) -> Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use webrtc::media_stream::track_remote::TrackRemoteEvent;

    let count = Arc::new(AtomicU64::new(0));
    let mut tracks = client.take_tracks();
    let out = count.clone();
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(_) = event {
                        out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    count
}

/// Waits until `count` grows by at least `by` within `timeout`; returns whether it did.
pub async fn grows(count: &std::sync::atomic::AtomicU64, by: u64, timeout: Duration) -> bool {
    use std::sync::atomic::Ordering;
    let start = count.load(Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if count.load(Ordering::Relaxed) >= start + by {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
