//! p2p rooms (direct 1:1 calls): the server relays offers, answers and candidates between the
//! room's two participants and carries no media of theirs. Media between two real browsers is
//! tested in client-web/tests/p2p.test.mjs; here the relay and its refusals.

use std::time::Duration;

use fanout_signaling::auth::{Grants, TokenAuthority};
use fanout_signaling::config::Settings;
use fanout_signaling::server::{engine_config, install_crypto_provider};
use serde_json::{json, Value};

mod common;
use common::{SignalingClient, TestServer, AUDIO_OFFER};

const T: Duration = Duration::from_secs(5);

async fn join_mode(
    url: &str,
    room: &str,
    name: &str,
    mode: Option<&str>,
) -> (SignalingClient, Value) {
    let mut c = SignalingClient::connect(url).await;
    let mut msg = json!({"type": "join", "v": 1, "room": room, "name": name});
    if let Some(m) = mode {
        msg["mode"] = json!(m);
    }
    c.send(msg).await;
    let joined = c.recv_type("joined", T).await;
    (c, joined)
}

async fn refused(url: &str, room: &str, mode: Option<&str>) -> Value {
    let mut c = SignalingClient::connect(url).await;
    let mut msg = json!({"type": "join", "v": 1, "room": room, "name": "late"});
    if let Some(m) = mode {
        msg["mode"] = json!(m);
    }
    c.send(msg).await;
    let err = c.recv_type("error", T).await;
    assert!(c.next().await.is_none(), "a refused join closes the socket");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_room_relays_signals_between_its_two_participants_and_refuses_a_third() {
    let server = TestServer::start().await;
    let url = server.ws_url();

    let (mut a, joined_a) = join_mode(url, "call", "alice", Some("p2p")).await;
    assert_eq!(joined_a["mode"], "p2p");
    assert_eq!(joined_a["participants"], json!([]));
    let a_id = joined_a["participant_id"].as_str().unwrap().to_owned();
    assert!(a_id.starts_with("PA_"), "{a_id}");

    // Alone: nothing to relay to, said precisely, and the session stays.
    a.send(json!({"type": "offer", "sdp": AUDIO_OFFER})).await;
    assert_eq!(a.recv_type("error", T).await["code"], "no_peer");

    // The second join needs no mode: it takes the room as it is.
    let (mut b, joined_b) = join_mode(url, "call", "bob", None).await;
    assert_eq!(joined_b["mode"], "p2p");
    assert_eq!(joined_b["participants"].as_array().unwrap().len(), 1);
    assert_eq!(joined_b["participants"][0]["id"], a_id.as_str());
    assert_eq!(joined_b["participants"][0]["name"], "alice");
    let b_id = joined_b["participant_id"].as_str().unwrap().to_owned();
    let seen = a.recv_type("participant_joined", T).await;
    assert_eq!(seen["participant"]["id"], b_id.as_str());
    assert_eq!(seen["participant"]["name"], "bob");

    // Offer, answer and candidates go across verbatim, marked with the sender.
    a.send(json!({"type": "offer", "sdp": AUDIO_OFFER})).await;
    let offer = b.recv_type("offer", T).await;
    assert_eq!(offer["sdp"], AUDIO_OFFER);
    assert_eq!(offer["from"], a_id.as_str());
    b.send(json!({"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}))
        .await;
    let answer = a.recv_type("answer", T).await;
    assert_eq!(answer["from"], b_id.as_str());
    assert!(answer["sdp"].as_str().unwrap().starts_with("v=0"));
    let candidate = json!({
        "candidate": "candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd"
    });
    b.send(json!({"type": "candidate", "candidate": candidate}))
        .await;
    let relayed = a.recv_type("candidate", T).await;
    assert_eq!(relayed["candidate"], candidate);
    assert_eq!(relayed["from"], b_id.as_str());

    // What only concerns the server's forwarding is ignored; a non-SDP is refused.
    b.send(json!({"type": "track_settings", "track_id": "TR_x", "visible": false}))
        .await;
    b.send(json!({"type": "track_source", "mid": "0", "source": "camera"}))
        .await;
    b.send(json!({"type": "offer", "sdp": "hello"})).await;
    assert_eq!(b.recv_type("error", T).await["code"], "invalid_sdp");

    // A third participant does not fit; a join that wants an SFU room is told the mode.
    assert_eq!(refused(url, "call", None).await["code"], "room_full");
    assert_eq!(
        refused(url, "call", Some("sfu")).await["code"],
        "room_mode_mismatch"
    );

    // The registry knows the room as p2p; the media engine never saw it.
    let summary = server.state.rooms().get("call").expect("room listed");
    assert_eq!(summary.mode.as_str(), "p2p");
    assert_eq!(summary.num_participants, 2);
    let engine = server.sfu.debug().await.unwrap();
    assert!(
        engine.rooms.iter().all(|r| r.name != "call"),
        "the engine holds no p2p room"
    );

    // WHIP cannot publish into a p2p room (there is no server-side media there).
    let res = reqwest::Client::new()
        .post(format!("{}/whip/call", server.http_url))
        .header("content-type", "application/sdp")
        .body(AUDIO_OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "room_mode_mismatch");

    // When one leaves, the other is told, and the place is free for somebody new.
    b.send(json!({"type": "leave"})).await;
    assert_eq!(
        a.recv_type("participant_left", T).await["participant_id"],
        b_id.as_str()
    );
    let (_c, joined_c) = join_mode(url, "call", "carol", Some("p2p")).await;
    assert_eq!(joined_c["participants"][0]["id"], a_id.as_str());
    assert_eq!(
        a.recv_type("participant_joined", T).await["participant"]["name"],
        "carol"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfu_room_refuses_a_p2p_join_and_the_admin_api_creates_p2p_rooms() {
    // --dev (joins need no token) with API keys, for the admin API.
    let settings = Settings {
        api_key: Some("k".into()),
        api_secret: Some("a-secret-of-enough-length-for-hs256".into()),
        ..common::dev_settings()
    };
    let server = TestServer::start_settings(&settings, engine_config(&settings)).await;
    install_crypto_provider();
    let admin = TokenAuthority::new("k", "a-secret-of-enough-length-for-hs256")
        .create(
            "ops",
            None,
            None,
            Grants {
                admin: true,
                join: false,
                ..Grants::default()
            },
            Duration::from_secs(600),
        )
        .unwrap();
    let url = server.ws_url();
    let (_a, joined) = join_mode(url, "conference", "alice", None).await;
    assert_eq!(joined["mode"], "sfu");
    assert_eq!(
        refused(url, "conference", Some("p2p")).await["code"],
        "room_mode_mismatch"
    );

    // A p2p room created through the admin API caps at two participants.
    let res = reqwest::Client::new()
        .post(format!("{}/api/rooms", server.http_url))
        .bearer_auth(&admin)
        .json(&json!({"name": "direct", "mode": "p2p", "max_participants": 10}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let room: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["room"]["mode"], "p2p");
    assert_eq!(room["room"]["max_participants"], 2);
    let (_b, joined) = join_mode(url, "direct", "bob", None).await;
    assert_eq!(joined["mode"], "p2p");
}
