//! What happens between accept and the first byte served: the PROXY protocol header on a
//! listener that expects one (which decides the client's address), then the per-address
//! connection cap (`server.max_connections_per_ip`). A connection refused here is closed
//! without a response, counted and logged at debug.
//!
//! The cap is keyed on the client's address as the connection will be known everywhere
//! else: the PROXY protocol source when the listener reads a header, else the TCP peer.
//! Behind an L4 balancer every TCP peer is the balancer, so a cap on it would be a second
//! `server.max_connections`; the socket table is what `max_connections` protects, and this
//! cap is about one client taking every slot. Over the cap the connection closes at once
//! rather than answering 503 (nginx `limit_conn`): nothing has been read yet, on HTTPS
//! there is no handshake to answer over, and a client opening that many connections is not
//! one whose requests are worth reading.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpStream;

use super::proxy_header::read_proxy_header;
use crate::metrics::{record_refusal, Listener, Refusal};
use crate::snapshot::SharedSnapshot;

/// A connection let in: whom to serve it as, and its hold on the per-address cap.
pub(super) struct Admitted {
    pub client: SocketAddr,
    /// Released when the connection ends (dropped with this).
    _slot: Option<AddressSlot>,
}

impl Admitted {
    /// The connection's hold on the cap, for it to keep until it ends.
    pub(super) fn into_slot(self) -> Option<AddressSlot> {
        self._slot
    }
}

/// Read the PROXY protocol header if `listener` expects one, then take a slot of the
/// per-address cap; `None`: the connection must close.
///
/// The snapshot is read through a short-lived guard: without PROXY protocol no shared
/// reference count is touched per connection. Only a header read, which waits on the
/// network, holds the snapshot it started with.
pub(super) async fn admit(
    stream: &mut TcpStream,
    peer: SocketAddr,
    snapshot: &SharedSnapshot,
    listener: Listener,
    counts: &Arc<ConnectionsPerAddress>,
) -> Option<Admitted> {
    let client = if expects_proxy_header(snapshot, listener) {
        let current = snapshot.load_full();
        // Boxed: inline, the header reader's state (a timer, the peek loop) would size every
        // connection's task for as long as it lives (tests/memory.rs).
        let read = Box::pin(async move {
            read_proxy_header(stream, peer, &current.config.server.proxy_protocol_settings).await
        })
        .await;
        match read {
            Ok(client) => client,
            Err(reason) => {
                refuse(reason, peer, peer);
                return None;
            }
        }
    } else {
        peer
    };
    admit_client(client, peer, snapshot, counts)
}

/// Whether connections on `listener` start with a PROXY protocol header. Without one,
/// nothing waits on the network: `admit_client` decides at once, in the accept loop.
pub(super) fn expects_proxy_header(snapshot: &SharedSnapshot, listener: Listener) -> bool {
    let current = snapshot.load();
    let config = &current.config;
    match listener {
        Listener::Http => config.server.proxy_protocol,
        Listener::Https => config.tls.as_ref().is_some_and(|tls| tls.proxy_protocol),
        Listener::Admin => false,
    }
}

/// Take a slot of the per-address cap for `client` (the TCP `peer`, or the address a PROXY
/// header named); `None`: the connection must close.
pub(super) fn admit_client(
    client: SocketAddr,
    peer: SocketAddr,
    snapshot: &SharedSnapshot,
    counts: &Arc<ConnectionsPerAddress>,
) -> Option<Admitted> {
    let cap = snapshot.load().config.server.max_connections_per_ip;
    let slot = if cap == 0 {
        None
    } else {
        match counts.try_take(client.ip(), cap) {
            Some(slot) => Some(slot),
            None => {
                refuse(Refusal::PerIpCap, peer, client);
                return None;
            }
        }
    };
    Some(Admitted {
        client,
        _slot: slot,
    })
}

fn refuse(reason: Refusal, peer: SocketAddr, client: SocketAddr) {
    record_refusal(reason);
    tracing::debug!(%peer, %client, reason = reason.as_str(), "connection refused on accept");
}

/// Open connections per client address, for every accept loop of the process. Touched once
/// when a connection is let in and once when it ends, and only with the cap on; the lock is
/// never held across an `.await`.
#[derive(Debug, Default)]
pub(super) struct ConnectionsPerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerAddress {
    /// A slot for one more connection from `address`, unless it holds `cap` already.
    fn try_take(self: &Arc<Self>, address: IpAddr, cap: usize) -> Option<AddressSlot> {
        // IPv4-mapped IPv6 peers (a dual-stack socket) are the same client as their IPv4.
        let address = address.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: Arc::clone(self),
            address,
        })
    }

    #[cfg(test)]
    fn open_for(&self, address: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&address).copied().unwrap_or(0)
    }
}

/// One connection's hold on its address's count; the count drops with it, and an address
/// with none left is forgotten (the map holds only addresses with open connections).
#[derive(Debug)]
pub(super) struct AddressSlot {
    counts: Arc<ConnectionsPerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_n_refuses_one_more_and_a_freed_slot_lets_one_in() {
        let counts = Arc::new(ConnectionsPerAddress::default());
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let mut slots: Vec<_> = (0..3)
            .map(|_| counts.try_take(client, 3).unwrap())
            .collect();
        assert!(counts.try_take(client, 3).is_none());
        // Another address has a cap of its own.
        let other_slot = counts.try_take(other, 3).unwrap();
        slots.pop();
        assert_eq!(counts.open_for(client), 2);
        slots.push(counts.try_take(client, 3).unwrap());
        assert!(counts.try_take(client, 3).is_none());
        drop(slots);
        drop(other_slot);
        assert!(counts.open.lock().unwrap().is_empty(), "forgotten at zero");
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_same_client() {
        let counts = Arc::new(ConnectionsPerAddress::default());
        let _v4 = counts.try_take("192.0.2.7".parse().unwrap(), 1).unwrap();
        assert!(counts
            .try_take("::ffff:192.0.2.7".parse().unwrap(), 1)
            .is_none());
    }
}
