//! `fanout-loadtest`: simulates rooms of WebRTC publishers and subscribers against a server and
//! reports join time, forwarding latency, loss, throughput and the server's CPU and memory.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use loadtest::report;
use loadtest::run::{self, Ramp, Scenario, Target};

#[derive(Debug, Parser)]
#[command(name = "fanout-loadtest", version, about)]
struct Args {
    /// The server's signaling address: for Fanout `ws://HOST:PORT` (the path `/ws` is added if
    /// missing), for Janus its WebSocket transport, `ws://HOST:PORT` (benches/janus/start.sh
    /// starts one at ws://10.214.7.2:8188, to be used with `--bind-ip 10.214.7.1`).
    #[arg(long, default_value = "ws://127.0.0.1:7880")]
    url: String,
    /// The server under test: `fanout`, or `janus` (its VideoRoom plugin; see
    /// benches/janus/start.sh).
    #[arg(long, default_value = "fanout", value_parser = ["fanout", "janus"])]
    target: String,
    /// Number of rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room (each sends audio and simulcast video, and receives the others).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Receive-only subscribers per room.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Length of the measurement window in seconds (after everyone joined and a warm-up).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds of media before the measurement window starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Participants started per second.
    #[arg(long, default_value_t = 20.0)]
    join_rate: f64,
    /// Simulcast layers each publisher sends, from the top (1 = one 1.5 Mbit/s encoding, no
    /// simulcast; 0 = audio only).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    layers: u8,
    /// Do not publish audio.
    #[arg(long)]
    no_audio: bool,
    /// The layer every participant asks for (`low`, `medium`, `high`); the server's default is
    /// the top layer.
    #[arg(long, value_parser = ["low", "medium", "high"])]
    max_quality: Option<String>,
    /// Local address of the simulated clients' sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// The server's process id, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's API key: every participant joins with its own access token, signed with
    /// it and --api-secret (needed unless the server runs with --dev).
    #[arg(long, env = "FANOUT_API_KEY")]
    api_key: Option<String>,
    /// The server's API secret (better in FANOUT_API_SECRET).
    #[arg(long, env = "FANOUT_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// Room names are this prefix and a number.
    #[arg(long, default_value = "load-")]
    room_prefix: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Ramp mode: after the initial subscribers, add this many per room at each step until loss
    /// passes 1 % or the machine saturates.
    #[arg(long)]
    ramp: Option<usize>,
    /// Seconds measured at each ramp step.
    #[arg(long, default_value_t = 8.0)]
    step_seconds: f64,
    /// Ramp mode stops at this many subscribers per room.
    #[arg(long, default_value_t = 1000)]
    max_subscribers: usize,
    /// Ramp mode: the machine counts as saturated above this CPU busy percentage.
    #[arg(long, default_value_t = 97.0)]
    saturated_percent: f64,
    /// Ramp mode: a step counts as keeping up only with a forwarding latency p99 below this.
    #[arg(long, default_value_t = 100.0)]
    max_p99_ms: f64,
    /// Write the ramp chart (SVG) to this file.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Do not show the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FANOUT_LOADTEST_LOG")
                .unwrap_or_else(|_| "warn,rtc_dtls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.rooms > 0, "--rooms must be at least 1");
    anyhow::ensure!(args.join_rate > 0.0, "--join-rate must be positive");
    anyhow::ensure!(
        args.layers > 0 || !args.no_audio,
        "nothing to publish: --layers 0 with --no-audio"
    );
    let target = match args.target.as_str() {
        "janus" => Target::Janus,
        _ => Target::Fanout,
    };
    anyhow::ensure!(
        target != Target::Janus || args.url.starts_with("ws://") || args.url.starts_with("wss://"),
        "--target janus speaks Janus' WebSocket transport: --url ws://HOST:PORT (e.g. ws://10.214.7.2:8188)"
    );
    let tokens = match (&args.api_key, &args.api_secret) {
        (Some(key), Some(secret)) if target == Target::Fanout => {
            Some(fanout_signaling::auth::TokenAuthority::new(key, secret))
        }
        (None, None) => None,
        _ if target == Target::Janus => None,
        _ => anyhow::bail!("--api-key and --api-secret go together"),
    };
    let scenario = Scenario {
        url: args.url.clone(),
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        join_rate: args.join_rate,
        bind_ip: args.bind_ip,
        server_pid: args.server_pid,
        max_quality: args.max_quality.clone(),
        video_layers: usize::from(args.layers),
        audio: !args.no_audio,
        room_prefix: args.room_prefix.clone(),
        tokens,
        progress: !args.quiet,
    };
    let ramp = args.ramp.map(|step| Ramp {
        step: step.max(1),
        step_duration: Duration::from_secs_f64(args.step_seconds),
        max_subscribers: args.max_subscribers,
        saturated_percent: args.saturated_percent,
        max_p99_ms: args.max_p99_ms,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&rt, run::run_against(target, scenario, ramp));
    print!("{}", report::table(&report));
    if let Some(path) = &args.report_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        let title = format!(
            "{}: {} publishers/room, subscribers added {} at a time",
            report.target,
            report.scenario.publishers,
            args.ramp.unwrap_or(0)
        );
        std::fs::write(path, report::ramp_svg(&title, &report.ramp))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
