//! What the MCU costs on one core, in process: a room's audio mix per 20 ms tick (N voices
//! decoded, mixed, and one mix-minus encoded per listener) and its composite per picture (N
//! cameras' pictures scaled into the canvas and the canvas encoded; and one input frame
//! decoded). `cargo bench -p fanout-sfu --bench mcu [-- FILTER]`; results in
//! docs/benchmarks.md ("The MCU").
//!
//! The inputs are real: Opus frames of tones and VP8 frames of a moving picture, encoded with
//! the same libraries before the measurement.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codecs::{Application, Channels, OpusEncoder, Vp8Encoder, I420};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sfu::mcu::audio::AudioMix;
use sfu::mcu::composite::Compositor;
use sfu::mcu::layout::TileKind;
use sfu::mcu::packetize::{Vp8Packetizer, MAX_PAYLOAD};
use sfu::mcu::record::{TapPacket, TapState};

/// One voice's next 20 ms, as a tap hands it over.
fn opus_packets(hz: f64, n: usize) -> Vec<TapPacket> {
    let mut enc = OpusEncoder::new(Channels::Mono, Application::Voip).unwrap();
    (0..n)
        .map(|k| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (k * 960 + i) as f64 / 48_000.0;
                    (6000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            TapPacket {
                tap: 0,
                at: Instant::now(),
                seq: k as u16,
                timestamp: (k * 960) as u32,
                marker: false,
                payload: Bytes::from(enc.encode(&pcm).unwrap()),
            }
        })
        .collect()
}

/// A camera's lowest layer: `n` frames of 320x180 with a moving bar, as RTP payloads.
fn vp8_packets(n: usize, tap: u64) -> Vec<TapPacket> {
    let mut enc = Vp8Encoder::new(320, 180, 150, 15).unwrap();
    let mut pk = Vp8Packetizer::new(MAX_PAYLOAD);
    let mut out = Vec::new();
    let mut seq = 0u16;
    for k in 0..n {
        let mut pic = I420::new(320, 180);
        pic.fill(90, 120, 140);
        for y in 0..180 {
            let x0 = (k * 8 + y) % 300;
            pic.y[y * 320 + x0..y * 320 + x0 + 20].fill(220);
        }
        for f in enc.encode(&pic, (k * 6000) as i64, k == 0).unwrap() {
            let mut payloads = Vec::new();
            pk.packetize(&f.data, &mut payloads);
            let last = payloads.len() - 1;
            for (i, payload) in payloads.into_iter().enumerate() {
                out.push(TapPacket {
                    tap,
                    at: Instant::now(),
                    seq,
                    timestamp: (k * 6000) as u32,
                    marker: i == last,
                    payload,
                });
                seq = seq.wrapping_add(1);
            }
        }
    }
    out
}

/// One audio tick of a room of `voices` publishers who all listen (a meeting where everybody
/// asked for the mix): `voices` decodes, one mix, `voices` mix-minus encodes.
fn audio(c: &mut Criterion) {
    let mut group = c.benchmark_group("audio_tick");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for voices in [2usize, 4, 8] {
        let packets: Vec<Vec<TapPacket>> = (0..voices)
            .map(|v| opus_packets(300.0 + 100.0 * v as f64, 500))
            .collect();
        group.throughput(Throughput::Elements(voices as u64));
        group.bench_with_input(BenchmarkId::new("voices", voices), &voices, |b, &voices| {
            let mut mix = AudioMix::new();
            for v in 0..voices as u64 {
                mix.add_input(v, v).unwrap();
                mix.add_listener(v).unwrap();
            }
            let mut out = Vec::new();
            let mut k = 0usize;
            b.iter(|| {
                for (v, ps) in packets.iter().enumerate() {
                    let mut p = ps[k % ps.len()].clone();
                    p.seq = k as u16;
                    mix.handle_packet(v as u64, &p);
                }
                out.clear();
                mix.tick(&mut out);
                k += 1;
                black_box(out.len())
            });
        });
    }
    group.finish();
}

/// One composite picture (640x360) of `cameras` inputs: the pictures drawn and the canvas
/// encoded; and, apart, the decode of one input frame (each camera costs that 15 times a second).
fn composite(c: &mut Criterion) {
    let mut group = c.benchmark_group("composite");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for cameras in [1usize, 4, 8] {
        group.bench_with_input(
            BenchmarkId::new("tick", cameras),
            &cameras,
            |b, &cameras| {
                let mut comp = Compositor::new(640, 360, 15, 600).unwrap();
                for cam in 0..cameras as u64 {
                    comp.add_input(cam, cam, TileKind::Camera, Arc::new(TapState::default()))
                        .unwrap();
                    for p in vp8_packets(15, cam) {
                        comp.handle_packet(cam, &p);
                    }
                }
                b.iter(|| black_box(comp.tick(false).len()));
            },
        );
    }
    let packets = vp8_packets(300, 1);
    group.bench_function("decode_input_frame", |b| {
        let mut comp = Compositor::new(640, 360, 15, 600).unwrap();
        comp.add_input(1, 1, TileKind::Camera, Arc::new(TapState::default()))
            .unwrap();
        let mut i = 0usize;
        // Whole frames per iteration: feed packets up to and including the next marker.
        b.iter(|| loop {
            let p = &packets[i % packets.len()];
            let mut p = p.clone();
            p.seq = i as u16;
            comp.handle_packet(1, &p);
            i += 1;
            if p.marker {
                break;
            }
        });
    });
    group.finish();
}

criterion_group!(benches, audio, composite);
criterion_main!(benches);
