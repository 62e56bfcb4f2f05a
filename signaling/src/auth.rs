//! Access tokens: JWTs signed with HS256 by the API secret, naming the API key as issuer.
//!
//! Claims: `iss` (API key), `sub` (identity), `name`, `room`, `exp`, `nbf`, `iat`, and `grants`
//! (`join`, `publish`, `subscribe`, `sources`, `admin`, `data`). A join needs a token whose room is the
//! room joined and whose `join` grant is set; the admin API needs the `admin` grant (limited to
//! `room` when the token names one). Each way a token can be wrong has its own [`TokenError`],
//! which the front ends turn into their own error codes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// How far a token's `exp` and `nbf` may be off: clocks of the server and of the backend that
/// signs tokens differ by a few seconds in practice, and a token minted a moment "in the future"
/// should not be refused.
pub const TOKEN_LEEWAY: std::time::Duration = std::time::Duration::from_secs(10);

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    pub join: bool,
    pub publish: bool,
    pub subscribe: bool,
    /// The sources a publisher may send (`camera`, `microphone`, `screen`); absent: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    pub admin: bool,
    /// May send data messages (it always receives them); absent in a token: allowed.
    pub data: bool,
}

impl Default for Grants {
    /// A participant's usual grants: join, publish everything, subscribe.
    fn default() -> Self {
        Self {
            join: true,
            publish: true,
            subscribe: true,
            sources: None,
            admin: false,
            data: true,
        }
    }
}

impl Grants {
    /// Parses a grant list such as `join,subscribe` or `admin` (the names of the boolean
    /// grants; the ones not named are off).
    pub fn parse_list(list: &str) -> Result<Grants, String> {
        let mut g = Grants {
            join: false,
            publish: false,
            subscribe: false,
            sources: None,
            admin: false,
            data: false,
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "join" => g.join = true,
                "publish" => g.publish = true,
                "subscribe" => g.subscribe = true,
                "admin" => g.admin = true,
                "data" => g.data = true,
                other => {
                    return Err(format!(
                        "unknown grant {other:?} (known: join, publish, subscribe, admin, data)"
                    ))
                }
            }
        }
        Ok(g)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed the token.
    pub iss: String,
    /// The participant's identity.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room this token joins (or administers); absent for a server-wide admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub grants: Grants,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("an access token is required")]
    Missing,
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token's signature does not verify (wrong key or secret)")]
    BadSignature,
    #[error("the access token is for another room")]
    WrongRoom,
    #[error("the access token lacks the grant this needs")]
    MissingGrant,
}

/// Signs and verifies tokens with one API key and secret.
#[derive(Clone)]
pub struct TokenAuthority {
    api_key: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenAuthority {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            api_key: api_key.to_owned(),
            encoding: EncodingKey::from_secret(api_secret.as_bytes()),
            decoding: DecodingKey::from_secret(api_secret.as_bytes()),
        }
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// A signed token for `identity` valid for `ttl` from now.
    pub fn create(
        &self,
        identity: &str,
        name: Option<&str>,
        room: Option<&str>,
        grants: Grants,
        ttl: Duration,
    ) -> Result<String, String> {
        let now = unix_now();
        let claims = Claims {
            iss: self.api_key.clone(),
            sub: identity.to_owned(),
            name: name.map(str::to_owned),
            room: room.map(str::to_owned),
            exp: now.saturating_add(ttl.as_secs().max(1)),
            nbf: now,
            iat: now,
            grants,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// Checks the signature, issuer and validity period, with [`TOKEN_LEEWAY`] either side for
    /// clocks that disagree a little (the backend that signs the tokens and this server). Room
    /// and grants are checked by the caller, who knows what is asked.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        // Tell a malformed token from a badly signed one: the header must decode first.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::BadSignature);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = TOKEN_LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[self.api_key.as_str()]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                JwtErrorKind::ExpiredSignature => TokenError::Expired,
                JwtErrorKind::ImmatureSignature => TokenError::NotYetValid,
                JwtErrorKind::InvalidSignature | JwtErrorKind::InvalidIssuer => {
                    TokenError::BadSignature
                }
                _ => TokenError::Malformed,
            },
        )?;
        Ok(data.claims)
    }

    /// Verifies a token for joining `room`.
    pub fn verify_join(&self, token: Option<&str>, room: &str) -> Result<Claims, TokenError> {
        let claims = self.verify(token.ok_or(TokenError::Missing)?)?;
        if claims.room.as_deref() != Some(room) {
            return Err(TokenError::WrongRoom);
        }
        if !claims.grants.join {
            return Err(TokenError::MissingGrant);
        }
        Ok(claims)
    }

    /// Verifies an admin token for acting on `room` (`None`: server-wide, such as listing).
    pub fn verify_admin(
        &self,
        token: Option<&str>,
        room: Option<&str>,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token.ok_or(TokenError::Missing)?)?;
        if !claims.grants.admin {
            return Err(TokenError::MissingGrant);
        }
        match (claims.room.as_deref(), room) {
            (None, _) => Ok(claims),
            (Some(mine), Some(asked)) if mine == asked => Ok(claims),
            _ => Err(TokenError::WrongRoom),
        }
    }
}

/// Parses a token lifetime: seconds (`3600`) or a human form (`6h`, `30m`, `1d`).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(n) => Duration::from_secs(n),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?,
    };
    if d.is_zero() {
        return Err("the lifetime must be positive".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authority() -> TokenAuthority {
        TokenAuthority::new("key1", SECRET)
    }

    fn token(claims: &Claims, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims() -> Claims {
        let now = unix_now();
        Claims {
            iss: "key1".into(),
            sub: "alice".into(),
            name: Some("Alice".into()),
            room: Some("r1".into()),
            exp: now + 60,
            nbf: now,
            iat: now,
            grants: Grants::default(),
        }
    }

    #[test]
    fn a_created_token_verifies_for_its_room() {
        let a = authority();
        let t = a
            .create(
                "alice",
                Some("Alice"),
                Some("r1"),
                Grants::default(),
                Duration::from_secs(60),
            )
            .unwrap();
        let c = a.verify_join(Some(&t), "r1").unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.name.as_deref(), Some("Alice"));
        assert!(c.grants.publish);
    }

    #[test]
    fn every_way_of_being_wrong_has_its_error() {
        let a = authority();
        assert_eq!(a.verify_join(None, "r1"), Err(TokenError::Missing));
        assert_eq!(a.verify_join(Some("  "), "r1"), Err(TokenError::Missing));
        assert_eq!(
            a.verify_join(Some("not-a-jwt"), "r1"),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            a.verify_join(Some("a.b.c"), "r1"),
            Err(TokenError::Malformed)
        );
        let mut c = claims();
        c.exp = unix_now() - 60;
        assert_eq!(
            a.verify_join(Some(&token(&c, SECRET)), "r1"),
            Err(TokenError::Expired)
        );
        // Within the leeway either side: a clock a few seconds off is forgiven.
        let mut c = claims();
        c.exp = unix_now() - 3;
        c.nbf = unix_now() + 3;
        assert!(a.verify_join(Some(&token(&c, SECRET)), "r1").is_ok());
        let mut c = claims();
        c.nbf = unix_now() + 600;
        assert_eq!(
            a.verify_join(Some(&token(&c, SECRET)), "r1"),
            Err(TokenError::NotYetValid)
        );
        let other = "ffffffffffffffffffffffffffffffff";
        assert_eq!(
            a.verify_join(Some(&token(&claims(), other)), "r1"),
            Err(TokenError::BadSignature)
        );
        let mut c = claims();
        c.iss = "someone-else".into();
        assert_eq!(
            a.verify_join(Some(&token(&c, SECRET)), "r1"),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            a.verify_join(Some(&token(&claims(), SECRET)), "r2"),
            Err(TokenError::WrongRoom)
        );
        let mut c = claims();
        c.grants.join = false;
        assert_eq!(
            a.verify_join(Some(&token(&c, SECRET)), "r1"),
            Err(TokenError::MissingGrant)
        );
        // A tampered payload breaks the signature.
        let t = token(&claims(), SECRET);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = token(
            &Claims {
                sub: "mallory".into(),
                ..claims()
            },
            other,
        );
        parts[1] = forged.split('.').nth(1).unwrap();
        assert_eq!(
            a.verify_join(Some(&parts.join(".")), "r1"),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn admin_tokens_are_scoped() {
        let a = authority();
        let mut c = claims();
        c.grants = Grants {
            admin: true,
            ..Grants::default()
        };
        c.room = None;
        let global = token(&c, SECRET);
        assert!(a.verify_admin(Some(&global), None).is_ok());
        assert!(a.verify_admin(Some(&global), Some("any")).is_ok());
        c.room = Some("r1".into());
        let scoped = token(&c, SECRET);
        assert!(a.verify_admin(Some(&scoped), Some("r1")).is_ok());
        assert_eq!(
            a.verify_admin(Some(&scoped), Some("r2")),
            Err(TokenError::WrongRoom)
        );
        assert_eq!(
            a.verify_admin(Some(&scoped), None),
            Err(TokenError::WrongRoom)
        );
        let user = token(&claims(), SECRET);
        assert_eq!(
            a.verify_admin(Some(&user), None),
            Err(TokenError::MissingGrant)
        );
    }

    #[test]
    fn grant_lists_and_lifetimes_parse() {
        let g = Grants::parse_list("join,subscribe").unwrap();
        assert!(g.join && g.subscribe && !g.publish && !g.admin);
        assert!(Grants::parse_list("join,fly").is_err());
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
