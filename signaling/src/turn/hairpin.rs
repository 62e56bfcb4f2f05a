//! Relay sockets of a host behind a 1:1 NAT.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

/// Relay sockets from the port range, wrapped in [`Hairpin`] when this host is behind a 1:1 NAT.
pub(super) struct HairpinRelays {
    pub(super) ranges: RelayAddressGeneratorRanges,
    pub(super) map: Arc<Vec<(IpAddr, IpAddr)>>,
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
