//! The CI smoke scenario of the load tester: 1 room, 2 publishers (audio + three simulcast
//! layers), 4 subscribers, 10 s, against the real `fanout` binary started by the test. Asserts
//! that everyone connects and receives every track, with no errors and under 1 % loss. It asserts
//! no time: the numbers are printed, not judged (benchmarks are not tests).

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::run::{self, Scenario};

struct Server {
    child: Child,
    http_port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("free udp port")
            .port()
    } else {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("free tcp port")
            .port()
    }
}

fn server_binary() -> PathBuf {
    let bin = std::env::var_os("FANOUT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/fanout"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "no server binary at {}: run `cargo build -p fanout-signaling --bin fanout` or set FANOUT_BIN",
        bin.display()
    );
    bin
}

fn start_server() -> Server {
    let http_port = free_port(false);
    let udp_port = free_port(true);
    let log = std::env::temp_dir().join(format!("fanout-smoke-{http_port}.log"));
    let out = std::fs::File::create(&log).expect("server log file");
    let child = Command::new(server_binary())
        .args([
            "serve",
            "--dev",
            "--bind",
            &format!("127.0.0.1:{http_port}"),
            "--udp-port",
            &udp_port.to_string(),
        ])
        .stdout(Stdio::from(out.try_clone().expect("log handle")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start the fanout binary");
    let server = Server {
        child,
        http_port,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, http_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server not listening within 20 s; log:\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

#[test]
fn smoke_two_publishers_four_subscribers_without_errors_or_loss() {
    let server = start_server();
    let scenario = Scenario {
        url: format!("ws://127.0.0.1:{}", server.http_port),
        rooms: 1,
        publishers: 2,
        subscribers: 4,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        join_rate: 20.0,
        bind_ip: Ipv4Addr::LOCALHOST.into(),
        server_pid: Some(server.child.id()),
        max_quality: None,
        video_layers: 3,
        audio: true,
        room_prefix: "smoke-".into(),
        tokens: None,
        progress: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = tokio::task::LocalSet::new().block_on(&rt, run::run(scenario, None));
    println!("{}", loadtest::report::table(&report));
    let log = || std::fs::read_to_string(&server.log).unwrap_or_default();
    assert_eq!(
        report.errors,
        0,
        "errors: {:?}\nserver log:\n{}",
        report.error_log,
        log()
    );
    assert_eq!(report.participants, 6);
    assert_eq!(report.connected, 6, "every participant connects");
    // Publishers receive each other (audio + video), subscribers receive both publishers.
    assert_eq!(report.tracks_expected, 2 * 2 + 4 * 4);
    assert_eq!(
        report.tracks_reached, report.tracks_expected,
        "every track reaches its receivers"
    );
    assert_eq!(report.join_ms.count, 6, "everyone got media");
    let w = &report.window;
    assert!(w.recv_pps > 0.0 && w.sent_pps > 0.0, "media flowed: {w:?}");
    assert!(w.latency_ms.count > 0, "latency was measured");
    assert!(
        w.loss_percent < 1.0,
        "loss {:.3} % (must be < 1 %)",
        w.loss_percent
    );
    assert!(w.server.is_some(), "server CPU and memory were read");
}
