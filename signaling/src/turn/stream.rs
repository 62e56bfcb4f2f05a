//! TURN over TCP and TLS: the messages of every accepted connection as datagrams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::debug;
use webrtc_util::Conn;

use super::policy::{Policy, Verdict};

/// Connections per TURN stream listener at most, and the bytes one message may have.
const MAX_STREAMS: usize = 4096;
const MAX_STREAM_MESSAGE: usize = 4096;
/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TURN over TCP (or TLS): every accepted connection's messages, as if they were datagrams from its peer
/// address, and answers written back to the connection of that address. Messages are framed as
/// on the wire: STUN (20-byte header with its length) and ChannelData (4-byte header, padded to
/// a multiple of 4 on streams).
pub(super) struct StreamMux {
    local: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    policy: Arc<Policy>,
}

impl StreamMux {
    pub(super) fn listen(
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
