//! The shared media port's source-address table, driven by hand-made connectivity checks (valid
//! USERNAME, MESSAGE-INTEGRITY with the server's password, FINGERPRINT) from plain UDP sockets:
//! - every accepted check pins its source address and makes it the client's current path (the
//!   server's media goes there), a connection pins at most 4 addresses, and an address unpinned
//!   by newer ones is a stranger again (its datagrams are dropped as from an unknown source);
//! - a connection that negotiated but never had a check accepted is given up after the connect
//!   timeout, and its participant leaves the room;
//! - consent freshness: a client that keeps checking keeps its place past the consent timeout,
//!   and one whose checks stop is removed once it runs out.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{attribute, publish_synthetic, ClientPeer, RtcClient, TestServer};
use reqwest::header::CONTENT_TYPE;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sfu::SfuConfig;
use tokio::net::UdpSocket;

const T: Duration = Duration::from_secs(10);

/// A Binding request as a controlling ICE agent sends it: `server_ufrag:client_ufrag`, signed
/// with the server's password.
fn check(server_ufrag: &str, client_ufrag: &str, server_pwd: &str) -> Vec<u8> {
    check_with(server_ufrag, client_ufrag, server_pwd, false)
}

/// A Binding request, with USE-CANDIDATE if `nominate` (a controlling agent picking the pair;
/// Firefox nominates with its very first check against an ICE-lite server).
fn check_with(server_ufrag: &str, client_ufrag: &str, server_pwd: &str, nominate: bool) -> Vec<u8> {
    use rtc::stun::attributes::{
        ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
    };
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc::stun::textattrs::TextAttribute;

    let mut m = Message::new();
    m.build(&[
        Box::new(TransactionId::new()),
        Box::new(BINDING_REQUEST),
        Box::new(TextAttribute::new(
            ATTR_USERNAME,
            format!("{server_ufrag}:{client_ufrag}"),
        )),
    ])
    .unwrap();
    m.add(ATTR_PRIORITY, &1_853_824_767u32.to_be_bytes());
    m.add(ATTR_ICE_CONTROLLING, &rand::random::<u64>().to_be_bytes());
    if nominate {
        m.add(ATTR_USE_CANDIDATE, &[]);
    }
    m.write_header();
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    MessageIntegrity::new_short_term_integrity_with_provider(server_pwd.into(), provider.crypto())
        .add_to(&mut m)
        .unwrap();
    FINGERPRINT.add_to(&mut m).unwrap();
    m.raw
}

/// Whether `datagram` is a STUN Binding request.
fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] == 0x00 && datagram[1] == 0x01
}

/// Whether `datagram` is a STUN Binding success response.
fn is_binding_success(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] == 0x01 && datagram[1] == 0x01
}

/// Sends a check from `socket` and waits for the server's success response, skipping anything
/// else (media that follows the path there).
async fn accepted(socket: &UdpSocket, to: SocketAddr, request: &[u8]) -> bool {
    socket.send_to(request, to).await.unwrap();
    let mut buf = [0u8; 2048];
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            if is_binding_success(&buf[..n]) {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// The server's UDP host candidate in `answer`.
fn udp_candidate(answer: &str) -> SocketAddr {
    let line = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.to_ascii_lowercase().contains(" udp "))
        .expect("a UDP candidate");
    let f: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", f[4], f[5]).parse().unwrap()
}

/// POSTs a WHIP offer from a webrtc-rs peer that then goes away without applying the answer
/// (so it never sends a check itself): the offer, the answer and the session's location.
async fn whip_offer_only(server: &TestServer, room: &str) -> (String, String, String) {
    let peer = ClientPeer::new().await;
    let _audio = common::SyntheticTrack::add(&peer.pc, room, RtpCodecKind::Audio).await;
    let offer = peer.pc.create_offer(None).await.unwrap();
    peer.pc.set_local_description(offer.clone()).await.unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/whip/{room}", server.http_url))
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let answer = res.text().await.unwrap();
    let _ = peer.pc.close().await;
    (offer.sdp, answer, location)
}

/// The number of datagrams the server dropped as from an unknown source.
async fn unknown_sources(server: &TestServer) -> u64 {
    server.sfu.stats().await.unwrap().datagrams_unknown_source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_checks_pin_at_most_four_addresses_and_the_newest_gets_the_media() {
    common::init_logging();
    let server = TestServer::start().await;
    let publisher = RtcClient::join(server.ws_url(), "pins", "publisher").await;
    let video = publish_synthetic(&publisher, RtpCodecKind::Video, T).await;
    let mut viewer = RtcClient::join(server.ws_url(), "pins", "viewer").await;
    viewer.wait_connected(T).await;
    let answer = viewer.pc.remote_description().await.unwrap().sdp;
    let offer = viewer.pc.local_description().await.unwrap().sdp;
    let (server_ufrag, server_pwd) = (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
    );
    let client_ufrag = attribute(&offer, "ice-ufrag");
    let media = udp_candidate(&answer);

    // A check with a wrong password is not accepted, and pins nothing.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(
        !accepted(
            &stranger,
            media,
            &check(&server_ufrag, &client_ufrag, "wrong-password-0123456")
        )
        .await,
        "a check signed with another password is refused"
    );

    // Five new source addresses, each with a valid check, one after the other.
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(
            accepted(&s, media, &check(&server_ufrag, &client_ufrag, &server_pwd)).await,
            "a valid check from a new address is accepted"
        );
        sockets.push(s);
    }
    let newest = sockets.last().unwrap();
    let newest_addr = newest.local_addr().unwrap();

    // The newest is the viewer's current path: the server reports it and sends its media there.
    let snapshot = server.sfu.debug().await.unwrap();
    let viewer_addr = snapshot
        .rooms
        .iter()
        .flat_map(|r| &r.participants)
        .find(|p| p.name == "viewer")
        .and_then(|p| p.remote_addr.clone());
    assert_eq!(viewer_addr, Some(newest_addr.to_string()));
    let mut buf = [0u8; 2048];
    let media_arrives = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let (n, _) = newest.recv_from(&mut buf).await.unwrap();
            if !is_binding_success(&buf[..n]) && n > 12 && buf[0] >> 6 == 2 {
                return n;
            }
        }
    })
    .await;
    assert!(
        media_arrives.is_ok(),
        "SRTP reaches the newest checked address"
    );

    // Four addresses are pinned (sockets 1..=4); the first socket and the viewer's own address
    // were unpinned by them. Garbage from the first is dropped as from an unknown source;
    // garbage from a pinned one goes to the connection (rejected there, not counted unknown).
    let garbage = [0x80u8; 100];
    let burst = 200u64;
    let before = unknown_sources(&server).await;
    for _ in 0..burst {
        sockets[0].send_to(&garbage, media).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_unpinned = unknown_sources(&server).await - before;
    assert!(
        from_unpinned >= burst,
        "datagrams from the unpinned address are strangers' ({from_unpinned} of {burst})"
    );
    let before = unknown_sources(&server).await;
    for _ in 0..burst {
        sockets[1].send_to(&garbage, media).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_pinned = unknown_sources(&server).await - before;
    // (The viewer's real address is unpinned too until its next check: its few RTCP packets
    // in this window may count.)
    assert!(
        from_pinned < burst / 4,
        "datagrams from a pinned address reach the connection ({from_pinned} of {burst} counted unknown)"
    );

    // A fresh check from the unpinned address pins it again.
    assert!(
        accepted(
            &sockets[0],
            media,
            &check(&server_ufrag, &client_ufrag, &server_pwd)
        )
        .await
    );
    video.abort();
    viewer.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_checks_is_given_up_after_the_connect_timeout() {
    common::init_logging();
    let server = TestServer::start_with(SfuConfig {
        media_bind: "127.0.0.1:0".parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        ..SfuConfig::default()
    })
    .await;
    // A WHIP client that posts its offer and vanishes: it never sends a check, and no WebSocket
    // would tell the server it is gone.
    let (_, _, location) = whip_offer_only(&server, "connect-timeout").await;
    assert_eq!(
        server
            .state
            .rooms()
            .get("connect-timeout")
            .map(|r| r.num_participants),
        Some(1)
    );

    // Gone within the timeout (2 s) and a tick or two: the room empties and the session
    // resource with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let left = server
            .state
            .rooms()
            .get("connect-timeout")
            .is_none_or(|r| r.num_participants == 0);
        if left {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the participant that never checked is still in the room"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = reqwest::Client::new()
        .delete(format!("{}{location}", server.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_keeps_a_checking_client_and_expires_when_its_checks_stop() {
    common::init_logging();
    let server = TestServer::start_with(SfuConfig {
        media_bind: "127.0.0.1:0".parse().unwrap(),
        consent_timeout: Duration::from_secs(3),
        ..SfuConfig::default()
    })
    .await;
    // The client's checks come from a plain socket, by hand, so the test decides when they stop.
    let (offer, answer, _) = whip_offer_only(&server, "consent").await;
    let request = || {
        check(
            &attribute(&answer, "ice-ufrag"),
            &attribute(&offer, "ice-ufrag"),
            &attribute(&answer, "ice-pwd"),
        )
    };
    let media = udp_candidate(&answer);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let present = || {
        server
            .state
            .rooms()
            .get("consent")
            .is_some_and(|r| r.num_participants == 1)
    };

    // Checking every second keeps it for well over the 3 s consent timeout.
    for _ in 0..7 {
        assert!(accepted(&client, media, &request()).await, "check accepted");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(present(), "a client that keeps checking keeps its place");
    }
    // Silence: gone after the consent timeout (and a tick).
    let stopped = tokio::time::Instant::now();
    while present() {
        assert!(
            stopped.elapsed() < Duration::from_secs(8),
            "the silent client is still in the room"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = stopped.elapsed();
    assert!(
        gone_after >= Duration::from_secs(2),
        "removed {gone_after:?} after its last check: not by consent"
    );
}

/// Firefox nominates aggressively against an ICE-lite server: its very first check on a pair
/// carries USE-CANDIDATE. The server answers that first check (no retransmission needed) and, as
/// a lite agent, sends no connectivity check of its own; an ICE restart's new credentials are
/// used for the next first check. (rtc 0.21.1 alone answers it with a triggered check and no
/// response: `sfu/src/ice_lite.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_check_that_nominates_is_answered_and_the_server_sends_no_checks() {
    common::init_logging();
    let server = TestServer::start().await;
    let (offer, answer, _) = whip_offer_only(&server, "nominate").await;
    let (server_ufrag, server_pwd) = (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
    );
    let client_ufrag = attribute(&offer, "ice-ufrag");
    let media = udp_candidate(&answer);
    for attempt in 0..3 {
        // A fresh source address each time: a pair the server has never seen.
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let request = check_with(&server_ufrag, &client_ufrag, &server_pwd, true);
        client.send_to(&request, media).await.unwrap();
        let mut buf = [0u8; 2048];
        let mut requests_from_server = 0;
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let (n, _) = client.recv_from(&mut buf).await.unwrap();
                if is_binding_request(&buf[..n]) {
                    requests_from_server += 1;
                }
                if is_binding_success(&buf[..n]) && buf[8..20] == request[8..20] {
                    return;
                }
            }
        })
        .await;
        assert!(
            answered.is_ok(),
            "attempt {attempt}: the nominating check itself is answered (not only a retransmission)"
        );
        // Anything the server would still send (a triggered check) arrives within this.
        let late = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let (n, _) = client.recv_from(&mut buf).await.unwrap();
                if is_binding_request(&buf[..n]) {
                    return;
                }
            }
        })
        .await;
        assert!(
            requests_from_server == 0 && late.is_err(),
            "attempt {attempt}: a lite server sends no connectivity checks"
        );
        let snapshot = server.sfu.debug().await.unwrap();
        let path = snapshot
            .rooms
            .iter()
            .flat_map(|r| &r.participants)
            .find_map(|p| p.remote_addr.clone());
        assert_eq!(
            path,
            Some(client.local_addr().unwrap().to_string()),
            "attempt {attempt}: the nominated address is the client's path"
        );
    }
}

/// One UDP port for every media driver (the default): the kernel hands each client flow to one of
/// the drivers' sockets by a hash of its addresses, and a datagram for another driver's connection
/// crosses to it. Checks from 16 source addresses reach a connection of one of two drivers (the
/// chance that all 16 land on its own socket is 2^-16), each is answered from the one port, and
/// the connection's media follows the newest path whichever socket receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_driver_shares_one_port_and_datagrams_cross_to_their_connection() {
    common::init_logging();
    let server = TestServer::start_drivers(2).await;
    let addrs = server.sfu.media_addrs();
    assert_eq!(addrs.len(), 2);
    assert!(
        addrs.iter().all(|a| *a == addrs[0]),
        "both drivers on one address and port: {addrs:?}"
    );
    let (offer, answer, _) = whip_offer_only(&server, "shared-port").await;
    let (server_ufrag, server_pwd) = (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
    );
    let client_ufrag = attribute(&offer, "ice-ufrag");
    let media = udp_candidate(&answer);
    assert_eq!(media, addrs[0]);
    for i in 0..16 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let request = check(&server_ufrag, &client_ufrag, &server_pwd);
        client.send_to(&request, media).await.unwrap();
        let mut buf = [0u8; 2048];
        let from = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let (n, from) = client.recv_from(&mut buf).await.unwrap();
                if is_binding_success(&buf[..n]) && buf[8..20] == request[8..20] {
                    return from;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("check {i} from a new address is answered"));
        assert_eq!(from, media, "check {i}: answered from the one port");
    }
    let stats = server.sfu.stats().await.unwrap();
    assert!(
        stats.datagrams_crossed > 0,
        "some checks crossed between drivers: {stats:?}"
    );
    assert_eq!(stats.datagrams_dropped_crossing, 0);
}

/// `port_per_driver`: each driver on a port of its own (the configured one plus its index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_per_driver_gives_each_driver_its_own_port() {
    common::init_logging();
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let server = TestServer::start_with(SfuConfig {
        media_bind: SocketAddr::from(([127, 0, 0, 1], port)),
        media_drivers: 2,
        port_per_driver: true,
        ..SfuConfig::default()
    })
    .await;
    let ports: Vec<u16> = server.sfu.media_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports, vec![port, port + 1]);
}
