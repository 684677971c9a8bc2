//! How many connections an HTTP listener holds, in all and per client address, and which new ones it
//! turns away.
//!
//! Every connection holds a descriptor, and so does every cached body kept in a sealed memory file
//! ([`crate::cache::sealed`], whose share [`crate::cache::sealed::fd_budget`] sizes from the cache's bound).
//! [`connection_cap`] fits the listener's cap into the rest, less a reserve for the mesh socket, log files
//! and DNS lookups, so that 20,000 idle connections cannot leave the node unable to cache an object or reach
//! a peer.
//! [`Admission`] counts the connections held and admits a new one only under both caps: one address
//! flooding the node fills its own share, and viewers at other addresses are still served.
//!
//! It does not answer the connections it turns away; the server does (a bare 503, see
//! [`super::serve`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Turned {
    /// The node holds its cap of connections.
    #[error("the node holds its {0} connections")]
    NodeFull(usize),
    /// The client's address holds its cap of connections.
    #[error("the address holds its {0} connections")]
    AddressFull(usize),
}

impl Turned {
    /// Its label in `lightpath_connections_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Turned::NodeFull(_) => "node_full",
            Turned::AddressFull(_) => "address_full",
        }
    }

    /// The config field of the limit reached, for `lightpath_limits_hit_total`.
    pub fn limit(&self) -> &'static str {
        match self {
            Turned::NodeFull(_) => "http.max_connections",
            Turned::AddressFull(_) => "http.max_connections_per_address",
        }
    }
}

/// The caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections in all.
    pub node: usize,
    /// Connections per client address.
    pub address: usize,
}

/// The listener's connection cap: `configured`, held under the descriptors of `fd_limit` left by sealed
/// cached bodies (`sealed`) and a reserve. The reserve is `reserved` but at most half of what the cache
/// leaves, so that a small open-file limit still leaves room for connections.
pub fn connection_cap(configured: usize, reserved: usize, fd_limit: u64, sealed: u64) -> usize {
    let left = fd_limit.saturating_sub(sealed);
    let left = usize::try_from(left).unwrap_or(usize::MAX);
    let reserve = reserved.min(left / 2);
    configured.min(left - reserve).max(1)
}

/// Whether one more connection from an address that holds `from_address` may come in while the node holds
/// `held`.
pub fn admit(held: usize, from_address: usize, caps: Caps) -> Result<(), Turned> {
    if held >= caps.node {
        Err(Turned::NodeFull(caps.node))
    } else if from_address >= caps.address {
        Err(Turned::AddressFull(caps.address))
    } else {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Held {
    all: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The connections a listener holds. Cheap to clone; every clone counts the same connections.
#[derive(Debug, Clone)]
pub struct Admission {
    caps: Caps,
    held: Arc<Mutex<Held>>,
}

impl Admission {
    pub fn new(caps: Caps) -> Self {
        Self { caps, held: Default::default() }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Admits a connection from `address`, which counts until the returned [`Seat`] drops.
    pub fn admit(&self, address: IpAddr) -> Result<Seat, Turned> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let from_address = held.by_address.get(&address).copied().unwrap_or(0);
        admit(held.all, from_address, self.caps)?;
        held.all += 1;
        *held.by_address.entry(address).or_default() += 1;
        Ok(Seat { admission: self.clone(), address })
    }

    /// The connections held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).all
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Seat {
    admission: Admission,
    address: IpAddr,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut held = self.admission.held.lock().unwrap_or_else(|e| e.into_inner());
        held.all -= 1;
        if let Some(n) = held.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                held.by_address.remove(&self.address); // the map never outgrows the connections held
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_cache_its_share_and_the_node_its_reserve() {
        use crate::cache::sealed::fd_budget;
        // This machine's limit: 20,000. A 256 MiB cache may hold 8,192 sealed bodies; 512 stay for the rest.
        assert_eq!(fd_budget(20_000, 256 << 20), 8_192);
        assert_eq!(connection_cap(16_384, 512, 20_000, fd_budget(20_000, 256 << 20)), 11_296);
        assert_eq!(connection_cap(1_000, 512, 20_000, 8_192), 1_000);
        // A cache as large as the limit allows takes half of it.
        assert_eq!(fd_budget(20_000, 4 << 30), 10_000);
        assert_eq!(connection_cap(16_384, 512, 20_000, 10_000), 9_488);
        // A small limit still leaves connections: the reserve shrinks to half of what is left.
        assert_eq!(connection_cap(16_384, 512, 1024, fd_budget(1024, 256 << 20)), 256);
        assert_eq!(connection_cap(16_384, 512, u64::MAX, 8_192), 16_384);
        assert_eq!(connection_cap(16_384, 512, 0, 0), 1);
    }

    #[test]
    fn an_address_at_its_cap_does_not_keep_others_out() {
        let caps = Caps { node: 4, address: 2 };
        let admission = Admission::new(caps);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Turned::AddressFull(2));
        let _b1 = admission.admit(b).unwrap();
        let _b2 = admission.admit(b).unwrap();
        assert_eq!(admission.admit("127.0.0.3".parse().unwrap()).unwrap_err(), Turned::NodeFull(4));
        drop(a1);
        assert_eq!(admission.held(), 3);
        assert!(admission.admit(a).is_ok());
    }

    #[test]
    fn freed_addresses_are_forgotten() {
        let admission = Admission::new(Caps { node: 10, address: 10 });
        let seats: Vec<_> = (0..5).map(|i| admission.admit(IpAddr::from([127, 0, 0, i])).unwrap()).collect();
        drop(seats);
        assert_eq!(admission.held(), 0);
        assert!(admission.held.lock().unwrap().by_address.is_empty());
    }
}
