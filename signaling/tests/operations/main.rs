//! What an operator relies on, against the real server in-process with real webrtc-rs peers:
//! access tokens (every way of being wrong has its code), grants (a subscribe-only participant
//! cannot publish, sources are enforced), limits (each refusal has its code), the admin API,
//! webhooks (signed, retried, in order) and metrics (counters move while media flows).

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod hooks;
mod recordings;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    admin_token, count_received, grows, publish_synthetic, RtcClient, SignalingClient, TestServer,
};
use fanout_signaling::auth::{unix_now, Claims, Grants, TokenAuthority};
use fanout_signaling::config::Settings;
use fanout_signaling::server::{engine_config, install_crypto_provider};
use fanout_signaling::webhooks;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{json, Value};
use tokio::time::timeout;

const KEY: &str = "testkey";
const SECRET: &str = "test-secret-test-secret-test-secret";
const T: Duration = Duration::from_secs(10);

fn authority() -> TokenAuthority {
    TokenAuthority::new(KEY, SECRET)
}

fn token(identity: &str, room: Option<&str>, grants: Grants) -> String {
    authority()
        .create(
            identity,
            Some(identity),
            room,
            grants,
            Duration::from_secs(600),
        )
        .unwrap()
}

/// Settings of a production-like server (tokens required) on free loopback ports.
fn secure_settings() -> Settings {
    Settings {
        dev: false,
        api_key: Some(KEY.into()),
        api_secret: Some(SECRET.into()),
        ..common::dev_settings()
    }
}

async fn start(settings: &Settings) -> TestServer {
    TestServer::start_settings(settings, engine_config(settings)).await
}

/// The `code` of an error message.
fn c_code(v: Value) -> String {
    v["code"].as_str().unwrap_or_default().to_owned()
}

/// Sends an admin request and returns (status, JSON body or Null).
async fn api(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn http() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

fn raw_token(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_matrix() {
    common::init_logging();
    let server = start(&secure_settings()).await;
    let url = server.ws_url().to_owned();
    let now = unix_now();
    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            iss: KEY.into(),
            sub: "alice".into(),
            name: Some("Alice".into()),
            room: Some("r1".into()),
            exp: now + 600,
            nbf: now,
            iat: now,
            grants: Grants::default(),
        };
        f(&mut c);
        raw_token(&c, SECRET)
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "token_missing"),
        (
            "malformed",
            Some("definitely.not.a-jwt".into()),
            "token_malformed",
        ),
        ("garbage", Some("%%%".into()), "token_malformed"),
        (
            "expired",
            Some(claims(&|c| c.exp = now - 60)),
            "token_expired",
        ),
        (
            "not yet valid",
            Some(claims(&|c| c.nbf = now + 3600)),
            "token_not_yet_valid",
        ),
        (
            "badly signed",
            Some(raw_token(
                &Claims {
                    iss: KEY.into(),
                    sub: "alice".into(),
                    name: None,
                    room: Some("r1".into()),
                    exp: now + 600,
                    nbf: now,
                    iat: now,
                    grants: Grants::default(),
                },
                "some-other-secret-some-other-secret",
            )),
            "token_invalid_signature",
        ),
        (
            "unknown key",
            Some(claims(&|c| c.iss = "otherkey".into())),
            "token_invalid_signature",
        ),
        (
            "wrong room",
            Some(claims(&|c| c.room = Some("r2".into()))),
            "token_wrong_room",
        ),
        (
            "no room",
            Some(claims(&|c| c.room = None)),
            "token_wrong_room",
        ),
        (
            "no join grant",
            Some(claims(&|c| c.grants.join = false)),
            "token_missing_grant",
        ),
    ];
    for (what, tok, code) in cases {
        let mut sig = SignalingClient::connect(&url).await;
        let err = sig.join_refused("r1", tok.as_deref(), true).await;
        assert_eq!(err["code"], code, "{what}: {err}");
    }
    // A valid token: identity and name come from it.
    let mut a = SignalingClient::connect(&url).await;
    let joined = a.join_token("r1", "ignored", Some(&claims(&|_| {}))).await;
    assert_eq!(joined["room"], "r1");
    let mut b = SignalingClient::connect(&url).await;
    let joined = b
        .join_token(
            "r1",
            "Bob",
            Some(&token("bob", Some("r1"), Grants::default())),
        )
        .await;
    let others = joined["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["identity"], "alice");
    assert_eq!(others[0]["name"], "Alice");
    let seen = a.recv_type("participant_joined", T).await;
    assert_eq!(seen["participant"]["identity"], "bob");
    // Outside --dev there is no token endpoint.
    let r = http()
        .get(format!("{}/dev/token?room=r1", server.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_joins_without_a_token_and_serves_tokens() {
    common::init_logging();
    let server = TestServer::start().await;
    let url = server.ws_url().to_owned();
    let mut a = SignalingClient::connect(&url).await;
    a.join("d", "A").await;
    // A token given in --dev is still checked.
    let mut b = SignalingClient::connect(&url).await;
    let err = b.join_refused("d", Some("x.y.z"), true).await;
    assert_eq!(err["code"], "token_malformed");
    let r: Value = http()
        .get(format!("{}/dev/token?room=d&name=Carol", server.http_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = r["token"].as_str().unwrap();
    let mut c = SignalingClient::connect(&url).await;
    let joined = c.join_token("d", "whatever", Some(tok)).await;
    assert_eq!(joined["participants"].as_array().unwrap().len(), 1);
    let seen = a.recv_type("participant_joined", T).await;
    assert_eq!(seen["participant"]["name"], "Carol");
    assert_eq!(seen["participant"]["identity"], r["identity"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_limit_what_a_participant_publishes_and_receives() {
    common::init_logging();
    timeout(Duration::from_secs(60), async {
        let server = start(&secure_settings()).await;
        let url = server.ws_url().to_owned();
        let full = |id: &str| token(id, Some("g"), Grants::default());
        let mut sub = RtcClient::join_token(&url, "g", "S", Some(&full("s"))).await;
        // Subscribe-only: its track is refused.
        let watcher = token(
            "w",
            Some("g"),
            Grants {
                publish: false,
                ..Grants::default()
            },
        );
        let mut w = RtcClient::join_token(&url, "g", "W", Some(&watcher)).await;
        let sending = publish_synthetic(&w, RtpCodecKind::Video, T).await;
        let err = w.recv_type("error", T).await;
        assert_eq!(err["code"], "publish_not_allowed", "{err}");
        // Microphone only: the camera is refused, the microphone goes through.
        let mic_only = token(
            "m",
            Some("g"),
            Grants {
                sources: Some(vec!["microphone".into()]),
                ..Grants::default()
            },
        );
        let mut m = RtcClient::join_token(&url, "g", "M", Some(&mic_only)).await;
        let video = publish_synthetic(&m, RtpCodecKind::Video, T).await;
        let err = m.recv_type("error", T).await;
        assert_eq!(err["code"], "publish_not_allowed", "{err}");
        assert!(err["message"].as_str().unwrap().contains("camera"), "{err}");
        let audio = publish_synthetic(&m, RtpCodecKind::Audio, T).await;
        let published = sub.recv_type("track_published", T).await;
        assert_eq!(published["track"]["kind"], "audio", "{published}");
        assert_eq!(published["participant_id"], m.participant_id.as_str());
        // Nothing else was published: the engine holds exactly one track.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = server.sfu.stats().await.unwrap();
        assert_eq!(stats.published_tracks, 1);
        // A participant without the subscribe grant receives nothing.
        let deaf = token(
            "d",
            Some("g"),
            Grants {
                subscribe: false,
                ..Grants::default()
            },
        );
        let d = RtcClient::join_token(&url, "g", "D", Some(&deaf)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snapshot = server.sfu.debug().await.unwrap();
        let room = snapshot.rooms.iter().find(|r| r.name == "g").unwrap();
        let of = |id: &str| room.participants.iter().find(|p| p.id == id).unwrap();
        assert!(of(&d.participant_id).subscriptions.is_empty());
        assert!(!of(&d.participant_id).can_subscribe);
        assert_eq!(of(&sub.participant_id).subscriptions.len(), 1);
        assert!(!of(&w.participant_id).can_publish);
        for t in [sending, video, audio] {
            t.abort();
        }
        for c in [sub, w, m, d] {
            c.close().await;
        }
    })
    .await
    .expect("within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_their_codes() {
    common::init_logging();
    let settings = Settings {
        max_participants: 2,
        max_rooms: 1,
        max_tracks_per_participant: 1,
        max_message_bytes: 2048,
        max_messages_per_second: 5,
        ..common::dev_settings()
    };
    let server = start(&settings).await;
    let url = server.ws_url().to_owned();
    let a = RtcClient::join(&url, "r", "A").await;
    let mut b = SignalingClient::connect(&url).await;
    b.join("r", "B").await;
    let mut c = SignalingClient::connect(&url).await;
    assert_eq!(c.join_refused("r", None, true).await["code"], "room_full");
    let mut d = SignalingClient::connect(&url).await;
    assert_eq!(
        c_code(d.join_refused("other", None, true).await),
        "too_many_rooms"
    );
    // Oversized: refused and closed.
    let mut e = SignalingClient::connect(&url).await;
    e.send(json!({"type": "offer", "sdp": "x".repeat(3000)}))
        .await;
    let err = e.recv_type("error", T).await;
    assert_eq!(err["code"], "message_too_large");
    assert!(
        timeout(T, e.next()).await.unwrap().is_none(),
        "closed after"
    );
    // Flooding: over 5 per second (bursts of 10), messages are dropped with `rate_limited`.
    let mut f = SignalingClient::connect(&url).await;
    for _ in 0..30 {
        f.send(json!({"type": "candidate", "candidate": null}))
            .await;
    }
    let mut codes = Vec::new();
    while let Ok(Some(m)) = timeout(Duration::from_millis(500), f.next()).await {
        codes.push(m["code"].as_str().unwrap_or_default().to_owned());
    }
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    let answered = codes.iter().filter(|c| *c == "not_joined").count();
    assert!(
        (10..=12).contains(&answered),
        "{answered} answered of 30: {codes:?}"
    );
    // Track limit: the second track is refused.
    let mut a = a;
    let v = publish_synthetic(&a, RtpCodecKind::Video, T).await;
    let s = publish_synthetic(&a, RtpCodecKind::Audio, T).await;
    let err = a.recv_type("error", T).await;
    assert_eq!(err["code"], "too_many_tracks", "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.sfu.stats().await.unwrap().published_tracks, 1);
    v.abort();
    s.abort();
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_joins_is_closed_at_the_join_deadline() {
    common::init_logging();
    let settings = Settings {
        join_timeout: Duration::from_secs(1),
        ..common::dev_settings()
    };
    let server = start(&settings).await;
    let url = server.ws_url().to_owned();
    // It reads (so it answers pings, which count as signs of life) but never joins.
    let mut idle = SignalingClient::connect(&url).await;
    let opened = std::time::Instant::now();
    let err = idle.recv_type("error", T).await;
    assert_eq!(err["code"], "join_timeout", "{err}");
    assert!(opened.elapsed() < Duration::from_secs(3));
    assert!(
        timeout(T, idle.next()).await.unwrap().is_none(),
        "closed after"
    );
    // One that joins in time stays.
    let mut member = SignalingClient::connect(&url).await;
    member.join("r", "M").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    member.send(json!({"type": "leave"})).await;
    let mut rest = Vec::new();
    while let Ok(Some(m)) = timeout(Duration::from_millis(500), member.next()).await {
        rest.push(m);
    }
    assert!(rest.iter().all(|m| m["code"] != "join_timeout"), "{rest:?}");
}

/// A WebSocket upgrade's refusal: its HTTP status and error code (`None`: it was accepted).
async fn refused_upgrade(url: &str) -> Option<(u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some((response.status().as_u16(), code))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_sockets_are_capped_in_all_and_per_address() {
    common::init_logging();
    // Per address: the third socket from 127.0.0.1 is refused until one closes.
    let server = start(&Settings {
        max_connections_per_ip: 2,
        ..common::dev_settings()
    })
    .await;
    let url = server.ws_url().to_owned();
    let first = SignalingClient::connect(&url).await;
    let _second = SignalingClient::connect(&url).await;
    assert_eq!(
        refused_upgrade(&url).await,
        Some((503, "too_many_connections".to_owned()))
    );
    drop(first);
    let back = timeout(T, async {
        loop {
            if refused_upgrade(&url).await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "a closed socket gives its place back");

    // In all.
    let server = start(&Settings {
        max_connections: 1,
        max_connections_per_ip: 0,
        ..common::dev_settings()
    })
    .await;
    let url = server.ws_url().to_owned();
    let _only = SignalingClient::connect(&url).await;
    assert_eq!(
        refused_upgrade(&url).await,
        Some((503, "too_many_connections".to_owned()))
    );
}
