//! The engine's recording API: [`Sfu::record_track`] starts recording one published track into
//! a file, [`Sfu::stop_recording`] ends it. What is recorded, and how, is `record`; the copy of
//! the packets is the publisher's driver's tap (`driver/tap.rs`).

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::record::{spawn_track_recorder, RecordingSummary, TapState};
use super::record_room::spawn_room_recorder;
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
        let file = create(&path)?;
        let id = rand::random::<u64>() >> 2;
        let (packets, queue) = sync_channel(TAP_QUEUE);
        let state = Arc::new(TapState::default());
        let mut replies = Vec::with_capacity(self.drivers.len());
        for d in self.drivers.iter() {
            let (reply, rx) = oneshot::channel();
            let tap = TapRequest {
                id,
                layer: TapLayer::Highest,
                packets: packets.clone(),
                state: state.clone(),
            };
            d.commands
                .send(Command::Tap {
                    room: room.to_owned(),
                    track_id: track_id.to_owned(),
                    tap,
                    reply,
                })
                .map_err(|_| SfuError::Stopped)?;
            replies.push(rx);
        }
        drop(packets);
        let mut codec = Err(TapRefusal::NotHere);
        for rx in replies {
            match rx.await.map_err(|_| SfuError::Stopped)? {
                Err(TapRefusal::NotHere) => {}
                other => codec = other,
            }
        }
        let codec = match codec {
            Ok(codec) => codec,
            Err(refusal) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(match refusal {
                    TapRefusal::NotHere => SfuError::TrackNotFound(track_id.to_owned()),
                    TapRefusal::Unsupported(c) => {
                        SfuError::Recording(format!("{} tracks cannot be recorded yet", c.mime()))
                    }
                    TapRefusal::Failed(m) => SfuError::Recording(m),
                });
            }
        };
        let (done_tx, done) = oneshot::channel();
        if let Err(e) = spawn_track_recorder(codec, path, file, queue, state, done_tx) {
            self.stop_recording(id).await?;
            return Err(SfuError::Recording(format!("no recording thread: {e}")));
        }
        Ok(TrackRecording {
            id,
            kind: if codec.is_video() {
                MediaKind::Video
            } else {
                MediaKind::Audio
            },
            mime: codec.mime(),
            done,
        })
    }

    /// Records `room` as one picture and one sound: its composite (VP8) and its whole mix
    /// (Opus), into a new WebM file at `path` (which must not exist), as the room's mixed
    /// participants see and hear it. Ends with the room (its members on the recording's
    /// driver).
    pub async fn record_room(&self, room: &str, path: PathBuf) -> Result<TrackRecording, SfuError> {
        let file = create(&path)?;
        let id = rand::random::<u64>() >> 2;
        let (packets, queue) = sync_channel(TAP_QUEUE);
        let state = Arc::new(TapState::default());
        let mut outcome = Err(TapRefusal::NotHere);
        // One driver records it: the first that holds members of the room.
        for d in self.drivers.iter() {
            let (reply, rx) = oneshot::channel();
            let tap = TapRequest {
                id,
                layer: TapLayer::Lowest,
                packets: packets.clone(),
                state: state.clone(),
            };
            d.commands
                .send(Command::RecordRoom {
                    room: room.to_owned(),
                    tap,
                    reply,
                })
                .map_err(|_| SfuError::Stopped)?;
            outcome = rx.await.map_err(|_| SfuError::Stopped)?;
            if !matches!(outcome, Err(TapRefusal::NotHere)) {
                break;
            }
        }
        drop(packets);
        if let Err(refusal) = outcome {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(match refusal {
                TapRefusal::NotHere => {
                    SfuError::Recording(format!("room {room:?} has nobody in it"))
                }
                TapRefusal::Unsupported(c) => {
                    SfuError::Recording(format!("{} cannot be recorded", c.mime()))
                }
                TapRefusal::Failed(m) => SfuError::Recording(m),
            });
        }
        let (done_tx, done) = oneshot::channel();
        let (video_tap, _) = crate::driver::recording_tap_ids(id);
        let size = (super::composer::WIDTH, super::composer::HEIGHT);
        if let Err(e) = spawn_room_recorder(path, file, queue, video_tap, size, state, done_tx) {
            self.stop_recording(id).await?;
            return Err(SfuError::Recording(format!("no recording thread: {e}")));
        }
        Ok(TrackRecording {
            id,
            kind: MediaKind::Video,
            mime: "video/webm",
            done,
        })
    }

    /// Stops recording `id`: the file is finalized and the recording's `done` resolves. Whether
    /// it was still running.
    pub async fn stop_recording(&self, id: u64) -> Result<bool, SfuError> {
        let mut replies = Vec::with_capacity(self.drivers.len());
        for d in self.drivers.iter() {
            let (reply, rx) = oneshot::channel();
            d.commands
                .send(Command::Untap { id, reply })
                .map_err(|_| SfuError::Stopped)?;
            replies.push(rx);
        }
        let mut found = false;
        for rx in replies {
            found |= rx.await.map_err(|_| SfuError::Stopped)?;
        }
        Ok(found)
    }
}

/// A new file at `path` (it must not exist).
fn create(path: &std::path::Path) -> Result<std::fs::File, SfuError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| SfuError::Recording(format!("cannot create {}: {e}", path.display())))
}
