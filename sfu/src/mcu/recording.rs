//! The engine's recording API: [`Sfu::record_track`] starts recording one published track into
//! a file, [`Sfu::stop_recording`] ends it. What is recorded, and how, is `record`; the copy of
//! the packets is the publisher's driver's tap (`driver/tap.rs`).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::record::{record, spawn_recorder, RecordingSummary, TapPacket, TapState};
use super::record_room::record_room;
use crate::api::{Command, MediaKind, Sfu, SfuError};
use crate::driver::tap::{TapLayer, TapRefusal, TapRequest};

/// Packets queued between a driver and a recording thread: ~4 s of a 2.5 Mbit/s video layer.
const TAP_QUEUE: usize = 1024;

/// A recording just started.
#[derive(Debug)]
pub struct TrackRecording {
    /// Names it for [`Sfu::stop_recording`].
    pub id: u64,
    pub kind: MediaKind,
    /// `video/VP8`, `audio/opus`.
    pub mime: &'static str,
    /// Resolves once the file is finalized: stopped, the track gone, or a write error.
    pub done: oneshot::Receiver<RecordingSummary>,
}

impl Sfu {
    /// Records track `track_id` of `room` as it is published (no transcoding) into a new WebM
    /// file at `path` (which must not exist). The highest simulcast layer being sent is
    /// recorded; a layer switch is a picture size change in the file.
    pub async fn record_track(
        &self,
        room: &str,
        track_id: &str,
        path: PathBuf,
    ) -> Result<TrackRecording, SfuError> {
        let setup = Setup::new(path)?;
        let replies = self
            .ask_all(|reply| Command::Tap {
                room: room.to_owned(),
                track_id: track_id.to_owned(),
                tap: setup.taps.request(TapLayer::Highest),
                reply,
            })
            .await?;
        let mut codec = Err(TapRefusal::NotHere);
        for reply in replies {
            match reply {
                Err(TapRefusal::NotHere) => {}
                other => codec = other,
            }
        }
        let codec = codec.map_err(|refusal| {
            setup.refused(refusal, || SfuError::TrackNotFound(track_id.to_owned()))
        })?;
        let kind = if codec.is_video() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        setup
            .start(self, kind, codec.mime(), move |path, out, queue, state| {
                record(codec, path, out, queue, state)
            })
            .await
    }

    /// Records `room` as one picture and one sound: its composite (VP8) and its whole mix
    /// (Opus), into a new WebM file at `path` (which must not exist), as the room's mixed
    /// participants see and hear it. Ends with the room (its members on the recording's
    /// driver).
    pub async fn record_room(&self, room: &str, path: PathBuf) -> Result<TrackRecording, SfuError> {
        let setup = Setup::new(path)?;
        let mut outcome = Err(TapRefusal::NotHere);
        // One driver records it: the first that holds members of the room.
        for d in self.drivers.iter() {
            let (reply, rx) = oneshot::channel();
            d.commands
                .send(Command::RecordRoom {
                    room: room.to_owned(),
                    tap: setup.taps.request(TapLayer::Lowest),
                    reply,
                })
                .map_err(|_| SfuError::Stopped)?;
            outcome = rx.await.map_err(|_| SfuError::Stopped)?;
            if !matches!(outcome, Err(TapRefusal::NotHere)) {
                break;
            }
        }
        outcome.map_err(|refusal| {
            setup.refused(refusal, || {
                SfuError::Recording(format!("room {room:?} has nobody in it"))
            })
        })?;
        let (video_tap, _) = crate::driver::recording_tap_ids(setup.taps.id);
        let size = (super::composer::WIDTH, super::composer::HEIGHT);
        setup
            .start(
                self,
                MediaKind::Video,
                "video/webm",
                move |path, out, queue, state| {
                    record_room(path, out, queue, video_tap, size, state)
                },
            )
            .await
    }

    /// Stops recording `id`: the file is finalized and the recording's `done` resolves. Whether
    /// it was still running.
    pub async fn stop_recording(&self, id: u64) -> Result<bool, SfuError> {
        let found = self.ask_all(|reply| Command::Untap { id, reply }).await?;
        Ok(found.into_iter().any(|f| f))
    }
}

/// A recording being set up: its new file, what its taps need, and the queue they fill.
struct Setup {
    path: PathBuf,
    file: File,
    taps: Taps,
    queue: Receiver<TapPacket>,
}

/// What every driver's tap of one recording shares (apart from the queue's receiving end, so
/// that it can be lent across the drivers' replies).
struct Taps {
    id: u64,
    packets: SyncSender<TapPacket>,
    state: Arc<TapState>,
}

impl Taps {
    /// What a driver needs to copy a track's packets into this recording.
    fn request(&self, layer: TapLayer) -> TapRequest {
        TapRequest {
            id: self.id,
            layer,
            packets: self.packets.clone(),
            state: self.state.clone(),
        }
    }
}

impl Setup {
    /// Creates the file at `path` (it must not exist).
    fn new(path: PathBuf) -> Result<Setup, SfuError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SfuError::Recording(format!("cannot create {}: {e}", path.display())))?;
        let (packets, queue) = sync_channel(TAP_QUEUE);
        let taps = Taps {
            id: rand::random::<u64>() >> 2,
            packets,
            state: Arc::new(TapState::default()),
        };
        Ok(Setup {
            path,
            file,
            taps,
            queue,
        })
    }

    /// The drivers said no: the file goes, and the error says why (`not_here`: nobody had it).
    fn refused(&self, refusal: TapRefusal, not_here: impl FnOnce() -> SfuError) -> SfuError {
        let _ = std::fs::remove_file(&self.path);
        match refusal {
            TapRefusal::NotHere => not_here(),
            TapRefusal::Unsupported(c) => {
                SfuError::Recording(format!("{} tracks cannot be recorded yet", c.mime()))
            }
            TapRefusal::Failed(m) => SfuError::Recording(m),
        }
    }

    /// Starts the recording thread, which runs `record` until the taps end.
    async fn start(
        self,
        sfu: &Sfu,
        kind: MediaKind,
        mime: &'static str,
        record: impl FnOnce(PathBuf, BufWriter<File>, &Receiver<TapPacket>, &TapState) -> RecordingSummary
            + Send
            + 'static,
    ) -> Result<TrackRecording, SfuError> {
        let Setup {
            path,
            file,
            taps: Taps { id, packets, state },
            queue,
        } = self;
        // The taps hold the only senders now: the queue ends when they do.
        drop(packets);
        let (done_tx, done) = oneshot::channel();
        let spawned = spawn_recorder(file, done_tx, move |out| record(path, out, &queue, &state));
        if let Err(e) = spawned {
            sfu.stop_recording(id).await?;
            return Err(SfuError::Recording(format!("no recording thread: {e}")));
        }
        Ok(TrackRecording {
            id,
            kind,
            mime,
            done,
        })
    }
}
