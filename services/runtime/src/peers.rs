//! Bounds on what an unauthenticated peer can hold on the gRPC port before its certificate is
//! known: TLS handshakes in progress (each costs a task, buffers and signature checks) and
//! open connections, per remote IP address and in total. A peer over its bound has its new
//! connections closed at once; the others are not affected. Every refusal is counted in
//! `payouts_grpc_connections_refused_total{reason}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections one remote address may hold unless `GRPC_MAX_CONNECTIONS_PER_PEER` says
/// otherwise: far above what a component needs (one HTTP/2 connection per replica it calls),
/// far below what would exhaust the process's file descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

/// TLS handshakes in progress at once, all peers together: far more than a peer's share, so
/// that filling them takes many addresses (128 at 8 each).
pub const MAX_HANDSHAKES: usize = 1024;
/// TLS handshakes in progress at once from one IP address (an IPv6 /64 counts as one).
pub const MAX_HANDSHAKES_PER_PEER: usize = 8;

/// What each remote address holds now.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    connections: usize,
    handshakes: usize,
}

/// The connection and handshake budget of one listener.
#[derive(Debug)]
pub struct PeerBudget {
    max_connections_per_peer: usize,
    state: Mutex<(HashMap<IpAddr, Held>, usize)>,
}

/// Why a connection was closed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer already holds its share of connections.
    PeerConnections,
    /// The peer already has its share of handshakes in progress.
    PeerHandshakes,
    /// Every handshake slot is taken.
    Handshakes,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PeerConnections => "peer_connections",
            Refusal::PeerHandshakes => "peer_handshakes",
            Refusal::Handshakes => "handshakes",
        }
    }
}

impl PeerBudget {
    pub fn new(max_connections_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections_per_peer,
            state: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// Admits a new connection from `ip` that starts a handshake, or says why not (and
    /// counts the refusal).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<PeerSlot, Refusal> {
        let ip = peer_key(ip);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (peers, handshakes) = &mut *state;
        let held = peers.get(&ip).copied().unwrap_or_default();
        let refusal = if held.connections >= self.max_connections_per_peer {
            Some(Refusal::PeerConnections)
        } else if held.handshakes >= MAX_HANDSHAKES_PER_PEER {
            Some(Refusal::PeerHandshakes)
        } else if *handshakes >= MAX_HANDSHAKES {
            Some(Refusal::Handshakes)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(state);
            metrics::counter!("payouts_grpc_connections_refused_total", "reason" => refusal.as_str())
                .increment(1);
            return Err(refusal);
        }
        *handshakes += 1;
        let entry = peers.entry(ip).or_default();
        entry.connections += 1;
        entry.handshakes += 1;
        Ok(PeerSlot {
            budget: Arc::clone(self),
            ip,
            handshaking: true,
        })
    }

    /// Connections and handshakes `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> (usize, usize) {
        let ip = peer_key(ip);
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state
            .0
            .get(&ip)
            .map_or((0, 0), |held| (held.connections, held.handshakes))
    }

    fn release(&self, ip: IpAddr, handshaking: bool, connection: bool) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (peers, handshakes) = &mut *state;
        if handshaking {
            *handshakes = handshakes.saturating_sub(1);
        }
        if let Some(held) = peers.get_mut(&ip) {
            if handshaking {
                held.handshakes = held.handshakes.saturating_sub(1);
            }
            if connection {
                held.connections = held.connections.saturating_sub(1);
            }
            if held.connections == 0 && held.handshakes == 0 {
                peers.remove(&ip);
            }
        }
    }
}

/// The address a budget is kept by: an IPv4 address (also when mapped into IPv6), or an IPv6
/// /64 (one host usually holds a whole /64, so counting its addresses apart would give it
/// 2^64 shares).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// A connection's place in the budget: released when it is dropped (the connection closes).
#[derive(Debug)]
pub struct PeerSlot {
    budget: Arc<PeerBudget>,
    ip: IpAddr,
    handshaking: bool,
}

impl PeerSlot {
    /// The handshake is over (done or failed): its handshake slot is free, the connection
    /// slot stays held until the slot is dropped.
    pub fn handshake_done(&mut self) {
        if self.handshaking {
            self.handshaking = false;
            self.budget.release(self.ip, true, false);
        }
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.budget.release(self.ip, self.handshaking, true);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_peer_cannot_hold_more_than_its_share_and_slots_come_back() {
        let budget = PeerBudget::new(20);
        let greedy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut slots: Vec<PeerSlot> = (0..MAX_HANDSHAKES_PER_PEER)
            .map(|_| budget.admit(greedy).unwrap())
            .collect();
        assert_eq!(budget.admit(greedy).unwrap_err(), Refusal::PeerHandshakes);
        // Another peer is not affected.
        let mut theirs = budget.admit(other).unwrap();
        theirs.handshake_done();
        assert_eq!(budget.held_by(other), (1, 0));
        // Finished handshakes free handshake slots; connections stay counted.
        for slot in &mut slots {
            slot.handshake_done();
        }
        while slots.len() < 20 {
            let mut slot = budget.admit(greedy).unwrap();
            slot.handshake_done();
            slots.push(slot);
        }
        assert_eq!(budget.admit(greedy).unwrap_err(), Refusal::PeerConnections);
        assert_eq!(budget.held_by(greedy), (20, 0));
        // Closing connections gives the slots back, and forgets the peer at zero.
        slots.truncate(19);
        assert!(budget.admit(greedy).is_ok());
        slots.clear();
        assert_eq!(budget.held_by(greedy), (0, 0));
        drop(theirs);
        assert!(budget.state.lock().unwrap().0.is_empty());
    }

    #[test]
    fn an_ipv6_64_is_one_peer() {
        let budget = PeerBudget::new(2);
        let _a = budget.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _b = budget.admit("2001:db8::ffff:2".parse().unwrap()).unwrap();
        assert_eq!(
            budget
                .admit("2001:db8::3:4:5:6".parse().unwrap())
                .unwrap_err(),
            Refusal::PeerConnections
        );
        assert!(budget.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
        assert_eq!(
            peer_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn handshakes_are_bounded_in_total() {
        let budget = PeerBudget::new(usize::MAX);
        let mut slots = Vec::new();
        for peer in 0..MAX_HANDSHAKES {
            let ip = IpAddr::from([10, 1, (peer / 256) as u8, (peer % 256) as u8]);
            slots.push(budget.admit(ip).unwrap());
        }
        let late: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(budget.admit(late).unwrap_err(), Refusal::Handshakes);
        slots.pop();
        assert!(budget.admit(late).is_ok());
    }
}
