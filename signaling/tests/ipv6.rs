//! IPv6 next to IPv4 on the same media port: the server's media socket is dual-stack (`::`),
//! its candidates announce 127.0.0.1 and ::1 on the one port, and its signaling listens on ::1.
//! An IPv6-only client (signaling to [::1], its one media socket on [::1]) and an IPv4 client
//! (media socket on 127.0.0.1) are in one call through the one media port (one driver): each
//! receives the other's media. The IPv4 client's datagrams reach the dual-stack socket as
//! ::ffff:127.0.0.1 and must be answered there.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{count_received, grows, publish_synthetic, RtcClient, TestServer};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sfu::SfuConfig;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_only_client_and_an_ipv4_client_call_through_one_dual_stack_port() {
    common::init_logging();
    let mut settings = common::dev_settings();
    settings.bind = "[::1]:0".parse().unwrap();
    let server = TestServer::start_settings(
        &settings,
        SfuConfig {
            media_bind: "[::]:0".parse().unwrap(),
            announce_ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            media_drivers: 1,
            ..SfuConfig::default()
        },
    )
    .await;
    assert!(
        server.ws_url().starts_with("ws://[::1]:"),
        "{}",
        server.ws_url()
    );

    let mut v6 = RtcClient::join_from(server.ws_url(), "six", "v6", "[::1]:0").await;
    let mut v4 = RtcClient::join_from(server.ws_url(), "six", "v4", "127.0.0.1:0").await;
    let from_v4 = count_received(&mut v6);
    let from_v6 = count_received(&mut v4);
    let media = [
        publish_synthetic(&v6, RtpCodecKind::Video, T).await,
        publish_synthetic(&v4, RtpCodecKind::Video, T).await,
    ];
    assert!(
        grows(&from_v4, 60, T).await,
        "the IPv6 client received {} packets from the IPv4 one",
        from_v4.load(Ordering::Relaxed)
    );
    assert!(
        grows(&from_v6, 60, T).await,
        "the IPv4 client received {} packets from the IPv6 one",
        from_v6.load(Ordering::Relaxed)
    );
    for m in media {
        m.abort();
    }
    v6.close().await;
    v4.close().await;
}
