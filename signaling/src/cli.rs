//! The `fanout` command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    about = "Fanout: a WebRTC Selective Forwarding Unit",
    after_help = "Every flag of `fanout serve` also reads a FANOUT_... environment variable.\n\
                  Logging: set FANOUT_LOG to a tracing filter, e.g. FANOUT_LOG=debug or\n\
                  FANOUT_LOG=info,sfu=debug (default: info, webrtc-rs internals at warn)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP/WebSocket signaling, the demo page, and the media port.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket signaling (the demo page is at http://ADDR/).
    #[arg(long, env = "FANOUT_BIND", default_value = "127.0.0.1:7880")]
    pub bind: SocketAddr,

    /// UDP port of the first media driver; driver N uses this port + N (0 picks free ports).
    #[arg(long, env = "FANOUT_UDP_PORT", default_value_t = 7882)]
    pub udp_port: u16,

    /// Media drivers (threads, each with its own UDP port). Default: one per CPU core.
    #[arg(long, env = "FANOUT_MEDIA_DRIVERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub media_drivers: Option<u16>,

    /// IP the media socket binds to. Default: the IP of --bind.
    #[arg(long, env = "FANOUT_MEDIA_IP")]
    pub media_ip: Option<IpAddr>,

    /// Address(es) announced to clients in ICE candidates (repeat or comma-separate).
    /// Default: the media IP; when that is a wildcard, this host's non-loopback addresses.
    #[arg(
        long = "announce-ip",
        env = "FANOUT_ANNOUNCE_IPS",
        value_delimiter = ','
    )]
    pub announce_ips: Vec<IpAddr>,

    /// Local development mode: relaxed security for running on a laptop (later: no access
    /// tokens needed). Logs that it is on.
    #[arg(long, env = "FANOUT_DEV")]
    pub dev: bool,

    /// Directory of the built demo page served at `/`.
    #[arg(long, env = "FANOUT_STATIC_DIR", default_value = "client-web/dist")]
    pub static_dir: PathBuf,

    /// STUN/TURN URL(s) handed to clients in `joined` (repeat or comma-separate).
    #[arg(long = "ice-server", env = "FANOUT_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,

    /// Log format.
    #[arg(long, env = "FANOUT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Testing only: drop this percentage (0-100) of incoming RTP datagrams, to exercise NACK
    /// and retransmission paths under loss.
    #[arg(
        long,
        env = "FANOUT_INJECT_LOSS",
        default_value_t = 0.0,
        hide_short_help = true
    )]
    pub inject_loss: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl ServeArgs {
    /// The number of media drivers: as given, else one per core.
    pub fn media_drivers(&self) -> usize {
        self.media_drivers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        )
    }

    pub fn media_bind(&self) -> SocketAddr {
        SocketAddr::new(self.media_ip.unwrap_or(self.bind.ip()), self.udp_port)
    }

    /// The IPs to announce in candidates.
    pub fn announce_ips(&self) -> Vec<IpAddr> {
        if !self.announce_ips.is_empty() {
            return self.announce_ips.clone();
        }
        let media_ip = self.media_bind().ip();
        if !media_ip.is_unspecified() {
            return vec![media_ip];
        }
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| !ip.is_loopback() && (media_ip.is_ipv6() || ip.is_ipv4()))
            .collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            ips.push(IpAddr::from([127, 0, 0, 1]));
        }
        ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_and_media_on_the_same_ip() {
        let cli = Cli::try_parse_from(["fanout", "serve"]).unwrap();
        let Command::Serve(args) = cli.command;
        assert_eq!(args.bind, "127.0.0.1:7880".parse::<SocketAddr>().unwrap());
        assert_eq!(
            args.media_bind(),
            "127.0.0.1:7882".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(args.announce_ips(), vec![IpAddr::from([127, 0, 0, 1])]);
    }

    #[test]
    fn wildcard_bind_announces_non_loopback_addresses() {
        let cli = Cli::try_parse_from(["fanout", "serve", "--bind", "0.0.0.0:8000"]).unwrap();
        let Command::Serve(args) = cli.command;
        assert!(args.media_bind().ip().is_unspecified());
        let ips = args.announce_ips();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(|ip| !ip.is_unspecified()));
    }

    #[test]
    fn explicit_announce_wins() {
        let cli = Cli::try_parse_from([
            "fanout",
            "serve",
            "--announce-ip",
            "203.0.113.5,198.51.100.7",
            "--udp-port",
            "9000",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        assert_eq!(args.announce_ips().len(), 2);
        assert_eq!(args.media_bind().port(), 9000);
    }
}
