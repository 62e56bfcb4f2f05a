//! The state of the HTTP front end that every handler (signaling, admin API, WHIP/WHEP, the
//! forwarding of requests between nodes) is given. It sits above the sessions and the registries
//! it holds and below the handlers: nothing it imports imports it back.

use std::sync::Arc;

use sfu::Sfu;

use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::rooms::Rooms;
use crate::session::SessionContext;
use crate::whip_sessions::WhipSessions;

/// What every HTTP handler is given: the sessions' shared context, `--dev`, and the WHIP/WHEP
/// sessions.
#[derive(Clone)]
pub struct AppState {
    pub session: SessionContext,
    pub dev: bool,
    /// Live WHIP sessions (publishers over HTTP).
    pub whip: WhipSessions,
    /// `--dev` with real keys: `/dev/token` serves loopback clients only.
    pub dev_real_keys: bool,
    /// The open signaling sockets, capped in all and per client address.
    pub sockets: crate::sockets::Sockets,
    /// Recordings, running and ended (the admin API's `…/recordings`).
    pub recordings: crate::recordings::Recordings,
}

impl AppState {
    pub fn sfu(&self) -> &Sfu {
        &self.session.sfu
    }

    pub fn rooms(&self) -> &Rooms {
        &self.session.rooms
    }

    pub fn drain(&self) -> &Drain {
        &self.session.drain
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.session.metrics
    }
}
