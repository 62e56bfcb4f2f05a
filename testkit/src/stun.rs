//! STUN binding requests as an ICE agent sends them (RFC 8489 §5, RFC 8445 §7.1.2).
//!
//! Written by hand rather than through `rtc::stun`, so that a test can leave attributes out,
//! put odd bytes in the username, or spoil the MESSAGE-INTEGRITY on purpose.

/// The magic cookie every STUN message carries after its length.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// The message type of a binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// The message type of a binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;

const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_ICE_CONTROLLING: u16 = 0x802a;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const HEADER_LEN: usize = 20;

/// A binding request's contents; [`BindingRequest::encode`] writes it. Attributes go in the
/// order browsers send them: USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
/// MESSAGE-INTEGRITY, FINGERPRINT.
#[derive(Debug, Clone)]
pub struct BindingRequest<'a> {
    /// USERNAME, `"<receiver's ufrag>:<sender's ufrag>"` (any bytes, for tests of bad ones).
    pub username: &'a [u8],
    pub transaction_id: [u8; 12],
    pub priority: Option<u32>,
    /// ICE-CONTROLLING with this tie-breaker.
    pub controlling: Option<u64>,
    /// USE-CANDIDATE: the controlling agent nominates this pair.
    pub use_candidate: bool,
    /// MESSAGE-INTEGRITY keyed by the receiver's ice-pwd (short-term credentials).
    pub password: Option<&'a str>,
    /// Writes the MESSAGE-INTEGRITY wrong (one byte flipped), as a forger would.
    pub spoil_integrity: bool,
    pub fingerprint: bool,
}

impl<'a> BindingRequest<'a> {
    /// A request with USERNAME and PRIORITY only, and a fixed transaction id.
    pub fn new(username: &'a [u8]) -> Self {
        Self {
            username,
            transaction_id: [7; 12],
            priority: Some(0x6e7f_1eff),
            controlling: None,
            use_candidate: false,
            password: None,
            spoil_integrity: false,
            fingerprint: false,
        }
    }

    /// A request as a controlling agent checks a pair with: ICE-CONTROLLING, MESSAGE-INTEGRITY
    /// keyed by `password`, FINGERPRINT.
    pub fn checked(username: &'a [u8], password: &'a str) -> Self {
        Self {
            controlling: Some(42),
            password: Some(password),
            fingerprint: true,
            ..Self::new(username)
        }
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&self.transaction_id);
        put_attr(&mut m, ATTR_USERNAME, self.username);
        if let Some(priority) = self.priority {
            put_attr(&mut m, ATTR_PRIORITY, &priority.to_be_bytes());
        }
        if let Some(tie_breaker) = self.controlling {
            put_attr(&mut m, ATTR_ICE_CONTROLLING, &tie_breaker.to_be_bytes());
        }
        if self.use_candidate {
            put_attr(&mut m, ATTR_USE_CANDIDATE, &[]);
        }
        if let Some(password) = self.password {
            // The length covers the MESSAGE-INTEGRITY attribute itself (RFC 8489 §14.5).
            set_len(&mut m, 24);
            let key = ring::hmac::Key::new(
                ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                password.as_bytes(),
            );
            let mut mac = ring::hmac::sign(&key, &m).as_ref().to_vec();
            if self.spoil_integrity {
                mac[0] ^= 0xff;
            }
            put_attr(&mut m, ATTR_MESSAGE_INTEGRITY, &mac);
        }
        if self.fingerprint {
            set_len(&mut m, 8);
            let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&m) ^ FINGERPRINT_XOR;
            put_attr(&mut m, ATTR_FINGERPRINT, &crc.to_be_bytes());
        }
        set_len(&mut m, 0);
        m
    }
}

/// Appends one attribute, padded to 4 bytes.
fn put_attr(m: &mut Vec<u8>, typ: u16, value: &[u8]) {
    m.extend_from_slice(&typ.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(value);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

/// Sets the header's length to the body so far plus `extra` bytes still to come.
fn set_len(m: &mut [u8], extra: usize) {
    let body_len = m.len() - HEADER_LEN + extra;
    m[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
}

/// A STUN message's type, if `data` is one (long enough, with the magic cookie).
pub fn message_type(data: &[u8]) -> Option<u16> {
    if data.len() < HEADER_LEN || data[4..8] != MAGIC_COOKIE {
        return None;
    }
    Some(u16::from_be_bytes([data[0], data[1]]))
}

#[cfg(test)]
mod tests {
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::Message;

    use super::*;

    fn decoded(raw: &[u8]) -> Message {
        let mut m = Message::new();
        m.raw = raw.to_vec();
        m.decode().expect("a well-formed STUN message");
        m
    }

    #[test]
    fn rtc_reads_what_it_writes() {
        let raw = BindingRequest::new(b"abc:defgh").encode();
        assert_eq!(raw.len() % 4, 0);
        let m = decoded(&raw);
        assert_eq!(m.typ.value(), BINDING_REQUEST);
        assert_eq!(m.transaction_id.0, [7; 12]);
        assert_eq!(message_type(&raw), Some(BINDING_REQUEST));
    }

    #[test]
    fn integrity_and_fingerprint_check_out_unless_spoiled() {
        let provider = rtc::crypto::default_provider().expect("a crypto provider");
        let integrity = |m: &Message| {
            MessageIntegrity::check(&mut m.clone(), b"pwd", provider.crypto()).is_ok()
        };
        let request = BindingRequest::checked(b"srv:cli", "pwd");
        let good = decoded(&request.encode());
        assert!(integrity(&good));
        assert!(FINGERPRINT.check(&good).is_ok());
        let spoiled = decoded(
            &BindingRequest {
                spoil_integrity: true,
                ..request
            }
            .encode(),
        );
        assert!(!integrity(&spoiled));
        assert!(FINGERPRINT.check(&spoiled).is_ok());
    }
}
