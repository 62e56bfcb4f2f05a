//! The real `fanout` binary: configuration precedence and errors, `fanout config`, `fanout token
//! create`, graceful drain on SIGTERM during a call, and HTTPS/WSS from a configured
//! certificate.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::Server;
use common::{count_received, grows, publish_synthetic, RtcClient, SignalingClient};
use fanout_signaling::auth::TokenAuthority;
use fanout_signaling::server::install_crypto_provider;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

const BIN: &str = env!("CARGO_BIN_EXE_fanout");
const KEY: &str = "binkey";
const SECRET: &str = "binary-test-secret-binary-test-secret";
const T: Duration = Duration::from_secs(10);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fanout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `fanout ARGS` with only the given FANOUT_ variables (the test's own environment may hold
/// others).
fn fanout(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANOUT_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("fanout runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn value_of(toml: &str, key: &str) -> Option<String> {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim_matches('"').to_owned())
}

#[test]
fn configuration_precedence_defaults_file_env_flags() {
    let dir = temp_dir("config");
    let yaml = dir.join("fanout.yaml");
    std::fs::write(
        &yaml,
        format!("udp_port: 1111\napi_key: filekey\napi_secret: {SECRET}\ndrain_timeout: 45s\nmax_participants: 9\n"),
    )
    .unwrap();
    let file = yaml.to_str().unwrap();
    // Defaults (in --dev, where no keys are needed).
    let o = fanout(&["config", "--dev"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(value_of(&stdout(&o), "udp_port").as_deref(), Some("7882"));
    assert_eq!(
        value_of(&stdout(&o), "bind").as_deref(),
        Some("127.0.0.1:7880")
    );
    // The file over the defaults; the secret never printed.
    let o = fanout(&["config", "--config", file], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(value_of(&out, "udp_port").as_deref(), Some("1111"));
    assert_eq!(value_of(&out, "drain_timeout").as_deref(), Some("45s"));
    assert_eq!(value_of(&out, "api_key").as_deref(), Some("filekey"));
    assert_eq!(value_of(&out, "api_secret").as_deref(), Some("<redacted>"));
    assert!(!out.contains(SECRET));
    // The environment over the file, flags over the environment.
    let env = [
        ("FANOUT_UDP_PORT", "2222"),
        ("FANOUT_MAX_PARTICIPANTS", "3"),
    ];
    let o = fanout(&["config", "--config", file], &env);
    assert_eq!(value_of(&stdout(&o), "udp_port").as_deref(), Some("2222"));
    assert_eq!(
        value_of(&stdout(&o), "max_participants").as_deref(),
        Some("3")
    );
    let o = fanout(&["config", "--config", file, "--udp-port", "3333"], &env);
    assert_eq!(value_of(&stdout(&o), "udp_port").as_deref(), Some("3333"));
    assert_eq!(
        value_of(&stdout(&o), "max_participants").as_deref(),
        Some("3")
    );
    // The config file's path from the environment; TOML works as well as YAML.
    let toml_file = dir.join("fanout.toml");
    std::fs::write(&toml_file, stdout(&o).replace("<redacted>", SECRET)).unwrap();
    let o = fanout(
        &["config"],
        &[("FANOUT_CONFIG", toml_file.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(value_of(&stdout(&o), "udp_port").as_deref(), Some("3333"));
}

#[test]
fn bad_configuration_stops_with_the_key_named() {
    let dir = temp_dir("badconfig");
    let typo = dir.join("typo.yaml");
    std::fs::write(&typo, "udp_prot: 1111\n").unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, "udp_port: [\n").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["serve", "--dev"],
            vec![("FANOUT_UDP_PORT", "abc")],
            "udp_port",
        ),
        (vec!["serve", "--dev", "--bind", "here"], vec![], "bind"),
        (
            vec!["serve", "--dev", "--drain-timeout", "later"],
            vec![],
            "drain_timeout",
        ),
        (vec!["serve"], vec![], "api_key"),
        (
            vec!["serve", "--dev", "--api-key", "k", "--api-secret", "short"],
            vec![],
            "api_secret",
        ),
        (
            vec![
                "serve",
                "--dev",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            vec![],
            "tls_cert",
        ),
        (
            vec!["config", "--dev", "--config", typo.to_str().unwrap()],
            vec![],
            "unknown key `udp_prot`",
        ),
        (
            vec!["config", "--dev", "--config", broken.to_str().unwrap()],
            vec![],
            "broken.yaml",
        ),
        (
            vec!["config", "--dev", "--config", "/nonexistent.yaml"],
            vec![],
            "does not exist",
        ),
    ];
    for (args, env, needle) in cases {
        let o = fanout(&args, &env);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: stderr {:?} lacks {needle:?}",
            stderr(&o)
        );
    }
}

#[test]
fn token_create_prints_a_token_the_server_accepts() {
    let env = [("FANOUT_API_KEY", KEY), ("FANOUT_API_SECRET", SECRET)];
    let o = fanout(
        &[
            "token",
            "create",
            "--room",
            "r",
            "--identity",
            "alice",
            "--name",
            "Alice",
            "--grants",
            "join,subscribe",
            "--ttl",
            "1h",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o);
    assert_eq!(token.lines().count(), 1);
    let claims = TokenAuthority::new(KEY, SECRET)
        .verify_join(Some(token.trim()), "r")
        .expect("the token verifies");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.name.as_deref(), Some("Alice"));
    assert!(claims.grants.join && claims.grants.subscribe && !claims.grants.publish);
    assert!((3590..=3610).contains(&(claims.exp - claims.iat)));
    let o = fanout(
        &[
            "token",
            "create",
            "--room",
            "r",
            "--identity",
            "a",
            "--sources",
            "camera,hologram",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hologram"));
    let o = fanout(&["token", "create", "--room", "r", "--identity", "a"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("api_key"), "{}", stderr(&o));
}

async fn get(url: &str) -> (u16, String) {
    install_crypto_provider();
    let r = reqwest::get(url).await.expect("http request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn token(identity: &str, room: &str) -> String {
    TokenAuthority::new(KEY, SECRET)
        .create(
            identity,
            Some(identity),
            Some(room),
            Default::default(),
            Duration::from_secs(600),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_on_sigterm_keeps_the_call_and_exits_zero_when_it_ends() {
    common::init_logging();
    let env = [("FANOUT_API_KEY", KEY), ("FANOUT_API_SECRET", SECRET)];
    let mut server = Server::start(&[], &env);
    assert_eq!(
        get(&format!("{}/readyz", server.base)).await,
        (200, "ready".into())
    );
    let mut sub = RtcClient::join_token(&server.ws, "call", "S", Some(&token("s", "call"))).await;
    let received = count_received(&mut sub);
    let publisher = RtcClient::join_token(&server.ws, "call", "P", Some(&token("p", "call"))).await;
    let sending = publish_synthetic(&publisher, RtpCodecKind::Video, T).await;
    assert!(
        grows(&received, 30, T).await,
        "media flows before the drain"
    );

    server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = get(&format!("{}/readyz", server.base)).await;
        if status == 503 {
            assert_eq!(body, "draining");
            break;
        }
        assert!(Instant::now() < deadline, "readiness fails at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(&format!("{}/healthz", server.base)).await.0,
        200,
        "still alive"
    );
    let mut late = SignalingClient::connect(&server.ws).await;
    let err = late
        .join_refused("call", Some(&token("late", "call")), true)
        .await;
    assert_eq!(err["code"], "server_draining");
    // The call goes on.
    assert!(
        grows(&received, 60, Duration::from_secs(5)).await,
        "media continues during the drain"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still running while the room is in use"
    );
    // The room empties: the process exits 0.
    sending.abort();
    publisher.close().await;
    sub.close().await;
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn healthcheck_probes_the_configured_server() {
    let server = Server::start(&["--dev"], &[]);
    let bind = server.base.trim_start_matches("http://").to_owned();
    let o = fanout(&["healthcheck"], &[("FANOUT_BIND", bind.as_str())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fanout(
        &["healthcheck", "--url", &format!("{}/healthz", server.base)],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(server);
    let o = fanout(
        &["healthcheck", "--timeout", "1"],
        &[("FANOUT_BIND", bind.as_str())],
    );
    assert_eq!(o.status.code(), Some(1), "nothing listens any more");
    assert!(stderr(&o).contains("/healthz"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_without_rooms_exits_promptly_and_the_timeout_ends_a_drain() {
    common::init_logging();
    let mut idle = Server::start(&["--dev"], &[]);
    let began = Instant::now();
    idle.signal("TERM");
    assert_eq!(idle.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(began.elapsed() < Duration::from_secs(5));

    let mut busy = Server::start(&["--dev", "--drain-timeout", "1s"], &[]);
    let mut client = SignalingClient::connect(&busy.ws).await;
    client.join("stays", "C").await;
    busy.signal("INT");
    let err = client.recv_type("error", Duration::from_secs(5)).await;
    assert_eq!(err["code"], "server_shutdown");
    assert_eq!(busy.wait_exit(Duration::from_secs(10)), Some(0));
}

fn write_certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let pem = cert.cert.pem();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &pem).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_wss_from_the_configured_certificate() {
    common::init_logging();
    install_crypto_provider();
    let dir = temp_dir("tls");
    let (cert, key, pem) = write_certificate(&dir);
    let server = Server::start(
        &[
            "--dev",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("https request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let o = fanout(
        &[
            "healthcheck",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "healthcheck over TLS: {}", stderr(&o));
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));

    // WSS: the signaling protocol over TLS.
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from(rcgen_der(&pem));
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
        .await
        .expect("websocket over TLS");
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"join","v":1,"room":"secure","name":"T"}"#.into(),
    ))
    .await
    .unwrap();
    // The first text frame (the server pings, too).
    let reply = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => return t,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["type"], "joined", "{reply}");
}

/// The DER bytes of a PEM certificate.
fn rcgen_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_room_and_participant_of_the_session() {
    let mut server = Server::start(&["--dev", "--log-format", "json", "--log", "info"], &[]);
    let mut client = SignalingClient::connect(&server.ws).await;
    let joined = client.join("logged", "L").await;
    let participant = joined["participant_id"].as_str().unwrap().to_owned();
    server.signal("TERM");
    drop(client);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let text = std::fs::read_to_string(&server.log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let joined_line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "joined" && l["span"]["name"] == "session")
        .unwrap_or_else(|| panic!("no `joined` line of a session span in {text}"));
    assert_eq!(joined_line["span"]["room"], "logged", "{joined_line}");
    assert_eq!(
        joined_line["span"]["participant"],
        participant.as_str(),
        "{joined_line}"
    );
    assert_eq!(joined_line["level"], "INFO");
}
