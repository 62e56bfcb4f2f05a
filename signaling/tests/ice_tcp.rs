//! Garbage on the ICE-TCP port: connections that send a frame length beyond any datagram, a
//! zero length, random frames, half a frame, or STUN with an unknown ufrag. Each is dropped or
//! hung up (at the latest when it is still unbound 10 s after it opened); none binds to anyone; a call between two webrtc-rs peers (on UDP) keeps its media
//! throughout, and the port keeps accepting.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{count_received, grows, publish_synthetic, RtcClient, TestServer};
use rand::RngCore;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sfu::SfuConfig;
use testkit::stun::BindingRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

/// Whether the server hangs up `conn` within `within` (reads end or fail).
async fn hung_up(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_ice_tcp_port_is_dropped_and_calls_keep_their_media() {
    common::init_logging();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = TestServer::start_with(SfuConfig {
        media_bind: "127.0.0.1:0".parse().unwrap(),
        ice_tcp_port: Some(port),
        ..SfuConfig::default()
    })
    .await;
    let tcp = format!("127.0.0.1:{port}");

    let a = RtcClient::join(server.ws_url(), "tcp-garbage", "a").await;
    let mut b = RtcClient::join(server.ws_url(), "tcp-garbage", "b").await;
    let received = count_received(&mut b);
    let media = publish_synthetic(&a, RtpCodecKind::Video, T).await;
    assert!(
        grows(&received, 30, T).await,
        "media flows before the garbage"
    );

    // A length no datagram has: hung up.
    let mut c = TcpStream::connect(&tcp).await.unwrap();
    c.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    assert!(hung_up(&mut c, T).await, "oversized frame length");
    // A zero length: hung up.
    let mut c = TcpStream::connect(&tcp).await.unwrap();
    c.write_all(&[0, 0]).await.unwrap();
    assert!(hung_up(&mut c, T).await, "zero frame length");
    // Random frames, and STUN binding requests for a ufrag nobody has: dropped, no answer.
    let mut c = TcpStream::connect(&tcp).await.unwrap();
    let mut rng = rand::rng();
    for i in 0..300 {
        let mut frame = vec![0u8; 32 + (i % 200)];
        rng.fill_bytes(&mut frame);
        if i % 3 == 0 {
            frame = BindingRequest::new(b"nobody:x").encode();
        }
        let mut framed = (frame.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&frame);
        c.write_all(&framed).await.unwrap();
    }
    let mut buf = [0u8; 64];
    let answered = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
    assert!(
        !matches!(answered, Ok(Ok(n)) if n > 0),
        "garbage must get no answer"
    );
    // Half a frame, then silence: the connection stays harmless (no answer).
    let mut half = TcpStream::connect(&tcp).await.unwrap();
    half.write_all(&[0x00, 0x40, 0x00, 0x01]).await.unwrap();

    // The call never noticed, and the port still takes connections.
    assert!(
        grows(&received, 30, T).await,
        "media keeps flowing through the garbage (received {})",
        received.load(Ordering::Relaxed)
    );
    assert!(TcpStream::connect(&tcp).await.is_ok());
    let stats = server.sfu.stats().await.unwrap();
    assert!(
        stats.datagrams_unknown_source >= 200,
        "garbage frames are counted as unknown: {}",
        stats.datagrams_unknown_source
    );
    // Neither the connection that sent frames nor the one stuck mid-frame was ever bound: both
    // are hung up at the bind deadline (10 s after they opened).
    assert!(
        hung_up(&mut c, Duration::from_secs(15)).await,
        "an unbound connection that keeps sending frames"
    );
    assert!(
        hung_up(&mut half, Duration::from_secs(15)).await,
        "an unbound connection stuck in the middle of a frame"
    );
    media.abort();
}
