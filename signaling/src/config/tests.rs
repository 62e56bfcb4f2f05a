//! Tests of loading settings: files, environment, overrides, validation, redaction.

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn dev() -> Overrides {
    let mut o = Overrides::default();
    o.set("dev", true);
    o
}

#[test]
fn defaults_are_valid_in_dev_and_bind_loopback() {
    let s = load(None, env(&[]), &dev()).unwrap();
    assert_eq!(s.bind, "127.0.0.1:7880".parse::<SocketAddr>().unwrap());
    assert_eq!(
        s.media_bind(),
        "127.0.0.1:7882".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(s.announce_ips(), vec![IpAddr::from([127, 0, 0, 1])]);
}

#[test]
fn outside_dev_keys_are_required() {
    let err = load(None, env(&[]), &Overrides::default()).unwrap_err();
    assert!(err.0.contains("`api_key`"), "{err}");
    let ok = load(
        None,
        env(&[("FANOUT_API_KEY", "k1"), ("FANOUT_API_SECRET", SECRET)]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(ok.api_key.as_deref(), Some("k1"));
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("FANOUT_UDP_PORT", "seventy")], "udp_port"),
        (&[("FANOUT_UDP_PORT", "70000")], "udp_port"),
        (&[("FANOUT_BIND", "nowhere")], "bind"),
        (&[("FANOUT_DRAIN_TIMEOUT", "soon")], "drain_timeout"),
        (&[("FANOUT_CONSENT_TIMEOUT", "2s")], "consent_timeout"),
        (&[("FANOUT_TURN_HOST", "bad host/")], "turn_host"),
        (&[("FANOUT_CONSENT_TIMEOUT", "1h")], "consent_timeout"),
        (
            &[("FANOUT_API_SECRET", "short"), ("FANOUT_API_KEY", "k")],
            "api_secret",
        ),
        (&[("FANOUT_MEDIA_DRIVERS", "0")], "media_drivers"),
        (&[("FANOUT_ANNOUNCE_IPS", "0.0.0.0")], "announce_ips"),
        (&[("FANOUT_WEBHOOK_URLS", "ftp://x")], "webhook_urls"),
        (&[("FANOUT_LOG", "info,[")], "log"),
        (&[("FANOUT_TLS_CERT", "/nonexistent.pem")], "tls_key"),
        (&[("FANOUT_NAT_MAP", "10.0.0.5")], "nat_map"),
        (&[("FANOUT_NAT_MAP", "10.0.0.5=::1")], "nat_map"),
        (&[("FANOUT_NAT_MAP", "0.0.0.0=192.0.2.1")], "nat_map"),
        (
            &[("FANOUT_ANNOUNCE_STUN", "stun:host:port")],
            "announce_stun",
        ),
        (
            &[
                ("FANOUT_ANNOUNCE_STUN", "stun:192.0.2.9"),
                ("FANOUT_ANNOUNCE_IPS", "192.0.2.1"),
            ],
            "announce_stun",
        ),
        (
            &[("FANOUT_DATA_MAX_RELIABLE", "300000")],
            "data_max_reliable",
        ),
        (&[("FANOUT_DATA_MAX_LOSSY", "20000")], "data_max_lossy"),
        (
            &[("FANOUT_DATA_RELIABLE_BACKLOG", "1000")],
            "data_reliable_backlog",
        ),
        (
            &[("FANOUT_DATA_LOSSY_BACKLOG", "100")],
            "data_lossy_backlog",
        ),
        (&[("FANOUT_RECORDINGS_DIR", "")], "recordings_dir"),
        // A file, not a directory.
        (&[("FANOUT_RECORDINGS_DIR", "Cargo.toml")], "recordings_dir"),
    ];
    for (vars, key) in cases {
        let err = load(None, env(vars), &dev()).unwrap_err();
        assert!(err.0.contains(key), "{vars:?}: {err}");
    }
}

#[test]
fn nat_map_replaces_the_private_addresses_it_names() {
    let s = load(
        None,
        env(&[
            ("FANOUT_MEDIA_IP", "10.0.0.5"),
            (
                "FANOUT_NAT_MAP",
                "10.0.0.5=203.0.113.10, 10.9.9.9=198.51.100.1",
            ),
        ]),
        &dev(),
    )
    .unwrap();
    assert_eq!(s.announce_ips(), vec![IpAddr::from([203, 0, 113, 10])]);
    // Explicit announcements are mapped too; unmapped ones stay; duplicates go.
    let s = Settings {
        announce_ips: vec![
            "10.0.0.5".parse().unwrap(),
            "192.0.2.4".parse().unwrap(),
            "203.0.113.10".parse().unwrap(),
        ],
        ..s
    };
    assert_eq!(
        s.announce_ips(),
        vec![
            IpAddr::from([203, 0, 113, 10]),
            IpAddr::from([192, 0, 2, 4])
        ]
    );
}

#[test]
fn lists_and_durations_from_the_environment() {
    let s = load(
        None,
        env(&[
            ("FANOUT_ANNOUNCE_IPS", "203.0.113.5,198.51.100.7"),
            ("FANOUT_DRAIN_TIMEOUT", "90s"),
            ("FANOUT_ROOM_DEPARTURE_TIMEOUT", "7"),
            ("FANOUT_BIN", "/somewhere/fanout"),
        ]),
        &dev(),
    )
    .unwrap();
    assert_eq!(s.announce_ips.len(), 2);
    assert_eq!(s.drain_timeout, Duration::from_secs(90));
    assert_eq!(s.room_departure_timeout, Duration::from_secs(7));
}

#[test]
fn multi_node_settings_are_checked() {
    let mut o = dev();
    o.set("redis_url", "redis://127.0.0.1:6379/0");
    let e = load(None, env(&[]), &o).unwrap_err().to_string();
    assert!(e.contains("`api_key`") && e.contains("multi-node"), "{e}");
    o.set("api_key", "key");
    o.set("api_secret", SECRET);
    let s = load(None, env(&[]), &o).unwrap();
    assert_eq!(s.room_placement, Placement::LeastLoaded);
    for (key, value, named) in [
        ("redis_url", "http://127.0.0.1:6379", "`redis_url`"),
        ("redis_url", "rediss://127.0.0.1:6379", "`redis_url`"),
        ("node_url", "ftp://10.0.0.5", "`node_url`"),
        ("node_url", "http://10.0.0.5:7880/ws", "`node_url`"),
        ("node_id", "a b", "`node_id`"),
        ("redis_prefix", "", "`redis_prefix`"),
        ("room_placement", "random", "room_placement"),
    ] {
        let mut bad = o.clone();
        bad.set(key, value);
        let e = load(None, env(&[]), &bad).unwrap_err().to_string();
        assert!(e.contains(named), "{key}={value}: {e}");
    }
    let mut ok = o.clone();
    ok.set("room_placement", "this-node-first");
    ok.set("node_url", "http://10.0.0.5:7880");
    ok.set("redis_url", "redis://:pw-secret@127.0.0.1:6379");
    let s = load(None, env(&[]), &ok).unwrap();
    assert_eq!(s.room_placement, Placement::ThisNodeFirst);
    assert!(!s.to_redacted_toml().contains("pw-secret"));
}

#[test]
fn turn_over_tls_takes_its_own_certificate_or_the_server_s() {
    let dir = std::env::temp_dir().join(format!("fanout-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, "cert").unwrap();
    std::fs::write(&key, "key").unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut o = dev();
    o.set("turn_tls_port", "5349");
    let e = load(None, env(&[]), &o).unwrap_err().to_string();
    assert!(
        e.contains("`turn_tls_port`") && e.contains("turn_tls_cert"),
        "{e}"
    );
    let mut half = o.clone();
    half.set("turn_tls_cert", cert);
    let e = load(None, env(&[]), &half).unwrap_err().to_string();
    assert!(e.contains("`turn_tls_key`"), "{e}");
    let mut missing = half.clone();
    missing.set("turn_tls_key", "/nonexistent/key.pem");
    let e = load(None, env(&[]), &missing).unwrap_err().to_string();
    assert!(
        e.contains("`turn_tls_key`") && e.contains("readable"),
        "{e}"
    );
    // Its own certificate: HTTP stays plain, so multi-node mode (which refuses tls_cert)
    // may run TURN over TLS.
    let mut own = half.clone();
    own.set("turn_tls_key", key);
    own.set("redis_url", "redis://127.0.0.1:6379");
    own.set("api_key", "key");
    own.set("api_secret", SECRET);
    let s = load(None, env(&[]), &own).unwrap();
    assert!(!s.tls());
    assert_eq!(s.turn_tls_cert.as_deref(), Some(Path::new(cert)));
    // The server's certificate serves TURN over TLS too.
    let mut shared = o.clone();
    shared.set("tls_cert", cert);
    shared.set("tls_key", key);
    assert!(load(None, env(&[]), &shared).unwrap().tls());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn redacted_output_hides_the_secret_and_parses_back() {
    let mut o = dev();
    o.set("api_key", "key");
    o.set("api_secret", SECRET);
    let s = load(None, env(&[]), &o).unwrap();
    let text = s.to_redacted_toml();
    assert!(!text.contains(SECRET));
    assert!(text.contains(REDACTED));
    let back: Settings = toml::from_str(&text).unwrap();
    assert_eq!(back.drain_timeout, s.drain_timeout);
    assert_eq!(back.bind, s.bind);
}
