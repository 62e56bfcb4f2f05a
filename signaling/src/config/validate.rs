//! Checking the settings: what their types alone cannot say (keys that go together, ranges,
//! files that must exist, addresses that must parse), each problem naming its key.

use super::*;

impl Settings {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.api_key, &self.api_secret) {
            (Some(_), None) => return Err(invalid("api_secret", "required when api_key is set")),
            (None, Some(_)) => return Err(invalid("api_key", "required when api_secret is set")),
            (None, None) if !self.dev => {
                return Err(invalid(
                    "api_key",
                    "api_key and api_secret are required outside --dev (they sign access tokens); \
                     set FANOUT_API_KEY and FANOUT_API_SECRET, or run with --dev",
                ))
            }
            _ => {}
        }
        if let Some(key) = &self.api_key {
            if key.trim().is_empty() || key.chars().any(char::is_whitespace) {
                return Err(invalid("api_key", "must be non-empty, without spaces"));
            }
        }
        if let Some(secret) = &self.api_secret {
            if secret.chars().count() < MIN_SECRET_CHARS {
                return Err(invalid(
                    "api_secret",
                    format!("must be at least {MIN_SECRET_CHARS} characters"),
                ));
            }
        }
        for (cert_key, key_key, cert, key) in [
            ("tls_cert", "tls_key", &self.tls_cert, &self.tls_key),
            (
                "turn_tls_cert",
                "turn_tls_key",
                &self.turn_tls_cert,
                &self.turn_tls_key,
            ),
        ] {
            match (cert, key) {
                (Some(_), None) => {
                    return Err(invalid(key_key, format!("required when {cert_key} is set")))
                }
                (None, Some(_)) => {
                    return Err(invalid(cert_key, format!("required when {key_key} is set")))
                }
                (Some(cert), Some(key)) => {
                    for (name, path) in [(cert_key, cert), (key_key, key)] {
                        if !path.is_file() {
                            return Err(invalid(
                                name,
                                format!("{} is not a readable file", path.display()),
                            ));
                        }
                    }
                }
                (None, None) => {}
            }
        }
        if let Some(n) = self.media_drivers {
            if !(1..=256).contains(&n) {
                return Err(invalid("media_drivers", "must be between 1 and 256"));
            }
        }
        if let Some(ip) = self.announce_ips.iter().find(|ip| ip.is_unspecified()) {
            return Err(invalid(
                "announce_ips",
                format!("{ip} is a wildcard, not an address clients can reach"),
            ));
        }
        self.turn_relay_range()?;
        if self.turn_tls_port.is_some() && self.turn_tls_cert.is_none() && self.tls_cert.is_none() {
            return Err(invalid(
                "turn_tls_port",
                "needs a certificate: turn_tls_cert and turn_tls_key, or the server's (tls_cert \
                 and tls_key)",
            ));
        }
        if self.turn_max_allocations == 0 {
            return Err(invalid("turn_max_allocations", "must be at least 1"));
        }
        if self.turn_realm.is_empty() {
            return Err(invalid("turn_realm", "must not be empty"));
        }
        if let Some(host) = &self.turn_host {
            let name = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !name && host.parse::<IpAddr>().is_err() {
                return Err(invalid(
                    "turn_host",
                    format!("{host:?} is neither a host name nor an IP address"),
                ));
            }
        }
        let pairs = self.nat_pairs()?;
        if let Some((private, public)) = pairs.iter().find(|(a, b)| a.is_ipv4() != b.is_ipv4()) {
            return Err(invalid(
                "nat_map",
                format!("{private}={public} maps between IPv4 and IPv6"),
            ));
        }
        if let Some(url) = &self.announce_stun {
            crate::stun::parse_server(url).map_err(|e| invalid("announce_stun", e))?;
            if !self.announce_ips.is_empty() {
                return Err(invalid(
                    "announce_stun",
                    "set either announce_ips or announce_stun, not both",
                ));
            }
        }
        for url in &self.ice_servers {
            if !["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(invalid(
                    "ice_servers",
                    format!("{url:?} is not a stun:, stuns:, turn: or turns: URL"),
                ));
            }
        }
        for url in &self.turn_urls {
            if !url.starts_with("turn:") && !url.starts_with("turns:") {
                return Err(invalid(
                    "turn_urls",
                    format!("{url:?} is not a turn: or turns: URL"),
                ));
            }
        }
        match (self.turn_urls.is_empty(), &self.turn_secret) {
            (false, None) => {
                return Err(invalid(
                    "turn_secret",
                    "required when turn_urls is set (the TURN server's static-auth-secret)",
                ))
            }
            (true, Some(_)) if !self.turn_embedded() => {
                return Err(invalid(
                    "turn_urls",
                    "required when turn_secret is set (or turn_embedded)",
                ))
            }
            (_, Some(s)) if s.is_empty() => {
                return Err(invalid("turn_secret", "must not be empty"))
            }
            _ => {}
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 86_400)).contains(&self.turn_ttl) {
            return Err(invalid("turn_ttl", "must be between 1 minute and 7 days"));
        }
        if !(0.0..=100.0).contains(&self.inject_loss) {
            return Err(invalid("inject_loss", "must be between 0 and 100"));
        }
        if !(1024..=1 << 20).contains(&self.max_message_bytes) {
            return Err(invalid(
                "max_message_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if self.max_messages_per_second == 0 {
            return Err(invalid("max_messages_per_second", "must be at least 1"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.join_timeout) {
            return Err(invalid("join_timeout", "must be 1s to 300s"));
        }
        self.validate_data()?;
        if !(Duration::from_secs(5)..=Duration::from_secs(300)).contains(&self.consent_timeout) {
            return Err(invalid(
                "consent_timeout",
                "must be between 5s and 300s (Chromium checks every 2.5 s or so)",
            ));
        }
        if self.drain_timeout > Duration::from_secs(86_400) {
            return Err(invalid("drain_timeout", "must be at most a day"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(invalid("log", format!("not a tracing filter: {e}")));
        }
        for url in &self.webhook_urls {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    "webhook_urls",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if !self.webhook_urls.is_empty() && self.api_secret.is_none() {
            return Err(invalid(
                "webhook_urls",
                "webhooks are signed with api_secret, which is not set",
            ));
        }
        self.validate_cluster()
    }

    /// The multi-node settings.
    fn validate_data(&self) -> Result<(), ConfigError> {
        // rtc sends SCTP messages of 256 KiB at most, and a delivery carries a stamp of 512 bytes.
        if self.recordings_dir.as_os_str().is_empty() {
            return Err(invalid("recordings_dir", "must not be empty"));
        }
        if self.recordings_dir.exists() && !self.recordings_dir.is_dir() {
            return Err(invalid("recordings_dir", "exists and is not a directory"));
        }
        if !(1024..=255 * 1024).contains(&self.data_max_reliable) {
            return Err(invalid("data_max_reliable", "must be 1024 to 261120 bytes"));
        }
        if !(64..=self.data_max_reliable.min(16 * 1024)).contains(&self.data_max_lossy) {
            return Err(invalid(
                "data_max_lossy",
                "must be 64 to 16384 bytes, and at most data_max_reliable",
            ));
        }
        if self.data_lossy_backlog < self.data_max_lossy {
            return Err(invalid(
                "data_lossy_backlog",
                "must hold one data_max_lossy message",
            ));
        }
        if self.data_reliable_backlog < self.data_max_reliable {
            return Err(invalid(
                "data_reliable_backlog",
                "must hold one data_max_reliable message",
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.redis_prefix.is_empty() || self.redis_prefix.chars().any(char::is_whitespace) {
            return Err(invalid("redis_prefix", "must be non-empty, without spaces"));
        }
        if let Some(id) = &self.node_id {
            let ok = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    "node_id",
                    "must be 1 to 64 letters, digits, `-`, `_` or `.`",
                ));
            }
        }
        if let Some(url) = &self.node_url {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| u.scheme() == "http" && u.host().is_some() && u.path() == "/");
            if !ok {
                return Err(invalid(
                    "node_url",
                    format!("{url:?} is not an http://HOST:PORT URL"),
                ));
            }
        }
        let Some(url) = &self.redis_url else {
            return Ok(());
        };
        if url.starts_with("rediss:") {
            return Err(invalid(
                "redis_url",
                "TLS to Redis (rediss://) is not supported; use redis:// on a private network",
            ));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(invalid("redis_url", format!("{url:?}: {e}")));
        }
        if self.api_key.is_none() {
            return Err(invalid(
                "api_key",
                "multi-node mode (redis_url) needs api_key and api_secret, also in --dev: every \
                 node must verify the tokens every other node hands out",
            ));
        }
        if self.tls() {
            return Err(invalid(
                "redis_url",
                "multi-node mode proxies joins between nodes over plain HTTP: terminate TLS in \
                 front of the nodes (a load balancer or ingress) instead of tls_cert/tls_key",
            ));
        }
        Ok(())
    }
}
