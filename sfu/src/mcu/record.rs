//! Recording one published track into a WebM file without transcoding (VP8 or Opus as they
//! arrive), on a thread of its own.
//!
//! The driver copies the track's packets into a bounded queue (its tap, `driver/tap.rs`); this
//! thread puts them back into frames (`depacketize`), and muxes them with libwebm (the `webm`
//! crate) into a seekable file: cues and the duration are written when the recording ends. It
//! ends when the queue's sender goes away (the recording was stopped, the track unpublished, its
//! room closed) or at the first write error (a full disk), which ends only this recording.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use webm::mux::{
    AudioCodecId, AudioTrack, Segment, SegmentBuilder, SegmentMode, VideoCodecId, VideoTrack,
    Writer,
};

use super::depacketize::{Depacketizer, Frame};
use crate::engine::codec::Codec;

/// One packet of the recorded stream, as the tap hands it over (sequence numbers and
/// timestamps continuous across the publisher's layer switches).
#[derive(Debug, Clone)]
pub struct TapPacket {
    /// The tap it came through (a mixer has one per input).
    pub tap: u64,
    /// When the driver received it.
    pub at: std::time::Instant,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// How a recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub file: PathBuf,
    /// The file's size once finalized.
    pub bytes: u64,
    /// From the first frame written to the end of the last.
    pub duration: Duration,
    pub frames: u64,
    /// Packets that never arrived (their frames were dropped).
    pub lost: u64,
    /// Why it ended early (a write error), if it did.
    pub error: Option<String>,
}

/// What the tap's owner and the recorder share: whether the recorder waits for a keyframe.
#[derive(Debug, Default)]
pub struct TapState {
    pub wants_keyframe: AtomicBool,
}

/// Starts a recording thread: `record` writes into `file` (buffered) and its summary goes to
/// `done` when the recording ends.
pub(super) fn spawn_recorder(
    file: File,
    done: oneshot::Sender<RecordingSummary>,
    record: impl FnOnce(BufWriter<File>) -> RecordingSummary + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("fanout-record".into())
        .spawn(move || {
            let summary = record(BufWriter::with_capacity(1 << 16, file));
            let _ = done.send(summary);
        })?;
    Ok(())
}

/// Records `codec` frames into `out` (the file at `path`) from `packets` until they end.
pub(super) fn record<W: Write + Seek>(
    codec: Codec,
    path: PathBuf,
    out: W,
    packets: &Receiver<TapPacket>,
    state: &TapState,
) -> RecordingSummary {
    let clock = if codec.is_video() { 90_000 } else { 48_000 };
    let mut mux = Mux::new(codec, out);
    let mut depacketizer = Depacketizer::new(codec);
    state
        .wants_keyframe
        .store(depacketizer.wants_keyframe(), Ordering::Relaxed);
    let mut frames = Vec::new();
    let mut first: Option<u64> = None;
    let (mut last_ns, mut written) = (0u64, 0u64);
    let mut error = None;
    'packets: while let Ok(p) = packets.recv() {
        depacketizer.push(p.seq, p.timestamp, p.marker, p.payload, &mut frames);
        state
            .wants_keyframe
            .store(depacketizer.wants_keyframe(), Ordering::Relaxed);
        for frame in frames.drain(..) {
            let start = *first.get_or_insert(frame.timestamp);
            let Some(ticks) = frame.timestamp.checked_sub(start) else {
                continue; // older than the first frame written
            };
            let ns = ticks * 1_000_000_000 / clock;
            if written > 0 && ns < last_ns {
                continue; // a timestamp going back: players want them monotonic
            }
            if let Err(e) = mux.write(&frame, ns) {
                error = Some(e);
                break 'packets;
            }
            (last_ns, written) = (ns, written + 1);
        }
    }
    // A frame's own length is not in RTP: one audio frame is 20 ms, a video frame lasts until
    // the next, so the last counts as one frame time at 30 fps.
    let tail = if codec.is_video() {
        33_333_333
    } else {
        20_000_000
    };
    let duration = if written > 0 {
        Duration::from_nanos(last_ns + tail)
    } else {
        Duration::ZERO
    };
    if let Err(e) = mux.finish() {
        error.get_or_insert(e);
    }
    RecordingSummary {
        bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        file: path,
        duration,
        frames: written,
        lost: depacketizer.lost,
        error,
    }
}

/// The WebM muxer, its track added once the first frame says what it is (a video track needs
/// the picture size of the first keyframe).
pub(super) enum Mux<W: Write> {
    Waiting(Option<(Codec, Writer<W>)>),
    Video(Segment<W>, VideoTrack),
    Audio(Segment<W>, AudioTrack),
    /// A room: the composite (VP8, its size known at the start) and the mix (Opus).
    Room(Segment<W>, VideoTrack, AudioTrack),
    Done,
}

impl<W: Write + Seek> Mux<W> {
    fn new(codec: Codec, out: W) -> Mux<W> {
        Mux::Waiting(Some((codec, Writer::new(out))))
    }

    /// A room's file: a `width`x`height` VP8 track and an Opus one, from the start.
    pub(super) fn room(out: W, width: u32, height: u32) -> Result<Mux<W>, String> {
        let failed = |e: webm::mux::Error| format!("starting the WebM file failed: {e}");
        let builder = SegmentBuilder::new(Writer::new(out))
            .and_then(|b| b.set_mode(SegmentMode::File))
            .and_then(|b| b.set_writing_app("Fanout"))
            .map_err(failed)?;
        let (builder, video) = builder
            .add_video_track(width, height, VideoCodecId::VP8, None)
            .map_err(failed)?;
        let (builder, audio) = builder
            .add_audio_track(48_000, 2, AudioCodecId::Opus, None)
            .map_err(failed)?;
        let builder = builder
            .set_codec_private(audio, &opus_head(2))
            .map_err(failed)?;
        Ok(Mux::Room(builder.build(), video, audio))
    }

    /// Writes a frame of a room's video (`video`) or audio track.
    pub(super) fn write_room(&mut self, video: bool, frame: &Frame, ns: u64) -> Result<(), String> {
        let Mux::Room(segment, v, a) = self else {
            return Ok(());
        };
        let written = if video {
            segment.add_frame(*v, &frame.data, ns, frame.keyframe)
        } else {
            segment.add_frame(*a, &frame.data, ns, true)
        };
        written.map_err(|e| format!("writing a frame failed ({e}): is the disk full?"))
    }

    fn write(&mut self, frame: &Frame, ns: u64) -> Result<(), String> {
        if let Mux::Waiting(waiting) = self {
            let Some((codec, writer)) = waiting.take() else {
                return Err("muxer lost".into());
            };
            *self = Mux::start(codec, writer, frame)?;
        }
        let written = match self {
            Mux::Video(segment, track) => {
                segment.add_frame(*track, &frame.data, ns, frame.keyframe)
            }
            Mux::Audio(segment, track) => segment.add_frame(*track, &frame.data, ns, true),
            Mux::Waiting(_) | Mux::Room(..) | Mux::Done => return Ok(()),
        };
        written.map_err(|e| format!("writing a frame failed ({e}): is the disk full?"))
    }

    fn start(codec: Codec, writer: Writer<W>, frame: &Frame) -> Result<Mux<W>, String> {
        let failed = |e: webm::mux::Error| format!("starting the WebM file failed: {e}");
        let builder = SegmentBuilder::new(writer)
            .and_then(|b| b.set_mode(SegmentMode::File))
            .and_then(|b| b.set_writing_app("Fanout"))
            .map_err(failed)?;
        match codec {
            Codec::Vp8 => {
                let (width, height) = frame.size.unwrap_or((640, 480));
                let (builder, track) = builder
                    .add_video_track(width, height, VideoCodecId::VP8, None)
                    .map_err(failed)?;
                Ok(Mux::Video(builder.build(), track))
            }
            Codec::Opus => {
                let (builder, track) = builder
                    .add_audio_track(48_000, 2, AudioCodecId::Opus, None)
                    .map_err(failed)?;
                let builder = builder
                    .set_codec_private(track, &opus_head(2))
                    .map_err(failed)?;
                Ok(Mux::Audio(builder.build(), track))
            }
            Codec::H264 => Err("H.264 tracks cannot be recorded yet".into()),
        }
    }

    /// Writes the cues and the duration and flushes the file.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        let segment = match std::mem::replace(self, Mux::Done) {
            Mux::Video(segment, _) | Mux::Audio(segment, _) | Mux::Room(segment, _, _) => segment,
            Mux::Waiting(_) | Mux::Done => return Ok(()), // nothing was written
        };
        let writer = segment
            .finalize(None)
            .map_err(|_| "finalizing the WebM file failed: is the disk full?".to_string())?;
        writer
            .into_inner()
            .flush()
            .map_err(|e| format!("flushing the WebM file failed: {e}"))
    }
}

/// The Opus identification header (RFC 7845 §5.1) that WebM carries as the track's
/// CodecPrivate: version 1, the channel count, a pre-skip of 312 samples (libopus' look-ahead),
/// the 48 kHz input rate, no gain, mapping family 0.
pub fn opus_head(channels: u8) -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1;
    h[9] = channels;
    h[10..12].copy_from_slice(&312u16.to_le_bytes());
    h[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;
    use std::sync::Arc;

    fn queue(packets: Vec<TapPacket>) -> Receiver<TapPacket> {
        let (tx, rx) = sync_channel(packets.len() + 1);
        for p in packets {
            tx.send(p).unwrap();
        }
        rx
    }

    fn recorded(codec: Codec, packets: Vec<TapPacket>) -> (RecordingSummary, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("fanout-record-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.webm");
        let file = File::create(&path).unwrap();
        let state = Arc::new(TapState::default());
        let summary = record(codec, path.clone(), file, &queue(packets), &state);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (summary, bytes)
    }

    fn opus(n: u16) -> Vec<TapPacket> {
        (0..n)
            .map(|i| TapPacket {
                tap: 0,
                at: std::time::Instant::now(),
                seq: i,
                timestamp: u32::from(i) * 960,
                marker: false,
                payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
            })
            .collect()
    }

    /// A disk that fills up after `room` bytes.
    struct FullDisk {
        data: std::io::Cursor<Vec<u8>>,
        room: u64,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.data.position() + buf.len() as u64 > self.room {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.data.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FullDisk {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.data.seek(to)
        }
    }

    #[test]
    fn a_full_disk_ends_the_recording_with_an_error() {
        let disk = FullDisk {
            data: std::io::Cursor::new(Vec::new()),
            room: 2000,
        };
        let state = Arc::new(TapState::default());
        let path = PathBuf::from("/nonexistent/t.webm");
        // 10 s of audio: far more than 2000 bytes.
        let summary = record(Codec::Opus, path, disk, &queue(opus(500)), &state);
        let error = summary.error.expect("an error");
        assert!(error.contains("disk full"), "{error}");
        assert!(summary.frames < 500, "stopped early: {}", summary.frames);
    }

    #[test]
    fn opus_packets_make_a_webm_file_with_its_duration() {
        let (summary, bytes) = recorded(Codec::Opus, opus(50));
        assert_eq!(summary.error, None);
        assert_eq!(summary.frames, 50);
        assert_eq!(summary.duration, Duration::from_millis(1000));
        assert_eq!(&bytes[..4], &[0x1a, 0x45, 0xdf, 0xa3], "an EBML file");
        assert!(bytes.windows(4).any(|w| w == b"webm"), "of DocType webm");
        assert!(bytes.windows(8).any(|w| w == b"OpusHead"));
        assert_eq!(summary.bytes, bytes.len() as u64);
    }

    #[test]
    fn nothing_received_makes_an_empty_summary() {
        let (summary, bytes) = recorded(Codec::Vp8, Vec::new());
        assert_eq!(summary.frames, 0);
        assert_eq!(summary.duration, Duration::ZERO);
        assert_eq!(summary.error, None);
        assert!(bytes.is_empty());
    }

    #[test]
    fn the_opus_head_is_rfc_7845s() {
        let h = opus_head(2);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!((h[8], h[9]), (1, 2));
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 312);
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 48_000);
    }
}
