//! An ICE restart from the client (a new offer with new ICE credentials over the WebSocket) keeps
//! the call: the server answers (keeping its own credentials: its ufrag is what the shared port
//! demultiplexes on), the client's checks with its new credentials are accepted, and media keeps
//! flowing both ways well past the consent timeout of the old ones (5 s here).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{count_received, grows, publish_synthetic, RtcClient, TestServer};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

const T: Duration = Duration::from_secs(10);

fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_from_the_client_keeps_the_call() {
    common::init_logging();
    let server = TestServer::start_consent(5).await;
    let mut a = RtcClient::join(server.ws_url(), "restart", "a").await;
    let mut b = RtcClient::join(server.ws_url(), "restart", "b").await;
    let at_b = count_received(&mut b);
    let at_a = count_received(&mut a);
    let from_a = publish_synthetic(&a, RtpCodecKind::Video, T).await;
    let from_b = publish_synthetic(&b, RtpCodecKind::Video, T).await;
    assert!(grows(&at_b, 30, T).await, "media flows before the restart");
    assert!(grows(&at_a, 30, T).await, "media flows before the restart");

    let before = a.pc.remote_description().await.unwrap().sdp;
    let local_before = a.pc.local_description().await.unwrap().sdp;
    a.restart_ice(T).await;
    let after = a.pc.remote_description().await.unwrap().sdp;
    let local_after = a.pc.local_description().await.unwrap().sdp;
    assert_ne!(
        ice_ufrag(&local_before),
        ice_ufrag(&local_after),
        "the client restarted"
    );
    assert_eq!(
        ice_ufrag(&before),
        ice_ufrag(&after),
        "the server keeps its ufrag"
    );

    // Media keeps flowing both ways, on the new credentials, well past the consent timeout of
    // the old ones.
    for _ in 0..3 {
        assert!(
            grows(&at_b, 30, T).await,
            "b receives a's media after a's ICE restart ({})",
            at_b.load(Ordering::Relaxed)
        );
        assert!(
            grows(&at_a, 30, T).await,
            "a receives b's media after its ICE restart ({})",
            at_a.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    from_a.abort();
    from_b.abort();
}
