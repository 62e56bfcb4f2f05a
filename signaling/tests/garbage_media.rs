//! Garbage on the shared media port: random bytes, truncated STUN, DTLS, RTP and RTCP, unknown
//! ufrags, and garbage from an address the server has pinned to a real connection after a valid
//! connectivity check. Nothing panics, nothing is pinned that should not be, and the server keeps
//! serving: a new participant can still join and negotiate.

use std::time::Duration;

use futures_util::SinkExt;
use rand::{Rng, RngCore};
use serde_json::{json, Value};
use testkit::stun::BindingRequest;
use tokio::net::UdpSocket;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{TestServer, Ws, AUDIO_OFFER};

/// The next JSON message; the socket must stay open.
async fn next_message(ws: &mut Ws) -> Value {
    common::next_json(ws).await.expect("socket open")
}

/// Joins and offers; returns the socket and the server's ufrag and pwd from its answer.
async fn join_and_offer(url: &str, name: &str) -> (Ws, String, String) {
    let (mut ws, _) = connect_async(url).await.unwrap();
    ws.send(Message::Text(
        json!({"type":"join","v":1,"room":"garbage","name":name})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    loop {
        if next_message(&mut ws).await["type"] == "joined" {
            break;
        }
    }
    ws.send(Message::Text(
        json!({"type":"offer","sdp":AUDIO_OFFER}).to_string().into(),
    ))
    .await
    .unwrap();
    let answer = loop {
        let m = next_message(&mut ws).await;
        if m["type"] == "answer" {
            break m;
        }
    };
    let sdp = answer["sdp"].as_str().unwrap();
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .expect("attribute in answer")
    };
    (ws, attr("a=ice-ufrag:"), attr("a=ice-pwd:"))
}

/// A STUN binding request as a controlling ICE agent sends it, with MESSAGE-INTEGRITY keyed by
/// the server's ice-pwd (spoiled unless `valid_integrity`) and a FINGERPRINT. No USE-CANDIDATE:
/// rtc's controlled agent answers such a check at once (with USE-CANDIDATE it first runs its own
/// triggered check, which this fake client would have to answer).
fn binding_request(username: &str, pwd: &str, valid_integrity: bool) -> Vec<u8> {
    let mut transaction_id = [0u8; 12];
    rand::rng().fill_bytes(&mut transaction_id);
    BindingRequest {
        transaction_id,
        spoil_integrity: !valid_integrity,
        ..BindingRequest::checked(username.as_bytes(), pwd)
    }
    .encode()
}

/// Whether a STUN message of type `typ` arrives within half a second (other datagrams, such as
/// the server's own checks, are skipped).
async fn stun_arrives(sock: &UdpSocket, typ: u16) -> bool {
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 20 && u16::from_be_bytes([buf[0], buf[1]]) == typ => return true,
            Ok(Ok(_)) => continue,
            _ => return false,
        }
    }
}

fn garbage(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.random_range(0..1400);
    let mut g = vec![0u8; len];
    rng.fill_bytes(&mut g);
    if let Some(first) = g.first_mut() {
        // Steer the first byte into each RFC 7983 range in turn: STUN, DTLS, RTP/RTCP, other.
        *first = match rng.random_range(0..5) {
            0 => rng.random_range(0..4),
            1 => rng.random_range(20..64),
            2 => 0x80,
            3 => 0x80 | rng.random_range(0..64),
            _ => *first,
        };
    }
    if g.len() > 1 && g[0] & 0xc0 == 0x80 && rng.random_bool(0.5) {
        g[1] = rng.random_range(192..224); // RTCP packet types
    }
    g
}

#[tokio::test]
async fn garbage_datagrams_are_dropped_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let (sfu, url) = (server.sfu.clone(), server.ws_url.clone());
    let media = sfu.media_addr();
    let (_ws, ufrag, pwd) = join_and_offer(&url, "victim").await;

    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    attacker.connect(media).await.unwrap();
    let mut rng = rand::rng();

    // 1. Unknown source, random garbage of every kind: silently dropped.
    for _ in 0..2000 {
        attacker.send(&garbage(&mut rng)).await.unwrap();
    }
    // Unknown ufrag, and a known ufrag with a wrong password: no success response.
    attacker
        .send(&binding_request("nosuchufrag:abcd", &pwd, true))
        .await
        .unwrap();
    attacker
        .send(&binding_request(&format!("{ufrag}:abcd"), &pwd, false))
        .await
        .unwrap();
    assert!(
        !stun_arrives(&attacker, 0x0101).await,
        "a bad check must not succeed"
    );
    // Truncations of a valid check with the right ufrag reach the connection's STUN parser.
    let valid = binding_request(&format!("{ufrag}:abcd"), &pwd, true);
    for len in 20..valid.len() {
        attacker.send(&valid[..len]).await.unwrap();
    }
    let before = sfu.stats().await.unwrap();
    assert!(before.datagrams_unknown_source >= 1500, "{before:?}");
    assert_eq!(before.connection_panics, 0);

    // 2. A valid check pins the attacker's address to the victim's connection...
    attacker.send(&valid).await.unwrap();
    assert!(
        stun_arrives(&attacker, 0x0101).await,
        "a valid check succeeds"
    );
    // ...and garbage from it now reaches the connection's DTLS/SRTP/RTCP handlers.
    for _ in 0..3000 {
        attacker.send(&garbage(&mut rng)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = sfu.stats().await.unwrap();
    assert_eq!(after.connection_panics, 0, "{after:?}");
    assert!(
        after.datagrams_in >= before.datagrams_in + 3000,
        "{after:?}"
    );

    // 3. The server still serves: another participant joins the room and negotiates.
    let (_ws2, ufrag2, _) = join_and_offer(&url, "bystander").await;
    assert_ne!(ufrag2, ufrag);
    let stats = sfu.stats().await.unwrap();
    assert_eq!(stats.participants, 2, "{stats:?}");
}
