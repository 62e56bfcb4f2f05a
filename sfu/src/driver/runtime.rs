//! The IO around each media driver: its thread, its tokio runtime, its sockets.
//!
//! [`Driver`] is socket-free (told the time, drained by `poll_transmit` and `poll_event`); this
//! module reads the UDP socket in batches, feeds the driver, *settles* it every [`SETTLE_EVERY`]
//! datagrams and sends what it queued, in the order it queued it, and hands each participant's
//! events to its signaling session's channel. Nothing here decides anything about media.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::mesh::{self, Load, MeshPacket};
use super::port::Crossing;
use super::{tcp, Driver, DriverAddrs, Flow, Transmit};
use crate::api::{Command, Event, ParticipantKey, SfuConfig};

/// Receive and send buffers of the shared socket: every connection's burst lands in the one
/// receive buffer, and its overflow was the real source of loss in the prototype.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// Datagrams read per wake-up before timers and commands get a turn.
const READ_BATCH: usize = 256;
/// Connections touched by this many datagrams are serviced together (their writes sent, events
/// and reads handled). A video frame arrives as a burst of packets; servicing each subscriber
/// once per burst instead of once per packet saves rtc's per-drain work (timeouts of every
/// layer, flushing the interceptor chain). Measured with the load tester (1 room, 2 publishers,
/// 150 subscribers, one driver): 6.8–7.1 µs of server CPU per forwarded packet when servicing
/// after every datagram, 5.4–5.8 µs every 16, with a lower latency p99 (docs/benchmarks.md).
const SETTLE_EVERY: usize = 16;
const MAX_DATAGRAM: usize = 2048;
/// How often unbound ICE-TCP connections are checked against their deadline.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// What the engine handle keeps of each driver: its command channel, socket address and load.
pub(crate) type Spawned = (mpsc::UnboundedSender<Command>, SocketAddr, Load);

/// Binds the media sockets and starts each driver on its own thread with its own single-threaded
/// runtime, linked to the others (see [`mesh`]).
pub(crate) fn spawn(config: SfuConfig) -> std::io::Result<Vec<Spawned>> {
    let n = config.media_drivers.max(1);
    let mut sockets: Vec<std::net::UdpSocket> = Vec::with_capacity(n);
    for i in 0..n {
        let mut bind = config.media_bind;
        if config.port_per_driver {
            if bind.port() != 0 {
                bind.set_port(port_plus(bind.port(), i, "media port + driver count")?);
            }
        } else if let Some(first) = sockets.first() {
            // One port for all (see `port`): the first socket's, if the kernel picked it.
            bind.set_port(first.local_addr()?.port());
        }
        sockets.push(bind_socket(bind, !config.port_per_driver)?);
    }
    let links = mesh::link(n);
    let mut spawned = Vec::with_capacity(n);
    for (index, (std_socket, link)) in sockets.into_iter().zip(links).enumerate() {
        let local_addr = std_socket.local_addr()?;
        // ICE-TCP: this driver's port is the configured one plus its index (0: any).
        let tcp_listener = match config.ice_tcp_port {
            None => None,
            Some(port) => {
                let port = if port == 0 {
                    0
                } else {
                    port_plus(port, index, "ICE-TCP port + driver count")?
                };
                let listener = tcp::bind(SocketAddr::new(local_addr.ip(), port))?;
                info!(addr = %listener.local_addr()?, "ICE-TCP listening");
                Some(listener)
            }
        };
        let cmd_tx = link.commands_tx.clone();
        let load = link.load.clone();
        let config = config.clone();
        std::thread::Builder::new()
            .name(format!("fanout-media-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        warn!(%err, "media driver runtime failed to start");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let socket = match UdpSocket::from_std(std_socket) {
                        Ok(s) => s,
                        Err(err) => {
                            warn!(%err, "media socket unusable");
                            return;
                        }
                    };
                    let mut tcp_events = None;
                    let mut tcp_bound = None;
                    if let Some(listener) = tcp_listener {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tcp_bound = Some(listener.local_addr().unwrap_or(local_addr));
                                let (tx, rx) = mpsc::channel(tcp::EVENT_QUEUE);
                                tcp::serve(listener, tx);
                                tcp_events = Some(rx);
                            }
                            Err(err) => warn!(%err, "ICE-TCP listener unusable"),
                        }
                    }
                    let addrs = DriverAddrs::announced(&config, local_addr, tcp_bound);
                    let driver = Driver::new(
                        &config,
                        addrs,
                        link.mesh,
                        link.load,
                        rand::random(),
                        Instant::now(),
                    );
                    let io = Io {
                        v6_socket: local_addr.is_ipv6(),
                        socket,
                        tcp_conns: HashMap::new(),
                        sessions: HashMap::new(),
                    };
                    run(
                        driver,
                        io,
                        link.commands,
                        link.media,
                        link.crossing,
                        tcp_events,
                    )
                    .await;
                });
            })?;
        spawned.push((cmd_tx, local_addr, load));
    }
    Ok(spawned)
}

fn port_plus(port: u16, index: usize, what: &str) -> std::io::Result<u16> {
    u16::try_from(usize::from(port) + index).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} exceeds 65535"),
        )
    })
}

/// Binds a media socket; with `shared`, `SO_REUSEPORT` lets every driver bind the same port.
fn bind_socket(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // The kernel caps these at net.core.rmem_max / wmem_max; log what was granted.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    info!(
        %addr,
        recv_buffer = socket.recv_buffer_size().unwrap_or(0),
        send_buffer = socket.send_buffer_size().unwrap_or(0),
        "media socket bound (the kernel reports twice the usable size; raise net.core.rmem_max if it is far below the 4 MiB asked)"
    );
    Ok(socket.into())
}

/// A driver's sockets (the UDP one, and the writers of its open ICE-TCP connections) and its
/// participants' event channels.
struct Io {
    socket: UdpSocket,
    /// The media socket is IPv6 (dual-stack when bound to `::`).
    v6_socket: bool,
    tcp_conns: HashMap<SocketAddr, tcp::TcpConn>,
    /// Each participant's channel to its signaling session (given with its `Command::Join`).
    sessions: HashMap<ParticipantKey, mpsc::UnboundedSender<Event>>,
}

impl Io {
    /// Sends one message on its flow: a UDP datagram, or a frame on its TCP connection.
    fn send(&self, t: &Transmit) -> std::io::Result<usize> {
        if t.flow.tcp {
            let conn = self
                .tcp_conns
                .get(&t.flow.addr)
                .ok_or(std::io::ErrorKind::NotConnected)?;
            conn.writer
                .try_send(Bytes::copy_from_slice(&t.data))
                .map_err(|_| std::io::ErrorKind::WouldBlock)?;
            Ok(t.data.len())
        } else {
            self.socket
                .try_send_to(&t.data, wire_addr(self.v6_socket, t.flow.addr))
        }
    }
}

/// The address to send to on the media socket: an IPv4 client of a (dual-stack) IPv6 socket is
/// reached through its IPv4-mapped address.
fn wire_addr(v6_socket: bool, dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

/// Settles the driver and sends everything it queued, in order: after each connection it
/// services, as it goes. Then hands out the events.
fn flush(driver: &mut Driver, io: &mut Io, now: Instant) {
    loop {
        while let Some(t) = driver.poll_transmit() {
            if let Err(err) = io.send(&t) {
                driver.note_send_failed();
                debug!(dst = %t.flow, %err, "media send failed");
            }
        }
        if !driver.settle_step(now) {
            break;
        }
    }
    while let Some((key, event)) = driver.poll_event() {
        let last = matches!(event, Event::Closed { .. });
        if let Some(session) = io.sessions.get(&key) {
            let _ = session.send(event);
        }
        if last {
            io.sessions.remove(&key);
        }
    }
}

/// A command for the driver; a join's event channel stays here, with the sockets.
fn dispatch(driver: &mut Driver, io: &mut Io, now: Instant, cmd: Command) {
    match cmd {
        Command::Join {
            request,
            events,
            reply,
        } => {
            let joined = driver.join(now, request);
            if let Ok((key, _)) = &joined {
                io.sessions.insert(*key, events);
            }
            let _ = reply.send(joined);
        }
        cmd => driver.handle_command(now, cmd),
    }
}

async fn recv_tcp(events: &mut Option<mpsc::Receiver<tcp::TcpEvent>>) -> Option<tcp::TcpEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn run(
    mut driver: Driver,
    mut io: Io,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut media: mpsc::Receiver<MeshPacket>,
    mut crossing: mpsc::Receiver<Crossing>,
    mut tcp_events: Option<mpsc::Receiver<tcp::TcpEvent>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut batch = Vec::with_capacity(READ_BATCH);
    let mut crossed = Vec::with_capacity(READ_BATCH);
    let mut next_sweep = Instant::now();
    loop {
        let deadline = driver.poll_timeout();
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                Some(cmd) => dispatch(&mut driver, &mut io, Instant::now(), cmd),
                None => break,
            },
            ready = io.socket.readable() => {
                if ready.is_ok() {
                    read_datagrams(&mut driver, &mut io, &mut buf);
                }
            }
            n = media.recv_many(&mut batch, READ_BATCH) => {
                if n > 0 {
                    for p in batch.drain(..) {
                        driver.handle_mesh_packet(p);
                    }
                    flush(&mut driver, &mut io, Instant::now());
                }
            }
            n = crossing.recv_many(&mut crossed, READ_BATCH) => {
                if n > 0 {
                    for c in crossed.drain(..) {
                        driver.handle_crossed(c.at, c.flow, &c.data);
                    }
                    flush(&mut driver, &mut io, Instant::now());
                }
            }
            Some(event) = recv_tcp(&mut tcp_events) => {
                match event {
                    tcp::TcpEvent::Opened(peer, conn) => {
                        io.tcp_conns.insert(peer, conn);
                    }
                    tcp::TcpEvent::Frame(peer, frame) => {
                        driver.handle_datagram(Instant::now(), Flow::tcp(peer), &frame);
                    }
                    tcp::TcpEvent::Closed(peer) => {
                        io.tcp_conns.remove(&peer);
                        driver.handle_tcp_closed(peer);
                    }
                }
                flush(&mut driver, &mut io, Instant::now());
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        driver.handle_timeout(now);
        flush(&mut driver, &mut io, now);
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            // Unbound ICE-TCP connections past their deadline are hung up (their reader then
            // reports them closed).
            io.tcp_conns.retain(|&peer, conn| {
                now.saturating_duration_since(conn.opened) < tcp::BIND_TIMEOUT
                    || driver.is_bound(Flow::tcp(peer))
            });
        }
    }
    let now = Instant::now();
    driver.close(now);
    flush(&mut driver, &mut io, now);
    info!("media driver stopped");
}

fn read_datagrams(driver: &mut Driver, io: &mut Io, buf: &mut [u8]) {
    for i in 0..READ_BATCH {
        match io.socket.try_recv_from(buf) {
            Ok((n, src)) => {
                let now = Instant::now();
                // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
                let src = SocketAddr::new(src.ip().to_canonical(), src.port());
                driver.handle_datagram(now, Flow::udp(src), &buf[..n]);
                if (i + 1) % SETTLE_EVERY == 0 {
                    flush(driver, io, now);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(err) => {
                // ICMP errors (port unreachable from a gone client) surface here on Linux.
                debug!(%err, "media socket receive error");
            }
        }
    }
    flush(driver, io, Instant::now());
}
