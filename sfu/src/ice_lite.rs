//! ICE-lite nomination that `rtc` 0.21.1 lacks, done around it by the driver.
//!
//! The server is an ICE-lite agent: it never sends connectivity checks, it only answers them, and
//! a check that carries USE-CANDIDATE selects its pair at once (RFC 8445 §2.5, §7.3.2). rtc's
//! controlled agent does not: it answers a USE-CANDIDATE check on a pair that has not succeeded yet
//! with a triggered check of its own and no response, and selects the pair only once that check is
//! answered. Chromium copes (its first check has no USE-CANDIDATE, and it answers the triggered
//! check before it nominates); Firefox, which nominates aggressively against a lite peer, never
//! gets a response and its ICE fails. Through a TURN relay the triggered check does not come back
//! either.
//!
//! So the driver keeps rtc's triggered checks off the wire and answers each one itself, the way the
//! client would have (signed with the client's ICE password), which makes the pair succeeded, and
//! then hands rtc the nominating check again, which it now answers and selects. The client's own
//! check already proved the path (it reached us with our password), which is all a lite agent
//! ever learns of it.

use std::net::SocketAddr;

use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::xoraddr::XorMappedAddress;

/// The success response the client would send to rtc's triggered check `request` (which rtc
/// addressed to the client): the same transaction, the server's address as the client sees it
/// (`server`), signed with the client's ICE password. `None` for anything but a well-formed
/// binding request.
pub(crate) fn answer_for_client(
    request: &[u8],
    client_pwd: &str,
    server: SocketAddr,
) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.unmarshal_binary(request).ok()?;
    if m.typ != BINDING_REQUEST {
        return None;
    }
    let provider = rtc::crypto::default_provider().ok()?;
    let mut out = Message::new();
    out.build(&[
        Box::new(m),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: server.ip(),
            port: server.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            client_pwd.to_owned(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ])
    .ok()?;
    Some(out.raw)
}

/// The ICE password in an SDP (the first `a=ice-pwd`: with BUNDLE every m-line shares it).
pub(crate) fn ice_pwd(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-pwd:"))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{Getter, TransactionId};

    fn request() -> Message {
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .unwrap();
        m
    }

    #[test]
    fn answers_in_the_same_transaction_signed_with_the_clients_password() {
        let req = request();
        let server: SocketAddr = "203.0.113.7:7882".parse().unwrap();
        let raw = answer_for_client(&req.raw, "clientpassword", server).unwrap();
        let mut resp = Message::new();
        resp.unmarshal_binary(&raw).unwrap();
        assert_eq!(resp.typ, BINDING_SUCCESS);
        assert_eq!(resp.transaction_id, req.transaction_id);
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&resp).unwrap();
        assert_eq!((mapped.ip, mapped.port), (server.ip(), server.port()));
        let provider = rtc::crypto::default_provider().unwrap();
        let check = |pwd: &str| {
            MessageIntegrity::check(&mut resp.clone(), pwd.as_bytes(), provider.crypto())
        };
        assert!(check("clientpassword").is_ok());
        assert!(check("otherpassword").is_err());
    }

    #[test]
    fn answers_nothing_but_binding_requests() {
        let server: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut resp = request();
        resp.typ = BINDING_SUCCESS;
        resp.write_header();
        assert!(answer_for_client(&resp.raw, "p", server).is_none());
        assert!(answer_for_client(b"\x00\x01garbage", "p", server).is_none());
        assert!(answer_for_client(&[], "p", server).is_none());
    }

    #[test]
    fn reads_the_ice_password() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\nm=audio 9\r\na=ice-pwd:secretsecret\r\n";
        assert_eq!(ice_pwd(sdp), Some("secretsecret"));
        assert_eq!(ice_pwd("v=0\r\n"), None);
        assert_eq!(ice_pwd("a=ice-pwd: \r\n"), None);
    }
}
