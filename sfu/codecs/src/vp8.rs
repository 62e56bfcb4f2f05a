//! VP8 through libvpx's C API: a real-time encoder and a decoder.
//!
//! This file owns every libvpx resource (codec contexts, the encoder's input image) and frees
//! them in `Drop`. Pictures cross the boundary by copy: [`I420`]'s packed planes are copied row by
//! row into libvpx's strided image before encoding, and a decoded image is copied out before the
//! next call can invalidate it. Nothing borrowed from libvpx outlives the call that produced it.

use std::ffi::CStr;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;

use vpx_sys as ffi;

use crate::{Error, Result, I420};

/// Clock rate of presentation timestamps: 90 kHz, the RTP video clock, so an RTP timestamp
/// (extended to 64 bits) can be passed as is.
pub const PTS_HZ: u32 = 90_000;

/// VP8 codes sizes in 14 bits.
const MAX_DIMENSION: u32 = 16_383;

/// Keyframes only on request (a new subscriber's PLI) or after this many frames, a few minutes:
/// a keyframe is several times a delta frame, and a periodic one is a periodic bitrate spike.
const KEYFRAME_MAX_DISTANCE: c_uint = 3000;

/// VP8's speed/quality knob for real time (-16..16; higher is faster). 8 keeps a 720p composite
/// well within one core.
const CPU_USED: c_int = 8;

/// One compressed frame out of the encoder.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame, ready for the RTP packetizer.
    pub data: Vec<u8>,
    /// Whether a decoder can start here.
    pub keyframe: bool,
    /// The presentation timestamp given to [`Vp8Encoder::encode`], in [`PTS_HZ`] ticks.
    pub pts: i64,
}

impl std::fmt::Debug for EncodedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedFrame")
            .field("len", &self.data.len())
            .field("keyframe", &self.keyframe)
            .field("pts", &self.pts)
            .finish()
    }
}

/// A VP8 encoder set up for real time: no lookahead (`g_lag_in_frames = 0`), constant bitrate,
/// error resilient, one thread, no frame dropping, keyframes on request.
pub struct Vp8Encoder {
    /// Boxed so its address never changes while libvpx holds it.
    ctx: Box<ffi::vpx_codec_ctx_t>,
    /// Kept for `set_bitrate`, which passes the whole configuration again.
    cfg: ffi::vpx_codec_enc_cfg_t,
    /// The input image (from `vpx_img_alloc`, owned, freed in `Drop`), refilled for every frame.
    img: *mut ffi::vpx_image_t,
    width: u32,
    height: u32,
    /// One frame's duration in `PTS_HZ` ticks, for libvpx's rate control.
    frame_duration: c_ulong,
}

// SAFETY: a libvpx encoder context has no thread affinity (no thread-local state; with
// `g_threads = 1` libvpx starts no threads of its own). The context and the image are owned by
// this value alone and every use goes through `&mut self`, so moving it to another thread moves
// sole access with it.
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    /// An encoder for `width x height` pictures at `bitrate_kbps` and about `fps` frames per
    /// second (the rate control's budget per frame; the actual timing comes from the pts).
    pub fn new(width: u32, height: u32, bitrate_kbps: u32, fps: u32) -> Result<Self> {
        if !(1..=MAX_DIMENSION).contains(&width) || !(1..=MAX_DIMENSION).contains(&height) {
            return Err(Error::InvalidArgument(format!(
                "VP8 cannot code {width}x{height}"
            )));
        }
        if bitrate_kbps == 0 || fps == 0 || fps > PTS_HZ {
            return Err(Error::InvalidArgument(format!(
                "bitrate {bitrate_kbps} kbps at {fps} fps"
            )));
        }
        let cfg = default_config()?;
        // Built before libvpx is touched, so `Drop` cleans up whatever the steps below reach.
        let mut encoder = Self {
            ctx: Box::new(empty_context()),
            cfg,
            img: ptr::null_mut(),
            width,
            height,
            frame_duration: c_ulong::from(PTS_HZ / fps),
        };
        let cfg = &mut encoder.cfg;
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: PTS_HZ as c_int,
        };
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = bitrate_kbps;
        // A dropped frame would be a visible stall in a composite that already runs at ~15 fps.
        cfg.rc_dropframe_thresh = 0;
        // libwebrtc's real-time VP8 settings: quantizer range and a short, 1 s rate buffer.
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = KEYFRAME_MAX_DISTANCE;

        // SAFETY: `ctx` is a zeroed context in a Box (stable address) and `cfg` a complete
        // configuration from `vpx_codec_enc_config_default`; libvpx copies the configuration
        // into its own state, so the pointer need not outlive the call. The ABI version is the
        // one these bindings were generated for.
        let err = unsafe {
            ffi::vpx_codec_enc_init_ver(
                &mut *encoder.ctx,
                ffi::vpx_codec_vp8_cx(),
                &encoder.cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        // On failure libvpx has already destroyed the context; its detail pointer may dangle.
        check(err, "vpx_codec_enc_init", None)?;
        // SAFETY: the context is an initialised VP8 encoder, and VP8E_SET_CPUUSED takes one int.
        let err = unsafe {
            ffi::vpx_codec_control_(
                &mut *encoder.ctx,
                ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                CPU_USED,
            )
        };
        check(
            err,
            "vpx_codec_control(VP8E_SET_CPUUSED)",
            Some(&mut encoder.ctx),
        )?;
        // SAFETY: a null `img` asks libvpx to allocate the descriptor as well as the planes;
        // the result is null or an image we own until `vpx_img_free`.
        encoder.img = unsafe {
            ffi::vpx_img_alloc(
                ptr::null_mut(),
                ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
                width,
                height,
                16,
            )
        };
        if encoder.img.is_null() {
            return Err(Error::Vpx {
                call: "vpx_img_alloc",
                detail: "out of memory".into(),
            });
        }
        Ok(encoder)
    }

    /// Encodes one picture (of the encoder's size) at `pts` ([`PTS_HZ`] ticks, increasing);
    /// `force_keyframe` makes this frame a keyframe (answer a PLI with it). Returns the frames
    /// libvpx produced: one in practice, as there is no lookahead and no frame dropping.
    pub fn encode(
        &mut self,
        picture: &I420,
        pts: i64,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>> {
        if (picture.width, picture.height) != (self.width, self.height) {
            return Err(Error::InvalidArgument(format!(
                "picture is {}x{}, the encoder {}x{}",
                picture.width, picture.height, self.width, self.height
            )));
        }
        picture.check()?;
        self.copy_in(picture);
        let flags = if force_keyframe {
            ffi::vpx_enc_frame_flags_t::from(ffi::VPX_EFLAG_FORCE_KF)
        } else {
            0
        };
        // SAFETY: the context is an initialised encoder and `img` an allocated image of the
        // configured size and format whose planes were just filled; libvpx copies the picture
        // before returning.
        let err = unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                self.img,
                pts,
                self.frame_duration,
                flags,
                c_ulong::from(ffi::VPX_DL_REALTIME),
            )
        };
        check(err, "vpx_codec_encode", Some(&mut self.ctx))?;

        let mut frames = Vec::with_capacity(1);
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialised and `iter` is the iterator libvpx asks for
            // (null at the start); the result is null at the end.
            let packet = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            // SAFETY: a non-null packet is valid until the next call that changes the context,
            // and nothing below makes one.
            let Some(packet) = (unsafe { packet.as_ref() }) else {
                break;
            };
            if packet.kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for a frame packet, `frame` is the union's live member.
            let frame = unsafe { packet.data.frame };
            let data = if frame.sz == 0 || frame.buf.is_null() {
                Vec::new()
            } else {
                // SAFETY: libvpx points `buf` at `sz` bytes of compressed data that it owns,
                // valid until the next encode; they are copied out at once.
                unsafe { std::slice::from_raw_parts(frame.buf.cast::<u8>(), frame.sz as usize) }
                    .to_vec()
            };
            frames.push(EncodedFrame {
                data,
                keyframe: frame.flags & ffi::VPX_FRAME_IS_KEY != 0,
                pts: frame.pts,
            });
        }
        Ok(frames)
    }

    /// Changes the target bitrate from the next frame on (what the bandwidth estimate allows).
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<()> {
        if kbps == 0 {
            return Err(Error::InvalidArgument("bitrate 0 kbps".into()));
        }
        let previous = self.cfg.rc_target_bitrate;
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: the context is an initialised encoder and `cfg` the complete configuration it
        // was created with (only the bitrate changed); libvpx copies it.
        let err = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &self.cfg) };
        if let Err(e) = check(err, "vpx_codec_enc_config_set", Some(&mut self.ctx)) {
            self.cfg.rc_target_bitrate = previous;
            return Err(e);
        }
        Ok(())
    }

    /// The picture size this encoder takes.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Copies `picture`'s packed planes into libvpx's strided image, row by row.
    fn copy_in(&mut self, picture: &I420) {
        // SAFETY: `img` is non-null (checked in `new`) and owned by `self`; it is only read here.
        let img = unsafe { &*self.img };
        let (cw, ch) = (
            picture.chroma_width() as usize,
            picture.chroma_height() as usize,
        );
        let planes = [
            (&picture.y, self.width as usize, self.height as usize),
            (&picture.u, cw, ch),
            (&picture.v, cw, ch),
        ];
        for (index, (src, width, rows)) in planes.into_iter().enumerate() {
            let stride = img.stride[index] as usize;
            // SAFETY: vpx_img_alloc gave this plane `rows` rows of `stride >= width` bytes for
            // the image's size, and nothing else refers to them during this call.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(img.planes[index], stride * (rows - 1) + width)
            };
            for (row, line) in src.chunks_exact(width).enumerate() {
                dst[row * stride..row * stride + width].copy_from_slice(line);
            }
        }
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        if !self.img.is_null() {
            // SAFETY: `img` came from vpx_img_alloc and is freed once, here.
            unsafe { ffi::vpx_img_free(self.img) };
        }
        // SAFETY: destroying a context that failed to initialise (or was already destroyed by
        // a failed init) only returns an error: libvpx checks its private state for null.
        unsafe { ffi::vpx_codec_destroy(&mut *self.ctx) };
    }
}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bitrate_kbps", &self.cfg.rc_target_bitrate)
            .finish()
    }
}

/// A VP8 decoder (one thread, no post-processing).
pub struct Vp8Decoder {
    /// Boxed so its address never changes while libvpx holds it.
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: as for `Vp8Encoder`: a decoder context has no thread affinity, starts no threads with
// `threads = 1`, and is used only through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// A decoder; the picture size comes from the stream's keyframes.
    pub fn new() -> Result<Self> {
        let mut decoder = Self {
            ctx: Box::new(empty_context()),
        };
        let cfg = ffi::vpx_codec_dec_cfg {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: `ctx` is a zeroed context in a Box; libvpx copies `cfg` into its own state, so
        // the local may go away after the call. The ABI version is the bindings' own.
        let err = unsafe {
            ffi::vpx_codec_dec_init_ver(
                &mut *decoder.ctx,
                ffi::vpx_codec_vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        check(err, "vpx_codec_dec_init", None)?;
        Ok(decoder)
    }

    /// Decodes one complete VP8 frame. `Ok(None)` when it produced no picture (an empty input,
    /// or a frame that is not shown); an error for a frame libvpx cannot decode (corrupt, or a
    /// delta frame before any keyframe), after which the caller should ask for a keyframe.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Option<I420>> {
        if frame.is_empty() {
            // An empty buffer is libvpx's "flush", not a frame.
            return Ok(None);
        }
        let len = c_uint::try_from(frame.len())
            .map_err(|_| Error::InvalidArgument(format!("{}-byte frame", frame.len())))?;
        // SAFETY: the context is an initialised decoder; `frame` is `len` readable bytes, read
        // only during the call.
        let err = unsafe {
            ffi::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), len, ptr::null_mut(), 0)
        };
        check(err, "vpx_codec_decode", Some(&mut self.ctx))?;

        let mut picture = None;
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialised and `iter` starts null; null means no more.
            let img = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            // SAFETY: a non-null image is valid until the next decode call; it is copied out now.
            let Some(img) = (unsafe { img.as_ref() }) else {
                break;
            };
            picture = Some(copy_out(img)?);
        }
        Ok(picture)
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: as for the encoder: destroy is safe on an initialised context and a no-op
        // (an error code) on one whose init failed.
        unsafe { ffi::vpx_codec_destroy(&mut *self.ctx) };
    }
}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vp8Decoder")
    }
}

/// Copies a decoded libvpx image into a packed [`I420`].
fn copy_out(img: &ffi::vpx_image_t) -> Result<I420> {
    if img.fmt != ffi::vpx_img_fmt::VPX_IMG_FMT_I420 || img.d_w == 0 || img.d_h == 0 {
        return Err(Error::Vpx {
            call: "vpx_codec_get_frame",
            detail: format!("unexpected {:?} image of {}x{}", img.fmt, img.d_w, img.d_h),
        });
    }
    let mut picture = I420::new(img.d_w, img.d_h);
    let (width, height) = (img.d_w as usize, img.d_h as usize);
    let (cw, ch) = (
        picture.chroma_width() as usize,
        picture.chroma_height() as usize,
    );
    let planes = [
        (&mut picture.y, width, height),
        (&mut picture.u, cw, ch),
        (&mut picture.v, cw, ch),
    ];
    for (index, (dst, width, rows)) in planes.into_iter().enumerate() {
        let stride = img.stride[index] as usize;
        // SAFETY: an I420 image from the decoder has, for this plane, `rows` rows of
        // `stride >= width` bytes (chroma rounded up), valid until the next decode call.
        let src =
            unsafe { std::slice::from_raw_parts(img.planes[index], stride * (rows - 1) + width) };
        for (row, line) in dst.chunks_exact_mut(width).enumerate() {
            line.copy_from_slice(&src[row * stride..row * stride + width]);
        }
    }
    Ok(picture)
}

fn empty_context() -> ffi::vpx_codec_ctx_t {
    ffi::vpx_codec_ctx_t {
        name: ptr::null(),
        iface: ptr::null_mut(),
        err: ffi::vpx_codec_err_t::VPX_CODEC_OK,
        err_detail: ptr::null(),
        init_flags: 0,
        config: ffi::vpx_codec_ctx__bindgen_ty_1 { raw: ptr::null() },
        priv_: ptr::null_mut(),
    }
}

fn default_config() -> Result<ffi::vpx_codec_enc_cfg_t> {
    let mut cfg = std::mem::MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::uninit();
    // SAFETY: `cfg` is writable memory for one configuration, which the call fills as a whole
    // (a struct copy of the interface's defaults) without reading it; usage 0 is the only one.
    let err =
        unsafe { ffi::vpx_codec_enc_config_default(ffi::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0) };
    check(err, "vpx_codec_enc_config_default", None)?;
    // SAFETY: the call succeeded, so every field is initialised.
    Ok(unsafe { cfg.assume_init() })
}

/// Turns a libvpx status into a `Result`, with libvpx's detail message when a live context has
/// one.
fn check(
    err: ffi::vpx_codec_err_t,
    call: &'static str,
    ctx: Option<&mut ffi::vpx_codec_ctx_t>,
) -> Result<()> {
    if err == ffi::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: vpx_codec_err_to_string returns a static NUL-terminated string for any code.
    let mut detail = unsafe { CStr::from_ptr(ffi::vpx_codec_err_to_string(err)) }
        .to_string_lossy()
        .into_owned();
    if let Some(ctx) = ctx {
        // SAFETY: `ctx` is a live, initialised context; the result is null or a NUL-terminated
        // string owned by it, copied before any other call.
        let extra = unsafe { ffi::vpx_codec_error_detail(ctx) };
        if !extra.is_null() {
            // SAFETY: non-null, so a NUL-terminated string (see above).
            let extra = unsafe { CStr::from_ptr(extra) }.to_string_lossy();
            detail = format!("{detail} ({extra})");
        }
    }
    Err(Error::Vpx { call, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: (u8, u8, u8) = (81, 90, 240);
    const BLUE: (u8, u8, u8) = (41, 240, 110);
    const FRAME_TICKS: i64 = (PTS_HZ / 30) as i64;

    fn solid(width: u32, height: u32, (y, u, v): (u8, u8, u8)) -> I420 {
        let mut picture = I420::new(width, height);
        picture.fill(y, u, v);
        picture
    }

    /// Left half `left`, right half `right`.
    fn halves(width: u32, height: u32, left: (u8, u8, u8), right: (u8, u8, u8)) -> I420 {
        let mut picture = I420::new(width, height);
        let paint = |plane: &mut Vec<u8>, w: usize, l: u8, r: u8| {
            for line in plane.chunks_exact_mut(w) {
                let (a, b) = line.split_at_mut(w / 2);
                a.fill(l);
                b.fill(r);
            }
        };
        let cw = picture.chroma_width() as usize;
        paint(&mut picture.y, width as usize, left.0, right.0);
        paint(&mut picture.u, cw, left.1, right.1);
        paint(&mut picture.v, cw, left.2, right.2);
        picture
    }

    /// Average of a plane's columns `from..to`.
    fn average(plane: &[u8], width: usize, from: usize, to: usize) -> f64 {
        let (mut sum, mut n) = (0u64, 0u64);
        for line in plane.chunks_exact(width) {
            sum += line[from..to].iter().map(|&s| u64::from(s)).sum::<u64>();
            n += (to - from) as u64;
        }
        sum as f64 / n as f64
    }

    fn assert_near(got: f64, want: u8, what: &str) {
        assert!(
            (got - f64::from(want)).abs() <= 3.0,
            "{what}: {got}, want {want}"
        );
    }

    fn encode_one(encoder: &mut Vp8Encoder, picture: &I420, n: i64, key: bool) -> EncodedFrame {
        let mut frames = encoder.encode(picture, n * FRAME_TICKS, key).unwrap();
        assert_eq!(frames.len(), 1, "frame {n}");
        frames.pop().unwrap()
    }

    #[test]
    fn solid_colour_round_trips_with_keyframes_where_expected() {
        let (width, height) = (320, 240);
        let mut encoder = Vp8Encoder::new(width, height, 500, 30).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let picture = solid(width, height, RED);
        for n in 0..8 {
            let force = n == 6;
            let frame = encode_one(&mut encoder, &picture, n, force);
            assert_eq!(frame.pts, n * FRAME_TICKS);
            assert!(!frame.data.is_empty());
            assert_eq!(frame.keyframe, n == 0 || force, "frame {n}");
            let decoded = decoder.decode(&frame.data).unwrap().expect("a picture");
            assert_eq!((decoded.width, decoded.height), (width, height));
            assert!(decoded.check().is_ok());
            let cw = decoded.chroma_width() as usize;
            assert_near(
                average(&decoded.y, width as usize, 0, width as usize),
                RED.0,
                "Y",
            );
            assert_near(average(&decoded.u, cw, 0, cw), RED.1, "U");
            assert_near(average(&decoded.v, cw, 0, cw), RED.2, "V");
        }
    }

    #[test]
    fn two_halves_keep_their_colours() {
        let (width, height) = (320, 240);
        let mut encoder = Vp8Encoder::new(width, height, 500, 30).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let picture = halves(width, height, RED, BLUE);
        let mut decoded = None;
        for n in 0..3 {
            let frame = encode_one(&mut encoder, &picture, n, false);
            decoded = decoder.decode(&frame.data).unwrap();
        }
        let decoded = decoded.expect("a picture");
        // Away from the edge between the halves, where the codec may blur.
        let (w, cw) = (width as usize, decoded.chroma_width() as usize);
        assert_near(average(&decoded.y, w, 0, w / 2 - 16), RED.0, "left Y");
        assert_near(average(&decoded.y, w, w / 2 + 16, w), BLUE.0, "right Y");
        assert_near(average(&decoded.u, cw, 0, cw / 2 - 8), RED.1, "left U");
        assert_near(average(&decoded.u, cw, cw / 2 + 8, cw), BLUE.1, "right U");
        assert_near(average(&decoded.v, cw, 0, cw / 2 - 8), RED.2, "left V");
        assert_near(average(&decoded.v, cw, cw / 2 + 8, cw), BLUE.2, "right V");
    }

    #[test]
    fn odd_sizes_and_bitrate_changes_work() {
        let (width, height) = (161, 91);
        let mut encoder = Vp8Encoder::new(width, height, 300, 15).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let picture = solid(width, height, BLUE);
        let first = encode_one(&mut encoder, &picture, 0, false);
        encoder.set_bitrate(150).unwrap();
        let second = encode_one(&mut encoder, &picture, 1, false);
        for frame in [first, second] {
            let decoded = decoder.decode(&frame.data).unwrap().expect("a picture");
            assert_eq!((decoded.width, decoded.height), (width, height));
            assert_near(
                average(&decoded.y, width as usize, 0, width as usize),
                BLUE.0,
                "Y",
            );
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(Vp8Encoder::new(0, 240, 500, 30).is_err());
        assert!(Vp8Encoder::new(320, 240, 0, 30).is_err());
        let mut encoder = Vp8Encoder::new(320, 240, 500, 30).unwrap();
        assert!(encoder.encode(&I420::new(160, 120), 0, false).is_err());
        let mut short = I420::new(320, 240);
        short.y.truncate(100);
        assert!(encoder.encode(&short, 0, false).is_err());
        assert!(encoder.set_bitrate(0).is_err());

        let mut decoder = Vp8Decoder::new().unwrap();
        assert!(decoder.decode(&[]).unwrap().is_none());
        assert!(decoder.decode(&[0x12, 0x34, 0x56, 0x78, 0x9a]).is_err());
        // A real keyframe still decodes after the garbage.
        let frame = encode_one(&mut encoder, &I420::new(320, 240), 0, false);
        assert!(decoder.decode(&frame.data).unwrap().is_some());
    }

    #[test]
    fn codecs_are_send() {
        fn is_send<T: Send>() {}
        is_send::<Vp8Encoder>();
        is_send::<Vp8Decoder>();
    }
}
