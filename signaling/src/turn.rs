//! The embedded TURN server (UDP and TCP), for clients that can reach the server only through a
//! relay: those that may use relays only, and those whose UDP is blocked (TURN over TCP: STUN
//! and ChannelData messages back to back on the stream, ChannelData padded to 4 bytes, RFC 8656
//! §12.5; the relays themselves are UDP either way).
//!
//! Built on webrtc-rs's `turn` crate (0.17, the async server; the sans-IO `rtc` 0.21 has a TURN
//! client only). Credentials are the TURN REST scheme the rest of Fanout hands out (coturn's
//! `use-auth-secret`): username `<unix expiry>:<identity>`, password base64(HMAC-SHA1(secret,
//! username)); an expired username is refused. Relays are allocated from a configured port range.
//!
//! Two policies the crate does not have sit in a wrapper around the listening socket, which sees
//! every request before the crate does and every response after:
//! - **quota**: a user (a username's identity) holds at most `max_allocations_per_user`
//!   allocations at once; one more gets `486 Allocation Quota Reached`;
//! - **peers**: an allocation may only talk to this server's media addresses and to the relay's
//!   own addresses (two relayed browsers of a p2p room); a permission or channel for any other
//!   peer gets `403 Forbidden`, so the relay is no open proxy into the network it runs in.

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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use turn::allocation::AllocationInfo;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::relay::RelayAddressGenerator;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::vnet::net::Net;
use webrtc_util::Conn;

/// What the embedded TURN server needs.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Where it listens, on UDP and on TCP (the same port).
    pub listen: SocketAddr,
    /// The IP relay sockets bind to, and the one put in XOR-RELAYED-ADDRESS (the announced one).
    pub relay_bind: IpAddr,
    pub relay_announce: IpAddr,
    pub relay_ports: (u16, u16),
    pub realm: String,
    pub secret: String,
    pub max_allocations_per_user: usize,
    /// The media addresses allocations may send to (besides the relay range itself); more can
    /// be set once the media engine runs ([`EmbeddedTurn::allow_peers`]).
    pub allowed_peers: Vec<SocketAddr>,
    /// 1:1 NAT mappings `(public, private)` of this host (`nat_map`): a relay sends to the
    /// private address what is addressed to the public one (no NAT hairpin needed), and reports
    /// datagrams from the private address as from the public one (the address the client's
    /// permission names).
    pub hairpin: Vec<(IpAddr, IpAddr)>,
    /// TURN over TLS: the TCP address to listen on, with the server's certificate.
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
}

/// A running embedded TURN server.
pub struct EmbeddedTurn {
    server: Server,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    policy: Arc<Policy>,
}

impl EmbeddedTurn {
    pub async fn start(config: TurnConfig) -> Result<EmbeddedTurn, String> {
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|e| format!("cannot bind the TURN port {}: {e}", config.listen))?;
        let local_addr = socket.local_addr().map_err(|e| e.to_string())?;
        let tcp = TcpListener::bind(local_addr)
            .await
            .map_err(|e| format!("cannot bind the TURN port {local_addr} (TCP): {e}"))?;
        let policy = Arc::new(Policy {
            max: config.max_allocations_per_user.max(1),
            allowed_peers: Mutex::new(config.allowed_peers.clone()),
            relay_ips: vec![config.relay_announce, config.relay_bind],
            relay_ports: config.relay_ports,
            state: Mutex::new(Quota::default()),
        });
        let (closed_tx, mut closed_rx) = mpsc::channel::<AllocationInfo>(256);
        let released = policy.clone();
        tokio::spawn(async move {
            while let Some(info) = closed_rx.recv().await {
                released.released(info.five_tuple.src_addr);
            }
        });
        let conn = Arc::new(Guarded {
            socket,
            policy: policy.clone(),
        });
        let relays = || {
            Box::new(HairpinRelays {
                ranges: RelayAddressGeneratorRanges {
                    relay_address: config.relay_announce,
                    min_port: config.relay_ports.0,
                    max_port: config.relay_ports.1,
                    max_retries: 20,
                    address: config.relay_bind.to_string(),
                    net: Arc::new(Net::new(None)),
                },
                map: Arc::new(config.hairpin.clone()),
            })
        };
        let streams = StreamMux::listen(tcp, policy.clone(), None);
        let mut conn_configs = vec![
            ConnConfig {
                conn,
                relay_addr_generator: relays(),
            },
            ConnConfig {
                conn: streams,
                relay_addr_generator: relays(),
            },
        ];
        let mut tls_addr = None;
        if let Some((addr, tls)) = &config.tls {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot bind the TURN TLS port {addr}: {e}"))?;
            tls_addr = listener.local_addr().ok();
            // TURN clients ask for no HTTP protocol (ALPN) on this port.
            let mut tls = (**tls).clone();
            tls.alpn_protocols.clear();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            conn_configs.push(ConnConfig {
                conn: StreamMux::listen(listener, policy.clone(), Some(acceptor)),
                relay_addr_generator: relays(),
            });
        }
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: Arc::new(RestAuth {
                secret: config.secret.clone(),
            }),
            channel_bind_timeout: std::time::Duration::from_secs(600),
            alloc_close_notify: Some(closed_tx),
        })
        .await
        .map_err(|e| format!("cannot start the TURN server: {e}"))?;
        info!(
            addr = %local_addr,
            relay = %config.relay_announce,
            ports = ?config.relay_ports,
            tls = ?tls_addr,
            "embedded TURN server listening (UDP and TCP)"
        );
        Ok(EmbeddedTurn {
            server,
            local_addr,
            tls_addr,
            policy,
        })
    }

    /// The UDP (and TCP) address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TURN over TLS address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The media addresses relays may send to (replacing the earlier list).
    pub fn allow_peers(&self, peers: Vec<SocketAddr>) {
        debug!(?peers, "TURN peers allowed");
        *self
            .policy
            .allowed_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = peers;
    }

    pub async fn close(&self) {
        let _ = self.server.close().await;
    }
}

/// The TURN REST credential check: the key for `username` if it has not expired.
struct RestAuth {
    secret: String,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        let expiry = username
            .split(':')
            .next()
            .and_then(|e| e.parse::<u64>().ok())
            .ok_or(turn::Error::ErrNoSuchUser)?;
        if expiry < crate::auth::unix_now() {
            debug!(%src_addr, username, "TURN credentials expired");
            return Err(turn::Error::ErrNoSuchUser);
        }
        let password = crate::ice::rest_password(&self.secret, username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// The identity part of a `<expiry>:<identity>` username (the whole name if there is none).
fn user_of(username: &str) -> &str {
    username.split_once(':').map_or(username, |(_, id)| id)
}

#[derive(Default)]
struct Quota {
    /// Allocations per user.
    per_user: HashMap<String, usize>,
    /// The user of each allocation, by the client's address (one allocation per 5-tuple).
    by_client: HashMap<SocketAddr, String>,
    /// Allocate requests passed on and not answered yet.
    pending: HashMap<SocketAddr, String>,
}

struct Policy {
    max: usize,
    allowed_peers: Mutex<Vec<SocketAddr>>,
    relay_ips: Vec<IpAddr>,
    relay_ports: (u16, u16),
    state: Mutex<Quota>,
}

/// What to do with a datagram from a client.
enum Verdict {
    Pass,
    Refuse(Vec<u8>),
    Drop,
}

impl Policy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peer_allowed(&self, peer: SocketAddr) -> bool {
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
    fn inspect(&self, datagram: &[u8], from: SocketAddr) -> Verdict {
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

    fn peers_of<'a>(&self, m: &'a Message) -> impl Iterator<Item = SocketAddr> + 'a {
        m.attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            .filter_map(|a| xor_address(&a.value, &m.transaction_id.0))
    }

    fn first_refused_peer(&self, m: &Message) -> Option<SocketAddr> {
        self.peers_of(m).find(|peer| !self.peer_allowed(*peer))
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
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
    fn sent(&self, datagram: &[u8], to: SocketAddr) {
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

    fn released(&self, client: SocketAddr) {
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
fn error_response(m: &Message, code: u16, reason: &str) -> Vec<u8> {
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
fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
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
struct Guarded {
    socket: UdpSocket,
    policy: Arc<Policy>,
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

/// Relay sockets from the port range, wrapped in [`Hairpin`] when this host is behind a 1:1 NAT.
struct HairpinRelays {
    ranges: RelayAddressGeneratorRanges,
    map: Arc<Vec<(IpAddr, IpAddr)>>,
}

#[async_trait]
impl RelayAddressGenerator for HairpinRelays {
    fn validate(&self) -> Result<(), turn::Error> {
        self.ranges.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let (conn, relayed) = self.ranges.allocate_conn(use_ipv4, requested_port).await?;
        if self.map.is_empty() {
            return Ok((conn, relayed));
        }
        let hairpin: Arc<dyn Conn + Send + Sync> = Arc::new(Hairpin {
            inner: conn,
            map: self.map.clone(),
        });
        Ok((hairpin, relayed))
    }
}

/// A relay socket of a host behind a 1:1 NAT: this host's public addresses are reached at
/// their private ones, and answer as the public ones. Without it a relay's datagrams to the
/// server's announced (public) media address would need the NAT to hairpin them, which most
/// cloud and home NATs do not.
struct Hairpin {
    inner: Arc<dyn Conn + Send + Sync>,
    map: Arc<Vec<(IpAddr, IpAddr)>>,
}

#[async_trait]
impl Conn for Hairpin {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (n, mut from) = self.inner.recv_from(buf).await?;
        let ip = from.ip().to_canonical();
        if let Some((public, _)) = self.map.iter().find(|(_, private)| *private == ip) {
            from.set_ip(*public);
        }
        Ok((n, from))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], mut target: SocketAddr) -> webrtc_util::Result<usize> {
        let ip = target.ip().to_canonical();
        if let Some((_, private)) = self.map.iter().find(|(public, _)| *public == ip) {
            target.set_ip(*private);
        }
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Connections per TURN stream listener at most, and the bytes one message may have.
const MAX_STREAMS: usize = 4096;
const MAX_STREAM_MESSAGE: usize = 4096;
/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TURN over TCP (or TLS): every accepted connection's messages, as if they were datagrams from its peer
/// address, and answers written back to the connection of that address. Messages are framed as
/// on the wire: STUN (20-byte header with its length) and ChannelData (4-byte header, padded to
/// a multiple of 4 on streams).
struct StreamMux {
    local: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    policy: Arc<Policy>,
}

impl StreamMux {
    fn listen(
        listener: TcpListener,
        policy: Arc<Policy>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Arc<StreamMux> {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(1024);
        let mux = Arc::new(StreamMux {
            local,
            incoming: tokio::sync::Mutex::new(rx),
            writers: Mutex::new(HashMap::new()),
            policy,
        });
        let weak = Arc::downgrade(&mux);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let Some(mux) = weak.upgrade() else {
                    return;
                };
                if mux.writers().len() >= MAX_STREAMS {
                    debug!(%peer, "TURN TCP connection refused: too many");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let (read, write) = stream.into_split();
                        mux.serve(read, write, peer, tx.clone());
                    }
                    Some(acceptor) => {
                        // The handshake runs on its own, so a slow client holds up nobody.
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => {
                                    let (read, write) = tokio::io::split(tls);
                                    mux.serve(read, write, peer, tx);
                                }
                                Ok(Err(err)) => debug!(%peer, %err, "TURN TLS handshake failed"),
                                Err(_) => debug!(%peer, "TURN TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        mux
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        self.writers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads framed messages from one connection into `incoming`; writes what is sent to `peer`.
    fn serve<R, W>(
        self: &Arc<Self>,
        mut read: R,
        mut write: W,
        peer: SocketAddr,
        incoming: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
        self.writers().insert(peer, out_tx);
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mux = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let mut header = [0u8; 4];
                if read.read_exact(&mut header).await.is_err() {
                    break;
                }
                let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
                let rest = match header[0] >> 6 {
                    0b00 => 16 + length,            // STUN: rest of the header, attributes
                    0b01 => length.div_ceil(4) * 4, // ChannelData, padded
                    _ => break,                     // not TURN: hang up
                };
                if 4 + rest > MAX_STREAM_MESSAGE {
                    break;
                }
                let mut message = vec![0u8; 4 + rest];
                message[..4].copy_from_slice(&header);
                if read.read_exact(&mut message[4..]).await.is_err() {
                    break;
                }
                if header[0] >> 6 == 0b01 {
                    message.truncate(4 + length); // the server expects no padding
                }
                if incoming.send((message, peer)).await.is_err() {
                    break;
                }
            }
            if let Some(mux) = mux.upgrade() {
                mux.writers().remove(&peer);
                // Its allocation can never be refreshed or used again: it stops counting
                // against its user's quota now rather than when it expires. (The relay port
                // stays taken until then: the turn crate deletes allocations by user only.)
                mux.policy.released(peer);
            }
            debug!(%peer, "TURN TCP connection closed");
        });
    }
}

#[async_trait]
impl Conn for StreamMux {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("not supported".into()))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("not supported".into()))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut incoming = self.incoming.lock().await;
        loop {
            let Some((message, from)) = incoming.recv().await else {
                return Err(webrtc_util::Error::Other("TURN TCP listener closed".into()));
            };
            if message.len() > buf.len() {
                continue;
            }
            match self.policy.inspect(&message, from) {
                Verdict::Pass => {
                    buf[..message.len()].copy_from_slice(&message);
                    return Ok((message.len(), from));
                }
                Verdict::Refuse(response) => {
                    let writer = self.writers().get(&from).cloned();
                    if let Some(w) = writer {
                        let _ = w.try_send(response);
                    }
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
        let writer = self.writers().get(&target).cloned();
        let Some(writer) = writer else {
            return Err(webrtc_util::Error::Other(format!(
                "no TURN TCP connection from {target}"
            )));
        };
        let mut bytes = buf.to_vec();
        // ChannelData on a stream is padded to a multiple of 4.
        if buf.len() >= 4 && buf[0] >> 6 == 0b01 {
            bytes.resize(buf.len().div_ceil(4) * 4, 0);
        }
        // A client that does not read loses messages rather than stalling every other one.
        let _ = writer.try_send(bytes);
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
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

/// The URLs clients are given for the embedded TURN server: UDP and TCP on `port`, TLS on
/// `tls_port`, at `host` (a name, e.g. the one on the certificate) or else at `announced`.
pub fn client_urls(
    host: Option<&str>,
    announced: IpAddr,
    port: u16,
    tls_port: Option<u16>,
) -> Vec<String> {
    let host = match (host, announced) {
        (Some(h), _) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        (Some(h), _) => h.to_owned(),
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
        (None, ip) => ip.to_string(),
    };
    let mut urls: Vec<String> = ["udp", "tcp"]
        .iter()
        .map(|transport| format!("turn:{host}:{port}?transport={transport}"))
        .collect();
    if let Some(tls) = tls_port {
        urls.push(format!("turns:{host}:{tls}?transport=tcp"));
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_urls_name_the_host_or_the_announced_address() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            client_urls(None, v4, 3478, None),
            [
                "turn:203.0.113.7:3478?transport=udp",
                "turn:203.0.113.7:3478?transport=tcp"
            ]
        );
        assert_eq!(
            client_urls(Some("turn.example.com"), v4, 3478, Some(443)),
            [
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp"
            ]
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            client_urls(None, v6, 3478, Some(5349))[2],
            "turns:[2001:db8::1]:5349?transport=tcp"
        );
        assert_eq!(
            client_urls(Some("2001:db8::2"), v4, 3478, None)[0],
            "turn:[2001:db8::2]:3478?transport=udp"
        );
    }

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
