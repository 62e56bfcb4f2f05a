//! Data messages: the binary envelope in front of the application's bytes, the limits a relay
//! applies, and the per-participant rate limiter. Pure: no connection, told the time.
//!
//! Every message on a participant's data channels is one envelope (`docs/protocol.md`, "Data
//! messages"). What a client sends names a topic and, optionally, the identities it is for;
//! what the server delivers names the topic and the sender, stamped by the server from the
//! sender's connection (a client cannot say who it is). Both start with a version byte and a
//! flags byte; strings are a length byte and UTF-8.
//!
//! ```text
//! client → server:  01 | flags | topic_len topic | count (id_len identity)* | payload
//! server → client:  01 | flags | topic_len topic | id_len participant_id | len identity | payload
//! ```

use std::time::{Duration, Instant};

/// The envelope's version byte.
pub const VERSION: u8 = 1;
/// Flag: the payload is UTF-8 text (sent with `send(string)`), else binary.
pub const FLAG_TEXT: u8 = 1;
/// Identities a message may be addressed to at most.
pub const MAX_DESTINATIONS: usize = 64;

/// The stream ids of the two negotiated data channels every participant has (`docs/protocol.md`).
pub const RELIABLE_STREAM: u16 = 0;
pub const LOSSY_STREAM: u16 = 1;

/// A data message as a client sent it, borrowed from the envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing<'a> {
    pub text: bool,
    pub topic: &'a str,
    /// The identities it is for; empty: the whole room (but the sender).
    pub to: Vec<&'a str>,
    pub payload: &'a [u8],
}

/// Why a client's envelope was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum EnvelopeError {
    Truncated,
    Version(u8),
    NotUtf8,
    TooManyDestinations,
    /// A text message whose payload is not UTF-8.
    TextNotUtf8,
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => write!(f, "the data envelope is truncated"),
            Self::Version(v) => write!(f, "unknown data envelope version {v}"),
            Self::NotUtf8 => write!(f, "a topic or identity in the data envelope is not UTF-8"),
            Self::TooManyDestinations => write!(
                f,
                "a data message may name at most {MAX_DESTINATIONS} destinations"
            ),
            Self::TextNotUtf8 => write!(f, "a text data message is not UTF-8"),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, EnvelopeError> {
        let (&b, rest) = self.0.split_first().ok_or(EnvelopeError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn string(&mut self) -> Result<&'a str, EnvelopeError> {
        let len = usize::from(self.byte()?);
        if self.0.len() < len {
            return Err(EnvelopeError::Truncated);
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| EnvelopeError::NotUtf8)
    }
}

/// Reads a client's envelope.
pub fn parse_outgoing(data: &[u8]) -> Result<Outgoing<'_>, EnvelopeError> {
    let mut r = Reader(data);
    let version = r.byte()?;
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let flags = r.byte()?;
    let topic = r.string()?;
    let count = usize::from(r.byte()?);
    if count > MAX_DESTINATIONS {
        return Err(EnvelopeError::TooManyDestinations);
    }
    let mut to = Vec::with_capacity(count);
    for _ in 0..count {
        to.push(r.string()?);
    }
    let text = flags & FLAG_TEXT != 0;
    if text && std::str::from_utf8(r.0).is_err() {
        return Err(EnvelopeError::TextNotUtf8);
    }
    Ok(Outgoing {
        text,
        topic,
        to,
        payload: r.0,
    })
}

/// Writes a client's envelope (what the client library does; here for tests and tools).
/// Strings longer than 255 bytes are cut to 255.
pub fn write_outgoing(text: bool, topic: &str, to: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION, if text { FLAG_TEXT } else { 0 }];
    put_string(&mut out, topic);
    out.push(to.len().min(MAX_DESTINATIONS) as u8);
    for id in to.iter().take(MAX_DESTINATIONS) {
        put_string(&mut out, id);
    }
    out.extend_from_slice(payload);
    out
}

/// The envelope the server delivers: the message stamped with its sender (an empty id and
/// identity: the server itself, e.g. the admin API).
pub fn write_delivery(
    text: bool,
    topic: &str,
    sender_id: &str,
    sender_identity: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        5 + topic.len() + sender_id.len() + sender_identity.len() + payload.len(),
    );
    out.extend_from_slice(&[VERSION, if text { FLAG_TEXT } else { 0 }]);
    put_string(&mut out, topic);
    put_string(&mut out, sender_id);
    put_string(&mut out, sender_identity);
    out.extend_from_slice(payload);
    out
}

/// A delivered message, read back (what the client library does).
#[derive(Debug, PartialEq, Eq)]
pub struct Delivered<'a> {
    pub text: bool,
    pub topic: &'a str,
    pub sender_id: &'a str,
    pub sender_identity: &'a str,
    pub payload: &'a [u8],
}

/// Reads a delivered envelope.
pub fn parse_delivery(data: &[u8]) -> Result<Delivered<'_>, EnvelopeError> {
    let mut r = Reader(data);
    let version = r.byte()?;
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let flags = r.byte()?;
    Ok(Delivered {
        text: flags & FLAG_TEXT != 0,
        topic: r.string()?,
        sender_id: r.string()?,
        sender_identity: r.string()?,
        payload: r.0,
    })
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// What the relay allows (settings `data_*`, `docs/configuration.md`).
#[derive(Debug, Clone)]
pub struct DataLimits {
    /// The largest envelope on the reliable channel, in bytes.
    pub max_reliable: usize,
    /// The largest envelope on the lossy channel, in bytes (one datagram's worth).
    pub max_lossy: usize,
    /// Messages per second one participant may send (and as many in a burst); 0: no limit.
    pub messages_per_sec: u32,
    /// Bytes per second one participant may send (and as many in a burst); 0: no limit.
    pub bytes_per_sec: u32,
    /// A receiver's lossy channel backlog past which lossy messages to it are dropped.
    pub lossy_backlog: usize,
    /// A receiver's reliable channel backlog past which it is disconnected: it does not read,
    /// and the server will not hold its messages without bound.
    pub reliable_backlog: usize,
}

impl Default for DataLimits {
    fn default() -> Self {
        Self {
            max_reliable: 64 * 1024,
            max_lossy: 1200,
            messages_per_sec: 1000,
            bytes_per_sec: 4 * 1024 * 1024,
            lossy_backlog: 64 * 1024,
            reliable_backlog: 4 * 1024 * 1024,
        }
    }
}

impl DataLimits {
    /// The SCTP message size the server's connections allow (and advertise in
    /// `a=max-message-size`): the largest envelope a client may send, grown by the stamp the
    /// server puts on it (two strings of at most 255 bytes, each with its length byte).
    pub fn sctp_max_message(&self) -> u32 {
        let largest = self.max_reliable.max(self.max_lossy) + 2 * 256;
        u32::try_from(largest).unwrap_or(u32::MAX)
    }
}

/// A token bucket of `rate` per second holding at most `rate` (0: unlimited).
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
    }
}

/// One participant's sending allowance: messages and bytes per second.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    messages: Bucket,
    bytes: Bucket,
    /// When the sender was last told it is limited (told at most once a second).
    told_at: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limits: &DataLimits, now: Instant) -> Self {
        Self {
            messages: Bucket::new(limits.messages_per_sec, now),
            bytes: Bucket::new(limits.bytes_per_sec, now),
            told_at: None,
        }
    }

    /// Whether a message of `len` bytes may go now (and if so, it is charged).
    pub fn allow(&mut self, len: usize, now: Instant) -> bool {
        self.messages.refill(now);
        self.bytes.refill(now);
        let len = len as f64;
        let messages_ok = self.messages.rate == 0.0 || self.messages.tokens >= 1.0;
        // A message larger than a whole second's allowance passes on a full bucket (the size
        // limit bounds it), so the bucket never refuses it for ever.
        let bytes_ok = self.bytes.rate == 0.0
            || self.bytes.tokens >= len
            || self.bytes.tokens >= self.bytes.rate;
        if !(messages_ok && bytes_ok) {
            return false;
        }
        if self.messages.rate > 0.0 {
            self.messages.tokens -= 1.0;
        }
        if self.bytes.rate > 0.0 {
            self.bytes.tokens -= len;
        }
        true
    }

    /// Whether to tell the sender it was limited (once a second at most).
    pub fn should_tell(&mut self, now: Instant) -> bool {
        if self
            .told_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.told_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outgoing_envelope_reads_back() {
        let data = write_outgoing(true, "chat", &["bob", "carol"], "hé".as_bytes());
        let m = parse_outgoing(&data).unwrap();
        assert_eq!(
            m,
            Outgoing {
                text: true,
                topic: "chat",
                to: vec!["bob", "carol"],
                payload: "hé".as_bytes(),
            }
        );
        let room = write_outgoing(false, "", &[], &[0, 1, 2]);
        let m = parse_outgoing(&room).unwrap();
        assert!(!m.text && m.to.is_empty() && m.topic.is_empty());
        assert_eq!(m.payload, [0, 1, 2]);
    }

    #[test]
    fn a_delivery_names_its_sender() {
        let data = write_delivery(false, "t", "PA_1", "alice", &[9; 3]);
        let d = parse_delivery(&data).unwrap();
        assert_eq!(
            (d.text, d.topic, d.sender_id, d.sender_identity, d.payload),
            (false, "t", "PA_1", "alice", &[9u8; 3][..])
        );
    }

    #[test]
    fn bad_envelopes_are_refused_precisely() {
        assert_eq!(parse_outgoing(&[]), Err(EnvelopeError::Truncated));
        assert_eq!(parse_outgoing(&[2, 0]), Err(EnvelopeError::Version(2)));
        assert_eq!(
            parse_outgoing(&[1, 0, 5, b'a']),
            Err(EnvelopeError::Truncated)
        );
        assert_eq!(
            parse_outgoing(&[1, 0, 1, 0xff, 0]),
            Err(EnvelopeError::NotUtf8)
        );
        assert_eq!(
            parse_outgoing(&[1, 0, 0, 65]),
            Err(EnvelopeError::TooManyDestinations)
        );
        assert_eq!(
            parse_outgoing(&[1, FLAG_TEXT, 0, 0, 0xc3]),
            Err(EnvelopeError::TextNotUtf8)
        );
        // Every prefix of a valid envelope up to its payload is truncated, never a panic.
        let data = write_outgoing(false, "topic", &["someone"], b"x");
        for n in 0..data.len() - 1 {
            assert!(parse_outgoing(&data[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        let topic = "é".repeat(200); // 400 bytes
        let data = write_outgoing(false, &topic, &[], b"");
        let m = parse_outgoing(&data).unwrap();
        assert_eq!(m.topic.len(), 254);
        assert!(topic.starts_with(m.topic));
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let limits = DataLimits {
            messages_per_sec: 10,
            bytes_per_sec: 1000,
            ..DataLimits::default()
        };
        let mut r = RateLimiter::new(&limits, t0);
        assert!((0..10).all(|_| r.allow(10, t0)));
        assert!(!r.allow(10, t0), "the burst is spent");
        let later = t0 + Duration::from_millis(100);
        assert!(r.allow(10, later), "one message per 100 ms");
        assert!(!r.allow(10, later));
        // Bytes: a full bucket lets a message larger than the rate through once.
        let mut r = RateLimiter::new(&limits, t0);
        assert!(r.allow(5000, t0));
        assert!(!r.allow(1, t0));
        assert!(r.allow(500, t0 + Duration::from_secs(6)));
        let mut unlimited = RateLimiter::new(
            &DataLimits {
                messages_per_sec: 0,
                bytes_per_sec: 0,
                ..DataLimits::default()
            },
            t0,
        );
        assert!((0..10_000).all(|_| unlimited.allow(60_000, t0)));
    }

    #[test]
    fn a_limited_sender_is_told_once_a_second() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&DataLimits::default(), t0);
        assert!(r.should_tell(t0));
        assert!(!r.should_tell(t0 + Duration::from_millis(500)));
        assert!(r.should_tell(t0 + Duration::from_millis(1000)));
    }
}
