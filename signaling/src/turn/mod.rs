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
//!
//! The files: `policy` (quota and peer checks in front of the crate), `stream` (TURN over TCP
//! and TLS as datagrams), `hairpin` (relays of a host behind a 1:1 NAT).

mod hairpin;
mod policy;
mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info};
use turn::allocation::AllocationInfo;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::vnet::net::Net;

use hairpin::HairpinRelays;
use policy::{Guarded, Policy, Quota};
use stream::StreamMux;

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
}
