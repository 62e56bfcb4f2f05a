//! The smoke scenario of tests/smoke.rs against a real Janus VideoRoom: 1 room, 2 publishers
//! (audio + three simulcast layers), 4 subscribers, 10 s, through the Janus backends
//! (`--target janus`). Janus is started with the configuration benches/janus/start.sh generates,
//! in a network namespace of its own reached over a veth pair (benches/janus/netns.sh). Asserts
//! that everyone connects and receives every track, with no errors and under 1 % loss; no time
//! is asserted. Skipped, saying why, where Janus is not installed or namespaces are not possible.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loadtest::run::{self, Scenario, Target};

const WS_PORT: u16 = 8188;

struct Janus {
    pid: u32,
    conf: PathBuf,
}

impl Janus {
    fn log(&self) -> String {
        std::fs::read_to_string(self.conf.join("janus.log")).unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        // Not our child (the start script's background job): end it by its pid and wait until it
        // is gone, taking its namespace and veth pair with it.
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.conf);
    }
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    if !in_path("janus") {
        return Some("janus is not installed (apt-get install janus)".into());
    }
    for tool in ["unshare", "ip"] {
        if !in_path(tool) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if !is_root() {
        return Some("Janus runs in a network namespace of its own, which needs root".into());
    }
    None
}

/// A /30 of 10.214.0.0/16 whose host-side interface does not exist yet.
fn free_net() -> String {
    loop {
        let n: u8 = rand::random_range(16..250);
        if !Path::new(&format!("/sys/class/net/fo{n}h")).exists() {
            return format!("10.214.{n}");
        }
    }
}

fn start_janus(net: &str) -> Janus {
    let conf = std::env::temp_dir().join(format!("fanout-janus-{}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("janus/start.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&conf)
        .args(["--net", net, "--ws-port", &WS_PORT.to_string()])
        .output()
        .expect("run benches/janus/start.sh");
    let log = std::fs::read_to_string(conf.join("janus.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "start.sh failed: {}\n{}\nlog:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("start.sh prints Janus' pid");
    Janus { pid, conf }
}

#[test]
fn janus_smoke_two_publishers_four_subscribers_without_errors_or_loss() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let net = free_net();
    let janus = start_janus(&net);
    let scenario = Scenario {
        url: format!("ws://{net}.2:{WS_PORT}"),
        rooms: 1,
        publishers: 2,
        subscribers: 4,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        join_rate: 20.0,
        bind_ip: format!("{net}.1")
            .parse::<Ipv4Addr>()
            .expect("address")
            .into(),
        server_pid: Some(janus.pid),
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
    let report =
        tokio::task::LocalSet::new().block_on(&rt, run::run_against(Target::Janus, scenario, None));
    println!("{}", loadtest::report::table(&report));
    assert_eq!(report.target, "janus");
    assert_eq!(
        report.errors,
        0,
        "errors: {:?}\njanus log:\n{}",
        report.error_log,
        janus.log()
    );
    assert_eq!(report.participants, 6);
    assert_eq!(report.connected, 6, "every participant connects");
    // The same accounting as Fanout's: publishers receive each other (audio + video),
    // subscribers receive both publishers.
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
    assert!(w.server.is_some(), "Janus' CPU and memory were read");
}
