//! Recordings, as the admin API shows them: which are running and which ended, per room, and
//! the webhooks when one starts and ends.
//!
//! The engine records (`sfu::Sfu::record_track`); this registry names each recording
//! (`RC_…`), chooses its file under `recordings_dir`, and keeps its outcome for `GET` after it
//! ended. A recording ends when it is stopped (`DELETE`), when its track is unpublished or its
//! room ends, or at a write error (a full disk): the webhook `recording_finished` says which.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use sfu::{RecordingSummary, Sfu, SfuError};
use tokio::sync::watch;

use crate::error::{ApiError, ErrorCode};
use crate::rooms::Rooms;
use crate::webhooks::{EventKind, HookRecording};

/// Ended recordings kept per room for `GET` (the oldest go first).
const KEEP_ENDED: usize = 100;

/// How long `DELETE` waits for the file to be finalized.
const FINALIZE_WAIT: Duration = Duration::from_secs(10);

/// One recording as the admin API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    pub id: String,
    pub room: String,
    /// The recorded track (absent: the room).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    /// The absolute path of the file on the server.
    pub file: PathBuf,
    /// `video/VP8`, `audio/opus`.
    pub mime: String,
    /// `recording`, `finished` or `failed`.
    pub state: &'static str,
    /// Unix milliseconds.
    pub started_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// Once ended: the file's length in bytes and the media's duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    recording: Recording,
    engine_id: u64,
    /// Becomes `true` when the recording has ended (the registry's copy is updated first).
    ended: watch::Receiver<bool>,
}

/// The recordings of every room (cheap to clone).
#[derive(Clone)]
pub struct Recordings {
    dir: PathBuf,
    sfu: Sfu,
    rooms: Rooms,
    all: Arc<Mutex<HashMap<String, Vec<Entry>>>>,
}

impl Recordings {
    pub fn new(dir: PathBuf, sfu: Sfu, rooms: Rooms) -> Recordings {
        Recordings {
            dir,
            sfu,
            rooms,
            all: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording `track_id` of `room` (`None`: the room, as its composite picture and
    /// its whole mix).
    pub async fn start(&self, room: &str, track_id: Option<String>) -> Result<Recording, ApiError> {
        let failed = |message: String| ApiError::new(ErrorCode::RecordingFailed, message);
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            failed(format!(
                "cannot create recordings_dir {}: {e}",
                self.dir.display()
            ))
        })?;
        let dir = std::fs::canonicalize(&self.dir)
            .map_err(|e| failed(format!("recordings_dir {}: {e}", self.dir.display())))?;
        let id = format!("RC_{}", Alphanumeric.sample_string(&mut rand::rng(), 12));
        let what = track_id.as_deref().unwrap_or("room");
        let file = dir.join(format!("{}-{}-{id}.webm", file_part(room), file_part(what)));
        let started = match &track_id {
            Some(track) => self.sfu.record_track(room, track, file.clone()).await,
            None => self.sfu.record_room(room, file.clone()).await,
        };
        let started = started.map_err(|e| match e {
            SfuError::TrackNotFound(_) => ApiError::new(
                ErrorCode::TrackNotFound,
                format!("no track {what:?} published in room {room:?}"),
            ),
            SfuError::Recording(m) => failed(m),
            other => ApiError::new(ErrorCode::EngineUnavailable, other.to_string()),
        })?;
        let recording = Recording {
            id: id.clone(),
            room: room.to_owned(),
            track_id,
            file,
            mime: started.mime.to_owned(),
            state: "recording",
            started_at: unix_ms(),
            ended_at: None,
            bytes: None,
            duration_ms: None,
            error: None,
        };
        let (ended_tx, ended) = watch::channel(false);
        self.lock().entry(room.to_owned()).or_default().push(Entry {
            recording: recording.clone(),
            engine_id: started.id,
            ended,
        });
        self.hook(EventKind::RecordingStarted, &recording);
        let this = self.clone();
        let (room, done) = (room.to_owned(), started.done);
        tokio::spawn(async move {
            let summary = done.await.ok();
            this.ended(&room, &id, summary);
            let _ = ended_tx.send(true);
        });
        Ok(recording)
    }

    /// A recording's outcome, into the registry and the webhook.
    fn ended(&self, room: &str, id: &str, summary: Option<RecordingSummary>) {
        let ended = {
            let mut all = self.lock();
            let Some(entries) = all.get_mut(room) else {
                return;
            };
            let Some(entry) = entries.iter_mut().find(|e| e.recording.id == id) else {
                return;
            };
            let r = &mut entry.recording;
            r.ended_at = Some(unix_ms());
            match summary {
                Some(s) => {
                    r.state = if s.error.is_some() {
                        "failed"
                    } else {
                        "finished"
                    };
                    r.bytes = Some(s.bytes);
                    r.duration_ms = Some(s.duration.as_millis() as u64);
                    r.error = s.error;
                }
                None => {
                    r.state = "failed";
                    r.error = Some("the recording thread ended without a summary".into());
                }
            }
            let ended = r.clone();
            let running = |e: &Entry| e.recording.ended_at.is_none();
            while entries.iter().filter(|e| !running(e)).count() > KEEP_ENDED {
                if let Some(i) = entries.iter().position(|e| !running(e)) {
                    entries.remove(i);
                }
            }
            ended
        };
        if let Some(error) = &ended.error {
            tracing::warn!(room, recording = id, %error, "recording ended with an error");
        }
        self.hook(EventKind::RecordingFinished, &ended);
    }

    /// The room's recordings, running and ended, oldest first.
    pub fn list(&self, room: &str) -> Vec<Recording> {
        self.lock()
            .get(room)
            .map(|es| es.iter().map(|e| e.recording.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops a recording and waits (a while) for its file to be finalized; the recording as it
    /// ended. Stopping one that already ended returns it as it is.
    pub async fn stop(&self, room: &str, id: &str) -> Result<Recording, ApiError> {
        let not_found = || {
            ApiError::new(
                ErrorCode::RecordingNotFound,
                format!("no recording {id:?} in room {room:?}"),
            )
        };
        let (engine_id, mut ended) = {
            let all = self.lock();
            let entry = all
                .get(room)
                .and_then(|es| es.iter().find(|e| e.recording.id == id))
                .ok_or_else(not_found)?;
            (entry.engine_id, entry.ended.clone())
        };
        if !*ended.borrow() {
            self.sfu
                .stop_recording(engine_id)
                .await
                .map_err(|e| ApiError::new(ErrorCode::EngineUnavailable, e.to_string()))?;
            let _ = tokio::time::timeout(FINALIZE_WAIT, ended.wait_for(|e| *e)).await;
        }
        self.list(room)
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(not_found)
    }

    fn hook(&self, kind: EventKind, r: &Recording) {
        self.rooms.emit_recording(
            kind,
            &r.room,
            HookRecording {
                id: r.id.clone(),
                track_id: r.track_id.clone(),
                file: r.file.display().to_string(),
                duration_ms: r.duration_ms,
                bytes: r.bytes,
                error: r.error.clone(),
            },
        );
    }
}

/// A room name or track id as part of a file name: letters, digits, `-` and `_` kept, anything
/// else `_`, at most 64 characters.
fn file_part(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::file_part;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_part("../etc/passwd"), "___etc_passwd");
        assert_eq!(file_part("TR_abc-1"), "TR_abc-1");
        assert_eq!(file_part("dé jà"), "d__j_");
        assert_eq!(file_part(&"x".repeat(100)).len(), 64);
    }
}
