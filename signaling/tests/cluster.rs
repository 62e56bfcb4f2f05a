//! Multi-node mode with real processes: a real `redis-server` on a free loopback port and two
//! `fanout` nodes on 127.0.0.2 and 127.0.0.3 (HTTP and media on their own address, otherwise
//! default ports chosen by the OS), with real webrtc-rs clients. One room joined through both
//! nodes is one call; two joins racing to create a room end in one room; a node killed with
//! SIGKILL: its clients join again through the other node and the call resumes there; Redis
//! restarting empty loses nothing; a draining node takes no new rooms and its rooms move when
//! the drain ends; the admin API and WHIP work through either node; TURN over TLS runs on its
//! own certificate while HTTP stays plain.

mod common;

use std::time::{Duration, Instant};

use common::process::{Redis, Server};
use common::{
    admin_token, count_received, grows, publish_synthetic, ClientPeer, RtcClient, SignalingClient,
    SyntheticTrack,
};
use redis::AsyncCommands;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::Value;
use webrtc::peer_connection::RTCSessionDescription;

const KEY: &str = "clusterkey";
const SECRET: &str = "cluster-test-secret-cluster-test-secret";
const T: Duration = Duration::from_secs(10);

/// A node `id` on `ip` in the cluster of `redis`, with `args`.
fn node(id: &str, ip: &str, redis: &Redis, args: &[&str]) -> Server {
    let env = [("FANOUT_API_KEY", KEY), ("FANOUT_API_SECRET", SECRET)];
    let mut all = vec!["--dev", "--redis-url", &redis.url, "--node-id", id];
    if !args.contains(&"--turn-embedded") {
        all.extend_from_slice(&["--turn-embedded", "false"]);
    }
    all.extend_from_slice(args);
    Server::start_bind(&format!("{ip}:0"), &all, &env)
}

/// Nodes `node-a` on 127.0.0.2 and `node-b` on 127.0.0.3, registered, each placing new rooms on
/// itself (`this_node_first`), so a test knows where a room goes.
async fn placing_here(redis: &Redis) -> (Server, Server) {
    let args = ["--room-placement", "this-node-first"];
    let a = node("node-a", "127.0.0.2", redis, &args);
    let b = node("node-b", "127.0.0.3", redis, &args);
    wait_registered(redis, &["node-a", "node-b"]).await;
    (a, b)
}

async fn redis_conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test reaches Redis")
}

/// Waits until `key` holds `want` (`None`: is unset) in Redis.
async fn wait_key(redis: &Redis, key: &str, want: Option<&str>, within: Duration) {
    let mut conn = redis_conn(redis).await;
    let deadline = Instant::now() + within;
    loop {
        let got: Option<String> = conn.get(key).await.unwrap_or(None);
        if got.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is {got:?}, not {want:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node in `ids` is registered.
async fn wait_registered(redis: &Redis, ids: &[&str]) {
    for id in ids {
        let mut conn = redis_conn(redis).await;
        let deadline = Instant::now() + T;
        loop {
            let entry: Option<String> = conn.get(format!("fanout:node:{id}")).await.unwrap_or(None);
            if entry.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "node {id} did not register");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn names(joined: &Value) -> Vec<String> {
    let mut names: Vec<String> = joined["participants"]
        .as_array()
        .expect("joined lists participants")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_joined_through_two_nodes_is_one_call() {
    common::init_logging();
    let redis = Redis::start();
    let (a, b) = placing_here(&redis).await;

    // The first join reaches node B: the room is placed there.
    let mut sub = RtcClient::join(&b.ws, "call", "S").await;
    wait_key(&redis, "fanout:room:call", Some("node-b"), T).await;
    let received = count_received(&mut sub);
    // The second reaches node A, which proxies it to B: the same room.
    let publisher = RtcClient::join(&a.ws, "call", "P").await;
    assert_eq!(names(&publisher.joined), ["S"], "P joined S's room");
    let sending = publish_synthetic(&publisher, RtpCodecKind::Video, T).await;
    assert!(
        grows(&received, 50, T).await,
        "S receives P's media\n--- node A:\n{}\n--- node B:\n{}",
        a.log_tail(30),
        b.log_tail(30)
    );
    // A join with a bad token is refused by the node it reaches: no room placed for it.
    let mut bad = SignalingClient::connect(&a.ws).await;
    let err = bad.join_refused("nowhere", Some("not-a-token"), true).await;
    assert_eq!(err["code"], "token_malformed", "{err}");
    wait_key(&redis, "fanout:room:nowhere", None, T).await;
    // A relays P's session; both nodes reach the directory.
    fanout_signaling::server::install_crypto_provider();
    let metrics = reqwest::get(format!("{}/metrics", a.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fanout_proxied_sessions 1"), "{metrics}");
    assert!(
        metrics.contains("fanout_cluster_directory_up 1"),
        "{metrics}"
    );
    sending.abort();
    publisher.close().await;
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_to_create_a_room_on_two_nodes_end_in_one_room() {
    common::init_logging();
    let redis = Redis::start();
    // Each node would place a new room on itself: only the atomic claim keeps them together.
    let (a, b) = placing_here(&redis).await;
    for round in 0..5 {
        let room = format!("race-{round}");
        let mut x = SignalingClient::connect(&a.ws).await;
        let mut y = SignalingClient::connect(&b.ws).await;
        let (jx, jy) = tokio::join!(x.join(&room, "X"), y.join(&room, "Y"));
        let seen = names(&jx).len() + names(&jy).len();
        assert_eq!(
            seen, 1,
            "{room}: exactly one of the two saw the other in `joined`: {jx} / {jy}"
        );
        // The one that joined first is told about the other.
        let first = if names(&jx).is_empty() {
            &mut x
        } else {
            &mut y
        };
        let joined = first.recv_type("participant_joined", T).await;
        assert!(joined.to_string().contains('X') || joined.to_string().contains('Y'));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_call_resumes_on_another_node() {
    common::init_logging();
    let redis = Redis::start();
    let (mut a, b) = placing_here(&redis).await;

    // The room is on A; P's signaling goes through B (proxied), S's straight to A.
    let mut sub = RtcClient::join(&a.ws, "call", "S").await;
    wait_key(&redis, "fanout:room:call", Some("node-a"), T).await;
    let received = count_received(&mut sub);
    let mut publisher = RtcClient::join(&b.ws, "call", "P").await;
    let sending = publish_synthetic(&publisher, RtpCodecKind::Video, T).await;
    assert!(grows(&received, 30, T).await, "the call runs on A");

    a.kill();
    let killed = Instant::now();
    // The proxy tells P its room's node is gone.
    let err = publisher.recv_type("error", T).await;
    assert_eq!(err["code"], "node_lost", "{err}");
    sending.abort();
    publisher.close().await;
    sub.close().await;

    // Both join again through B, which places the room anew once A's entry expired.
    let mut sub = RtcClient::join(&b.ws, "call", "S").await;
    let rejoined = killed.elapsed();
    let received = count_received(&mut sub);
    let publisher = RtcClient::join(&b.ws, "call", "P").await;
    assert_eq!(names(&publisher.joined), ["S"]);
    let sending = publish_synthetic(&publisher, RtpCodecKind::Video, T).await;
    assert!(grows(&received, 30, T).await, "the call resumes on B");
    let resumed = killed.elapsed();
    println!("node killed: rejoined after {rejoined:?}, media again after {resumed:?}");
    wait_key(&redis, "fanout:room:call", Some("node-b"), T).await;
    sending.abort();
    publisher.close().await;
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_loses_nothing_the_nodes_cannot_register_again() {
    common::init_logging();
    let mut redis = Redis::start();
    let (a, b) = placing_here(&redis).await;
    let mut sub = RtcClient::join(&a.ws, "call", "S").await;
    let received = count_received(&mut sub);
    let publisher = RtcClient::join(&b.ws, "call", "P").await;
    let sending = publish_synthetic(&publisher, RtpCodecKind::Video, T).await;
    assert!(grows(&received, 30, T).await, "the call runs");

    redis.restart();
    // Within a heartbeat or two: both nodes and the room's claim are back.
    wait_registered(&redis, &["node-a", "node-b"]).await;
    wait_key(&redis, "fanout:room:call", Some("node-a"), T).await;
    assert!(
        grows(&received, 30, T).await,
        "the call went on while Redis was away"
    );
    // A join through B still finds the room.
    let mut late = SignalingClient::connect(&b.ws).await;
    let joined = late.join("call", "Q").await;
    assert_eq!(names(&joined), ["P", "S"]);
    sending.abort();
    publisher.close().await;
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_rooms_and_its_rooms_move_when_the_drain_ends() {
    common::init_logging();
    let redis = Redis::start();
    let mut a = node("node-a", "127.0.0.2", &redis, &["--drain-timeout", "3s"]);
    let b = node("node-b", "127.0.0.3", &redis, &[]);
    wait_registered(&redis, &["node-a", "node-b"]).await;
    // Least loaded, both idle: the first room goes to the first node by id, A.
    // (Clients that must stay in their rooms are RtcClients: their task answers the pings.)
    let mut s = RtcClient::join(&a.ws, "held", "S").await;
    wait_key(&redis, "fanout:room:held", Some("node-a"), T).await;
    let mut conn = redis_conn(&redis).await;
    let (host, other) = (&mut a, &b);
    // B gets busier than A (two participants against one): once A reported S, a new room
    // goes to B, the less loaded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy1 = RtcClient::join(&other.ws, "busy", "B1").await;
    let busy2 = RtcClient::join(&other.ws, "busy", "B2").await;
    wait_key(&redis, "fanout:room:busy", Some("node-b"), T).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // both loads reported

    fanout_signaling::server::install_crypto_provider();
    host.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = reqwest::get(format!("{}/readyz", host.base))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readiness fails at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the draining flag reported
                                                           // A new room through the draining node: sent back to the load balancer.
    let mut late = SignalingClient::connect(&host.ws).await;
    let err = late.join_refused("fresh", None, true).await;
    assert_eq!(err["code"], "server_draining", "{err}");
    // A new room through B goes to B, though A is less loaded: A is draining.
    let mut fresh = SignalingClient::connect(&other.ws).await;
    fresh.join("fresh", "F").await;
    wait_key(&redis, "fanout:room:fresh", Some("node-b"), T).await;
    // A join for A's room through B still reaches it: the room finishes where it is.
    let joiner = RtcClient::join(&other.ws, "held", "J").await;
    assert_eq!(names(&joiner.joined), ["S"]);

    // The drain timeout ends it: the room's participants are disconnected, A leaves the
    // directory, and the room, joined again through B, is placed on B.
    let bye = s.recv_type("error", T).await;
    assert_eq!(bye["code"], "server_shutdown", "{bye}");
    assert_eq!(host.wait_exit(T), Some(0));
    let entry: Option<String> = conn.get("fanout:node:node-a").await.unwrap();
    assert_eq!(entry, None, "A left the directory");
    let mut again = SignalingClient::connect(&other.ws).await;
    again.join("held", "S").await;
    wait_key(&redis, "fanout:room:held", Some("node-b"), T).await;
    for c in [s, busy1, busy2, joiner] {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_and_whip_work_through_any_node() {
    common::init_logging();
    fanout_signaling::server::install_crypto_provider();
    let redis = Redis::start();
    let (a, b) = placing_here(&redis).await;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", admin_token(KEY, SECRET, None));

    // A room created through A lives on A; B lists it, shows it and deletes it.
    let res = http
        .post(format!("{}/api/rooms", a.base))
        .header("authorization", &auth)
        .json(&serde_json::json!({ "name": "ops-room" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    wait_key(&redis, "fanout:room:ops-room", Some("node-a"), T).await;
    let mut sub = RtcClient::join(&b.ws, "whip-room", "S").await; // a room on B
    let list: Value = http
        .get(format!("{}/api/rooms", b.base))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rooms: Vec<(String, String)> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        [
            ("ops-room".to_owned(), "node-a".to_owned()),
            ("whip-room".to_owned(), "node-b".to_owned())
        ],
        "{list}"
    );
    assert_eq!(list["unreachable_nodes"], serde_json::json!([]));
    let one = http
        .get(format!("{}/api/rooms/ops-room", b.base))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let res = http
        .delete(format!("{}/api/rooms/ops-room", b.base))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let gone = http
        .get(format!("{}/api/rooms/ops-room", a.base))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "deleted on its node");

    // A WHIP publisher posting through A joins the room on B, and its media reaches S there.
    let received = count_received(&mut sub);
    let peer = ClientPeer::new().await;
    let video = SyntheticTrack::add(&peer.pc, "whip", RtpCodecKind::Video).await;
    let offer = peer.pc.create_offer(None).await.unwrap();
    peer.pc.set_local_description(offer.clone()).await.unwrap();
    let res = http
        .post(format!("{}/whip/whip-room?name=OBS", a.base))
        .header("content-type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let answer = res.text().await.unwrap();
    assert!(answer.contains("127.0.0.3"), "B's media address: {answer}");
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    let sending = video.start().await;
    let joined = sub.recv_type("participant_joined", T).await;
    assert_eq!(joined["participant"]["name"], "OBS");
    assert!(
        grows(&received, 30, T).await,
        "S receives the WHIP publisher"
    );
    // The session resource, reached through A, ends it on B.
    let res = http
        .delete(format!("{}{location}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    sub.recv_type("participant_left", T).await;
    sending.abort();
    let _ = peer.pc.close().await;
    sub.close().await;
}

/// The `turns:` URL among the ICE servers of `joined`: (host, port).
fn turns_url(joined: &Value) -> Option<(String, u16)> {
    let servers = joined["ice_servers"].as_array()?;
    servers
        .iter()
        .flat_map(|s| match &s["urls"] {
            Value::String(u) => vec![u.clone()],
            Value::Array(us) => us
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        })
        .find_map(|u| {
            let rest = u.strip_prefix("turns:")?;
            let hostport = rest.split('?').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_runs_on_its_own_certificate_in_multi_node_mode() {
    // Multi-node mode refuses tls_cert (HTTP between the nodes is plain); TURN over TLS takes
    // turn_tls_cert instead, as in a pod behind an ingress that terminates HTTPS.
    use rtc::stun::message::{Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use tokio::io::AsyncWriteExt;

    common::init_logging();
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!("fanout-cluster-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["turn.test".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("turn.pem"), dir.join("turn-key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let a = node(
        "node-a",
        "127.0.0.2",
        &redis,
        &[
            "--room-placement",
            "this-node-first",
            "--turn-embedded",
            "true",
            "--turn-port",
            "0",
            "--turn-tls-port",
            "0",
            "--turn-relay-ports",
            "51500-51519",
            "--turn-host",
            "turn.test",
            "--turn-tls-cert",
            cert_path.to_str().unwrap(),
            "--turn-tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let b = node("node-b", "127.0.0.3", &redis, &[]);
    wait_registered(&redis, &["node-a", "node-b"]).await;
    assert!(
        a.base.starts_with("http://"),
        "HTTP stays plain: {}",
        a.base
    );

    // The room is on A; a join through B is relayed there and gets A's TURN servers.
    let mut first = SignalingClient::connect(&a.ws).await;
    first.join("tls-room", "first").await;
    wait_key(&redis, "fanout:room:tls-room", Some("node-a"), T).await;
    let mut second = SignalingClient::connect(&b.ws).await;
    let joined = second.join("tls-room", "second").await;
    assert_eq!(names(&joined), ["first"], "{joined}");
    let (host, port) = turns_url(&joined).unwrap_or_else(|| panic!("a turns: URL in {joined}"));
    assert_eq!(host, "turn.test");

    // A TLS client that trusts only that certificate (checked for turn.test) gets a Binding
    // answer on A's TURN TLS port.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    fanout_signaling::server::install_crypto_provider();
    let client_tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.2", port))
        .await
        .expect("A's TURN TLS port");
    let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls))
        .connect(
            rustls::pki_types::ServerName::try_from("turn.test").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake with the TURN certificate");
    let mut req = Message::new();
    req.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .unwrap();
    stream.write_all(&req.raw).await.unwrap();
    let res = tokio::time::timeout(T, common::read_stun(&mut stream))
        .await
        .expect("a Binding answer over TLS");
    assert_eq!(res.typ, BINDING_SUCCESS);
    assert_eq!(res.transaction_id, req.transaction_id);
    std::fs::remove_dir_all(&dir).unwrap();
}
