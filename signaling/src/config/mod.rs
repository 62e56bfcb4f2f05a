//! The server's configuration, merged once at start-up by the `config` crate from, lowest first:
//! built-in defaults, a file (`--config fanout.yaml` or `.toml`), the environment (`FANOUT_…`,
//! e.g. `FANOUT_API_KEY`) and command-line flags. The result is one [`Settings`], validated as a
//! whole: a bad value stops the server with a message that names the key.
//!
//! Every key is documented in `docs/configuration.md`; keep the two in step.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Printed instead of a secret by `fanout config`.
pub const REDACTED: &str = "<redacted>";
/// The shortest API secret accepted: HS256 wants a key at least as long as its hash.
pub const MIN_SECRET_CHARS: usize = 32;
/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "announce_ips",
    "nat_map",
    "ice_servers",
    "turn_urls",
    "webhook_urls",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Every setting of the server. Field names are the configuration keys (in files, and upper-cased
/// after `FANOUT_` in the environment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// HTTP(S) and WebSocket address.
    pub bind: SocketAddr,
    /// UDP port of every media driver (0: any free port); with `udp_port_per_driver`, of the
    /// first, and driver N uses this port + N.
    pub udp_port: u16,
    /// Each media driver on a UDP port of its own (`udp_port` + N) instead of all sharing
    /// `udp_port` (`SO_REUSEPORT`, the default: a firewall names one port).
    pub udp_port_per_driver: bool,
    /// ICE over TCP: the TCP port of the first media driver (driver N uses this + N), announced
    /// as passive candidates; `None`: off; 0: any free ports.
    pub ice_tcp_port: Option<u16>,
    /// Media drivers (threads with a UDP port each); `None`: one per CPU core.
    pub media_drivers: Option<u16>,
    /// IP the media sockets bind to; `None`: the IP of `bind`.
    pub media_ip: Option<IpAddr>,
    /// Addresses announced in ICE candidates; empty: the media IP (or, when that is a wildcard,
    /// this host's non-loopback addresses).
    pub announce_ips: Vec<IpAddr>,
    /// 1:1 NAT: `PRIVATE=PUBLIC` pairs; an announced address equal to a private one is announced
    /// as its public one instead (a cloud VM or pod whose public IP is not on an interface).
    pub nat_map: Vec<String>,
    /// A STUN server (`stun:host[:port]`) asked at start-up for the media IP's public address,
    /// which is then announced (instead of the interface addresses).
    pub announce_stun: Option<String>,
    /// Local development: joins need no token, the demo page gets tokens from `/dev/token`,
    /// `/debug/rooms` is open.
    pub dev: bool,
    /// The built demo page, served at `/`.
    pub static_dir: PathBuf,
    /// Where recordings are written (created when the first one starts; relative paths are
    /// from the working directory).
    pub recordings_dir: PathBuf,
    /// STUN/TURN URLs handed to clients in `joined`.
    pub ice_servers: Vec<String>,
    /// TURN URLs handed to clients with time-limited credentials derived from `turn_secret`
    /// (coturn's `use-auth-secret` scheme).
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`).
    pub turn_secret: Option<String>,
    /// How long TURN credentials handed out at a join stay valid.
    #[serde(with = "duration")]
    pub turn_ttl: Duration,
    /// Run the embedded TURN server (UDP) and hand it to clients; `None`: on in `--dev`.
    pub turn_embedded: Option<bool>,
    /// The embedded TURN server's UDP port (0: any free port).
    pub turn_port: u16,
    /// TURN over TLS on this TCP port (e.g. 443), with `turn_tls_cert`/`turn_tls_key`, else
    /// `tls_cert`/`tls_key`; `None`: off.
    pub turn_tls_port: Option<u16>,
    /// PEM certificate chain of TURN over TLS, when it is not the HTTPS one (`tls_cert`): TURN
    /// over TLS while HTTP stays plain behind a proxy that terminates TLS, as in multi-node mode.
    pub turn_tls_cert: Option<PathBuf>,
    /// PEM private key of `turn_tls_cert`.
    pub turn_tls_key: Option<PathBuf>,
    /// The ports its relays use, `MIN-MAX`.
    pub turn_relay_ports: String,
    pub turn_realm: String,
    /// The host name clients are given for the embedded TURN server (the name its certificate
    /// carries, for `turns:`); `None`: the announced address.
    pub turn_host: Option<String>,
    /// Allocations one identity may hold at once on the embedded TURN server.
    pub turn_max_allocations: usize,
    /// A `tracing` filter (`FANOUT_LOG`).
    pub log: String,
    pub log_format: LogFormat,
    /// The key and secret that sign access tokens (HS256) and webhooks.
    pub api_key: Option<String>,
    pub api_secret: Option<String>,
    /// PEM certificate chain and private key: serve HTTPS and WSS on `bind`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long a drain (SIGTERM, SIGINT) waits for rooms to empty before closing them.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Rooms at most (0: no limit).
    pub max_rooms: usize,
    /// Participants per room at most, unless the room was created with its own limit (0: none).
    pub max_participants: usize,
    /// Tracks a participant may publish (0: no limit).
    pub max_tracks_per_participant: usize,
    /// The largest signaling message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Signaling messages a client may send per second (bursts of twice as many pass).
    pub max_messages_per_second: u32,
    /// Signaling sockets open at once, in all and from one client address (0: no limit).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// How long a new signaling socket may go without sending `join` before it is closed.
    #[serde(with = "duration")]
    pub join_timeout: Duration,
    /// Data messages (docs/protocol.md): the largest envelope on the reliable and the lossy
    /// channel, a sender's messages and bytes per second (0: no limit), and the backlogs past
    /// which a receiver misses lossy messages or, for reliable ones, is disconnected.
    pub data_max_reliable: usize,
    pub data_max_lossy: usize,
    pub data_messages_per_second: u32,
    pub data_bytes_per_second: u32,
    pub data_lossy_backlog: usize,
    pub data_reliable_backlog: usize,
    /// Whether a join may create its room; if not, rooms come from the admin API only.
    pub auto_create_rooms: bool,
    /// Consent freshness: a media connection with no connectivity check from its client for this
    /// long is dead, and its participant leaves (a client whose network changed comes back
    /// within it).
    #[serde(with = "duration")]
    pub consent_timeout: Duration,
    /// How long a room created through the admin API waits for its first participant.
    #[serde(with = "duration")]
    pub room_empty_timeout: Duration,
    /// How long a room lives on after its last participant left.
    #[serde(with = "duration")]
    pub room_departure_timeout: Duration,
    /// URLs that receive signed webhook events (POST, JSON).
    pub webhook_urls: Vec<String>,
    /// Per delivery attempt.
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// Attempts after the first failed one (with exponential back-off).
    pub webhook_retries: u32,
    /// Multi-node mode: the Redis that holds the directory of nodes and rooms
    /// (`redis://[:PASSWORD@]HOST[:PORT][/DB]`); `None`: a single node.
    pub redis_url: Option<String>,
    /// The prefix of every Redis key this cluster uses (several clusters can share one Redis).
    pub redis_prefix: String,
    /// This node's name in the directory; `None`: a random one at each start.
    pub node_id: Option<String>,
    /// Where the other nodes reach this node's signaling (`http://HOST:PORT`): joins and admin
    /// requests for its rooms are proxied there; `None`: from `bind` (a wildcard bind: this
    /// host's first non-loopback address).
    pub node_url: Option<String>,
    /// Where a new room goes: the least-loaded ready node, or the node the join reached.
    pub room_placement: Placement,
    /// Testing only: the percentage (0–100) of incoming RTP dropped on purpose.
    pub inject_loss: f64,
}

/// Where a room that exists nowhere yet is placed (multi-node mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The ready node with the least load (participants and tracks, then CPU).
    #[serde(alias = "least-loaded")]
    LeastLoaded,
    /// The node the join reached, unless it is draining (then the least loaded).
    #[serde(alias = "this-node-first")]
    ThisNodeFirst,
}

impl Default for Settings {
    fn default() -> Self {
        let data = sfu::DataLimits::default();
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7880)),
            udp_port: 7882,
            udp_port_per_driver: false,
            ice_tcp_port: None,
            media_drivers: None,
            media_ip: None,
            announce_ips: Vec::new(),
            nat_map: Vec::new(),
            announce_stun: None,
            dev: false,
            static_dir: PathBuf::from("client-web/dist"),
            recordings_dir: PathBuf::from("recordings"),
            ice_servers: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(12 * 3600),
            turn_embedded: None,
            turn_port: 3478,
            turn_tls_port: None,
            turn_tls_cert: None,
            turn_tls_key: None,
            turn_relay_ports: "49160-49999".into(),
            turn_realm: "fanout".into(),
            turn_host: None,
            turn_max_allocations: 10,
            log: "info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_srtp=error".into(),
            log_format: LogFormat::Pretty,
            api_key: None,
            api_secret: None,
            tls_cert: None,
            tls_key: None,
            drain_timeout: Duration::from_secs(300),
            max_rooms: 0,
            max_participants: 0,
            max_tracks_per_participant: 16,
            max_message_bytes: 64 * 1024,
            max_messages_per_second: 50,
            join_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 64,
            // The engine's defaults (docs/configuration.md repeats them).
            data_max_reliable: data.max_reliable,
            data_max_lossy: data.max_lossy,
            data_messages_per_second: data.messages_per_sec,
            data_bytes_per_second: data.bytes_per_sec,
            data_lossy_backlog: data.lossy_backlog,
            data_reliable_backlog: data.reliable_backlog,
            auto_create_rooms: true,
            consent_timeout: Duration::from_secs(30),
            room_empty_timeout: Duration::from_secs(300),
            room_departure_timeout: Duration::from_secs(20),
            webhook_urls: Vec::new(),
            webhook_timeout: Duration::from_secs(5),
            webhook_retries: 5,
            redis_url: None,
            redis_prefix: "fanout".into(),
            node_id: None,
            node_url: None,
            room_placement: Placement::LeastLoaded,
            inject_loss: 0.0,
        }
    }
}

/// Why the configuration could not be used. The message names the key (or the file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn invalid(key: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid configuration: `{key}`: {problem}"))
}

/// Settings given on the command line, each overriding every other source. Values are kept as
/// given and parsed with the rest, so a bad flag is reported like a bad file value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub values: Vec<(&'static str, OverrideValue)>,
}

#[derive(Debug, Clone)]
pub enum OverrideValue {
    One(String),
    List(Vec<String>),
}

impl Overrides {
    pub fn set(&mut self, key: &'static str, value: impl ToString) {
        self.values
            .push((key, OverrideValue::One(value.to_string())));
    }

    pub fn set_list(&mut self, key: &'static str, values: &[String]) {
        let items = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        self.values.push((key, OverrideValue::List(items)));
    }
}

/// Every configuration key, from the defaults.
pub fn known_keys() -> BTreeSet<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// Merges defaults < `file` < the environment (`env`, normally `std::env::vars()`) < `flags`,
/// then validates the result.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Overrides,
) -> Result<Settings, ConfigError> {
    let defaults = config::Config::try_from(&Settings::default())
        .map_err(|e| ConfigError(format!("internal error in the defaults: {e}")))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        check_file(path)?;
        builder = builder.add_source(config::File::from(path).required(true));
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("FANOUT_"))
        .collect();
    let mut environment = config::Environment::with_prefix("FANOUT")
        .prefix_separator("_")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(Some(env));
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    builder = builder.add_source(environment);
    for (key, value) in &flags.values {
        builder = match value {
            OverrideValue::One(v) => builder.set_override(*key, v.as_str()),
            OverrideValue::List(v) => builder.set_override(*key, v.clone()),
        }
        .map_err(|e| invalid(key, e))?;
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
    let settings: Settings = merged
        .try_deserialize()
        .map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
    settings.validate()?;
    Ok(settings)
}

/// A file must exist, parse, and hold only known keys (a misspelt key would otherwise be
/// ignored without a word).
fn check_file(path: &Path) -> Result<(), ConfigError> {
    if !path.is_file() {
        return Err(ConfigError(format!(
            "configuration file {} does not exist",
            path.display()
        )));
    }
    let parsed = config::Config::builder()
        .add_source(config::File::from(path))
        .build()
        .map_err(|e| ConfigError(format!("configuration file {}: {e}", path.display())))?;
    let table: config::Map<String, config::Value> = parsed
        .try_deserialize()
        .map_err(|e| ConfigError(format!("configuration file {}: {e}", path.display())))?;
    let known = known_keys();
    let mut unknown: Vec<&String> = table.keys().filter(|k| !known.contains(*k)).collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        return Err(ConfigError(format!(
            "configuration file {}: unknown key `{key}` (docs/configuration.md lists every key)",
            path.display()
        )));
    }
    Ok(())
}

impl Settings {
    /// The number of media drivers: as configured, else one per core.
    pub fn media_driver_count(&self) -> usize {
        self.media_drivers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        )
    }

    pub fn media_bind(&self) -> SocketAddr {
        SocketAddr::new(self.media_ip.unwrap_or(self.bind.ip()), self.udp_port)
    }

    /// Whether the embedded TURN server runs (`turn_embedded`, by default in `--dev`).
    pub fn turn_embedded(&self) -> bool {
        self.turn_embedded.unwrap_or(self.dev)
    }

    /// `turn_relay_ports` parsed.
    pub fn turn_relay_range(&self) -> Result<(u16, u16), ConfigError> {
        let bad = || {
            invalid(
                "turn_relay_ports",
                format!(
                    "{:?} is not MIN-MAX (ports, MIN <= MAX, MIN above 1023)",
                    self.turn_relay_ports
                ),
            )
        };
        let (a, b) = self.turn_relay_ports.split_once('-').ok_or_else(bad)?;
        let min: u16 = a.trim().parse().map_err(|_| bad())?;
        let max: u16 = b.trim().parse().map_err(|_| bad())?;
        if min > max || min < 1024 {
            return Err(bad());
        }
        Ok((min, max))
    }

    /// `nat_map` parsed: (private, public) pairs.
    pub fn nat_pairs(&self) -> Result<Vec<(IpAddr, IpAddr)>, ConfigError> {
        self.nat_map
            .iter()
            .map(|entry| {
                let bad = || {
                    invalid(
                        "nat_map",
                        format!("{entry:?} is not PRIVATE=PUBLIC (two IP addresses)"),
                    )
                };
                let (a, b) = entry.split_once('=').ok_or_else(bad)?;
                let private: IpAddr = a.trim().parse().map_err(|_| bad())?;
                let public: IpAddr = b.trim().parse().map_err(|_| bad())?;
                if private.is_unspecified() || public.is_unspecified() {
                    return Err(invalid(
                        "nat_map",
                        format!("{entry:?}: a wildcard is not an address"),
                    ));
                }
                Ok((private, public))
            })
            .collect()
    }

    /// The IPs to announce in candidates: `announce_ips`, else the media IP, else (a wildcard)
    /// the host's non-loopback addresses; each mapped through `nat_map`.
    pub fn announce_ips(&self) -> Vec<IpAddr> {
        let pairs = self.nat_pairs().unwrap_or_default();
        let mut ips = self.announce_ips_unmapped();
        for ip in &mut ips {
            if let Some((_, public)) = pairs.iter().find(|(private, _)| private == ip) {
                *ip = *public;
            }
        }
        let mut seen = Vec::with_capacity(ips.len());
        ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });
        ips
    }

    fn announce_ips_unmapped(&self) -> Vec<IpAddr> {
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

    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The configuration as TOML (a valid configuration file), secrets replaced by
    /// [`REDACTED`].
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.api_secret.is_some() {
            shown.api_secret = Some(REDACTED.into());
        }
        if shown.turn_secret.is_some() {
            shown.turn_secret = Some(REDACTED.into());
        }
        if let Some(url) = &shown.redis_url {
            if let Ok(mut u) = reqwest::Url::parse(url) {
                if u.password().is_some() && u.set_password(Some(REDACTED)).is_ok() {
                    shown.redis_url = Some(u.to_string());
                }
            }
        }
        // TOML has no null: unset optional keys are left out (their default applies).
        match toml::to_string_pretty(&shown) {
            Ok(text) => text,
            Err(e) => format!("# cannot print the configuration: {e}\n"),
        }
    }
}

/// Durations in configuration: a number of seconds (`30`, `0.5`) or a human-readable string
/// (`"30s"`, `"5m"`, `"1h 30m"`). Written back as the string form.
mod duration {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Duration::from_secs(n)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
            Raw::Float(f) => Err(de::Error::custom(format!("{f} is not a duration"))),
            Raw::Text(t) => match t.trim().parse::<u64>() {
                Ok(n) => Ok(Duration::from_secs(n)),
                Err(_) => humantime::parse_duration(t.trim()).map_err(|e| {
                    de::Error::custom(format!("{t:?} is not a duration like \"30s\": {e}"))
                }),
            },
        }
    }
}

mod validate;

#[cfg(test)]
mod docs;
#[cfg(test)]
mod tests;
