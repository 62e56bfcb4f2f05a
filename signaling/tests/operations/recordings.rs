//! Recordings through the admin API: a track recorded into a WebM file that `ffprobe` reads
//! (streams, codecs, duration), stopped by `DELETE` or by the track's end, the webhooks, and
//! every refusal with its status and code.

use super::*;

/// Webhook bodies received, in order.
type Bodies = Arc<Mutex<Vec<webhooks::Event>>>;

async fn hook(
    axum::extract::State(bodies): axum::extract::State<Bodies>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    bodies
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).expect("event JSON"));
    axum::http::StatusCode::OK
}

/// `ffprobe`'s view of a file: its streams' codecs, and its duration in seconds.
fn probe_all(file: &str) -> (Vec<String>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=duration",
            "-of",
            "json",
            file,
        ])
        .output()
        .expect("ffprobe runs (Debian's ffmpeg)");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let codecs = v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (codecs, duration)
}

/// `ffprobe`'s view of a file: (codec of its one stream, width, height, duration in seconds).
fn probe(file: &str) -> (String, Option<u64>, Option<u64>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "json",
            file,
        ])
        .output()
        .expect("ffprobe runs (Debian's ffmpeg)");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let streams = v["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "{v}");
    let s = &streams[0];
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (
        s["codec_name"].as_str().unwrap_or_default().to_owned(),
        s["width"].as_u64(),
        s["height"].as_u64(),
        duration,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_is_recorded_into_a_webm_file_that_ffprobe_reads() {
    common::init_logging();
    timeout(Duration::from_secs(90), recording_scenario())
        .await
        .expect("within 90 s");
}

async fn recording_scenario() {
    use reqwest::Method;
    let bodies = Bodies::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(bodies.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = std::env::temp_dir().join(format!("fanout-rec-{}", rand::random::<u32>()));
    let settings = Settings {
        webhook_urls: vec![hook_url],
        recordings_dir: dir.clone(),
        ..secure_settings()
    };
    let server = start(&settings).await;
    let base = format!("{}/api", server.http_url);
    let admin = admin_token(KEY, SECRET, None);
    let url = server.ws_url().to_owned();
    let p = RtcClient::join_token(
        &url,
        "rec",
        "P",
        Some(&token("P", Some("rec"), Grants::default())),
    )
    .await;
    let video = publish_synthetic(&p, RtpCodecKind::Video, T).await;
    let audio = publish_synthetic(&p, RtpCodecKind::Audio, T).await;
    // The two tracks' ids, from the admin API.
    let (video_id, audio_id) = loop {
        let (_, room) = api(Method::GET, format!("{base}/rooms/rec"), Some(&admin), None).await;
        let tracks = room["room"]["tracks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let id = |kind: &str| {
            tracks
                .iter()
                .find(|t| t["kind"] == kind)
                .and_then(|t| t["id"].as_str())
                .map(str::to_owned)
        };
        if let (Some(v), Some(a)) = (id("video"), id("audio")) {
            break (v, a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recordings = format!("{base}/rooms/rec/recordings");

    // Refusals, each with its code.
    let refused = |(status, body): (u16, Value), want: u16, code: &str| {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (want, Some(code)),
            "{body}"
        );
    };
    let post = |body: Value| api(Method::POST, recordings.clone(), Some(&admin), Some(body));
    refused(
        post(json!({"track_id": "TR_nope"})).await,
        404,
        "track_not_found",
    );
    refused(post(json!({"track": 1})).await, 400, "invalid_request");
    refused(
        api(
            Method::POST,
            format!("{base}/rooms/nope/recordings"),
            Some(&admin),
            Some(json!({"track_id": video_id})),
        )
        .await,
        404,
        "room_not_found",
    );
    refused(
        api(
            Method::POST,
            recordings.clone(),
            Some(&admin_token(KEY, SECRET, Some("other"))),
            Some(json!({"track_id": video_id})),
        )
        .await,
        403,
        "token_wrong_room",
    );
    refused(
        api(
            Method::DELETE,
            format!("{recordings}/RC_nope"),
            Some(&admin),
            None,
        )
        .await,
        404,
        "recording_not_found",
    );

    // A room nobody has joined yet has nothing to record.
    let (status, created) = api(
        Method::POST,
        format!("{base}/rooms"),
        Some(&admin),
        Some(json!({"name": "empty"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = api(
        Method::POST,
        format!("{base}/rooms/empty/recordings"),
        Some(&admin),
        Some(json!({})),
    )
    .await;
    refused((status, body.clone()), 500, "recording_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nobody")),
        "{body}"
    );
    assert!(
        std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()),
        "a refused recording leaves no file"
    );

    // The room, and both tracks.
    let (status, room) = post(json!({})).await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["mime"], "video/webm");
    assert!(room.get("track_id").is_none(), "{room}");
    let (status, v) = post(json!({"track_id": video_id})).await;
    assert_eq!(status, 201, "{v}");
    let (status, a) = post(json!({"track_id": audio_id})).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(
        (v["state"].as_str(), v["mime"].as_str()),
        (Some("recording"), Some("video/VP8"))
    );
    assert_eq!(a["mime"], "audio/opus");
    let video_file = v["file"].as_str().unwrap().to_owned();
    assert!(
        std::path::Path::new(&video_file).is_absolute(),
        "{video_file}"
    );
    assert!(video_file.starts_with(std::fs::canonicalize(&dir).unwrap().to_str().unwrap()));
    let (status, list) = api(Method::GET, recordings.clone(), Some(&admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        list["recordings"].as_array().map(Vec::len),
        Some(3),
        "{list}"
    );

    // Stopped after ~3 s: finalized, with its duration.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, stopped) = api(
        Method::DELETE,
        format!("{recordings}/{}", v["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "finished", "{stopped}");
    let ms = stopped["duration_ms"].as_u64().unwrap();
    assert!((2000..5000).contains(&ms), "{stopped}");
    assert!(stopped["bytes"].as_u64().unwrap() > 30_000, "{stopped}");
    let (codec, width, height, secs) = probe(&video_file);
    assert_eq!(
        (codec.as_str(), width, height),
        ("vp8", Some(320), Some(180))
    );
    assert!(
        (secs * 1000.0 - ms as f64).abs() < 200.0,
        "ffprobe {secs} s, server {ms} ms"
    );

    // The room: the composite (VP8) and the mix (Opus) in one file.
    let (status, stopped) = api(
        Method::DELETE,
        format!("{recordings}/{}", room["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "finished", "{stopped}");
    let (codecs, secs) = probe_all(room["file"].as_str().unwrap());
    assert_eq!(codecs, vec!["vp8", "opus"], "{stopped}");
    assert!(secs > 2.5, "{secs} s of the room");

    // The audio recording ends with its track: the publisher leaves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    video.abort();
    audio.abort();
    p.close().await;
    let ended = loop {
        let (_, list) = api(Method::GET, recordings.clone(), Some(&admin), None).await;
        let r = list["recordings"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == a["id"]).cloned());
        if let Some(r) = r.filter(|r| r["state"] != "recording") {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ended["state"], "finished", "{ended}");
    let (codec, _, _, secs) = probe(a["file"].as_str().unwrap());
    assert_eq!(codec, "opus");
    assert!(secs > 3.0, "{secs} s of audio");

    // The webhooks: started three times, finished three times, with the file and duration.
    let deadline = tokio::time::Instant::now() + T;
    let events = loop {
        let events: Vec<webhooks::Event> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.recording.is_some())
            .cloned()
            .collect();
        if events.len() >= 6 || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "recording_started",
            "recording_started",
            "recording_started",
            "recording_finished",
            "recording_finished",
            "recording_finished"
        ]
    );
    let finished = events[3].recording.as_ref().unwrap();
    assert_eq!(finished.file, video_file);
    assert_eq!(finished.duration_ms, Some(ms));
    assert!(events.iter().all(|e| e.room.name == "rec"));
    let _ = std::fs::remove_dir_all(&dir);
}
