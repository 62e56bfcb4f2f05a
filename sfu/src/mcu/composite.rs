//! A room's composite picture: every camera (the lowest simulcast layer of each, chosen by the
//! caller) and screen share decoded (libvpx), laid out (`layout`), drawn into one canvas
//! (`canvas`) and encoded once (VP8) for every viewer.
//!
//! Owns one [`Vp8Encoder`] and the canvas it encodes, and per input a [`Depacketizer`], a
//! [`Vp8Decoder`] and the input's latest decoded picture. Sans-IO: fed packets
//! ([`Compositor::handle_packet`]) and ticks ([`Compositor::tick`], every 1/fps s, by its thread),
//! it returns encoded frames; it knows nothing of time except by ticks (the pts advances by
//! 90000/fps per tick, whatever the wall clock did). It never asks a publisher for anything: an
//! input that needs a keyframe (at its start, after a loss, after a frame the decoder refused)
//! says so in its [`TapState`]'s `wants_keyframe`, which the tap's owner turns into a PLI.
//!
//! Each tick lays out the inputs that have a picture, in the order of their tap ids (so a
//! picture does not move when another input's packets happen to arrive first), blits each into
//! its placement, and encodes the canvas. The canvas is cleared to black whenever the layout
//! changes, so the cells not covered stay black. With no picture at all the black canvas is
//! still encoded, so a viewer gets a stream (and its first keyframe) at once. An input whose
//! decoder failed keeps showing its last good picture until its next keyframe decodes.
//!
//! Limits: one size and one bitrate for all viewers (no simulcast of the composite), and a
//! viewer's own camera is in the picture like everyone else's.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use codecs::{EncodedFrame, Vp8Decoder, Vp8Encoder, I420, PTS_HZ};

use super::canvas::{canvas, Draw};
use super::depacketize::{Depacketizer, Frame};
use super::layout::{layout, Placement, Tile, TileKind};
use super::record::{TapPacket, TapState};
use crate::engine::codec::Codec;

/// What the compositor counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompositeStats {
    /// Input frames decoded into a picture.
    pub decoded: u64,
    /// Input frames the decoder refused (each makes its input wait for a keyframe).
    pub decode_errors: u64,
    /// Composite frames encoded.
    pub encoded: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Ticks whose encode failed (nothing sent for them).
    pub encode_errors: u64,
}

struct Input {
    publisher: u64,
    kind: TileKind,
    state: Arc<TapState>,
    depacketizer: Depacketizer,
    decoder: Vp8Decoder,
    /// The latest decoded picture; `None` until the first keyframe decodes.
    picture: Option<I420>,
    /// The decoder refused a frame: interframes are skipped until a keyframe decodes.
    broken: bool,
}

impl Input {
    fn share_wants_keyframe(&self) {
        let wants = self.broken || self.depacketizer.wants_keyframe();
        self.state.wants_keyframe.store(wants, Ordering::Relaxed);
    }
}

/// A room's composite (see the module doc).
pub struct Compositor {
    encoder: Vp8Encoder,
    canvas: I420,
    /// By tap id: the layout's order.
    inputs: BTreeMap<u64, Input>,
    speaker: Option<u64>,
    /// This tick's tiles, reused.
    tiles: Vec<Tile<u64>>,
    /// The last tick's layout: when it changes, the canvas is cleared.
    placements: Vec<Placement<u64>>,
    /// Frames completed by one packet, reused.
    frames: Vec<Frame>,
    /// One tick in 90 kHz ticks, and the next frame's pts.
    frame_ticks: i64,
    pts: i64,
    /// A keyframe was asked for (or none was sent yet) and has not come out of the encoder.
    keyframe_due: bool,
    /// The pts of the last tick's frame (the small copy's too).
    last_pts: i64,
    /// A smaller copy of each picture, encoded apart (for viewers with less bandwidth).
    small: Option<Small>,
    pub stats: CompositeStats,
}

/// The small copy: its canvas (the main canvas scaled down), encoder, keyframe state.
struct Small {
    canvas: I420,
    encoder: Vp8Encoder,
    keyframe_due: bool,
}

impl Compositor {
    /// A `width x height` composite (odd sizes rounded up to even) at `fps` frames per second
    /// and `bitrate_kbps`. Fails on a size VP8 cannot code or a zero rate.
    pub fn new(
        width: u32,
        height: u32,
        fps: u32,
        bitrate_kbps: u32,
    ) -> Result<Self, codecs::Error> {
        let (width, height) = (
            width.saturating_add(width & 1),
            height.saturating_add(height & 1),
        );
        // The encoder first: it refuses a size too large to allocate a canvas for.
        let encoder = Vp8Encoder::new(width, height, bitrate_kbps, fps)?;
        Ok(Self {
            encoder,
            canvas: canvas(width, height),
            inputs: BTreeMap::new(),
            speaker: None,
            tiles: Vec::new(),
            placements: Vec::new(),
            frames: Vec::new(),
            frame_ticks: i64::from(PTS_HZ / fps),
            pts: 0,
            keyframe_due: true,
            last_pts: 0,
            small: None,
            stats: CompositeStats::default(),
        })
    }

    /// Also makes a `width x height` copy of each picture at `bitrate_kbps` (see
    /// [`Compositor::tick_small`]).
    pub fn add_small(
        &mut self,
        width: u32,
        height: u32,
        bitrate_kbps: u32,
    ) -> Result<(), codecs::Error> {
        let (width, height) = (width + (width & 1), height + (height & 1));
        let fps = (PTS_HZ as i64 / self.frame_ticks.max(1)) as u32;
        self.small = Some(Small {
            encoder: Vp8Encoder::new(width, height, bitrate_kbps, fps)?,
            canvas: canvas(width, height),
            keyframe_due: true,
        });
        Ok(())
    }

    /// The small copy of the picture [`Compositor::tick`] just drew, scaled down and encoded
    /// (same pts); nothing without [`Compositor::add_small`]. `force_keyframe` as for `tick`.
    pub fn tick_small(&mut self, force_keyframe: bool) -> Vec<EncodedFrame> {
        let Some(small) = self.small.as_mut() else {
            return Vec::new();
        };
        let (w, h) = (small.canvas.width, small.canvas.height);
        small
            .canvas
            .blit_scaled(&self.canvas, super::canvas::Rect::new(0, 0, w, h));
        small.keyframe_due |= force_keyframe;
        let encoded = small
            .encoder
            .encode(&small.canvas, self.last_pts, small.keyframe_due);
        let Ok(frames) = encoded else {
            self.stats.encode_errors += 1;
            return Vec::new();
        };
        if frames.iter().any(|f| f.keyframe) {
            small.keyframe_due = false;
        }
        frames
    }

    /// The composite's size.
    pub fn size(&self) -> (u32, u32) {
        (self.canvas.width, self.canvas.height)
    }

    /// How many inputs there are (with a picture or not).
    pub fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// A VP8 input: `tap` names its packets, `publisher` whose it is, `state` is shared with the
    /// tap's owner (its `wants_keyframe` is kept up to date from here). An input already added
    /// under `tap` is replaced.
    pub fn add_input(
        &mut self,
        tap: u64,
        publisher: u64,
        kind: TileKind,
        state: Arc<TapState>,
    ) -> Result<(), codecs::Error> {
        let input = Input {
            publisher,
            kind,
            state,
            depacketizer: Depacketizer::new(Codec::Vp8),
            decoder: Vp8Decoder::new()?,
            picture: None,
            broken: false,
        };
        input.share_wants_keyframe();
        self.inputs.insert(tap, input);
        Ok(())
    }

    /// An input that ended: it is gone from the next tick's picture.
    pub fn remove_input(&mut self, tap: u64) {
        self.inputs.remove(&tap);
    }

    /// The active speaker: that publisher's cameras are the layout's main picture (among three
    /// or more cameras, see `layout`); `None` for nobody.
    pub fn set_speaker(&mut self, publisher: Option<u64>) {
        self.speaker = publisher;
    }

    /// One packet of input `tap`: the frames it completes are decoded, and the input keeps the
    /// latest picture. An unknown tap is ignored.
    pub fn handle_packet(&mut self, tap: u64, p: &TapPacket) {
        let Some(input) = self.inputs.get_mut(&tap) else {
            return;
        };
        input.depacketizer.push(
            p.seq,
            p.timestamp,
            p.marker,
            p.payload.clone(),
            &mut self.frames,
        );
        for frame in self.frames.drain(..) {
            if input.broken && !frame.keyframe {
                continue; // it refers to pictures the decoder did not get
            }
            match input.decoder.decode(&frame.data) {
                Ok(picture) => {
                    if frame.keyframe {
                        input.broken = false;
                    }
                    if let Some(picture) = picture {
                        self.stats.decoded += 1;
                        input.picture = Some(picture);
                    }
                }
                Err(_) => {
                    self.stats.decode_errors += 1;
                    input.broken = true;
                }
            }
        }
        input.share_wants_keyframe();
    }

    /// One tick: the canvas drawn and encoded. `force_keyframe` makes this frame a keyframe (a
    /// viewer's PLI); the first frame is one too, and a keyframe asked for is asked again until
    /// one comes out. Returns the encoded frames (one in practice, none if libvpx failed), each
    /// with its 90 kHz pts, which advances by 90000/fps every tick from 0.
    pub fn tick(&mut self, force_keyframe: bool) -> Vec<EncodedFrame> {
        self.draw();
        let pts = self.pts;
        self.last_pts = pts;
        self.pts += self.frame_ticks;
        self.keyframe_due |= force_keyframe;
        let encoded = self.encoder.encode(&self.canvas, pts, self.keyframe_due);
        let Ok(frames) = encoded else {
            self.stats.encode_errors += 1;
            return Vec::new();
        };
        for frame in &frames {
            self.stats.encoded += 1;
            if frame.keyframe {
                self.stats.keyframes += 1;
                self.keyframe_due = false;
            }
        }
        frames
    }

    /// Lays out the inputs that have a picture and blits them, clearing the canvas first when
    /// the layout differs from the last tick's.
    fn draw(&mut self) {
        let speaker = self.speaker;
        self.tiles.clear();
        self.tiles
            .extend(self.inputs.iter().filter_map(|(&tap, input)| {
                let picture = input.picture.as_ref()?;
                Some(Tile {
                    id: tap,
                    kind: input.kind,
                    active_speaker: input.kind == TileKind::Camera
                        && speaker == Some(input.publisher),
                    source: (picture.width, picture.height),
                })
            }));
        let placements = layout(self.canvas.width, self.canvas.height, &self.tiles);
        if placements != self.placements {
            let (y, u, v) = I420::BLACK;
            self.canvas.fill(y, u, v);
            self.placements = placements;
        }
        for placement in &self.placements {
            let picture = self
                .inputs
                .get(&placement.id)
                .and_then(|i| i.picture.as_ref());
            if let Some(picture) = picture {
                self.canvas.blit_scaled(picture, placement.picture);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcu::canvas::Rect;
    use crate::mcu::packetize::{Vp8Packetizer, MAX_PAYLOAD};

    type Colour = (u8, u8, u8);
    const RED: Colour = (81, 90, 240);
    const BLUE: Colour = (41, 240, 110);
    const GREEN: Colour = (145, 54, 34);
    const BLACK: Colour = I420::BLACK;

    const WIDTH: u32 = 640;
    const HEIGHT: u32 = 360;
    const FPS: u32 = 15;
    const SOURCE: (u32, u32) = (320, 180);

    /// A publisher's camera: a solid colour, VP8-encoded and packetized into its tap's packets.
    struct Camera {
        tap: u64,
        picture: I420,
        encoder: Vp8Encoder,
        packetizer: Vp8Packetizer,
        seq: u16,
        frames: u32,
    }

    impl Camera {
        fn new(tap: u64, (y, u, v): Colour) -> Camera {
            let mut picture = I420::new(SOURCE.0, SOURCE.1);
            picture.fill(y, u, v);
            Camera {
                tap,
                picture,
                encoder: Vp8Encoder::new(SOURCE.0, SOURCE.1, 500, FPS).unwrap(),
                packetizer: Vp8Packetizer::new(MAX_PAYLOAD),
                seq: rand::random(),
                frames: 0,
            }
        }

        /// The next frame's packets: consecutive seqs, the marker on the last.
        fn next(&mut self, keyframe: bool) -> Vec<TapPacket> {
            let timestamp = self.frames * (PTS_HZ / FPS);
            self.frames += 1;
            let mut packets = Vec::new();
            let encoded = self
                .encoder
                .encode(&self.picture, i64::from(timestamp), keyframe)
                .unwrap();
            for frame in encoded {
                let mut payloads = Vec::new();
                self.packetizer.packetize(&frame.data, &mut payloads);
                let last = payloads.len() - 1;
                for (i, payload) in payloads.into_iter().enumerate() {
                    packets.push(TapPacket {
                        tap: self.tap,
                        at: std::time::Instant::now(),
                        seq: self.seq,
                        timestamp,
                        marker: i == last,
                        payload,
                    });
                    self.seq = self.seq.wrapping_add(1);
                }
            }
            packets
        }
    }

    fn feed(compositor: &mut Compositor, packets: &[TapPacket]) {
        for p in packets {
            compositor.handle_packet(p.tap, p);
        }
    }

    /// A viewer: decodes every composite frame; its latest picture.
    struct Viewer {
        decoder: Vp8Decoder,
        picture: Option<I420>,
        frames: Vec<EncodedFrame>,
    }

    impl Viewer {
        fn new() -> Viewer {
            Viewer {
                decoder: Vp8Decoder::new().unwrap(),
                picture: None,
                frames: Vec::new(),
            }
        }

        fn watch(&mut self, frames: Vec<EncodedFrame>) {
            for frame in frames {
                if let Some(picture) = self.decoder.decode(&frame.data).unwrap() {
                    self.picture = Some(picture);
                }
                self.frames.push(frame);
            }
        }

        fn picture(&self) -> &I420 {
            self.picture.as_ref().expect("a decoded picture")
        }
    }

    /// Ticks `n` times, each after a frame of every camera.
    fn run(compositor: &mut Compositor, cameras: &mut [Camera], viewer: &mut Viewer, n: usize) {
        for _ in 0..n {
            for camera in cameras.iter_mut() {
                feed(compositor, &camera.next(false));
            }
            viewer.watch(compositor.tick(false));
        }
    }

    fn compositor_with(cameras: &[(u64, u64)]) -> (Compositor, Vec<Arc<TapState>>) {
        let mut compositor = Compositor::new(WIDTH, HEIGHT, FPS, 1500).unwrap();
        let states = cameras
            .iter()
            .map(|&(tap, publisher)| {
                let state = Arc::new(TapState::default());
                compositor
                    .add_input(tap, publisher, TileKind::Camera, state.clone())
                    .unwrap();
                state
            })
            .collect();
        (compositor, states)
    }

    fn tiles(taps: &[u64], speaker: Option<u64>) -> Vec<Tile<u64>> {
        taps.iter()
            .map(|&id| Tile {
                id,
                kind: TileKind::Camera,
                active_speaker: Some(id) == speaker,
                source: SOURCE,
            })
            .collect()
    }

    /// The middle half of `rect` in each direction, away from edges the codec blurs.
    fn centre(rect: Rect) -> Rect {
        Rect::new(
            rect.x + rect.w / 4,
            rect.y + rect.h / 4,
            rect.w / 2,
            rect.h / 2,
        )
    }

    /// The average Y, U and V over `rect` (even edges) of `p`.
    fn mean(p: &I420, rect: Rect) -> (f64, f64, f64) {
        let average = |plane: &[u8], stride: u32, r: Rect| {
            let mut sum = 0u64;
            for row in r.y..r.y + r.h {
                let start = (row * stride + r.x) as usize;
                sum += plane[start..start + r.w as usize]
                    .iter()
                    .map(|&s| u64::from(s))
                    .sum::<u64>();
            }
            sum as f64 / f64::from(r.w * r.h)
        };
        let half = Rect::new(rect.x / 2, rect.y / 2, rect.w / 2, rect.h / 2);
        (
            average(&p.y, p.width, rect),
            average(&p.u, p.chroma_width(), half),
            average(&p.v, p.chroma_width(), half),
        )
    }

    fn assert_colour(p: &I420, rect: Rect, want: Colour, what: &str) {
        let got = mean(p, rect);
        let near = |g: f64, w: u8| (g - f64::from(w)).abs() <= 10.0;
        assert!(
            near(got.0, want.0) && near(got.1, want.1) && near(got.2, want.2),
            "{what} at {rect:?}: {got:?}, want {want:?}"
        );
    }

    const FULL: Rect = Rect::new(0, 0, WIDTH, HEIGHT);

    #[test]
    fn two_cameras_are_drawn_where_the_layout_puts_them_on_black() {
        let (mut compositor, _) = compositor_with(&[(2, 20), (1, 10)]);
        // Tap 2 is blue, tap 1 red; the layout goes by tap id: red first.
        let mut cameras = [Camera::new(2, BLUE), Camera::new(1, RED)];
        let mut viewer = Viewer::new();
        run(&mut compositor, &mut cameras, &mut viewer, 6);
        let placed = layout(WIDTH, HEIGHT, &tiles(&[1, 2], None));
        assert_eq!(placed.len(), 2);
        let picture = viewer.picture();
        assert_eq!((picture.width, picture.height), (WIDTH, HEIGHT));
        assert_colour(picture, centre(placed[0].picture), RED, "tap 1");
        assert_colour(picture, centre(placed[1].picture), BLUE, "tap 2");
        assert!(placed[0].picture.x < placed[1].picture.x, "red on the left");
        // Above and below the two pictures (16:9 side by side on 16:9: bands of 90 rows).
        let top = Rect::new(0, 0, WIDTH, placed[0].cell.y - 8);
        let bottom_y = placed[0].cell.y + placed[0].cell.h + 8;
        let bottom = Rect::new(0, bottom_y, WIDTH, HEIGHT - bottom_y);
        for band in [top, bottom] {
            assert!(band.h >= 64 && placed.iter().all(|p| !p.cell.overlaps(&band)));
            assert_colour(picture, band, BLACK, "outside the placements");
        }
        assert_eq!(compositor.stats.decoded, 12);
        assert_eq!(compositor.stats.decode_errors, 0);
        assert_eq!(compositor.stats.encoded, 6);
    }

    #[test]
    fn the_small_copy_is_the_same_picture_scaled_down() {
        let (mut compositor, _) = compositor_with(&[(1, 10), (2, 20)]);
        compositor.add_small(WIDTH / 2, HEIGHT / 2, 150).unwrap();
        let mut cameras = [Camera::new(1, RED), Camera::new(2, BLUE)];
        let (mut large, mut small) = (Viewer::new(), Viewer::new());
        let mut keyframes = 0;
        for i in 0..6 {
            for camera in cameras.iter_mut() {
                let packets = camera.next(i == 0);
                feed(&mut compositor, &packets);
            }
            large.watch(compositor.tick(false));
            let frames = compositor.tick_small(i == 4);
            keyframes += frames.iter().filter(|f| f.keyframe).count();
            small.watch(frames);
        }
        assert_eq!(keyframes, 2, "the first small frame, and the forced one");
        let picture = small.picture();
        assert_eq!((picture.width, picture.height), (WIDTH / 2, HEIGHT / 2));
        let placed = layout(WIDTH, HEIGHT, &tiles(&[1, 2], None));
        let half = |r: Rect| Rect::new(r.x / 2, r.y / 2, r.w / 2, r.h / 2);
        assert_colour(
            picture,
            centre(half(placed[0].picture)),
            RED,
            "tap 1, small",
        );
        assert_colour(
            picture,
            centre(half(placed[1].picture)),
            BLUE,
            "tap 2, small",
        );
        assert_eq!(large.picture().width, WIDTH);
    }

    #[test]
    fn a_removed_input_is_gone_from_the_next_ticks() {
        let (mut compositor, _) = compositor_with(&[(1, 10), (2, 20)]);
        let mut cameras = vec![Camera::new(1, RED), Camera::new(2, BLUE)];
        let mut viewer = Viewer::new();
        run(&mut compositor, &mut cameras, &mut viewer, 4);
        let blue_was = layout(WIDTH, HEIGHT, &tiles(&[1, 2], None))[1].picture;
        assert_colour(viewer.picture(), centre(blue_was), BLUE, "before");
        // Blue leaves: red alone fills the canvas, blue's old place included.
        compositor.remove_input(2);
        cameras.pop();
        run(&mut compositor, &mut cameras, &mut viewer, 4);
        assert_eq!(compositor.inputs(), 1);
        assert_eq!(layout(WIDTH, HEIGHT, &tiles(&[1], None))[0].picture, FULL);
        assert_colour(viewer.picture(), centre(FULL), RED, "alone");
        assert_colour(viewer.picture(), centre(blue_was), RED, "where blue was");
        // Red leaves too: all black.
        compositor.remove_input(1);
        run(&mut compositor, &mut [], &mut viewer, 3);
        assert_colour(viewer.picture(), FULL, BLACK, "empty");
        assert_colour(
            viewer.picture(),
            centre(blue_was),
            BLACK,
            "empty, blue's place",
        );
    }

    #[test]
    fn the_first_frame_and_forced_ones_are_keyframes() {
        let (mut compositor, _) = compositor_with(&[(1, 10)]);
        let mut camera = Camera::new(1, RED);
        let mut keys = Vec::new();
        for n in 0..6 {
            feed(&mut compositor, &camera.next(false));
            let frames = compositor.tick(n == 4);
            assert_eq!(frames.len(), 1, "tick {n}");
            keys.push(frames[0].keyframe);
        }
        assert_eq!(keys, [true, false, false, false, true, false]);
        assert_eq!(compositor.stats.keyframes, 2);
        assert_eq!(compositor.stats.encoded, 6);
    }

    #[test]
    fn an_input_without_a_keyframe_asks_for_one_and_shows_nothing() {
        let (mut compositor, states) = compositor_with(&[(1, 10)]);
        assert!(
            states[0].wants_keyframe.load(Ordering::Relaxed),
            "at the start"
        );
        let mut camera = Camera::new(1, RED);
        let mut viewer = Viewer::new();
        let _lost_keyframe = camera.next(false);
        for _ in 0..3 {
            feed(&mut compositor, &camera.next(false));
            viewer.watch(compositor.tick(false));
            assert!(states[0].wants_keyframe.load(Ordering::Relaxed));
        }
        assert_eq!(compositor.stats.decoded, 0);
        assert_colour(viewer.picture(), FULL, BLACK, "no keyframe yet");
        // The publisher answers the PLI.
        feed(&mut compositor, &camera.next(true));
        assert!(!states[0].wants_keyframe.load(Ordering::Relaxed));
        viewer.watch(compositor.tick(false));
        assert_colour(viewer.picture(), centre(FULL), RED, "after the keyframe");
    }

    #[test]
    fn an_undecodable_frame_freezes_the_input_and_asks_for_a_keyframe() {
        let (mut compositor, states) = compositor_with(&[(1, 10)]);
        let mut camera = Camera::new(1, RED);
        let mut viewer = Viewer::new();
        run(
            &mut compositor,
            std::slice::from_mut(&mut camera),
            &mut viewer,
            2,
        );
        assert_eq!(compositor.stats.decoded, 2);
        // What the depacketizer takes for a keyframe (bit 0 clear) but libvpx cannot decode.
        let mut garbage = camera.next(false);
        garbage.truncate(1);
        let mut payload = garbage[0].payload.to_vec();
        payload.truncate(4);
        payload.extend_from_slice(&[0u8; 40]);
        garbage[0].payload = payload.into();
        garbage[0].marker = true;
        feed(&mut compositor, &garbage);
        assert_eq!(compositor.stats.decode_errors, 1);
        assert!(states[0].wants_keyframe.load(Ordering::Relaxed));
        // Interframes are skipped, the last good picture stays.
        run(
            &mut compositor,
            std::slice::from_mut(&mut camera),
            &mut viewer,
            2,
        );
        assert_eq!(compositor.stats.decoded, 2);
        assert!(states[0].wants_keyframe.load(Ordering::Relaxed));
        assert_colour(viewer.picture(), centre(FULL), RED, "frozen");
        feed(&mut compositor, &camera.next(true));
        assert_eq!(compositor.stats.decoded, 3);
        assert!(!states[0].wants_keyframe.load(Ordering::Relaxed));
    }

    #[test]
    fn with_no_inputs_ticks_still_yield_black_frames() {
        let mut compositor = Compositor::new(WIDTH, HEIGHT, FPS, 1500).unwrap();
        let mut viewer = Viewer::new();
        for _ in 0..3 {
            viewer.watch(compositor.tick(false));
        }
        let pts: Vec<i64> = viewer.frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, [0, 6000, 12000]);
        assert!(viewer.frames[0].keyframe);
        assert_colour(viewer.picture(), FULL, BLACK, "no inputs");
        // A picture arriving later shows from the next tick.
        let state = Arc::new(TapState::default());
        compositor
            .add_input(1, 10, TileKind::Screen, state)
            .unwrap();
        let mut camera = Camera::new(1, BLUE);
        feed(&mut compositor, &camera.next(false));
        viewer.watch(compositor.tick(false));
        assert_colour(viewer.picture(), centre(FULL), BLUE, "screen share");
    }

    #[test]
    fn the_active_speaker_gets_the_main_picture() {
        let (mut compositor, _) = compositor_with(&[(1, 10), (2, 20), (3, 30)]);
        let mut cameras = [
            Camera::new(1, RED),
            Camera::new(2, BLUE),
            Camera::new(3, GREEN),
        ];
        let mut viewer = Viewer::new();
        compositor.set_speaker(Some(30));
        run(&mut compositor, &mut cameras, &mut viewer, 5);
        let placed = layout(WIDTH, HEIGHT, &tiles(&[1, 2, 3], Some(3)));
        assert!(placed[2].picture.w > WIDTH / 2, "{placed:?}");
        let picture = viewer.picture();
        assert_colour(picture, centre(placed[2].picture), GREEN, "speaker");
        assert_colour(picture, centre(placed[0].picture), RED, "strip");
        assert_colour(picture, centre(placed[1].picture), BLUE, "strip");
        // Nobody speaking: a grid, the canvas cleared around it.
        compositor.set_speaker(None);
        run(&mut compositor, &mut cameras, &mut viewer, 3);
        let grid = layout(WIDTH, HEIGHT, &tiles(&[1, 2, 3], None));
        assert_colour(viewer.picture(), centre(grid[2].picture), GREEN, "grid");
        assert_colour(viewer.picture(), centre(grid[0].picture), RED, "grid");
        // Left of the centred last row, where the speaker's picture was: black again.
        let was_green = Rect::new(88, 188, 64, 72);
        assert!(placed[2].picture.contains(&was_green));
        assert!(grid.iter().all(|p| !p.cell.overlaps(&was_green)));
        assert_colour(viewer.picture(), was_green, BLACK, "cleared");
    }

    #[test]
    fn odd_sizes_round_up_and_bad_ones_are_errors() {
        let compositor = Compositor::new(641, 359, FPS, 1500).unwrap();
        assert_eq!(compositor.size(), (642, 360));
        assert!(Compositor::new(0, 360, FPS, 1500).is_err());
        assert!(Compositor::new(u32::MAX, u32::MAX, FPS, 1500).is_err());
        assert!(Compositor::new(WIDTH, HEIGHT, 0, 1500).is_err());
        assert!(Compositor::new(WIDTH, HEIGHT, FPS, 0).is_err());
    }
}
