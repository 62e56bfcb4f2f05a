//! Webhooks: room and participant lifecycle events POSTed as signed JSON to configured URLs.
//!
//! One delivery task per URL sends the events in order. A failed delivery (a network error, a
//! timeout, or any status but 2xx) is retried with exponential back-off (0.5 s, 1 s, 2 s, … at
//! most 30 s) up to `webhook_retries` times, then dropped and counted. Events wait in a bounded
//! queue per URL; when a receiver is so slow that it fills, new events are dropped and counted
//! rather than held without bound.
//!
//! Every request carries `X-Fanout-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` of
//! `"<t>.<body>"` keyed by the API secret, and `X-Fanout-Event: <event>`: a receiver recomputes
//! the HMAC over the exact body it received and rejects old timestamps (see
//! `docs/operations.md`).

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::auth::unix_now;

/// Events queued per URL before new ones are dropped.
const QUEUE: usize = 1024;
pub const SIGNATURE_HEADER: &str = "x-fanout-signature";
pub const EVENT_HEADER: &str = "x-fanout-event";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
    TrackMuted,
    TrackUnmuted,
    RecordingStarted,
    RecordingFinished,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomStarted => "room_started",
            EventKind::RoomFinished => "room_finished",
            EventKind::ParticipantJoined => "participant_joined",
            EventKind::ParticipantLeft => "participant_left",
            EventKind::TrackPublished => "track_published",
            EventKind::TrackUnpublished => "track_unpublished",
            EventKind::TrackMuted => "track_muted",
            EventKind::TrackUnmuted => "track_unmuted",
            EventKind::RecordingStarted => "recording_started",
            EventKind::RecordingFinished => "recording_finished",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRoom {
    pub name: String,
    pub sid: String,
    pub created_at: u64,
    pub num_participants: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookParticipant {
    pub id: String,
    pub identity: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookTrack {
    pub id: String,
    pub kind: String,
    pub source: String,
    pub muted: bool,
}

/// A recording (`recording_started`, `recording_finished`): its file on the server and, once
/// finished, its size, duration and the error that ended it early, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecording {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One webhook event, as POSTed (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event: receivers use it to ignore a retried delivery they already have.
    pub id: String,
    pub event: EventKind,
    /// Unix seconds.
    pub created_at: u64,
    pub room: HookRoom,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<HookParticipant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<HookTrack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<HookRecording>,
}

impl Event {
    pub fn new(
        event: EventKind,
        room: HookRoom,
        participant: Option<HookParticipant>,
        track: Option<HookTrack>,
    ) -> Event {
        Event {
            id: format!("EV_{}", Alphanumeric.sample_string(&mut rand::rng(), 16)),
            event,
            created_at: unix_now(),
            room,
            participant,
            track,
            recording: None,
        }
    }
}

/// The signature header's value for `body` sent at `t`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Checks a signature header (for receivers, and the tests): the HMAC matches and the timestamp
/// is at most `max_age` old.
pub fn verify(secret: &str, header: &str, body: &[u8], max_age: Duration) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if unix_now().saturating_sub(t) > max_age.as_secs() {
        return false;
    }
    let Some(bytes) = (0..v1.len())
        .step_by(2)
        .map(|i| {
            v1.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    ring::hmac::verify(&key, &msg, &bytes).is_ok()
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub secret: String,
    pub timeout: Duration,
    pub retries: u32,
}

/// Starts one delivery task per URL and returns the sender that feeds them all.
/// `deliveries` counts outcomes by `result` (`delivered`, `retried`, `failed`, `dropped`).
pub fn start(config: WebhookConfig, deliveries: IntCounterVec) -> mpsc::UnboundedSender<Event> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .unwrap_or_default();
    let secret: Arc<str> = config.secret.into();
    let mut queues = Vec::new();
    for url in config.urls {
        let (qtx, qrx) = mpsc::channel::<Arc<Event>>(QUEUE);
        queues.push(qtx);
        tokio::spawn(deliver_all(
            client.clone(),
            url,
            secret.clone(),
            config.retries,
            qrx,
            deliveries.clone(),
        ));
    }
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let event = Arc::new(event);
            for q in &queues {
                if q.try_send(event.clone()).is_err() {
                    deliveries.with_label_values(&["dropped"]).inc();
                    warn!(
                        event = event.event.as_str(),
                        "webhook queue full; event dropped"
                    );
                }
            }
        }
    });
    tx
}

async fn deliver_all(
    client: reqwest::Client,
    url: String,
    secret: Arc<str>,
    retries: u32,
    mut queue: mpsc::Receiver<Arc<Event>>,
    deliveries: IntCounterVec,
) {
    while let Some(event) = queue.recv().await {
        let Ok(body) = serde_json::to_vec(event.as_ref()) else {
            continue;
        };
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            let t = unix_now();
            let result = client
                .post(&url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, sign(&secret, t, &body))
                .header(EVENT_HEADER, event.event.as_str())
                .body(body.clone())
                .send()
                .await;
            let error = match result {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => Some(format!("status {}", resp.status())),
                Err(e) => Some(e.to_string()),
            };
            let Some(error) = error else {
                deliveries.with_label_values(&["delivered"]).inc();
                debug!(%url, event = event.event.as_str(), "webhook delivered");
                break;
            };
            if attempt >= retries {
                deliveries.with_label_values(&["failed"]).inc();
                warn!(%url, event = event.event.as_str(), %error, attempts = attempt + 1, "webhook not delivered; giving up");
                break;
            }
            deliveries.with_label_values(&["retried"]).inc();
            debug!(%url, %error, "webhook delivery failed; retrying");
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_catch_tampering() {
        let secret = "0123456789abcdef0123456789abcdef";
        let body = br#"{"event":"room_started"}"#;
        let header = sign(secret, unix_now(), body);
        assert!(verify(secret, &header, body, Duration::from_secs(300)));
        assert!(!verify(
            secret,
            &header,
            br#"{"event":"room_finished"}"#,
            Duration::from_secs(300)
        ));
        assert!(!verify(
            "another-secret-another-secret-xx",
            &header,
            body,
            Duration::from_secs(300)
        ));
        let old = sign(secret, unix_now() - 1000, body);
        assert!(!verify(secret, &old, body, Duration::from_secs(300)));
        assert!(!verify(secret, "t=1,v1=zz", body, Duration::from_secs(300)));
        assert!(!verify(secret, "garbage", body, Duration::from_secs(300)));
    }
}
