//! `fanout-flood`: what a flood of datagrams from strangers costs the server (issue 7, item 1).
//!
//! Sends datagrams nobody asked for to the media port at a fixed rate for a while, one kind at a
//! time: random garbage, STUN binding requests naming ICE usernames that do not exist (every one
//! different, as a scanner or an attacker would), DTLS ClientHello-looking records and RTP-looking
//! packets; each kind from many source ports. Reports the server's CPU per datagram (from
//! `/proc`, `--server-pid`), and how many the server counted as dropped from unknown sources
//! (its `/metrics`), so the numbers say both "it cost this little" and "it was dropped".
//!
//! ```text
//! fanout serve --dev --bind 127.0.0.1:7880 --udp-port 7882 --media-drivers 1 &
//! fanout-flood --target 127.0.0.1:7882 --metrics http://127.0.0.1:7880/metrics --server-pid $!
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use loadtest::procstat::Sample;
use rand::{Rng, RngCore};

#[derive(Debug, Parser)]
#[command(name = "fanout-flood", about)]
struct Args {
    /// The server's media address.
    #[arg(long, default_value = "127.0.0.1:7882")]
    target: SocketAddr,
    /// The server's /metrics URL (plain http), to read its drop counter.
    #[arg(long)]
    metrics: Option<String>,
    /// The server's process id, for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Datagrams per second.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds per kind.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Source sockets (distinct source ports).
    #[arg(long, default_value_t = 64)]
    sources: usize,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Garbage,
    StunUnknownUfrag,
    Dtls,
    Rtp,
}

fn datagram(kind: Kind, n: u64, rng: &mut impl RngCore, buf: &mut Vec<u8>) {
    buf.clear();
    match kind {
        Kind::Garbage => {
            let len = rng.random_range(1..1200);
            buf.resize(len, 0);
            rng.fill_bytes(buf);
        }
        Kind::StunUnknownUfrag => {
            // A binding request with USERNAME "<unknown server ufrag>:<client ufrag>".
            let username = format!("flood{n:011}:c{:08x}", rng.next_u32());
            let mut attrs = Vec::new();
            attrs.extend_from_slice(&0x0006u16.to_be_bytes());
            attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
            attrs.extend_from_slice(username.as_bytes());
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
            buf.extend_from_slice(&0x0001u16.to_be_bytes());
            buf.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
            buf.extend_from_slice(&0x2112_A442u32.to_be_bytes());
            let mut tid = [0u8; 12];
            rng.fill_bytes(&mut tid);
            buf.extend_from_slice(&tid);
            buf.extend_from_slice(&attrs);
        }
        Kind::Dtls => {
            // Handshake record, DTLS 1.0, epoch 0, then noise.
            buf.extend_from_slice(&[22, 0xfe, 0xff, 0, 0]);
            buf.resize(200, 0);
            rng.fill_bytes(&mut buf[5..]);
        }
        Kind::Rtp => {
            buf.extend_from_slice(&[0x80, 96]);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
            buf.resize(1100, 0);
            rng.fill_bytes(&mut buf[4..]);
        }
    }
}

/// The server's `fanout_packets_dropped_total{reason="unknown_source"}`.
fn unknown_source_drops(url: &str) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .context("--metrics must be an http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).context("connecting to /metrics")?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    body.lines()
        .find(|l| l.starts_with("fanout_packets_dropped_total{reason=\"unknown_source\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .context("no unknown_source drop counter in /metrics")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sockets: Vec<UdpSocket> = (0..args.sources.max(1))
        .map(|_| {
            UdpSocket::bind(if args.target.is_ipv6() {
                "[::1]:0"
            } else {
                "127.0.0.1:0"
            })
        })
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rng();
    let mut buf = Vec::with_capacity(1500);
    println!(
        "{:<20} {:>10} {:>10} {:>12} {:>14} {:>16}",
        "kind", "sent", "rate/s", "server CPU", "µs/datagram", "counted dropped"
    );
    let mut n = 0u64;
    for kind in [Kind::Garbage, Kind::StunUnknownUfrag, Kind::Dtls, Kind::Rtp] {
        let drops_before = args
            .metrics
            .as_deref()
            .map(unknown_source_drops)
            .transpose()?;
        let before = Sample::take(args.server_pid);
        let start = Instant::now();
        let total = (args.rate as f64 * args.seconds) as u64;
        let mut sent = 0u64;
        while sent < total {
            // Pace in 1 ms slices.
            let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
            while sent < due.min(total) {
                datagram(kind, n, &mut rng, &mut buf);
                let s = &sockets[(sent as usize) % sockets.len()];
                if s.send_to(&buf, args.target).is_ok() {
                    sent += 1;
                }
                n += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let elapsed = start.elapsed().as_secs_f64();
        // Let the server finish reading what is queued.
        std::thread::sleep(Duration::from_millis(300));
        let after = Sample::take(args.server_pid);
        let drops_after = args
            .metrics
            .as_deref()
            .map(unknown_source_drops)
            .transpose()?;
        let cpu = before.cpu_seconds(&after);
        println!(
            "{:<20} {:>10} {:>10.0} {:>12} {:>14} {:>16}",
            format!("{kind:?}"),
            sent,
            sent as f64 / elapsed,
            cpu.map_or("-".into(), |c| format!("{c:.2} s")),
            cpu.map_or("-".into(), |c| format!("{:.2}", c * 1e6 / sent as f64)),
            match (drops_before, drops_after) {
                (Some(b), Some(a)) => format!("{:.0}", a - b),
                _ => "-".into(),
            }
        );
    }
    Ok(())
}
