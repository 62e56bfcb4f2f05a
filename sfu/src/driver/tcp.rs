//! ICE over TCP (RFC 6544) for clients whose UDP is blocked: each driver has one TCP port next
//! to its UDP port, announced as passive host candidates. Every accepted connection carries
//! RFC 4571 frames (a 2-byte length, then one STUN, DTLS, RTP or RTCP message); the driver
//! handles each frame like a datagram of a flow of its own (`Flow { tcp: true, .. }`), through
//! the same demultiplexer: a connection is bound to a participant only once that participant's
//! ICE agent accepted a connectivity check on it.
//!
//! The tasks here only move bytes: the accept loop, a reader per connection that turns frames
//! into [`TcpEvent`]s for the driver, and a writer per connection fed by the driver. Bounded:
//! connections per driver, frame size, the time a connection may stay unbound ([`BIND_TIMEOUT`]:
//! the driver hangs up a connection no participant's ICE agent has taken by then, whatever it
//! sends), and every queue (a client that does not read loses frames rather than stalling the
//! driver).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Connections one driver accepts at most at a time.
pub(super) const MAX_CONNECTIONS: usize = 4096;
/// The largest frame accepted (a media datagram is smaller).
const MAX_FRAME: usize = 1500 * 2;
/// A connection must be bound to a participant (one of its connectivity checks accepted) within
/// this time, or the driver hangs up.
pub(super) const BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued towards one connection.
pub(super) const WRITE_QUEUE: usize = 1024;
/// Frames queued from all connections towards the driver.
pub(super) const EVENT_QUEUE: usize = 4096;

/// The driver's end of one connection.
pub(super) struct TcpConn {
    /// Frames for the connection.
    pub writer: mpsc::Sender<Bytes>,
    /// Dropping it hangs up.
    pub _hangup: oneshot::Sender<()>,
    /// When it was accepted.
    pub opened: std::time::Instant,
}

pub(super) enum TcpEvent {
    /// A connection from `peer`.
    Opened(SocketAddr, TcpConn),
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

/// A nonblocking listener on `addr`, bound before the driver thread starts (so a port in use is
/// an error at start-up).
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts connections on `listener` for as long as the driver listens to `events`.
pub(super) fn serve(listener: TcpListener, events: mpsc::Sender<TcpEvent>) {
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(err) => {
                    debug!(%err, "ICE-TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if events.is_closed() {
                return;
            }
            if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                debug!(%peer, "ICE-TCP connection refused: too many");
                continue;
            }
            open.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            // Canonical, as the UDP side does (a dual-stack listener reports ::ffff:a.b.c.d).
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let (mut read, mut write) = stream.into_split();
            let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
            let (hangup, mut hung_up) = oneshot::channel();
            let conn = TcpConn {
                writer: out_tx,
                _hangup: hangup,
                opened: std::time::Instant::now(),
            };
            if events.send(TcpEvent::Opened(peer, conn)).await.is_err() {
                return;
            }
            tokio::spawn(async move {
                let mut framed = Vec::with_capacity(MAX_FRAME + 2);
                while let Some(frame) = out_rx.recv().await {
                    framed.clear();
                    framed.extend_from_slice(&(frame.len() as u16).to_be_bytes());
                    framed.extend_from_slice(&frame);
                    if write.write_all(&framed).await.is_err() {
                        break;
                    }
                }
            });
            let events = events.clone();
            let open = open.clone();
            tokio::spawn(async move {
                loop {
                    let frame = tokio::select! {
                        frame = read_frame(&mut read) => frame,
                        _ = &mut hung_up => None,
                    };
                    let Some(frame) = frame else {
                        break;
                    };
                    if events.send(TcpEvent::Frame(peer, frame)).await.is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
                let _ = events.send(TcpEvent::Closed(peer)).await;
            });
        }
    });
}

/// The next RFC 4571 frame; `None` when the connection ends or sends something no media
/// datagram is (a zero or oversized length).
async fn read_frame(read: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    read.read_exact(&mut len).await.ok()?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_FRAME {
        return None; // not RFC 4571 media: hang up
    }
    let mut frame = vec![0u8; len];
    read.read_exact(&mut frame).await.ok()?;
    Some(frame)
}
