//! The quota and peer policy in front of the TURN server: a wrapper around the listening
//! socket sees every request before the crate does and every response after.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rtc::stun::attributes::{ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use rtc::stun::error_code::{ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN};
use rtc::stun::message::{
    Message, MessageType, CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST,
    CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_SEND,
};
use rtc::stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};
use webrtc_util::Conn;

/// The identity part of a `<expiry>:<identity>` username (the whole name if there is none).
fn user_of(username: &str) -> &str {
    username.split_once(':').map_or(username, |(_, id)| id)
}

#[derive(Default)]
pub(super) struct Quota {
    /// Allocations per user.
    per_user: HashMap<String, usize>,
    /// The user of each allocation, by the client's address (one allocation per 5-tuple).
    by_client: HashMap<SocketAddr, String>,
    /// Allocate requests passed on and not answered yet.
    pending: HashMap<SocketAddr, String>,
}

pub(super) struct Policy {
    pub(super) max: usize,
    pub(super) allowed_peers: Mutex<Vec<SocketAddr>>,
    pub(super) relay_ips: Vec<IpAddr>,
    pub(super) relay_ports: (u16, u16),
    pub(super) state: Mutex<Quota>,
}

/// What to do with a datagram from a client.
pub(super) enum Verdict {
    Pass,
    Refuse(Vec<u8>),
    Drop,
}

impl Policy {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn peer_allowed(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.allowed_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|a| a.ip().to_canonical() == ip && a.port() == peer.port())
            || (self.relay_ips.contains(&ip)
                && (self.relay_ports.0..=self.relay_ports.1).contains(&peer.port()))
    }

    /// Checks a request before the TURN server sees it.
    pub(super) fn inspect(&self, datagram: &[u8], from: SocketAddr) -> Verdict {
        // STUN messages start with two zero bits; ChannelData (0b01) and anything else pass on.
        if datagram.len() < 20 || datagram[0] & 0xc0 != 0 {
            return Verdict::Pass;
        }
        let mut m = Message::new();
        m.raw = datagram.to_vec();
        if m.decode().is_err() {
            return Verdict::Pass;
        }
        // Permissions are per IP (RFC 8656), so a Send indication is checked by port too: a
        // relay allowed to reach the media port must not reach other ports of that host.
        if m.typ == MessageType::new(METHOD_SEND, CLASS_INDICATION) {
            return match self.first_refused_peer(&m) {
                Some(peer) => {
                    debug!(%from, %peer, "TURN data to a peer that is not this server's media dropped");
                    Verdict::Drop
                }
                None => Verdict::Pass,
            };
        }
        if m.typ.class != CLASS_REQUEST {
            return Verdict::Pass;
        }
        if m.typ.method == METHOD_ALLOCATE {
            // Unauthenticated first tries get their 401 from the server; count signed ones.
            let Ok(username) = TextAttribute::get_from_as(&m, ATTR_USERNAME) else {
                return Verdict::Pass;
            };
            let user = user_of(&username.text).to_owned();
            let mut q = self.lock();
            if q.by_client.contains_key(&from) {
                return Verdict::Pass; // a retransmission, or a mismatch the server answers
            }
            if q.per_user.get(&user).copied().unwrap_or(0) >= self.max {
                drop(q);
                info!(%from, user, max = self.max, "TURN allocation quota reached");
                return Verdict::Refuse(error_response(
                    &m,
                    CODE_ALLOC_QUOTA_REACHED.0,
                    "Allocation Quota Reached",
                ));
            }
            q.pending.insert(from, username.text);
            return Verdict::Pass;
        }
        // A permission is for an IP: allowed if that IP is one a peer may have; a channel is for
        // an IP and port.
        if m.typ.method == METHOD_CREATE_PERMISSION {
            let refused = self.peers_of(&m).find(|peer| !self.ip_allowed(peer.ip()));
            if let Some(peer) = refused {
                debug!(%from, %peer, "TURN permission refused: not this server's media");
                return Verdict::Refuse(error_response(&m, CODE_FORBIDDEN.0, "Forbidden"));
            }
        }
        if m.typ.method == METHOD_CHANNEL_BIND {
            if let Some(peer) = self.first_refused_peer(&m) {
                debug!(%from, %peer, "TURN peer refused: not this server's media");
                return Verdict::Refuse(error_response(&m, CODE_FORBIDDEN.0, "Forbidden"));
            }
        }
        Verdict::Pass
    }

    pub(super) fn peers_of<'a>(&self, m: &'a Message) -> impl Iterator<Item = SocketAddr> + 'a {
        m.attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            .filter_map(|a| xor_address(&a.value, &m.transaction_id.0))
    }

    pub(super) fn first_refused_peer(&self, m: &Message) -> Option<SocketAddr> {
        self.peers_of(m).find(|peer| !self.peer_allowed(*peer))
    }

    pub(super) fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.relay_ips.contains(&ip)
            || self
                .allowed_peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|a| a.ip().to_canonical() == ip)
    }

    /// Sees a response before it goes out: a successful Allocate counts against its user.
    pub(super) fn sent(&self, datagram: &[u8], to: SocketAddr) {
        if datagram.len() < 20 || datagram[0] & 0xc0 != 0 {
            return;
        }
        // Method and class from the type field alone: Allocate success is 0x0103.
        let typ = u16::from_be_bytes([datagram[0], datagram[1]]);
        let success = MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE).value();
        let failure = MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE).value();
        let mut q = self.lock();
        if typ == success {
            if let Some(username) = q.pending.remove(&to) {
                let user = user_of(&username).to_owned();
                *q.per_user.entry(user).or_default() += 1;
                q.by_client.insert(to, username);
            }
        } else if typ == failure {
            q.pending.remove(&to);
        }
    }

    pub(super) fn released(&self, client: SocketAddr) {
        let mut q = self.lock();
        if let Some(username) = q.by_client.remove(&client) {
            let user = user_of(&username);
            if let Some(n) = q.per_user.get_mut(user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    q.per_user.remove(user);
                }
            }
        }
    }
}

/// An error response to request `m` with `code`.
pub(super) fn error_response(m: &Message, code: u16, reason: &str) -> Vec<u8> {
    let mut res = Message::new();
    let built = res.build(&[
        Box::new(m.transaction_id),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: rtc::stun::error_code::ErrorCode(code),
            reason: reason.as_bytes().to_vec(),
        }),
    ]);
    if built.is_err() {
        warn!("could not build a TURN error response");
    }
    res.raw
}

/// An XOR-PEER-ADDRESS value (RFC 5389 XOR-MAPPED-ADDRESS encoding).
pub(super) fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2] ^ COOKIE[0], value[3] ^ COOKIE[1]]);
    match value[1] {
        0x01 if value.len() >= 8 => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = value[4 + i] ^ COOKIE[i];
            }
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        0x02 if value.len() >= 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&COOKIE);
            key[4..].copy_from_slice(transaction);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = value[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => None,
    }
}

/// The listening socket with the quota and peer policy in front of the TURN server.
pub(super) struct Guarded {
    pub(super) socket: UdpSocket,
    pub(super) policy: Arc<Policy>,
}

#[async_trait]
impl Conn for Guarded {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("not supported".into()))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("not supported".into()))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            match self.policy.inspect(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Refuse(response) => {
                    let _ = self.socket.send_to(&response, from).await;
                }
                Verdict::Drop => {}
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("not supported".into()))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.policy.sent(buf, target);
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_peer_addresses_decode() {
        // 192.0.2.1:32853 XOR-encoded (RFC 5769's sample mapped address).
        let v4 = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(
            xor_address(&v4, &[0; 12]),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(xor_address(&v4[..6], &[0; 12]), None);
    }

    #[test]
    fn peers_are_the_media_ports_and_the_relay_range() {
        let p = Policy {
            max: 1,
            allowed_peers: Mutex::new(vec!["127.0.0.1:7882".parse().unwrap()]),
            relay_ips: vec!["127.0.0.1".parse().unwrap()],
            relay_ports: (50000, 50010),
            state: Mutex::new(Quota::default()),
        };
        assert!(p.peer_allowed("127.0.0.1:7882".parse().unwrap()));
        assert!(p.peer_allowed("[::ffff:127.0.0.1]:7882".parse().unwrap()));
        assert!(p.peer_allowed("127.0.0.1:50005".parse().unwrap()));
        assert!(!p.peer_allowed("127.0.0.1:22".parse().unwrap()));
        assert!(!p.peer_allowed("10.0.0.1:7882".parse().unwrap()));
    }
}
