//! WHIP ingest through the real server: a webrtc-rs peer publishes over HTTP (RFC 9725) into a
//! room that a WebSocket participant watches; then every way a WHIP request can be wrong gets its
//! status and problem code while the live session keeps flowing.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    attribute, count_received, count_tracks, grows, play, problem, wait_tracks, ClientPeer,
    RtcClient, SyntheticTrack, TestServer,
};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::peer_connection::RTCSessionDescription;

const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

struct WhipSession {
    peer: ClientPeer,
    location: String,
    etag: String,
    offer: String,
    media: Vec<tokio::task::JoinHandle<()>>,
}

/// A webrtc-rs WHIP publisher (audio + VP8) posting to `url`.
async fn publish(http: &reqwest::Client, url: &str, token: Option<&str>) -> WhipSession {
    let peer = ClientPeer::new().await;
    let audio = SyntheticTrack::add(&peer.pc, "whip", RtpCodecKind::Audio).await;
    let video = SyntheticTrack::add(&peer.pc, "whip", RtpCodecKind::Video).await;
    let offer = peer.pc.create_offer(None).await.expect("offer");
    peer.pc
        .set_local_description(offer.clone())
        .await
        .expect("local offer");
    let mut req = http
        .post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer.sdp.clone());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("POST");
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    let headers = res.headers().clone();
    assert_eq!(header(&headers, "content-type"), "application/sdp");
    let location = header(&headers, "location");
    assert!(location.starts_with("/whip/"), "Location {location}");
    let etag = header(&headers, "etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "ETag {etag}");
    assert_eq!(
        header(&headers, "accept-patch"),
        "application/trickle-ice-sdpfrag"
    );
    let answer = res.text().await.unwrap();
    // The server's candidates are in the answer: a WHIP client need not wait for trickle.
    assert!(
        answer.contains("a=candidate:") && answer.contains("typ host"),
        "{answer}"
    );
    assert!(answer.contains("a=end-of-candidates"), "{answer}");
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .expect("answer applies");
    let media = vec![audio.start().await, video.start().await];
    WhipSession {
        peer,
        location,
        etag,
        offer: offer.sdp,
        media,
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_is_seen_and_heard_by_a_websocket_participant() {
    common::init_logging();
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let mut viewer = RtcClient::join(server.ws_url(), "whip-room", "viewer").await;
    let received = count_received(&mut viewer);

    let mut whip = publish(
        &http,
        &format!("{}/whip/whip-room?name=OBS", server.http_url),
        None,
    )
    .await;
    // Trickle the client's own candidates (RFC 8840 fragment with its ICE credentials).
    let mut frag = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n",
        attribute(&whip.offer, "ice-ufrag"),
        attribute(&whip.offer, "ice-pwd")
    );
    if let Ok(Some(c)) =
        tokio::time::timeout(Duration::from_secs(2), whip.peer.candidates.recv()).await
    {
        frag.push_str(&format!("a={}\r\n", c.candidate.trim_start_matches("a=")));
    }
    frag.push_str("a=end-of-candidates\r\n");
    let res = http
        .patch(format!("{}{}", server.http_url, whip.location))
        .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
        .header("if-match", &whip.etag)
        .body(frag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.headers().get("etag").is_none());

    // The room sees a participant named OBS publishing audio and video, and its media flows.
    let joined = viewer.recv_type("participant_joined", SIGNAL_TIMEOUT).await;
    assert_eq!(joined["participant"]["name"], "OBS", "{joined}");
    let publisher_id = joined["participant"]["id"].as_str().unwrap().to_owned();
    assert!(whip.location.ends_with(&publisher_id), "{}", whip.location);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let t = viewer.recv_type("track_published", SIGNAL_TIMEOUT).await;
        assert_eq!(t["participant_id"], publisher_id.as_str());
        kinds.push(t["track"]["kind"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["audio", "video"]);
    assert!(
        grows(&received, 100, Duration::from_secs(10)).await,
        "the viewer received {} packets from the WHIP publisher",
        received.load(Ordering::Relaxed)
    );
    let room = server.state.rooms().get("whip-room").expect("room");
    assert_eq!(room.num_participants, 2);

    // DELETE ends it: the room is told, and the resource is gone.
    let res = http
        .delete(format!("{}{}", server.http_url, whip.location))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let left = viewer.recv_type("participant_left", SIGNAL_TIMEOUT).await;
    assert_eq!(left["participant_id"], publisher_id.as_str());
    let res = http
        .delete(format!("{}{}", server.http_url, whip.location))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::NOT_FOUND, "unknown_session".into())
    );
    for m in whip.media.drain(..) {
        m.abort();
    }
    let _ = whip.peer.pc.close().await;
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whip_requests_get_precise_errors_and_the_live_session_keeps_flowing() {
    common::init_logging();
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let base = format!("{}/whip/bad-room", server.http_url);
    let mut viewer = RtcClient::join(server.ws_url(), "bad-room", "viewer").await;
    let received = count_received(&mut viewer);
    let live = publish(&http, &base, None).await;
    assert!(grows(&received, 50, Duration::from_secs(10)).await);

    let post =
        |ct: &'static str, body: Vec<u8>| http.post(&base).header(CONTENT_TYPE, ct).body(body);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "wrong content type",
            post("application/json", b"{}".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_message",
        ),
        (
            "not SDP",
            post("application/sdp", b"hello".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            "not UTF-8",
            post("application/sdp", vec![0xff, 0xfe, 0x00]),
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            "receives only",
            post(
                "application/sdp",
                b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n".to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sdp",
        ),
        (
            "SDP-shaped garbage the engine rejects",
            post(
                "application/sdp",
                b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n"
                    .to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sdp",
        ),
        (
            "oversized",
            post("application/sdp", vec![b'v'; 70 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            "not a bearer token",
            post("application/sdp", b"v=0\r\n".to_vec()).header("authorization", "Basic Zm9vOmJhcg=="),
            StatusCode::UNAUTHORIZED,
            "token_malformed",
        ),
        (
            "garbage token",
            post("application/sdp", live.offer.clone().into_bytes()).bearer_auth("not.a.jwt"),
            StatusCode::UNAUTHORIZED,
            "token_malformed",
        ),
        (
            "patch of an unknown session",
            http.patch(format!("{base}/PA_nosuchthing"))
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .body("a=end-of-candidates\r\n"),
            StatusCode::NOT_FOUND,
            "unknown_session",
        ),
        (
            "patch with the wrong content type",
            http.patch(format!("{}{}", server.http_url, live.location))
                .header(CONTENT_TYPE, "application/sdp")
                .body("a=end-of-candidates\r\n"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_message",
        ),
        (
            "ICE restart without the new password",
            http.patch(format!("{}{}", server.http_url, live.location))
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .header("if-match", "*")
                .body("a=ice-ufrag:new1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"),
            StatusCode::BAD_REQUEST,
            "invalid_candidate",
        ),
        (
            "ICE restart with the current credentials",
            http.patch(format!("{}{}", server.http_url, live.location))
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .header("if-match", "*")
                .body(format!(
                    "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
                    attribute(&live.offer, "ice-ufrag"),
                    attribute(&live.offer, "ice-pwd")
                )),
            StatusCode::BAD_REQUEST,
            "invalid_candidate",
        ),
        (
            "stale entity tag",
            http.patch(format!("{}{}", server.http_url, live.location))
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .header("if-match", "\"someotherice\"")
                .body("a=end-of-candidates\r\n"),
            StatusCode::PRECONDITION_FAILED,
            "invalid_candidate",
        ),
        (
            "malformed candidate",
            http.patch(format!("{}{}", server.http_url, live.location))
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .body("a=mid:0\r\na=candidate:1 1 udp\r\n"),
            StatusCode::BAD_REQUEST,
            "invalid_candidate",
        ),
    ];
    for (what, req, status, code) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(problem(res).await, (status, code.to_owned()), "{what}");
    }
    // A refused token names its WWW-Authenticate scheme.
    let res = post("application/sdp", live.offer.clone().into_bytes())
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(header(res.headers(), "www-authenticate"), "Bearer");

    // CORS preflight and the accepted media types.
    let res = http
        .request(reqwest::Method::OPTIONS, &base)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(res.headers(), "accept-post"), "application/sdp");
    assert_eq!(header(res.headers(), "access-control-allow-origin"), "*");

    // None of that left a participant behind, and the live publisher still flows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let room = server.state.rooms().get("bad-room").expect("room");
    assert_eq!(room.num_participants, 2, "{:?}", room.participants);
    assert!(
        grows(&received, 50, Duration::from_secs(5)).await,
        "the live WHIP session stopped flowing"
    );
    for m in live.media {
        m.abort();
    }
    let _ = live.peer.pc.close().await;
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_needs_a_token_with_publish_outside_dev_mode() {
    use fanout_signaling::auth::{Grants, TokenAuthority};

    common::init_logging();
    let mut settings = common::dev_settings();
    settings.dev = false;
    settings.api_key = Some("key".into());
    settings.api_secret = Some("secret-secret-secret-secret-secret".into());
    let server = TestServer::start_settings(
        &settings,
        sfu::SfuConfig {
            media_bind: "127.0.0.1:0".parse().unwrap(),
            ..sfu::SfuConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/whip/tok-room", server.http_url);
    let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
    let send = |token: Option<String>| {
        let mut req = http
            .post(&url)
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let res = send(None).await.unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::UNAUTHORIZED, "token_missing".into())
    );

    let auth = TokenAuthority::new("key", "secret-secret-secret-secret-secret");
    let ttl = Duration::from_secs(60);
    let viewer_only = Grants {
        publish: false,
        ..Grants::default()
    };
    let token = auth
        .create("v", None, Some("tok-room"), viewer_only, ttl)
        .unwrap();
    let res = send(Some(token)).await.unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::FORBIDDEN, "publish_not_allowed".into())
    );
    let other_room = auth
        .create("p", None, Some("elsewhere"), Grants::default(), ttl)
        .unwrap();
    let res = send(Some(other_room.clone())).await.unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::FORBIDDEN, "token_wrong_room".into())
    );

    // With a publish token the session is created, and only that token may end it.
    let token = auth
        .create(
            "cam-1",
            Some("Camera 1"),
            Some("tok-room"),
            Grants::default(),
            ttl,
        )
        .unwrap();
    let whip = publish(&http, &url, Some(&token)).await;
    // WHEP checks the token before it says whether a room or participant exists (no leak).
    let whep_offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
    for (path, token, want) in [
        (
            "tok-room/nobody",
            None,
            (StatusCode::UNAUTHORIZED, "token_missing"),
        ),
        (
            "no-such-room/x",
            None,
            (StatusCode::UNAUTHORIZED, "token_missing"),
        ),
        (
            "tok-room/nobody",
            Some(&other_room),
            (StatusCode::FORBIDDEN, "token_wrong_room"),
        ),
    ] {
        let mut req = http.post(format!("{}/whep/{path}", server.http_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req
            .header(CONTENT_TYPE, "application/sdp")
            .body(whep_offer)
            .send();
        assert_eq!(
            problem(res.await.unwrap()).await,
            (want.0, want.1.into()),
            "{path}"
        );
    }
    let res = http
        .delete(format!("{}{}", server.http_url, whip.location))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::UNAUTHORIZED, "token_missing".into())
    );
    let res = http
        .delete(format!("{}{}", server.http_url, whip.location))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for m in whip.media {
        m.abort();
    }
    let _ = whip.peer.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_plays_the_participant_it_names_and_only_that_one() {
    common::init_logging();
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let room = "whep-room";
    let alice = RtcClient::join(server.ws_url(), room, "alice").await;
    let alice_media = vec![
        common::publish_synthetic(&alice, RtpCodecKind::Audio, SIGNAL_TIMEOUT).await,
        common::publish_synthetic(&alice, RtpCodecKind::Video, SIGNAL_TIMEOUT).await,
    ];
    let bob = RtcClient::join(server.ws_url(), room, "bob").await;
    let bob_media = common::publish_synthetic(&bob, RtpCodecKind::Video, SIGNAL_TIMEOUT).await;
    wait_tracks(&server, room, &alice.participant_id, 2).await;
    let bob_tracks = wait_tracks(&server, room, &bob.participant_id, 1).await;

    let base = format!("{}/whep/{room}", server.http_url);
    let (mut viewer, status, headers, answer) =
        play(&http, &format!("{base}/{}", alice.participant_id)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let location = header(&headers, "location");
    assert!(
        location.starts_with(&format!("/whep/{room}/{}/PA_", alice.participant_id)),
        "{location}"
    );
    assert_eq!(answer.matches("a=sendonly").count(), 2, "{answer}");
    assert!(
        answer.contains(&format!("a=msid:{} ", alice.participant_id)),
        "{answer}"
    );
    assert!(!answer.contains(&bob.participant_id), "{answer}");

    // Both of alice's tracks arrive, and nothing of bob's.
    let (received, streams) = count_tracks(&mut viewer, 2).await;
    assert!(
        streams.iter().all(|s| *s == alice.participant_id),
        "{streams:?}"
    );
    assert!(
        grows(&received, 150, Duration::from_secs(10)).await,
        "the WHEP viewer received {} packets",
        received.load(Ordering::Relaxed)
    );

    // A track id names its publisher too; a viewer by bob's track plays bob.
    let (other, status, _, answer) = play(&http, &format!("{base}/{}", bob_tracks[0])).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(
        answer.contains(&format!("a=msid:{} ", bob.participant_id)),
        "{answer}"
    );
    let _ = other.pc.close().await;

    // Wrong targets and offers.
    let (p, status, _, body) = play(&http, &format!("{base}/PA_nobody")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("unknown_participant"), "{body}");
    let _ = p.pc.close().await;
    let (p, status, _, body) = play(&http, &format!("{}/whep/no-room/x", server.http_url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("room_not_found"), "{body}");
    let _ = p.pc.close().await;
    let quiet = RtcClient::join(server.ws_url(), room, "quiet").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (p, status, _, body) = play(&http, &format!("{base}/{}", quiet.participant_id)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let _ = p.pc.close().await;
    let res = http
        .post(format!("{base}/{}", alice.participant_id))
        .header(CONTENT_TYPE, "application/sdp")
        .body("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_sdp".into())
    );

    // DELETE ends the session; the WHIP path does not know it.
    let res = http
        .delete(format!(
            "{}/whip/{room}/{}",
            server.http_url,
            location.rsplit('/').next().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(res).await,
        (StatusCode::NOT_FOUND, "unknown_session".into())
    );
    let res = http
        .delete(format!("{}{location}", server.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let _ = viewer.pc.close().await;
    for m in alice_media {
        m.abort();
    }
    bob_media.abort();
    quiet.close().await;
    alice.close().await;
    bob.close().await;
}

/// Restarts the ICE of a WHIP or WHEP client peer through `PATCH` (RFC 9725 section 4.4.1.1):
/// a new offer with new credentials, the fragment sent with `If-Match: *`, the server's
/// fragment applied as the new answer. Returns the new entity tag.
async fn restart_ice(
    http: &reqwest::Client,
    url: &str,
    peer: &ClientPeer,
    old_etag: &str,
) -> String {
    use rtc::peer_connection::configuration::RTCOfferOptions;
    let answer_before = peer.pc.remote_description().await.unwrap().sdp;
    let offer_before = peer.pc.local_description().await.unwrap().sdp;
    let offer = peer
        .pc
        .create_offer(Some(RTCOfferOptions { ice_restart: true }))
        .await
        .expect("restart offer");
    peer.pc
        .set_local_description(offer.clone())
        .await
        .expect("local restart offer");
    let (ufrag, pwd) = (
        attribute(&offer.sdp, "ice-ufrag"),
        attribute(&offer.sdp, "ice-pwd"),
    );
    assert_ne!(ufrag, attribute(&offer_before, "ice-ufrag"));
    let res = http
        .patch(url)
        .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
        .header("if-match", "*")
        .body(format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    let headers = res.headers().clone();
    assert_eq!(
        header(&headers, "content-type"),
        "application/trickle-ice-sdpfrag"
    );
    let etag = header(&headers, "etag");
    assert!(
        etag.starts_with('"') && etag != old_etag,
        "ETag {etag} after {old_etag}"
    );
    let frag = res.text().await.unwrap();
    // The server's credentials stay (its ufrag is what the shared port demultiplexes on); its
    // candidates come along, for the first (bundled) media section.
    assert_eq!(
        attribute(&frag, "ice-ufrag"),
        attribute(&answer_before, "ice-ufrag")
    );
    assert_eq!(
        attribute(&frag, "ice-pwd"),
        attribute(&answer_before, "ice-pwd")
    );
    assert!(frag.contains("\r\nm="), "{frag}");
    assert!(attribute(&frag, "mid").len() < 4, "{frag}");
    assert!(frag.contains("typ host"), "{frag}");
    assert!(frag.trim_end().ends_with("a=end-of-candidates"), "{frag}");
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer_before).unwrap())
        .await
        .expect("the server's answer applies again");
    etag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_ice_restarts_keep_the_media_flowing() {
    common::init_logging();
    let server = TestServer::start_consent(5).await;
    let http = reqwest::Client::new();
    let room = "restart-room";
    let mut whip = publish(&http, &format!("{}/whip/{room}", server.http_url), None).await;
    let publisher = whip.location.rsplit('/').next().unwrap().to_owned();
    wait_tracks(&server, room, &publisher, 2).await;
    let (mut viewer, status, headers, answer) = play(
        &http,
        &format!("{}/whep/{room}/{publisher}", server.http_url),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let whep_location = header(&headers, "location");
    let whep_etag = header(&headers, "etag");
    let (received, _) = count_tracks(&mut viewer, 2).await;
    assert!(grows(&received, 100, SIGNAL_TIMEOUT).await, "media before");

    // Both ends restart: the publisher over WHIP, the viewer over WHEP.
    let whip_url = format!("{}{}", server.http_url, whip.location);
    let whep_url = format!("{}{whep_location}", server.http_url);
    let whip_etag = restart_ice(&http, &whip_url, &whip.peer, &whip.etag).await;
    let whep_etag_2 = restart_ice(&http, &whep_url, &viewer, &whep_etag).await;

    // The old entity tags name an ICE session that is gone; the new ones trickle.
    for (url, old, new) in [
        (&whip_url, &whip.etag, &whip_etag),
        (&whep_url, &whep_etag, &whep_etag_2),
    ] {
        let trickle = |tag: &str| {
            http.patch(url)
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .header("if-match", tag)
                .body("a=end-of-candidates\r\n")
                .send()
        };
        assert_eq!(
            problem(trickle(old).await.unwrap()).await,
            (StatusCode::PRECONDITION_FAILED, "invalid_candidate".into())
        );
        assert_eq!(trickle(new).await.unwrap().status(), StatusCode::NO_CONTENT);
    }

    // Media keeps flowing publisher -> server -> viewer on the new credentials, well past the
    // server's consent timeout (5 s here) of the old ones.
    for _ in 0..3 {
        assert!(
            grows(&received, 50, SIGNAL_TIMEOUT).await,
            "the WHEP viewer receives after both restarts ({})",
            received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    assert_eq!(
        server
            .state
            .rooms()
            .get(room)
            .expect("room")
            .num_participants,
        2
    );
    for m in whip.media.drain(..) {
        m.abort();
    }
    let _ = viewer.pc.close().await;
    let _ = whip.peer.pc.close().await;
}
