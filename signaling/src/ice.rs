//! The ICE servers handed to clients (`joined`, WHIP/WHEP `Link` headers): configured STUN/TURN
//! URLs as they are, and TURN URLs with time-limited credentials derived from a shared secret.
//!
//! The credentials follow the scheme coturn calls `use-auth-secret` (the "TURN REST API"
//! draft): the username is `<expiry unix time>:<identity>` and the password is
//! base64(HMAC-SHA1(secret, username)). A coturn started with `use-auth-secret` and
//! `static-auth-secret=<turn_secret>` accepts them unchanged, and refuses them once expired.

use std::time::Duration;

use base64::Engine;

use crate::config::Settings;
use crate::protocol::IceServer;

#[derive(Clone, Debug, Default)]
pub struct IceServers {
    /// Configured URLs, handed out as they are.
    plain: Vec<String>,
    turn: Option<Turn>,
}

#[derive(Clone, Debug)]
struct Turn {
    urls: Vec<String>,
    secret: String,
    ttl: Duration,
}

impl IceServers {
    pub fn from_settings(settings: &Settings) -> IceServers {
        IceServers {
            plain: settings.ice_servers.clone(),
            turn: settings.turn_secret.as_ref().map(|secret| Turn {
                urls: settings.turn_urls.clone(),
                secret: secret.clone(),
                ttl: settings.turn_ttl,
            }),
        }
    }

    /// The servers for a participant of `identity`, with TURN credentials valid from `now`
    /// (Unix seconds) for the configured time.
    pub fn for_identity(&self, identity: &str, now: u64) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.plain.is_empty() {
            out.push(IceServer {
                urls: self.plain.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &self.turn {
            let (username, credential) =
                turn_credentials(&turn.secret, identity, now + turn.ttl.as_secs());
            out.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        out
    }
}

/// coturn's `use-auth-secret` credentials for `identity`, valid until `expires` (Unix seconds).
pub fn turn_credentials(secret: &str, identity: &str, expires: u64) -> (String, String) {
    let username = format!("{expires}:{identity}");
    let credential = rest_password(secret, &username);
    (username, credential)
}

/// The password the scheme derives for `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_coturns_rest_scheme() {
        // Computed independently: base64(HMAC-SHA1("turn-shared-secret", "1700000000:alice")).
        let (user, pass) = turn_credentials("turn-shared-secret", "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "RXM8cmVrcU98snNLpKm+uJgLUBU=");
    }

    #[test]
    fn plain_servers_and_turn_with_credentials() {
        let settings = Settings {
            ice_servers: vec!["stun:stun.example.com:3478".into()],
            turn_urls: vec![
                "turn:turn.example.com:3478?transport=udp".into(),
                "turns:turn.example.com:443?transport=tcp".into(),
            ],
            turn_secret: Some("s3cret".into()),
            turn_ttl: Duration::from_secs(600),
            ..Settings::default()
        };
        let servers = IceServers::from_settings(&settings).for_identity("bob", 1000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:stun.example.com:3478"]);
        assert!(servers[0].username.is_none());
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1600:bob"));
        assert_eq!(
            servers[1].credential,
            Some(turn_credentials("s3cret", "bob", 1600).1)
        );
        assert!(IceServers::default().for_identity("x", 0).is_empty());
    }
}
