//! The admin API: rooms, participants, kicks, mutes and data messages through HTTP with an admin token, and
//! every refusal with its status and code.

use super::*;

/// Asserts an admin API answer is the error `code` with HTTP `status`.
#[track_caller]
fn refused((status, body): (u16, Value), want_status: u16, code: &str) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (want_status, Some(code)),
        "{body}"
    );
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
            .replace("{track}", "t")
            .replace("{recording}", "RC_x");
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

    // A data message into the room: delivered to nobody (these clients opened no data
    // channels; the browser tests see one arrive); each malformed one refused.
    let data = format!("{base}/rooms/r3/data");
    let (st, body) = api(
        Method::POST,
        data.clone(),
        Some(&admin),
        Some(json!({"text": "hello", "topic": "ops"})),
    )
    .await;
    assert_eq!((st, &body["delivered"]), (200, &json!(0)), "{body}");
    for bad in [
        json!({"text": "a", "base64": "AA=="}),
        json!({}),
        json!({"base64": "not base64!"}),
        json!({"text": "x".repeat(64 * 1024)}),
        json!({"text": "x".repeat(1200), "reliable": false}),
        json!({"text": "a", "to": [""]}),
        json!({"text": "a", "colour": "red"}),
    ] {
        let answer = api(Method::POST, data.clone(), Some(&admin), Some(bad.clone())).await;
        refused(answer, 400, "invalid_request");
    }
    refused(
        api(
            Method::POST,
            format!("{base}/rooms/nope/data"),
            Some(&admin),
            Some(json!({"text": "a"})),
        )
        .await,
        404,
        "room_not_found",
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
