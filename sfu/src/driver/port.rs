//! One UDP port for every media driver.
//!
//! Every driver binds the same address and port with `SO_REUSEPORT`, and the kernel hands each
//! datagram to one of their sockets by a hash of its addresses: always the same socket for one
//! client flow, but not necessarily the socket of the driver that owns the client's connection.
//! A datagram that lands on another driver crosses to the owner once, over a bounded queue, and
//! the owner answers from its own socket (same address and port, so the client sees one server
//! port). What a driver needs for that lives here:
//! - the owner of a new flow is written in the connection's ICE ufrag (its first two characters
//!   are the owner's index), so the driver that receives a connectivity check knows where it goes
//!   without asking anyone;
//! - `RemoteFlows`: the flows of other drivers' connections that this driver's socket receives.
//!   A check naming another driver makes a *provisional* entry (so the DTLS that follows the
//!   check goes the same way at once); the owner confirms the addresses it pins, and withdraws
//!   them when it unpins them. Provisional entries are bounded: a flood of checks naming other
//!   drivers cannot grow the table.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::Flow;

/// Datagrams queued from one driver to another at most; beyond this they are dropped (counted).
pub(crate) const CROSSING_QUEUE: usize = 4096;
/// Provisional entries a driver keeps at most (confirmed ones are bounded by the pinned addresses
/// of other drivers' connections).
const MAX_PROVISIONAL: usize = 4096;

/// A datagram received by one driver for a connection of another.
#[derive(Debug)]
pub struct Crossing {
    pub flow: Flow,
    pub data: Bytes,
    /// When the receiving driver read it (the arrival time rtc and TWCC see).
    pub at: Instant,
}

/// A ufrag for a connection of driver `owner`: its index in two hex digits, then `random`.
pub(crate) fn ufrag_for(owner: usize, random: &str) -> String {
    format!("{:02x}{random}", owner & 0xff)
}

/// The driver a server ufrag (from [`ufrag_for`]) names, if it is well formed.
pub(crate) fn owner_of_ufrag(ufrag: &str) -> Option<usize> {
    let digits = ufrag.get(..2)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    usize::from_str_radix(digits, 16).ok()
}

/// Where the flows of other drivers' connections go (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct RemoteFlows {
    flows: HashMap<Flow, Entry>,
    provisional: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: usize,
    confirmed: bool,
}

impl RemoteFlows {
    /// The driver that owns `flow`'s connection, if another driver does.
    pub fn owner(&self, flow: &Flow) -> Option<usize> {
        self.flows.get(flow).map(|e| e.owner)
    }

    /// A check from `flow` named `owner`'s connection: its next datagrams go there too. A
    /// confirmed entry of another owner stays until that owner withdraws it (a check naming a
    /// connection does not prove the connection accepted it).
    pub fn check_seen(&mut self, flow: Flow, owner: usize) {
        match self.flows.get(&flow) {
            Some(e) if e.confirmed || e.owner == owner => return,
            Some(_) => {
                self.flows.insert(
                    flow,
                    Entry {
                        owner,
                        confirmed: false,
                    },
                );
                return;
            }
            None => {}
        }
        if self.provisional >= MAX_PROVISIONAL {
            self.flows.retain(|_, e| e.confirmed);
            self.provisional = 0;
        }
        self.flows.insert(
            flow,
            Entry {
                owner,
                confirmed: false,
            },
        );
        self.provisional += 1;
    }

    /// `owner` pinned `flow` to one of its connections.
    pub fn pinned(&mut self, flow: Flow, owner: usize) {
        let old = self.flows.insert(
            flow,
            Entry {
                owner,
                confirmed: true,
            },
        );
        if old.is_some_and(|e| !e.confirmed) {
            self.provisional -= 1;
        }
    }

    /// `owner` no longer has `flow` pinned (unpinned, or its connection closed).
    pub fn unpinned(&mut self, flow: Flow, owner: usize) {
        if let Some(e) = self.flows.get(&flow) {
            if e.owner == owner {
                if !e.confirmed {
                    self.provisional -= 1;
                }
                self.flows.remove(&flow);
            }
        }
    }

    /// This driver pinned `flow` itself: it is no longer another's.
    pub fn forget(&mut self, flow: &Flow) {
        if let Some(e) = self.flows.remove(flow) {
            if !e.confirmed {
                self.provisional -= 1;
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u16) -> Flow {
        Flow::udp(([127, 0, 0, 1], port).into())
    }

    #[test]
    fn a_ufrag_names_its_owner() {
        for owner in [0, 1, 9, 10, 255] {
            let u = ufrag_for(owner, "abcdefghijklmn");
            assert_eq!(u.len(), 16);
            assert_eq!(owner_of_ufrag(&u), Some(owner));
        }
        assert_eq!(owner_of_ufrag("zz0123"), None);
        assert_eq!(owner_of_ufrag("0"), None);
        assert_eq!(owner_of_ufrag(""), None);
        assert_eq!(owner_of_ufrag("é1"), None);
    }

    #[test]
    fn checks_make_provisional_entries_that_pins_confirm() {
        let mut t = RemoteFlows::default();
        t.check_seen(flow(1), 2);
        assert_eq!(t.owner(&flow(1)), Some(2));
        // Another connection's check from the same address moves a provisional entry...
        t.check_seen(flow(1), 3);
        assert_eq!(t.owner(&flow(1)), Some(3));
        // ...but not a confirmed one: only its owner withdraws that.
        t.pinned(flow(1), 3);
        t.check_seen(flow(1), 2);
        assert_eq!(t.owner(&flow(1)), Some(3));
        t.unpinned(flow(1), 2);
        assert_eq!(t.owner(&flow(1)), Some(3));
        t.unpinned(flow(1), 3);
        assert_eq!(t.owner(&flow(1)), None);
        assert_eq!(t.provisional, 0);
        // Pinned here: forgotten.
        t.check_seen(flow(2), 1);
        t.forget(&flow(2));
        assert_eq!(t.owner(&flow(2)), None);
        assert_eq!((t.len(), t.provisional), (0, 0));
    }

    #[test]
    fn a_flood_of_checks_cannot_grow_the_table() {
        let mut t = RemoteFlows::default();
        t.pinned(flow(1), 1);
        for i in 0..3 * MAX_PROVISIONAL {
            t.check_seen(Flow::udp(([10, 0, (i >> 8) as u8, i as u8], 9).into()), 1);
        }
        assert!(t.len() <= MAX_PROVISIONAL + 1, "{}", t.len());
        assert_eq!(t.owner(&flow(1)), Some(1), "confirmed entries survive");
    }
}
