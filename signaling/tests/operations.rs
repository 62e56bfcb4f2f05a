//! What an operator relies on, against the real server in-process with real webrtc-rs peers:
//! access tokens (every way of being wrong has its code), grants (a subscribe-only participant
//! cannot publish, sources are enforced), limits (each refusal has its code), the admin API,
//! webhooks (signed, retried, in order) and metrics (counters move while media flows).

mod common;

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
            Some(claims(&|c| c.exp = now - 10)),
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
    let v = publish_synthetic(&a, RtcCodec::Video, T).await;
    let s = publish_synthetic(&a, RtcCodec::Audio, T).await;
    let err = a.recv_type("error", T).await;
    assert_eq!(err["code"], "too_many_tracks", "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.sfu.stats().await.unwrap().published_tracks, 1);
    v.abort();
    s.abort();
    a.close().await;
}

use RtpCodecKind as RtcCodec;

fn c_code(v: Value) -> String {
    v["code"].as_str().unwrap_or_default().to_owned()
}

/// Asserts an admin API answer is the error `code` with HTTP `status`.
#[track_caller]
fn refused((status, body): (u16, Value), want_status: u16, code: &str) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (want_status, Some(code)),
        "{body}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api() {
    common::init_logging();
    timeout(Duration::from_secs(90), admin_scenario())
        .await
        .expect("within 90 s");
}

async fn admin_scenario() {
    use reqwest::Method;
    let server = start(&secure_settings()).await;
    let base = format!("{}/api", server.http_url);
    let url = server.ws_url().to_owned();
    let admin = admin_token(KEY, SECRET, None);
    // Every documented endpoint is served (and wants a token).
    for (method, path) in fanout_signaling::admin::ENDPOINTS {
        let path = path
            .replace("{room}", "r")
            .replace("{identity}", "i")
            .replace("{track}", "t");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (st, body) = api(method.clone(), format!("{base}{path}"), None, None).await;
        assert!(![404, 405].contains(&st), "{method} {path}: {st} {body}");
    }
    // Authorization.
    refused(
        api(Method::GET, format!("{base}/rooms"), None, None).await,
        401,
        "token_missing",
    );
    refused(
        api(Method::GET, format!("{base}/rooms"), Some("junk"), None).await,
        401,
        "token_malformed",
    );
    let user = token("u", Some("r2"), Grants::default());
    refused(
        api(Method::GET, format!("{base}/rooms"), Some(&user), None).await,
        403,
        "token_missing_grant",
    );
    let (st, body) = api(Method::GET, format!("{base}/rooms"), Some(&admin), None).await;
    assert_eq!((st, body.clone()), (200, json!({"rooms": []})));
    refused(
        api(
            Method::GET,
            format!("{base}/nothing-here"),
            Some(&admin),
            None,
        )
        .await,
        404,
        "not_found",
    );
    // Create with limits.
    let create = json!({"name": "r2", "max_participants": 1, "empty_timeout": 60});
    let (st, body) = api(
        Method::POST,
        format!("{base}/rooms"),
        Some(&admin),
        Some(create.clone()),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["room"]["max_participants"], 1);
    refused(
        api(
            Method::POST,
            format!("{base}/rooms"),
            Some(&admin),
            Some(create),
        )
        .await,
        409,
        "room_exists",
    );
    refused(
        api(
            Method::POST,
            format!("{base}/rooms"),
            Some(&admin),
            Some(json!({"nom": 1})),
        )
        .await,
        400,
        "invalid_request",
    );
    let scoped = admin_token(KEY, SECRET, Some("r2"));
    refused(
        api(
            Method::POST,
            format!("{base}/rooms"),
            Some(&scoped),
            Some(json!({"name": "r9"})),
        )
        .await,
        403,
        "token_wrong_room",
    );
    let mut first = SignalingClient::connect(&url).await;
    first
        .join_token(
            "r2",
            "x",
            Some(&token("one", Some("r2"), Grants::default())),
        )
        .await;
    let mut second = SignalingClient::connect(&url).await;
    let err = second
        .join_refused(
            "r2",
            Some(&token("two", Some("r2"), Grants::default())),
            true,
        )
        .await;
    assert_eq!(err["code"], "room_full");

    // A call in r3: P publishes, S receives.
    let full = |id: &str| token(id, Some("r3"), Grants::default());
    let mut s = RtcClient::join_token(&url, "r3", "S", Some(&full("s-id"))).await;
    let received = count_received(&mut s);
    let mut p = RtcClient::join_token(&url, "r3", "P", Some(&full("p-id"))).await;
    let sending = publish_synthetic(&p, RtpCodecKind::Video, T).await;
    let published = s.recv_type("track_published", T).await;
    let track_id = published["track"]["id"].as_str().unwrap().to_owned();
    assert!(grows(&received, 30, T).await, "S receives P's video");

    let (st, body) = api(Method::GET, format!("{base}/rooms/r3"), Some(&admin), None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["room"]["num_participants"], 2);
    let mut identities: Vec<&str> = body["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    identities.sort();
    assert_eq!(identities, vec!["p-id", "s-id"]);
    assert_eq!(body["room"]["tracks"][0]["id"], track_id.as_str());
    let media = body["participants"].as_array().unwrap();
    let publisher = media.iter().find(|m| m["identity"] == "p-id").unwrap();
    assert_eq!(
        publisher["published"][0]["layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let subscriber = media.iter().find(|m| m["identity"] == "s-id").unwrap();
    assert_eq!(
        subscriber["subscriptions"][0]["track_id"],
        track_id.as_str()
    );
    assert!(
        subscriber["subscriptions"][0]["current"].is_string(),
        "{subscriber}"
    );
    let (st, _) = api(
        Method::GET,
        format!("{base}/rooms/nope"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, 404);

    // Mute: S is told, its media stops; unmute: it comes back.
    let mute = format!("{base}/rooms/r3/tracks/{track_id}/mute");
    let (st, body) = api(
        Method::POST,
        mute.clone(),
        Some(&admin),
        Some(json!({"muted": true})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let m = s.recv_type("track_muted", T).await;
    assert_eq!(
        (m["track_id"].clone(), m["muted"].clone()),
        (json!(track_id), json!(true))
    );
    let m = p.recv_type("track_muted", T).await;
    assert_eq!(m["muted"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !grows(&received, 5, Duration::from_secs(1)).await,
        "nothing arrives while muted"
    );
    assert!(server.sfu.stats().await.unwrap().rtp_dropped_muted > 0);
    let (st, _) = api(
        Method::POST,
        mute.clone(),
        Some(&admin),
        Some(json!({"muted": false})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(s.recv_type("track_muted", T).await["muted"], false);
    assert!(
        grows(&received, 30, T).await,
        "media resumes after the unmute"
    );
    refused(
        api(
            Method::POST,
            format!("{base}/rooms/r3/tracks/TR_nope/mute"),
            Some(&admin),
            Some(json!({"muted": true})),
        )
        .await,
        404,
        "track_not_found",
    );
    refused(
        api(
            Method::POST,
            mute,
            Some(&admin),
            Some(json!({"muted": "yes"})),
        )
        .await,
        400,
        "invalid_request",
    );

    // Remove S: it is told and disconnected; P sees it leave.
    let (st, _) = api(
        Method::DELETE,
        format!("{base}/rooms/r3/participants/s-id"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let err = s.recv_type("error", T).await;
    assert_eq!(err["code"], "removed");
    let left = p.recv_type("participant_left", T).await;
    assert_eq!(left["participant_id"], s.participant_id.as_str());
    refused(
        api(
            Method::DELETE,
            format!("{base}/rooms/r3/participants/s-id"),
            Some(&admin),
            None,
        )
        .await,
        404,
        "participant_not_found",
    );

    // Delete the room: P is told.
    let (st, _) = api(
        Method::DELETE,
        format!("{base}/rooms/r3"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, 204);
    assert_eq!(p.recv_type("error", T).await["code"], "room_deleted");
    refused(
        api(
            Method::DELETE,
            format!("{base}/rooms/r3"),
            Some(&admin),
            None,
        )
        .await,
        404,
        "room_not_found",
    );
    sending.abort();
    s.close().await;
    p.close().await;
}

/// What the webhook receiver got: (signature header, body).
type Deliveries = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct Receiver {
    requests: Deliveries,
    calls: Arc<AtomicUsize>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    // The very first delivery fails, to be retried.
    if r.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    let sig = headers
        .get(webhooks::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.requests.lock().unwrap().push((sig, body.to_vec()));
    axum::http::StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_in_order() {
    common::init_logging();
    timeout(Duration::from_secs(60), async {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let settings = Settings {
            api_key: Some(KEY.into()),
            api_secret: Some(SECRET.into()),
            webhook_urls: vec![hook_url],
            room_departure_timeout: Duration::from_secs(1),
            ..common::dev_settings()
        };
        let server = start(&settings).await;
        let url = server.ws_url().to_owned();
        let p = RtcClient::join(&url, "hooks", "P").await;
        let sending = publish_synthetic(&p, RtpCodecKind::Audio, T).await;
        // Wait for the track to be published, then leave.
        let deadline = tokio::time::Instant::now() + T;
        while server.sfu.stats().await.unwrap().published_tracks == 0 {
            assert!(tokio::time::Instant::now() < deadline, "track published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sending.abort();
        p.close().await;
        let events = loop {
            let events: Vec<webhooks::Event> = receiver
                .requests
                .lock()
                .unwrap()
                .iter()
                .map(|(_, b)| serde_json::from_slice(b).expect("event JSON"))
                .collect();
            if events
                .iter()
                .any(|e| e.event == webhooks::EventKind::RoomFinished)
            {
                break events;
            }
            assert!(
                tokio::time::Instant::now() < deadline + T,
                "room_finished arrives; got {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for (sig, body) in receiver.requests.lock().unwrap().iter() {
            assert!(
                webhooks::verify(SECRET, sig, body, Duration::from_secs(60)),
                "signature of {}",
                String::from_utf8_lossy(body)
            );
        }
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "room_started",
                "participant_joined",
                "track_published",
                "track_unpublished",
                "participant_left",
                "room_finished"
            ]
        );
        assert!(events.iter().all(|e| e.room.name == "hooks"));
        assert_eq!(events[1].participant.as_ref().unwrap().name, "P");
        assert_eq!(events[2].track.as_ref().unwrap().kind, "audio");
        // The first attempt failed (500) and was retried: 7 calls for 6 events.
        assert_eq!(receiver.calls.load(Ordering::SeqCst), 7);
        let metrics = http()
            .get(format!("{}/metrics", server.http_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            metric(
                &metrics,
                "fanout_webhook_deliveries_total{result=\"retried\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &metrics,
                "fanout_webhook_deliveries_total{result=\"delivered\"}"
            ),
            Some(6.0)
        );
    })
    .await
    .expect("within 60 s");
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_while_media_flows() {
    common::init_logging();
    timeout(Duration::from_secs(60), async {
        let server = TestServer::start().await;
        let url = server.ws_url().to_owned();
        let mut s = RtcClient::join(&url, "m", "S").await;
        let received = count_received(&mut s);
        let p = RtcClient::join(&url, "m", "P").await;
        let sending = publish_synthetic(&p, RtpCodecKind::Video, T).await;
        assert!(grows(&received, 30, T).await, "media flows");
        let scrape = || async {
            http()
                .get(format!("{}/metrics", server.http_url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        let first = scrape().await;
        // Garbage from an unknown source is dropped and counted, with its bytes.
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            stranger
                .send_to(&[0x42; 100], server.sfu.media_addr())
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = scrape().await;
        let dropped = |text: &str, name: &str| {
            metric(text, &format!("{name}{{reason=\"unknown_source\"}}")).unwrap_or(0.0)
        };
        assert_eq!(
            dropped(&second, "fanout_packets_dropped_total")
                - dropped(&first, "fanout_packets_dropped_total"),
            3.0
        );
        assert_eq!(
            dropped(&second, "fanout_bytes_dropped_total")
                - dropped(&first, "fanout_bytes_dropped_total"),
            300.0
        );
        for name in [
            "fanout_packets_forwarded_total",
            "fanout_bytes_forwarded_total",
            "fanout_packets_in_total",
            "fanout_bytes_in_total",
            "fanout_packets_out_total",
            "fanout_bytes_out_total",
        ] {
            let (a, b) = (metric(&first, name), metric(&second, name));
            assert!(
                a.is_some_and(|a| a > 0.0) && b > a,
                "{name}: {a:?} then {b:?}"
            );
        }
        for (name, want) in [
            ("fanout_rooms", 1.0),
            ("fanout_participants", 2.0),
            ("fanout_published_tracks", 1.0),
            ("fanout_subscriptions", 1.0),
            ("fanout_websocket_connections", 2.0),
            ("fanout_join_latency_seconds_count", 2.0),
            ("fanout_draining", 0.0),
        ] {
            assert_eq!(metric(&second, name), Some(want), "{name}");
        }
        assert!(metric(&second, "fanout_process_resident_memory_bytes").is_some_and(|v| v > 0.0));
        assert!(metric(&second, "fanout_process_cpu_seconds_total").is_some());
        for line in second
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("fanout_"), "unprefixed metric: {line}");
        }
        sending.abort();
        s.close().await;
        p.close().await;
    })
    .await
    .expect("within 60 s");
}

/// `joined` carries the configured STUN URLs as they are and the TURN URLs with credentials
/// in coturn's `use-auth-secret` scheme, made for the joining identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_hands_out_stun_and_time_limited_turn_credentials() {
    common::init_logging();
    let settings = Settings {
        ice_servers: vec!["stun:stun.example.com:3478".into()],
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: Some("coturn-static-auth-secret".into()),
        turn_ttl: Duration::from_secs(3600),
        ..secure_settings()
    };
    let server = start(&settings).await;
    let mut c = SignalingClient::connect(server.ws_url()).await;
    let before = fanout_signaling::auth::unix_now();
    let joined = c
        .join_token(
            "t",
            "Dora",
            Some(&token("dora", Some("t"), Grants::default())),
        )
        .await;
    let servers = joined["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{joined}");
    assert_eq!(servers[0]["urls"][0], "stun:stun.example.com:3478");
    assert!(servers[0].get("username").is_none());
    assert_eq!(servers[1]["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    let username = servers[1]["username"].as_str().unwrap();
    let (expires, identity) = username.split_once(':').unwrap();
    assert_eq!(identity, "dora");
    let expires: u64 = expires.parse().unwrap();
    assert!(
        (before + 3600..=before + 3602).contains(&expires),
        "{expires} vs {before}"
    );
    let (_, expected) =
        fanout_signaling::ice::turn_credentials("coturn-static-auth-secret", "dora", expires);
    assert_eq!(servers[1]["credential"], expected.as_str());
}
