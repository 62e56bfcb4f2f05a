//! fanout_rtc: server connections configured by sfu/src/peer.rs itself, connected to rtc
//! clients in memory, forwarding through the real rtc send path.

use super::*;

pub(crate) fn server_pc(now: Instant, i: usize, addr: SocketAddr) -> RTCPeerConnection {
    sfu::peer::new_peer_connection(
        now,
        (&format!("srv{i:08}"), "pwdpwdpwdpwdpwdpwdpwdpwd"),
        &[addr],
        &[],
        Arc::default(),
        Arc::default(),
        sfu::engine::data::DataLimits::default().sctp_max_message(),
    )
    .unwrap()
}

pub(crate) fn host_candidate(
    addr: SocketAddr,
) -> rtc::peer_connection::transport::RTCIceCandidateInit {
    sfu::peer::host_candidate_inits(&[addr], &[])
        .unwrap()
        .remove(0)
}

/// A browser-like receiver: same codecs and extensions, no interceptors (it never answers).
pub(crate) fn client_pc(now: Instant, addr: SocketAddr) -> RTCPeerConnection {
    let mut me = sfu::peer::media_engine().unwrap();
    sfu::peer::register_header_extensions(&mut me).unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(SettingEngineBuilder::new().build())
        .build(now)
        .unwrap();
    pc.add_local_candidate(host_candidate(addr)).unwrap();
    pc
}

pub(crate) fn video_track(ssrc: u32, codec: RTCRtpCodec) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "publisher".into(),
        "video".into(),
        "video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

/// Passes every datagram `from` wants to write to `to`; whether anything moved.
pub(crate) fn deliver(
    from: &mut RTCPeerConnection,
    from_addr: SocketAddr,
    to: &mut RTCPeerConnection,
    to_addr: SocketAddr,
    now: Instant,
) -> bool {
    let mut moved = false;
    while let Some(d) = from.poll_write() {
        moved = true;
        let _ = to.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: to_addr,
                peer_addr: from_addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d.message,
        });
    }
    moved
}

pub(crate) fn connected(pc: &mut RTCPeerConnection, done: &mut bool) {
    while let Some(ev) = pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
            if s == RTCPeerConnectionState::Connected {
                *done = true;
            }
        }
    }
    while pc.poll_read().is_some() {}
}

/// One subscriber leg: the server side as the driver holds it, plus the forwarder's state.
pub(crate) struct Leg {
    pub(crate) server: RTCPeerConnection,
    /// The subscriber's side; only [`RtcFanout::verify`] feeds it.
    pub(crate) client: RTCPeerConnection,
    pub(crate) client_addr: SocketAddr,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) ssrc: u32,
    pub(crate) payload_type: u8,
    pub(crate) rewriter: RtpRewriter,
    pub(crate) timer: Option<Instant>,
}

/// Negotiates (server offers a sendonly VP8 track, as the driver does for a subscriber) and runs
/// ICE and DTLS in memory on a virtual clock. Returns the leg and the virtual time reached.
pub(crate) fn connect_leg(i: usize, mut now: Instant) -> (Leg, Instant) {
    let server_addr: SocketAddr = "127.0.0.1:7882".parse().unwrap();
    let client_addr = SocketAddr::new("127.0.0.1".parse().unwrap(), 10_000 + (i % 50_000) as u16);
    let mut server = server_pc(now, i, server_addr);
    let mut client = client_pc(now, client_addr);
    let ssrc = 0x0100_0000 + i as u32;
    let tid = server
        .add_transceiver_from_track(
            video_track(ssrc, RTCRtpCodec::default()),
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec!["publisher".into()],
                send_encodings: vec![],
            }),
        )
        .unwrap();
    let sender = server.rtp_transceiver(tid).unwrap().sender().unwrap();
    let offer = server.create_offer(None).unwrap();
    server.set_local_description(now, offer.clone()).unwrap();
    // The driver pins the sender's codec right after the offer (see architecture.md).
    server
        .rtp_sender(sender)
        .unwrap()
        .replace_track(video_track(
            ssrc,
            RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: VIDEO_CLOCK,
                ..Default::default()
            },
        ))
        .unwrap();
    client.set_remote_description(now, offer).unwrap();
    let answer = client.create_answer(None).unwrap();
    client.set_local_description(now, answer.clone()).unwrap();
    server.set_remote_description(now, answer).unwrap();

    let (mut server_up, mut client_up) = (false, false);
    for _ in 0..10_000 {
        let a = deliver(&mut client, client_addr, &mut server, server_addr, now);
        let b = deliver(&mut server, server_addr, &mut client, client_addr, now);
        connected(&mut server, &mut server_up);
        connected(&mut client, &mut client_up);
        if server_up && client_up {
            break;
        }
        if !a && !b {
            let next = [server.poll_timeout(), client.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_millis(10));
            now = now.max(next);
            server.handle_timeout(now).unwrap();
            client.handle_timeout(now).unwrap();
        }
    }
    assert!(server_up && client_up, "leg {i} did not connect");
    let payload_type = server
        .rtp_sender(sender)
        .unwrap()
        .get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
        .map(|c| c.payload_type)
        .expect("VP8 negotiated");
    while server.poll_write().is_some() {}
    let timer = server.poll_timeout();
    let leg = Leg {
        server,
        client,
        client_addr,
        sender,
        ssrc,
        payload_type,
        rewriter: started_rewriter(i as u16 * 31, false, now),
        timer,
    };
    (leg, now)
}

pub(crate) struct RtcFanout {
    pub(crate) stream: Stream,
    pub(crate) ingest: Ingest,
    pub(crate) legs: Vec<Leg>,
    /// Legs are serviced (drained) once per this many publisher packets: 1 is the driver before
    /// commit 7a02d83, 16 the driver since (`SETTLE_EVERY` in driver/mod.rs).
    pub(crate) settle_every: u64,
    pub(crate) packets: u64,
    /// `handle_timeout` calls (all legs), for the probe's report.
    pub(crate) timeouts: u64,
    pub(crate) errors: u64,
}

impl RtcFanout {
    pub(crate) fn new(n: usize, switched: bool, settle_every: u64) -> Self {
        let mut now = Instant::now();
        let mut legs = Vec::with_capacity(n);
        for i in 0..n {
            let (mut leg, t) = connect_leg(i, now);
            now = t;
            if switched {
                leg.rewriter = started_rewriter(i as u16 * 31, true, now);
            }
            legs.push(leg);
        }
        Self {
            stream: Stream::new(0, 60_000, 1, 7, now),
            ingest: Ingest::new(),
            legs,
            settle_every,
            packets: 0,
            timeouts: 0,
            errors: 0,
        }
    }

    /// One publisher packet to every leg, as `Driver::route` then `Driver::service` do: fire a
    /// leg's timer when due, build the packet, `write_rtp`; then, every `settle_every` packets,
    /// service every leg: drain its writes (classified as the driver does; not sent), events and
    /// reads, and re-read its deadline. Returns the bytes drained.
    ///
    /// Time is virtual: the publisher's packet times (150 packets/s, a 1.3 Mbit/s layer), not the
    /// wall clock. With the wall clock, a leg would see hundreds of thousands of packets per
    /// second, and rtc's per-leg state that is kept for a time span (the congestion controller's
    /// send history, pruned after a horizon when no feedback acknowledges it) would grow far
    /// beyond anything a real subscriber causes. Timers (sender reports, pruning) fire at their
    /// real rate per packet.
    pub(crate) fn step(&mut self) -> usize {
        let p = self.stream.next_packet();
        let now = p.at;
        let ingested = self.ingest.run(&p);
        self.packets += 1;
        let settle = self.packets % self.settle_every == 0;
        let mut bytes = 0;
        for leg in &mut self.legs {
            if leg.timer.is_some_and(|t| t <= now) {
                let _ = leg.server.handle_timeout(now);
                leg.timer = None;
                self.timeouts += 1;
            }
            if let Some(out) =
                outgoing(&mut leg.rewriter, &ingested, &p, leg.ssrc, leg.payload_type)
            {
                let server = &mut leg.server;
                let sender = leg.sender;
                let written = catch_unwind(AssertUnwindSafe(|| {
                    server.rtp_sender(sender).map(|mut s| s.write_rtp(now, out))
                }));
                if !matches!(written, Ok(Some(Ok(())))) {
                    self.errors += 1;
                }
            }
            if !settle {
                continue;
            }
            let server = &mut leg.server;
            let deadline = catch_unwind(AssertUnwindSafe(|| {
                while let Some(d) = server.poll_write() {
                    black_box(classify(&d.message));
                    bytes += d.message.len();
                }
                while let Some(ev) = server.poll_event() {
                    black_box(&ev);
                }
                while let Some(m) = server.poll_read() {
                    black_box(&m);
                }
                server.poll_timeout()
            }));
            leg.timer = deadline.ok().flatten();
        }
        bytes
    }

    /// Sends `packets` publisher packets and delivers what leg 0 writes to its client; the
    /// number of RTP packets the client decrypted.
    pub(crate) fn verify(&mut self, packets: usize) -> usize {
        let server_addr: SocketAddr = "127.0.0.1:7882".parse().unwrap();
        let mut got = 0;
        for _ in 0..packets {
            let p = self.stream.next_packet();
            let now = p.at;
            let ingested = self.ingest.run(&p);
            for (i, leg) in self.legs.iter_mut().enumerate() {
                let Some(out) =
                    outgoing(&mut leg.rewriter, &ingested, &p, leg.ssrc, leg.payload_type)
                else {
                    continue;
                };
                leg.server
                    .rtp_sender(leg.sender)
                    .unwrap()
                    .write_rtp(now, out)
                    .unwrap();
                if i == 0 {
                    deliver(
                        &mut leg.server,
                        server_addr,
                        &mut leg.client,
                        leg.client_addr,
                        now,
                    );
                    while let Some(m) = leg.client.poll_read() {
                        if let rtc::peer_connection::message::RTCMessage::RtpPacket(_, pkt) =
                            m.message
                        {
                            assert_eq!(pkt.payload.len(), PAYLOAD_LEN);
                            got += 1;
                        }
                    }
                    while leg.client.poll_event().is_some() {}
                } else {
                    while leg.server.poll_write().is_some() {}
                }
            }
        }
        got
    }
}

pub(crate) fn bench_fanout_rtc(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_rtc");
    g.sample_size(20);
    g.sampling_mode(SamplingMode::Flat);
    // (name, payload rewritten, service every k packets)
    let cases = [
        ("service_each", false, 1),
        ("settle16", false, 16),
        ("settle16_rewritten", true, 16),
    ];
    for (name, switched, settle_every) in cases {
        for n in FANOUT_SIZES {
            if switched && n > 100 {
                continue; // the copy's share is plain in the model; spare the setup time
            }
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut f = RtcFanout::new(n, switched, settle_every);
                while f.step() == 0 {}
                b.iter(|| black_box(f.step()));
                assert_eq!(f.errors, 0, "write_rtp failed");
            });
        }
    }
    g.finish();
}
