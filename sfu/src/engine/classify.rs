//! What a datagram on the shared media port is, from its first bytes (RFC 7983), and the ICE
//! username of a STUN binding request, which is how a new flow finds its connection.
//!
//! Both run on every datagram from an unknown source address, so they read the bytes in place and
//! allocate nothing: a flood of garbage must cost little.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Unknown,
}

pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => match datagram.get(1) {
            // RFC 5761: RTCP packet types 192..=223 occupy these payload type values.
            Some(&pt) if (192..=223).contains(&pt) => DatagramKind::Rtcp,
            Some(_) => DatagramKind::Rtp,
            None => DatagramKind::Unknown,
        },
        _ => DatagramKind::Unknown,
    }
}

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_BINDING_REQUEST: u16 = 0x0001;
const STUN_BINDING_SUCCESS: u16 = 0x0101;
const STUN_ATTR_USERNAME: u16 = 0x0006;
const STUN_ATTR_USE_CANDIDATE: u16 = 0x0025;
const STUN_HEADER_LEN: usize = 20;

fn stun_type(datagram: &[u8]) -> Option<u16> {
    if datagram.len() < STUN_HEADER_LEN || datagram[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    Some(u16::from_be_bytes([datagram[0], datagram[1]]))
}

/// Whether the datagram is a STUN binding success response (what a connection writes when it has
/// accepted a connectivity check).
pub fn is_stun_binding_success(datagram: &[u8]) -> bool {
    stun_type(datagram) == Some(STUN_BINDING_SUCCESS)
}

/// Whether the datagram is a STUN binding request (a connectivity check).
pub fn is_stun_binding_request(datagram: &[u8]) -> bool {
    stun_type(datagram) == Some(STUN_BINDING_REQUEST)
}

/// Whether the datagram is a connectivity check that nominates its pair (USE-CANDIDATE): what a
/// controlling agent sends to pick the path, at once with aggressive nomination (Firefox).
pub fn is_nominating_check(datagram: &[u8]) -> bool {
    is_stun_binding_request(datagram) && stun_attribute(datagram, STUN_ATTR_USE_CANDIDATE).is_some()
}

/// The local (server's) ufrag named by a STUN binding request: USERNAME is `local:remote` from the
/// point of view of the receiver. `None` for anything else or anything malformed.
pub fn stun_binding_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if stun_type(datagram)? != STUN_BINDING_REQUEST {
        return None;
    }
    let username = std::str::from_utf8(stun_attribute(datagram, STUN_ATTR_USERNAME)?).ok()?;
    username.split(':').next().filter(|u| !u.is_empty())
}

/// The value of the first attribute of type `attr` in a STUN message, read in place.
fn stun_attribute(datagram: &[u8], attr: u16) -> Option<&[u8]> {
    stun_type(datagram)?;
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = STUN_HEADER_LEN.checked_add(body_len)?;
    let body = datagram.get(STUN_HEADER_LEN..end)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[i], body[i + 1]]);
        let len = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + len)?;
        if kind == attr {
            return Some(value);
        }
        // Attributes are padded to 4 bytes.
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::stun::BindingRequest;

    /// USERNAME, then PRIORITY: walking the attributes continues past the username's padding.
    fn binding_request(username: &[u8]) -> Vec<u8> {
        BindingRequest::new(username).encode()
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&[0x00, 0x01]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 254, 253]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 200]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x81, 201]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x80]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[0xff, 0x00]), DatagramKind::Unknown);
    }

    #[test]
    fn finds_local_ufrag() {
        let m = binding_request(b"srvufrag:cliufrag");
        assert_eq!(stun_binding_local_ufrag(&m), Some("srvufrag"));
        // Odd length username, padded.
        let m = binding_request(b"abc:defgh");
        assert_eq!(stun_binding_local_ufrag(&m), Some("abc"));
    }

    #[test]
    fn tells_a_nominating_check() {
        let m = binding_request(b"srvufrag:cliufrag");
        assert!(is_stun_binding_request(&m));
        assert!(!is_nominating_check(&m));
        let m = BindingRequest {
            use_candidate: true,
            ..BindingRequest::new(b"srvufrag:cliufrag")
        }
        .encode();
        assert!(is_nominating_check(&m));
        assert_eq!(stun_binding_local_ufrag(&m), Some("srvufrag"));
        let mut response = m.clone();
        response[0..2].copy_from_slice(&STUN_BINDING_SUCCESS.to_be_bytes());
        assert!(!is_nominating_check(&response));
        assert!(!is_stun_binding_request(&response));
    }

    #[test]
    fn rejects_malformed_without_panicking() {
        let m = binding_request(b"srvufrag:cliufrag");
        for len in 0..m.len() {
            // Truncation either still finds the username (it sits early) or finds nothing.
            let r = stun_binding_local_ufrag(&m[..len]);
            assert!(r.is_none() || r == Some("srvufrag"));
        }
        let mut bad_cookie = m.clone();
        bad_cookie[4] = 0;
        assert_eq!(stun_binding_local_ufrag(&bad_cookie), None);
        let mut response = m.clone();
        response[0..2].copy_from_slice(&STUN_BINDING_SUCCESS.to_be_bytes());
        assert_eq!(stun_binding_local_ufrag(&response), None);
        assert!(is_stun_binding_success(&response));
        // Body length larger than the datagram.
        let mut long = m.clone();
        long[2..4].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(stun_binding_local_ufrag(&long), None);
        assert_eq!(stun_binding_local_ufrag(&binding_request(b":x")), None);
        assert!(!is_nominating_check(&long));
        assert_eq!(
            stun_binding_local_ufrag(&binding_request(&[0xff, 0xfe])),
            None
        );
    }
}
