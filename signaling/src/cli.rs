//! The `fanout` command line: `serve`, `config` and `token create`.
//!
//! Server settings come from the configuration ([`crate::config`]): a flag here overrides the
//! environment (`FANOUT_…`), which overrides the file (`--config`), which overrides the
//! defaults. Flag values are passed on as given and checked with everything else, so a bad
//! flag gets the same message as a bad file or environment value.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    about = "Fanout: a WebRTC Selective Forwarding Unit",
    after_help = "Every setting can also come from a configuration file (--config) or from a\n\
                  FANOUT_<KEY> environment variable (FANOUT_API_KEY, FANOUT_UDP_PORT, ...);\n\
                  flags win over the environment, which wins over the file.\n\
                  docs/configuration.md lists every key."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP/WebSocket signaling, the admin API, metrics, the demo page, and the
    /// media ports.
    Serve(SettingsArgs),
    /// Print the effective configuration (TOML, secrets redacted) and exit.
    Config(SettingsArgs),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Exit 0 if the server configured here answers /healthz (a container HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to probe [default: /healthz on the configured bind address, over HTTPS when
    /// TLS is configured; a wildcard bind is probed on loopback].
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a signed access token (HS256, with the configured api_key and api_secret).
    Create(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The room the token joins (or, with the admin grant, administers; omit for a
    /// server-wide admin token).
    #[arg(long)]
    pub room: Option<String>,
    /// The participant's identity (unique within a room).
    #[arg(long)]
    pub identity: String,
    /// The display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated grants: join, publish, subscribe, data (send data messages), admin.
    #[arg(long, default_value = "join,publish,subscribe,data")]
    pub grants: String,
    /// Comma-separated sources the participant may publish (camera, microphone, screen).
    /// Default: all.
    #[arg(long)]
    pub sources: Option<String>,
    /// Lifetime: seconds, or a duration such as 30m, 6h, 7d.
    #[arg(long, default_value = "6h")]
    pub ttl: String,
    /// Configuration file holding api_key and api_secret (or set FANOUT_API_KEY and
    /// FANOUT_API_SECRET).
    #[arg(long, env = "FANOUT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Every server setting as a flag. Unset flags leave the key to the other sources.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// Configuration file (YAML or TOML; the extension tells which).
    #[arg(long, env = "FANOUT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address for HTTP(S) and WebSocket signaling [default: 127.0.0.1:7880].
    #[arg(long)]
    pub bind: Option<String>,

    /// UDP port of every media driver (0 picks a free port); with --udp-port-per-driver, of the
    /// first, driver N using this port + N [default: 7882].
    #[arg(long)]
    pub udp_port: Option<String>,

    /// ICE over TCP on this port (driver N: this + N; 0: any free ports) [default: off].
    #[arg(long)]
    pub ice_tcp_port: Option<String>,

    /// Each media driver on a UDP port of its own, --udp-port + N (true or false) [default:
    /// false: every driver shares --udp-port].
    #[arg(long)]
    pub udp_port_per_driver: Option<String>,

    /// Media drivers (threads, each with its own UDP socket) [default: one per CPU core].
    #[arg(long)]
    pub media_drivers: Option<String>,

    /// IP the media sockets bind to [default: the IP of --bind].
    #[arg(long)]
    pub media_ip: Option<String>,

    /// Address(es) announced to clients in ICE candidates (repeat or comma-separate).
    #[arg(long = "announce-ip")]
    pub announce_ips: Vec<String>,

    /// 1:1 NAT: announce PUBLIC where the address would be PRIVATE (PRIVATE=PUBLIC; repeat or
    /// comma-separate).
    #[arg(long = "nat-map")]
    pub nat_map: Vec<String>,

    /// Ask this STUN server (stun:HOST[:PORT]) at start-up for the public address to announce.
    #[arg(long)]
    pub announce_stun: Option<String>,

    /// Local development mode: joins need no token, the demo page gets tokens from
    /// /dev/token, /debug/rooms is open.
    #[arg(long)]
    pub dev: bool,

    /// Directory of the built demo page served at `/` [default: client-web/dist].
    #[arg(long)]
    pub static_dir: Option<String>,

    /// STUN/TURN URL(s) handed to clients in `joined` (repeat or comma-separate).
    #[arg(long = "ice-server")]
    pub ice_servers: Vec<String>,

    /// TURN URL(s) handed out with time-limited credentials from --turn-secret (repeat or
    /// comma-separate).
    #[arg(long = "turn-url")]
    pub turn_urls: Vec<String>,

    /// The TURN server's shared secret (coturn static-auth-secret; better in the file or
    /// FANOUT_TURN_SECRET).
    #[arg(long)]
    pub turn_secret: Option<String>,

    /// How long handed-out TURN credentials stay valid (e.g. 12h).
    #[arg(long)]
    pub turn_ttl: Option<String>,

    /// Run the embedded TURN server and hand it to clients (true or false) [default: true in
    /// --dev, else false].
    #[arg(long)]
    pub turn_embedded: Option<String>,

    /// UDP port of the embedded TURN server (0: any free port) [default: 3478].
    #[arg(long)]
    pub turn_port: Option<String>,

    /// TURN over TLS on this TCP port (e.g. 443), with --turn-tls-cert/--turn-tls-key, else
    /// --tls-cert/--tls-key [default: off].
    #[arg(long)]
    pub turn_tls_port: Option<String>,

    /// PEM certificate chain of TURN over TLS, if not --tls-cert (HTTP may then stay plain).
    #[arg(long)]
    pub turn_tls_cert: Option<String>,

    /// PEM private key of --turn-tls-cert.
    #[arg(long)]
    pub turn_tls_key: Option<String>,

    /// The host name in the embedded TURN server's URLs (the name on the certificate, for
    /// turns:) [default: the announced address].
    #[arg(long)]
    pub turn_host: Option<String>,

    /// Ports of the embedded TURN server's relays, MIN-MAX [default: 49160-49999].
    #[arg(long)]
    pub turn_relay_ports: Option<String>,

    /// Allocations one identity may hold at once on the embedded TURN server [default: 10].
    #[arg(long)]
    pub turn_max_allocations: Option<String>,

    /// Log filter (tracing env-filter syntax), e.g. `debug` or `info,sfu=debug`.
    #[arg(long)]
    pub log: Option<String>,

    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,

    /// API key that signs access tokens (better in the file or FANOUT_API_KEY).
    #[arg(long)]
    pub api_key: Option<String>,

    /// API secret (better in the file or FANOUT_API_SECRET: flags show in `ps`).
    #[arg(long)]
    pub api_secret: Option<String>,

    /// PEM certificate chain: serve HTTPS/WSS.
    #[arg(long)]
    pub tls_cert: Option<String>,

    /// PEM private key of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<String>,

    /// How long a drain waits for rooms to empty (e.g. 300s, 10m).
    #[arg(long)]
    pub drain_timeout: Option<String>,

    /// Rooms at most (0: no limit).
    #[arg(long)]
    pub max_rooms: Option<String>,

    /// Participants per room at most (0: no limit).
    #[arg(long)]
    pub max_participants: Option<String>,

    /// Tracks a participant may publish (0: no limit).
    #[arg(long)]
    pub max_tracks_per_participant: Option<String>,

    /// Largest signaling message, in bytes.
    #[arg(long)]
    pub max_message_bytes: Option<String>,

    /// Signaling messages a client may send per second.
    #[arg(long)]
    pub max_messages_per_second: Option<String>,

    /// Whether joins may create rooms (true/false).
    #[arg(long)]
    pub auto_create_rooms: Option<String>,

    /// How long a media connection may go without a connectivity check from its client before
    /// its participant is removed (e.g. 30s).
    #[arg(long)]
    pub consent_timeout: Option<String>,

    /// How long a room created through the admin API waits for its first participant.
    #[arg(long)]
    pub room_empty_timeout: Option<String>,

    /// How long a room lives on after its last participant left.
    #[arg(long)]
    pub room_departure_timeout: Option<String>,

    /// Webhook URL(s) (repeat or comma-separate).
    #[arg(long = "webhook-url")]
    pub webhook_urls: Vec<String>,

    /// Timeout of one webhook delivery attempt.
    #[arg(long)]
    pub webhook_timeout: Option<String>,

    /// Webhook delivery retries after a failed attempt.
    #[arg(long)]
    pub webhook_retries: Option<String>,

    /// Multi-node mode: the Redis directory of nodes and rooms (redis://HOST:PORT) [default:
    /// off, a single node].
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Prefix of this cluster's Redis keys [default: fanout].
    #[arg(long)]
    pub redis_prefix: Option<String>,

    /// This node's name in the directory [default: random].
    #[arg(long)]
    pub node_id: Option<String>,

    /// Where other nodes reach this node's signaling (http://HOST:PORT) [default: from --bind].
    #[arg(long)]
    pub node_url: Option<String>,

    /// Where a new room goes: least-loaded or this-node-first [default: least-loaded].
    #[arg(long)]
    pub room_placement: Option<String>,

    /// Testing only: drop this percentage (0-100) of incoming RTP datagrams.
    #[arg(long, hide = true)]
    pub inject_loss: Option<String>,
}

impl SettingsArgs {
    /// The flags that were given, as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        let one = [
            ("bind", &self.bind),
            ("udp_port", &self.udp_port),
            ("udp_port_per_driver", &self.udp_port_per_driver),
            ("ice_tcp_port", &self.ice_tcp_port),
            ("media_drivers", &self.media_drivers),
            ("media_ip", &self.media_ip),
            ("announce_stun", &self.announce_stun),
            ("static_dir", &self.static_dir),
            ("log", &self.log),
            ("api_key", &self.api_key),
            ("api_secret", &self.api_secret),
            ("turn_secret", &self.turn_secret),
            ("turn_ttl", &self.turn_ttl),
            ("turn_embedded", &self.turn_embedded),
            ("turn_port", &self.turn_port),
            ("turn_tls_port", &self.turn_tls_port),
            ("turn_tls_cert", &self.turn_tls_cert),
            ("turn_tls_key", &self.turn_tls_key),
            ("turn_host", &self.turn_host),
            ("turn_relay_ports", &self.turn_relay_ports),
            ("turn_max_allocations", &self.turn_max_allocations),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("drain_timeout", &self.drain_timeout),
            ("max_rooms", &self.max_rooms),
            ("max_participants", &self.max_participants),
            (
                "max_tracks_per_participant",
                &self.max_tracks_per_participant,
            ),
            ("max_message_bytes", &self.max_message_bytes),
            ("max_messages_per_second", &self.max_messages_per_second),
            ("auto_create_rooms", &self.auto_create_rooms),
            ("consent_timeout", &self.consent_timeout),
            ("room_empty_timeout", &self.room_empty_timeout),
            ("room_departure_timeout", &self.room_departure_timeout),
            ("webhook_timeout", &self.webhook_timeout),
            ("webhook_retries", &self.webhook_retries),
            ("redis_url", &self.redis_url),
            ("redis_prefix", &self.redis_prefix),
            ("node_id", &self.node_id),
            ("node_url", &self.node_url),
            ("room_placement", &self.room_placement),
            ("inject_loss", &self.inject_loss),
        ];
        for (key, value) in one {
            if let Some(v) = value {
                o.set(key, v);
            }
        }
        if let Some(f) = self.log_format {
            o.set(
                "log_format",
                match f {
                    LogFormat::Pretty => "pretty",
                    LogFormat::Json => "json",
                },
            );
        }
        if self.dev {
            o.set("dev", true);
        }
        for (key, values) in [
            ("announce_ips", &self.announce_ips),
            ("nat_map", &self.nat_map),
            ("ice_servers", &self.ice_servers),
            ("turn_urls", &self.turn_urls),
            ("webhook_urls", &self.webhook_urls),
        ] {
            if !values.is_empty() {
                o.set_list(key, values);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    fn settings(args: &[&str]) -> Result<crate::config::Settings, crate::config::ConfigError> {
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!()
        };
        load(a.config.as_deref(), Vec::new(), &a.overrides())
    }

    #[test]
    fn flags_become_settings() {
        let s = settings(&[
            "fanout",
            "serve",
            "--dev",
            "--announce-ip",
            "203.0.113.5,198.51.100.7",
            "--udp-port",
            "9000",
            "--drain-timeout",
            "2m",
        ])
        .unwrap();
        assert_eq!(s.announce_ips().len(), 2);
        assert_eq!(s.media_bind().port(), 9000);
        assert_eq!(s.drain_timeout.as_secs(), 120);
    }

    #[test]
    fn wildcard_bind_announces_non_loopback_addresses() {
        let s = settings(&["fanout", "serve", "--dev", "--bind", "0.0.0.0:8000"]).unwrap();
        assert!(s.media_bind().ip().is_unspecified());
        let ips = s.announce_ips();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(|ip| !ip.is_unspecified()));
    }

    #[test]
    fn a_bad_flag_names_its_key() {
        let err = settings(&["fanout", "serve", "--dev", "--max-rooms", "many"]).unwrap_err();
        assert!(err.0.contains("max_rooms"), "{err}");
    }
}
