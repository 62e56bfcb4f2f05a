//! The registry of live WHIP and WHEP sessions, held by the app state: each session's handle,
//! by resource id, through which `whip`'s PATCH and DELETE reach the session's task. The
//! sessions themselves (their HTTP endpoints and tasks) are `whip`.

use std::sync::Arc;

use axum::http::StatusCode;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::error::ErrorCode;

/// The live WHIP and WHEP sessions, by resource id (the participant id).
#[derive(Clone, Default)]
pub struct WhipSessions(pub(crate) Arc<DashMap<String, SessionHandle>>);

impl WhipSessions {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) struct SessionHandle {
    pub(crate) room: String,
    /// WHEP: the participant played (as the URL named it); WHIP: none.
    pub(crate) target: Option<String>,
    /// The token the session was created with: PATCH and DELETE must present it too.
    pub(crate) token: Option<String>,
    /// The client's ICE credentials from its offer (a PATCH with others is an ICE restart).
    pub(crate) client_ufrag: Option<String>,
    /// The entity tag of the ICE session: the server's ufrag, with the restart count after it
    /// once the client restarted ICE.
    pub(crate) etag: String,
    pub(crate) control: mpsc::UnboundedSender<Control>,
}

pub(crate) enum Control {
    Candidates(Vec<sfu::Candidate>),
    /// An ICE restart: the client's new credentials and candidates; the reply is the server's
    /// fragment and the new entity tag.
    Restart {
        ufrag: String,
        pwd: String,
        candidates: Vec<sfu::Candidate>,
        reply: tokio::sync::oneshot::Sender<Result<(String, String), Refusal>>,
    },
    End,
}

/// A refusal as status, code and detail.
pub(crate) type Refusal = (StatusCode, ErrorCode, String);
