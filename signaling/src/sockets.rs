//! Caps on open signaling WebSockets: in all (`max_connections`) and per client address
//! (`max_connections_per_ip`), so that sockets cannot be opened until the server runs out of
//! them. A socket holds its [`Slot`] for as long as it lives.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// The open sockets, counted in all and per address (0: no limit).
#[derive(Clone, Default)]
pub struct Sockets(Arc<Inner>);

#[derive(Default)]
struct Inner {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// Why a socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Server,
    Address,
}

impl Sockets {
    pub fn new(max: usize, max_per_ip: usize) -> Sockets {
        Sockets(Arc::new(Inner {
            max,
            max_per_ip,
            ..Inner::default()
        }))
    }

    /// Takes a slot for a socket from `ip` (`None`: not counted per address, e.g. another node
    /// of the cluster relaying its clients' joins).
    pub fn open(&self, ip: Option<IpAddr>) -> Result<Slot, Full> {
        let inner = &self.0;
        let total = inner.open.fetch_add(1, Ordering::AcqRel) + 1;
        if inner.max > 0 && total > inner.max {
            inner.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Server);
        }
        if let Some(ip) = ip.filter(|_| inner.max_per_ip > 0) {
            let mut n = inner.per_ip.entry(ip).or_insert(0);
            if *n >= inner.max_per_ip {
                drop(n);
                inner.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Full::Address);
            }
            *n += 1;
        }
        Ok(Slot {
            sockets: self.clone(),
            ip: ip.filter(|_| inner.max_per_ip > 0),
        })
    }

    /// Sockets open now.
    pub fn open_now(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }
}

/// One open socket's place; given back when dropped.
pub struct Slot {
    sockets: Sockets,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &self.sockets.0;
        inner.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            inner.per_ip.remove_if_mut(&ip, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address_and_gives_slots_back() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let sockets = Sockets::new(3, 2);
        let a1 = sockets.open(Some(a)).unwrap();
        let _a2 = sockets.open(Some(a)).unwrap();
        assert_eq!(sockets.open(Some(a)).err(), Some(Full::Address));
        let _b1 = sockets.open(Some(b)).unwrap();
        assert_eq!(sockets.open(Some(b)).err(), Some(Full::Server));
        assert_eq!(sockets.open(None).err(), Some(Full::Server));
        assert_eq!(sockets.open_now(), 3);
        drop(a1);
        assert_eq!(sockets.open_now(), 2);
        let _a3 = sockets.open(Some(a)).unwrap();
        // No limits: everything is let in.
        let free = Sockets::new(0, 0);
        let all: Vec<Slot> = (0..100).map(|_| free.open(Some(a)).unwrap()).collect();
        assert_eq!(free.open_now(), all.len());
    }
}
