//! Bad input on the signaling socket: each case gets its stable error code, the connection is kept
//! or closed as docs/protocol.md says, and the server keeps serving everyone else.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{next_json, TestServer, Ws, AUDIO_OFFER};

async fn connect(url: &str) -> Ws {
    connect_async(url).await.expect("websocket connects").0
}

async fn send(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::Text(text.into().into())).await.unwrap();
}

async fn expect_error(ws: &mut Ws, code: &str) {
    let msg = next_json(ws).await.expect("an error message");
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(msg["code"], code, "{msg}");
    assert!(msg["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn expect_closed(ws: &mut Ws) {
    assert!(next_json(ws).await.is_none(), "socket should be closed");
}

async fn join(ws: &mut Ws, room: &str, name: &str) -> Value {
    send(
        ws,
        json!({"type": "join", "v": 1, "room": room, "name": name}).to_string(),
    )
    .await;
    let joined = next_json(ws).await.expect("joined");
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

#[tokio::test]
async fn every_bad_message_gets_its_code_and_the_session_survives_where_it_should() {
    let server = TestServer::start().await;
    let url = server.ws_url.clone();
    let mut ws = connect(&url).await;

    send(&mut ws, "{not json").await;
    expect_error(&mut ws, "bad_json").await;
    send(&mut ws, "[1, 2, 3]").await;
    expect_error(&mut ws, "bad_json").await;
    send(&mut ws, r#"{"type":"dance"}"#).await;
    expect_error(&mut ws, "unknown_type").await;
    send(&mut ws, r#"{"sdp":"x"}"#).await;
    expect_error(&mut ws, "unknown_type").await;
    send(&mut ws, r#"{"type":"offer","sdp":"v=0"}"#).await;
    expect_error(&mut ws, "not_joined").await;
    send(&mut ws, r#"{"type":"join","v":1,"room":"","name":"a"}"#).await;
    expect_error(&mut ws, "invalid_message").await;
    send(
        &mut ws,
        json!({"type":"join","v":1,"room":"r","name":"x".repeat(129)}).to_string(),
    )
    .await;
    expect_error(&mut ws, "invalid_message").await;
    send(&mut ws, r#"{"type":"join","v":1,"room":"r"}"#).await;
    expect_error(&mut ws, "invalid_message").await;
    send(
        &mut ws,
        r#"{"type":"join","v":1,"room":"r","name":"a","mixed":"bogus"}"#,
    )
    .await;
    expect_error(&mut ws, "invalid_message").await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut ws, "invalid_message").await;

    // After all that, the same socket can still join.
    let joined = join(&mut ws, "bad-input", "alice").await;
    assert_eq!(joined["v"], 1);
    assert!(joined["participant_id"]
        .as_str()
        .unwrap()
        .starts_with("PA_"));

    send(
        &mut ws,
        json!({"type":"join","v":1,"room":"other","name":"again"}).to_string(),
    )
    .await;
    expect_error(&mut ws, "already_joined").await;
    send(&mut ws, r#"{"type":"offer","sdp":"this is not sdp"}"#).await;
    expect_error(&mut ws, "invalid_sdp").await;
    send(&mut ws, r#"{"type":"answer","sdp":"v=0"}"#).await;
    expect_error(&mut ws, "invalid_sdp").await;

    // A valid offer still works after invalid ones, and is answered.
    send(
        &mut ws,
        json!({"type":"offer","sdp": AUDIO_OFFER}).to_string(),
    )
    .await;
    let answer = next_json(&mut ws).await.unwrap();
    assert_eq!(answer["type"], "answer", "{answer}");
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=ice-lite"), "the server is ICE-lite: {sdp}");
    assert!(
        sdp.contains("a=setup:passive"),
        "the server takes the DTLS server role: {sdp}"
    );
    assert!(
        sdp.contains("typ host"),
        "the answer carries the server's host candidate: {sdp}"
    );
    let cand = next_json(&mut ws).await.unwrap();
    assert_eq!(cand["type"], "candidate", "{cand}");
    assert!(cand["candidate"]["candidate"]
        .as_str()
        .unwrap()
        .starts_with("candidate:"));

    send(&mut ws, json!({"type":"candidate","candidate":{"candidate":"candidate:garbage","sdpMid":"0","sdpMLineIndex":0}}).to_string()).await;
    expect_error(&mut ws, "invalid_candidate").await;
    // End-of-candidates is fine and answered with nothing.
    send(&mut ws, r#"{"type":"candidate","candidate":null}"#).await;
    // 40 candidates per ICE generation are taken; past them one error, then silence (after a
    // second, so that the message rate limit is not what answers).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for i in 0..45 {
        let c = format!(
            "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
            20000 + i
        );
        let msg = json!({"type":"candidate","candidate":{"candidate": c,"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}});
        send(&mut ws, msg.to_string()).await;
    }
    let msg = next_json(&mut ws).await.expect("an error message");
    assert_eq!(
        (msg["type"].as_str(), msg["code"].as_str()),
        (Some("error"), Some("invalid_candidate")),
        "{msg}"
    );
    assert!(
        msg["message"]
            .as_str()
            .unwrap()
            .contains("too many candidates"),
        "{msg}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Layer settings for a track that does not exist, or with bad values.
    send(
        &mut ws,
        r#"{"type":"track_settings","track_id":"TR_nope","width":320,"height":180}"#,
    )
    .await;
    expect_error(&mut ws, "unknown_track").await;
    send(
        &mut ws,
        r#"{"type":"track_settings","track_id":"TR_nope","width":320}"#,
    )
    .await;
    expect_error(&mut ws, "invalid_message").await;
    send(
        &mut ws,
        r#"{"type":"track_settings","track_id":"TR_nope","max_quality":"ultra"}"#,
    )
    .await;
    expect_error(&mut ws, "invalid_message").await;
    send(
        &mut ws,
        r#"{"type":"track_source","mid":"0","source":"hologram"}"#,
    )
    .await;
    expect_error(&mut ws, "invalid_message").await;
    // A valid track_source needs no reply.
    send(
        &mut ws,
        r#"{"type":"track_source","mid":"0","source":"screen"}"#,
    )
    .await;

    // Oversized: error, then the socket closes.
    let big = json!({"type":"offer","sdp":"a".repeat(70 * 1024)}).to_string();
    send(&mut ws, big).await;
    expect_error(&mut ws, "message_too_large").await;
    expect_closed(&mut ws).await;
}

#[tokio::test]
async fn unsupported_version_closes_the_socket() {
    let server = TestServer::start().await;
    let url = server.ws_url.clone();
    let mut ws = connect(&url).await;
    send(&mut ws, r#"{"type":"join","v":2,"room":"r","name":"n"}"#).await;
    expect_error(&mut ws, "unsupported_version").await;
    expect_closed(&mut ws).await;
}

#[tokio::test]
async fn others_are_told_when_a_participant_joins_and_leaves() {
    let server = TestServer::start().await;
    let url = server.ws_url.clone();
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    let a_joined = join(&mut a, "presence", "alice").await;
    let b_joined = join(&mut b, "presence", "bob").await;
    let a_id = a_joined["participant_id"].as_str().unwrap().to_owned();
    let b_id = b_joined["participant_id"].as_str().unwrap().to_owned();
    assert_eq!(b_joined["participants"][0]["id"], a_id.as_str());
    assert_eq!(b_joined["participants"][0]["name"], "alice");
    let pj = next_json(&mut a).await.unwrap();
    assert_eq!(pj["type"], "participant_joined");
    assert_eq!(pj["participant"]["id"], b_id.as_str());
    assert_eq!(pj["participant"]["name"], "bob");

    // Garbage from bob does not disturb alice.
    send(&mut b, "garbage").await;
    expect_error(&mut b, "bad_json").await;

    send(&mut b, r#"{"type":"leave"}"#).await;
    expect_closed(&mut b).await;
    let left = next_json(&mut a).await.unwrap();
    assert_eq!(left["type"], "participant_left", "{left}");
    assert_eq!(left["participant_id"], b_id.as_str());

    // A socket that simply drops counts as leaving too.
    let mut c = connect(&url).await;
    let c_joined = join(&mut c, "presence", "carol").await;
    let c_id = c_joined["participant_id"].as_str().unwrap().to_owned();
    assert_eq!(
        next_json(&mut a).await.unwrap()["type"],
        "participant_joined"
    );
    drop(c);
    let left = next_json(&mut a).await.unwrap();
    assert_eq!(left["type"], "participant_left", "{left}");
    assert_eq!(left["participant_id"], c_id.as_str());
}

#[tokio::test]
async fn a_client_that_goes_silent_is_removed_within_five_seconds() {
    let server = TestServer::start().await;
    let url = server.ws_url.clone();
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    join(&mut a, "silence", "alice").await;
    let b_joined = join(&mut b, "silence", "bob").await;
    let b_id = b_joined["participant_id"].as_str().unwrap().to_owned();
    assert_eq!(
        next_json(&mut a).await.unwrap()["type"],
        "participant_joined"
    );
    // Bob's network goes away: his socket stays open but he never reads again, so the server's
    // pings go unanswered (tungstenite answers pings only while reading).
    // `next_json` waits 5 s at most: that is the requirement.
    let left = next_json(&mut a).await.expect("participant_left");
    assert_eq!(left["type"], "participant_left", "{left}");
    assert_eq!(left["participant_id"], b_id.as_str());
    drop(b);
}

/// A client that stops reading (a tiny receive window, never drained) must not hold up its own
/// session: the server still notices it is silent, takes it out of the room and tells the
/// others, however much it is being sent.
#[tokio::test]
async fn a_client_that_stops_reading_is_still_dropped_from_its_room() {
    use std::time::Duration;
    let server = TestServer::start().await;
    let url = server.ws_url.clone();
    let mut watcher = connect(&url).await;
    join(&mut watcher, "stall", "watcher").await;

    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // A small segment size keeps the server's send buffer small too (the kernel sizes it by
    // segments: on loopback's 64 KiB segments it would hold megabytes).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .unwrap();
    slow.send(Message::Text(
        json!({"type": "join", "v": 1, "room": "stall", "name": "slow"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let slow_id = loop {
        let t = match slow.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            other => panic!("no joined: {other:?}"),
        };
        let msg: Value = serde_json::from_str(&t).unwrap();
        if msg["type"] == "joined" {
            break msg["participant_id"].as_str().unwrap().to_owned();
        }
    };
    // From here on `slow` is never read. Each visitor who comes and goes is two events for it,
    // ~200 KB in all: far more than its window and the server's socket buffer hold.
    let name = "v".repeat(128);
    for _ in 0..400 {
        let mut visitor = connect(&url).await;
        join(&mut visitor, "stall", &name).await;
        let _ = visitor.close(None).await;
    }
    // The watcher hears every visitor, and then that `slow` left (it answered no ping).
    let left = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let msg = next_json(&mut watcher).await.expect("the watcher's socket");
            if msg["type"] == "participant_left" && msg["participant_id"] == slow_id.as_str() {
                return;
            }
        }
    })
    .await;
    assert!(left.is_ok(), "the stalled client was never dropped");
    drop(slow);
}
