//! The HTTP side of WHIP and WHEP: RFC 9457 problems, CORS and its preflights, the bearer
//! token, content types, and the `Link` headers of the ICE servers.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use tracing::debug;

use super::{SDP, SDP_FRAG};
use crate::protocol::{ErrorCode, IceServer};

/// An RFC 9457 problem with the protocol's error code.
pub(super) fn problem(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Response {
    let detail = detail.into();
    debug!(%status, ?code, %detail, "WHIP request refused");
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    });
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    cors(headers);
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    response
}

/// A refusal not yet rendered (small, for `Result`s); renders as [`problem`].
pub(super) struct Problem(
    pub(super) StatusCode,
    pub(super) ErrorCode,
    pub(super) String,
);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        problem(self.0, self.1, self.2)
    }
}

pub(super) fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, ETag, Accept-Patch, Accept-Post"),
    );
}

pub(super) fn preflight(methods: &'static str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

pub(super) async fn options() -> Response {
    let mut response = preflight("POST, OPTIONS");
    response
        .headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP));
    response
}

pub(super) async fn options_session() -> Response {
    let mut response = preflight("PATCH, DELETE, OPTIONS");
    response
        .headers_mut()
        .insert("accept-patch", HeaderValue::from_static(SDP_FRAG));
    response
}

/// `Authorization: Bearer <token>`, if present.
pub(super) fn bearer(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(Problem(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenMalformed,
            "the Authorization header must be `Bearer <access token>`".into(),
        )),
    }
}

pub(super) fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// `Link` header values for the ICE servers (RFC 9725 section 4.4).
pub(super) fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut links = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(u),
                    quote(c)
                ));
            }
            links.push(link);
        }
    }
    links
}

/// A room name as one URL path segment.
pub(super) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
