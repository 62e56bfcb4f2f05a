//! What an operator watches: webhooks (signed, retried, in order), metrics that move while
//! media flows, and the ICE servers `joined` hands out.

use super::*;

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
