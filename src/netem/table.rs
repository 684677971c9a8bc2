//! The table of a socket's impaired links: [`Impairments`], changeable at runtime from any thread, read on
//! every send.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{self, AtomicBool};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::impairment::{Impairment, Plan};

/// The table key of an address: an IPv4-mapped IPv6 address (what a dual-stack socket sends to) is the
/// same link as its IPv4 form.
pub(super) fn link_key(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The impairments of every link of a node, changeable at runtime from any thread.
///
/// Cloning gives another handle on the same table. One table may serve several sockets.
#[derive(Clone, Default)]
pub struct Impairments {
    inner: Arc<Table>,
}

#[derive(Default)]
struct Table {
    links: RwLock<HashMap<SocketAddr, (Impairment, Plan)>>,
    /// Lets the send path skip the lock while no link is impaired.
    empty: AtomicBool,
}

impl Impairments {
    /// Sets the impairment of the link to `remote` (replacing any earlier one); it applies to the datagrams
    /// sent after the call. Datagrams already queued keep their schedule, and later ones do not overtake
    /// them, unless the new impairment is perfect: those go straight out (as after [`Impairments::clear`]).
    /// Any value is accepted (see [`Impairment::validate`]). An IPv4-mapped IPv6 address and its IPv4 form
    /// are the same link.
    pub fn set(&self, remote: SocketAddr, imp: Impairment) {
        let mut links = self.write();
        links.insert(link_key(remote), (imp, Plan::new(&imp)));
        self.inner.empty.store(false, atomic::Ordering::Release);
    }

    /// Makes the link to `remote` perfect again.
    pub fn clear(&self, remote: SocketAddr) {
        let mut links = self.write();
        links.remove(&link_key(remote));
        self.inner.empty.store(links.is_empty(), atomic::Ordering::Release);
    }

    /// The impairment set for `remote`, if any.
    pub fn get(&self, remote: SocketAddr) -> Option<Impairment> {
        self.read().get(&link_key(remote)).map(|(imp, _)| *imp)
    }

    /// Every impaired link, ordered by address.
    pub fn snapshot(&self) -> Vec<(SocketAddr, Impairment)> {
        let mut all: Vec<_> = self.read().iter().map(|(addr, (imp, _))| (*addr, *imp)).collect();
        all.sort_by_key(|(addr, _)| *addr);
        all
    }

    pub(super) fn plan(&self, remote: SocketAddr) -> Option<Plan> {
        if self.inner.empty.load(atomic::Ordering::Acquire) {
            return None;
        }
        self.read().get(&link_key(remote)).map(|(_, plan)| *plan)
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<SocketAddr, (Impairment, Plan)>> {
        self.inner.links.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<SocketAddr, (Impairment, Plan)>> {
        self.inner.links.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Impairments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn table_set_get_clear_snapshot() {
        let t = Impairments::default();
        assert_eq!(t.plan(addr(1)), None);
        let imp = Impairment { delay_ms: 10.0, ..Default::default() };
        t.set(addr(2), imp);
        t.set(addr(1), Impairment { up: false, ..Default::default() });
        assert_eq!(t.get(addr(2)), Some(imp));
        // The IPv4-mapped form of an address is the same link.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:2".parse().unwrap();
        assert_eq!(t.get(mapped), Some(imp));
        assert_eq!(t.snapshot().iter().map(|(a, _)| a.port()).collect::<Vec<_>>(), [1, 2]);
        let other = t.clone();
        other.clear(addr(1));
        other.clear(mapped);
        assert_eq!(t.get(addr(2)), None);
        assert!(t.snapshot().is_empty());
        assert_eq!(t.plan(addr(2)), None);
    }
}
