//! Micro-benchmarks of the media hot path (issue 5, item 3): what one publisher packet costs per
//! subscriber, in process, without a network.
//!
//! Groups (`cargo bench -p fanout-sfu --bench hotpath [-- FILTER]`):
//! - `rewriter`: [`RtpRewriter::process`] per packet: one layer steady, simulcast (packets of the
//!   two layers not forwarded are dropped), and a layer switch every K packets.
//! - `ingest`: the once-per-packet work before the forwarders (what `Driver::route` does before
//!   its loop), and `rtp::Packet::unmarshal` of the publisher's datagram (inside rtc).
//! - `fanout_model`: one VP8 packet for N subscribers, the per-subscriber steps of `Driver::route`
//!   done from outside: rewriter, outgoing header (subscriber SSRC, sequence number, timestamp,
//!   payload type, no extensions), payload shared (or copied and its picture id rewritten after a
//!   layer switch), then marshalled into a reused buffer as a stand-in for what rtc does next.
//! - `fanout_rtc`: the real thing per subscriber: the same steps, then `write_rtp` on a server
//!   peer connection built by `sfu::peer` itself (interceptors, TWCC, SRTP) that completed ICE and
//!   DTLS with an in-memory client, and draining it as the driver's `service` does (datagrams
//!   produced but not sent: no socket, no syscall), either after every packet (`service_each`,
//!   the driver before commit 7a02d83) or once per 16 packets (`settle16`, the driver since).
//! - `layers`: `desired` and `allocate` for a subscriber with T simulcast tracks.
//! - `vp8`, `classify`: the small per-packet parsers.
//!
//! Throughput is in elements: subscribers for `fanout_*`, packets for `rewriter`, tracks for
//! `layers`, so criterion's "thrpt" line reads per element and `time / N` is ns per packet per
//! subscriber.
//!
//! `HOTPATH_PROBE=<case>:<packets>` runs one case for that many packets without criterion and
//! exits, so an allocation profiler (`valgrind --tool=dhat`, heaptrack) can count allocations per
//! packet by differencing two runs, e.g. `HOTPATH_PROBE=rtcs10:3000` (10 subscribers, 3000
//! packets); the cases are listed at [`probe`].
//!
//! Files: `stream.rs` (the synthetic publisher stream the groups share), `rtc_fanout.rs` (the
//! `fanout_rtc` group's connected server and client peers), the other groups here.

// `u64::is_multiple_of` needs Rust 1.87; the workspace declares 1.85.
#![allow(clippy::manual_is_multiple_of)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sfu::driver::forward::{forward_step, ingest, Ingested, Step};
use sfu::driver::mesh::MeshPacket;
use sfu::engine::classify::{classify, stun_binding_local_ufrag};
use sfu::engine::codec::Codec;
use sfu::engine::layers::{allocate, desired, Demand, LayerState, Quality, Wants};
use sfu::engine::rewriter::{PacketIn, RtpRewriter, Verdict};
use sfu::engine::seq::SeqUnwrapper;
use sfu::engine::vp8::{self, Vp8Descriptor};
use testkit::stun::BindingRequest;
use testkit::vp8::{payload_head, Descriptor};

mod rtc_fanout;
mod stream;

use rtc_fanout::*;
use stream::*;

const VIDEO_CLOCK: u32 = 90_000;
/// Payload bytes of one video packet (descriptor included), as a 720p VP8 layer sends them.
const PAYLOAD_LEN: usize = 1100;
/// Packets per video frame and frames per keyframe of the synthetic stream.
const PACKETS_PER_FRAME: u64 = 5;
const FRAMES_PER_KEYFRAME: u64 = 60;
const FANOUT_SIZES: [usize; 4] = [1, 10, 100, 500];

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

// ---------------------------------------------------------------------------------------------
// rewriter

fn bench_rewriter(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut g = c.benchmark_group("rewriter");
    g.throughput(Throughput::Elements(1));

    // Precomputed inputs, so only `process` is measured: one layer, then three interleaved.
    let one: Vec<PacketIn> = {
        let mut s = Stream::new(0, 1000, 0, 100, t0);
        let mut ing = Ingest::new();
        (0..4096).map(|_| ing.run(&s.next_packet()).input).collect()
    };
    let three: Vec<PacketIn> = {
        let mut streams: Vec<_> = (0..3u8)
            .map(|l| Stream::new(l, 100 * u16::from(l), 7, 5, t0))
            .collect();
        let mut ings: Vec<_> = (0..3).map(|_| Ingest::new()).collect();
        (0..4096)
            .map(|i| {
                let l = i % 3;
                ings[l].run(&streams[l].next_packet()).input
            })
            .collect()
    };

    // Steady state: every packet forwarded (after the first keyframe). Extended sequence numbers
    // keep growing across laps of the precomputed inputs, as they would in a real stream.
    g.bench_function("steady_one_layer", |b| {
        let mut r = RtpRewriter::new(1, VIDEO_CLOCK);
        r.set_target(Some(0));
        let mut i = 0usize;
        let mut lap = 0u64;
        b.iter(|| {
            let mut p = one[i];
            p.ext_seq += lap;
            i += 1;
            if i == one.len() {
                i = 0;
                lap += one.len() as u64;
            }
            black_box(r.process(black_box(&p)))
        });
    });

    // Simulcast with three layers: the forwarder sees every layer's packets, forwards one.
    g.bench_function("simulcast3_forward_one", |b| {
        let mut r = RtpRewriter::new(1, VIDEO_CLOCK);
        r.set_target(Some(1));
        let mut i = 0usize;
        let mut lap = 0u64;
        b.iter(|| {
            let mut p = three[i];
            p.ext_seq += lap;
            i += 1;
            if i == three.len() {
                i = 0;
                lap += three.len() as u64 / 3;
            }
            black_box(r.process(black_box(&p)))
        });
    });

    // A switch every K packets: two layers interleaved, every packet a keyframe start so the
    // switch happens on the next packet of the new target (a new epoch each time).
    for k in [10u64, 100] {
        g.bench_with_input(BenchmarkId::new("switch_every", k), &k, |b, &k| {
            let mut r = RtpRewriter::new(1, VIDEO_CLOCK);
            r.set_target(Some(0));
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                if n % k == 0 {
                    r.set_target(Some(((n / k) % 2) as u8));
                }
                let layer = (n % 2) as u8;
                let p = PacketIn {
                    layer,
                    ext_seq: (1 << 32) + n / 2,
                    timestamp: (n as u32 / 10).wrapping_mul(3000),
                    keyframe: true,
                    at: t0 + Duration::from_micros(n * 300),
                    picture_id: Some(((n / 10) as u16 & 0x7fff, 15)),
                    tl0_pic_idx: Some((n / 10) as u8),
                };
                black_box(r.process(black_box(&p)))
            });
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// ingest

/// The datagram a publisher's VP8 packet arrives as (after SRTP), with the header extensions
/// Chromium puts on simulcast video: abs-send-time (2), transport-cc (3), mid (4), rid (10).
fn publisher_datagram(payload: &Bytes) -> Bytes {
    let mut header = rtp::header::Header {
        version: 2,
        payload_type: 96,
        sequence_number: 4242,
        timestamp: 123_456,
        ssrc: 0x1234_5678,
        ..Default::default()
    };
    header
        .set_extension(2, Bytes::from_static(&[1, 2, 3]))
        .unwrap();
    header
        .set_extension(3, Bytes::from_static(&[0, 7]))
        .unwrap();
    header.set_extension(4, Bytes::from_static(b"1")).unwrap();
    header.set_extension(10, Bytes::from_static(b"f")).unwrap();
    let pkt = rtp::Packet {
        header,
        payload: payload.clone(),
    };
    pkt.marshal().unwrap().freeze()
}

fn bench_ingest(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    let mut stream = Stream::new(0, 1, 0, 1, t0);
    let packets: Vec<InPacket> = (0..600).map(|_| stream.next_packet()).collect();
    g.bench_function("route_prelude_vp8", |b| {
        let mut ing = Ingest::new();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(ing.run(black_box(&packets[i])))
        });
    });
    let datagram = publisher_datagram(&packets[1].payload);
    g.bench_function("rtp_unmarshal_vp8_4ext", |b| {
        b.iter(|| {
            let mut buf = black_box(&datagram).clone();
            black_box(rtp::Packet::unmarshal(&mut buf).unwrap())
        });
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// fanout_model

struct ModelSub {
    rewriter: RtpRewriter,
    ssrc: u32,
    payload_type: u8,
}

struct Model {
    stream: Stream,
    ingest: Ingest,
    subs: Vec<ModelSub>,
    buf: Vec<u8>,
}

impl Model {
    fn new(n: usize, switched: bool) -> Self {
        let t0 = Instant::now();
        let subs = (0..n)
            .map(|i| ModelSub {
                rewriter: started_rewriter(i as u16 * 31, switched, t0),
                ssrc: 0x1000 + i as u32,
                payload_type: 96,
            })
            .collect();
        Self {
            stream: Stream::new(0, 60_000, 1, 7, t0),
            ingest: Ingest::new(),
            subs,
            buf: vec![0; 1500],
        }
    }

    /// One publisher packet to every subscriber; returns the bytes "sent".
    fn step(&mut self) -> usize {
        let p = self.stream.next_packet();
        let ingested = self.ingest.run(&p);
        let mut sent = 0;
        for s in &mut self.subs {
            let Some(out) = outgoing(&mut s.rewriter, &ingested, &p, s.ssrc, s.payload_type) else {
                continue;
            };
            sent += out.marshal_to(&mut self.buf).unwrap();
        }
        sent
    }
}

fn bench_fanout_model(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_model");
    for switched in [false, true] {
        let name = if switched { "rewritten" } else { "shared" };
        for n in FANOUT_SIZES {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut m = Model::new(n, switched);
                // Past the first keyframe, so every subscriber forwards.
                while m.step() == 0 {}
                b.iter(|| black_box(m.step()));
            });
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// layers

/// Three layers (q/h/f) with measured rates and the low layer's keyframe size.
fn simulcast_layers() -> [LayerState; 3] {
    let l = |quality, active, width, height, bitrate| LayerState {
        quality,
        active,
        width,
        height,
        bitrate,
    };
    [
        l(Quality::Low, true, 320, 180, 160_000.0),
        l(Quality::Medium, true, 0, 0, 550_000.0),
        l(Quality::High, false, 1280, 720, 0.0),
    ]
}

fn bench_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("layers");
    let layers = simulcast_layers();
    let sizes = [(1280, 720), (640, 360), (320, 180), (160, 90)];
    for t in [1usize, 4, 16] {
        let wants: Vec<Wants> = (0..t)
            .map(|i| Wants {
                size: Some(sizes[i % sizes.len()]),
                ..Wants::default()
            })
            .collect();
        g.throughput(Throughput::Elements(t as u64));
        // What the driver's selection does per subscriber per tick: desired per track, then
        // one allocation over all of them.
        g.bench_with_input(BenchmarkId::new("desired_and_allocate", t), &t, |b, &t| {
            b.iter(|| {
                let demands: Vec<Demand<'_>> = (0..t)
                    .map(|i| {
                        let (want, reason) = desired(&layers, &wants[i]);
                        Demand {
                            layers: &layers,
                            desired: want,
                            reason,
                            priority: u8::from(i == 0),
                            current: Some(i % 2),
                        }
                    })
                    .collect();
                black_box(allocate(black_box(2_500_000.0), &demands))
            });
        });
        let demands: Vec<Demand<'_>> = (0..t)
            .map(|i| {
                let (want, reason) = desired(&layers, &wants[i]);
                Demand {
                    layers: &layers,
                    desired: want,
                    reason,
                    priority: u8::from(i == 0),
                    current: Some(i % 2),
                }
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("allocate", t), &t, |b, _| {
            b.iter(|| black_box(allocate(black_box(2_500_000.0), black_box(&demands))));
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// vp8, classify

fn bench_parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("vp8");
    g.throughput(Throughput::Elements(1));
    let key = vp8_payload(true, true, 1234, 5);
    let inter = vp8_payload(false, true, 1234, 5);
    g.bench_function("is_keyframe_start", |b| {
        b.iter(|| black_box(Codec::Vp8.is_keyframe_start(black_box(&inter))))
    });
    g.bench_function("keyframe_size", |b| {
        b.iter(|| black_box(vp8::keyframe_size(black_box(&key))))
    });
    g.bench_function("descriptor_parse", |b| {
        b.iter(|| black_box(Vp8Descriptor::parse(black_box(&inter))))
    });
    let d = Vp8Descriptor::parse(&inter).unwrap();
    let mut buf = inter.to_vec();
    g.bench_function("descriptor_write", |b| {
        b.iter(|| d.write(black_box(&mut buf), black_box(4321), black_box(9)))
    });
    // What a rewritten payload costs the driver: a copy of ~1100 bytes, then the write.
    g.bench_function("copy_and_rewrite_1100", |b| {
        b.iter(|| {
            let mut copy = BytesMut::from(&black_box(&inter)[..]);
            d.write(&mut copy, 4321, 9);
            black_box(copy.freeze())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    let rtp = publisher_datagram(&inter);
    g.bench_function("rtp_datagram", |b| {
        b.iter(|| black_box(classify(black_box(&rtp))))
    });
    let stun = BindingRequest::checked(b"srv00000001:clientuf", "password").encode();
    g.bench_function("stun_binding_ufrag", |b| {
        b.iter(|| black_box(stun_binding_local_ufrag(black_box(&stun)).map(str::len)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// main

/// `HOTPATH_PROBE=<case>:<packets>`: runs one fan-out case for that many publisher packets (after
/// setup and the first keyframe) and exits; for counting allocations with an external profiler.
/// Cases: `model<N>` (shared payload), `model<N>r` (rewritten), `rtc<N>`, `rtc<N>r` (serviced
/// after every packet), `rtcs<N>`, `rtcs<N>r` (serviced every 16 packets).
fn probe(spec: &str) {
    let (case, packets) = spec
        .split_once(':')
        .expect("HOTPATH_PROBE=<case>:<packets>");
    let packets: u64 = packets.parse().expect("packet count");
    let switched = case.ends_with('r');
    let digits = case.trim_end_matches('r');
    let (kind, n) = if let Some(n) = digits.strip_prefix("model") {
        ("model", n)
    } else if let Some(n) = digits.strip_prefix("rtcs") {
        ("rtcs", n)
    } else if let Some(n) = digits.strip_prefix("rtc") {
        ("rtc", n)
    } else {
        panic!("unknown probe case {case}");
    };
    let n: usize = n.parse().expect("subscriber count");
    let mut bytes = 0usize;
    if kind == "model" {
        let mut m = Model::new(n, switched);
        while m.step() == 0 {}
        for _ in 0..packets {
            bytes += m.step();
        }
    } else {
        let settle_every = if kind == "rtcs" { 16 } else { 1 };
        let mut f = RtcFanout::new(n, switched, settle_every);
        let got = f.verify(100);
        println!("verify: leg 0's client decrypted {got} of the 100 packets sent after setup");
        for _ in 0..packets {
            bytes += f.step();
        }
        assert_eq!(f.errors, 0);
        println!(
            "{:.3} handle_timeout calls per packet per subscriber",
            f.timeouts as f64 / (packets as f64 * n as f64)
        );
    }
    println!("probe {case}: {packets} packets, {bytes} bytes out");
}

fn main() {
    if let Ok(spec) = std::env::var("HOTPATH_PROBE") {
        probe(&spec);
        return;
    }
    let mut c = criterion();
    bench_rewriter(&mut c);
    bench_ingest(&mut c);
    bench_fanout_model(&mut c);
    bench_fanout_rtc(&mut c);
    bench_layers(&mut c);
    bench_parsers(&mut c);
    c.final_summary();
}
