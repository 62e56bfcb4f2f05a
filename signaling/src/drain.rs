//! The server's drain state: once started, joins are refused and readiness fails; once closing,
//! every session ends. Shared by the sessions, the health endpoints, the cluster directory and
//! the shutdown sequence (`server::drain`), which is the only one to move it on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The server's drain state, shared by every session and the health endpoints.
#[derive(Clone)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    closing: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: Arc::new(AtomicBool::new(false)),
            closing: watch::Sender::new(false),
        }
    }
}

impl Drain {
    /// From now on joins are refused and readiness fails.
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Every session ends now (with `server_shutdown`).
    pub fn close_all(&self) {
        self.start();
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}
