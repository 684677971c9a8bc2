//! What a node sends one peer, bounded in bytes: whole objects (ingested here, or a window sent to a new
//! subscriber) wait here for their turn; objects forwarded while they arrive take their room directly.
//!
//! At most `budget` bytes of objects are being sent to a peer at once (a single larger object goes alone;
//! an object that cannot be forwarded to a peer while it arrives, for want of room, waits here once whole),
//! and at most as much again waits its turn. A slow or stalled peer therefore costs the node at most twice the
//! budget, whatever the publisher pushes: when the waiting objects would go over their share, the oldest
//! waiting ones are skipped (counted in `lightpath_mesh_queue_drops_total`), so the peer gets the newest
//! objects when it catches up, as a live viewer wants. A waiting object superseded by a newer version of its
//! name (a playlist) is replaced at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::cache::Object;
use crate::id::NodeId;

/// The pure bookkeeping of one peer's sends.
#[derive(Default)]
pub(crate) struct SendQueue {
    waiting: VecDeque<Arc<Object>>,
    waiting_bytes: u64,
    in_flight: u64,
}

impl SendQueue {
    /// Queues `object`; returns how many waiting objects were skipped to stay within `budget`.
    pub(crate) fn push(&mut self, object: Arc<Object>, budget: u64) -> usize {
        let header = &object.header;
        let mut skipped = 0;
        if let Some(i) =
            self.waiting.iter().position(|o| o.header.stream == header.stream && o.header.name == header.name)
        {
            if self.waiting[i].header.version >= header.version {
                return 0;
            }
            let old = self.waiting.remove(i).expect("found above");
            self.waiting_bytes -= old.body.len() as u64;
            skipped += 1;
        }
        self.waiting_bytes += object.body.len() as u64;
        self.waiting.push_back(object);
        // Objects come in as they complete, not in the order they were made (newer ones travel first), so the
        // oldest is looked for, not taken from the front.
        while self.waiting_bytes > budget && self.waiting.len() > 1 {
            let oldest = (0..self.waiting.len())
                .min_by_key(|&i| (self.waiting[i].header.born_unix_ms, self.waiting[i].header.seq))
                .expect("more than one");
            let old = self.waiting.remove(oldest).expect("in range");
            self.waiting_bytes -= old.body.len() as u64;
            skipped += 1;
        }
        skipped
    }

    /// The next object to send, if the bytes in flight leave room for it (or nothing is in flight).
    pub(crate) fn next(&mut self, budget: u64) -> Option<Arc<Object>> {
        let size = self.waiting.front()?.body.len() as u64;
        if !self.reserve(size, budget) {
            return None;
        }
        self.waiting_bytes -= size;
        self.waiting.pop_front()
    }

    /// Takes room for `size` bytes sent past the waiting objects (an object forwarded while it arrives),
    /// if the bytes in flight leave it (or nothing is in flight).
    pub(crate) fn reserve(&mut self, size: u64, budget: u64) -> bool {
        if self.in_flight > 0 && self.in_flight + size > budget {
            return false;
        }
        self.in_flight += size;
        true
    }

    /// A send of `size` bytes ended (delivered to QUIC, or failed).
    pub(crate) fn done(&mut self, size: u64) {
        self.in_flight -= size;
    }

    /// Bytes waiting and in flight.
    pub(crate) fn held(&self) -> u64 {
        self.waiting_bytes + self.in_flight
    }
}

/// One peer's [`SendQueue`], shared by the driver (which pushes) and the peer's sender task.
pub(crate) struct Outbox {
    budget: u64,
    queue: Mutex<SendQueue>,
    ready: Notify,
    /// The peer, for the log.
    peer: NodeId,
    /// `lightpath_mesh_queue_bytes` of this peer: bytes waiting and in flight.
    held: metrics::Gauge,
    /// `lightpath_mesh_queue_drops_total` of this peer: objects skipped.
    drops: metrics::Counter,
}

impl Outbox {
    /// `me`'s outbox toward `peer`.
    pub(crate) fn new(budget: u64, me: &NodeId, peer: &NodeId) -> Arc<Self> {
        let labels = [("node", me.to_string()), ("peer", peer.to_string())];
        Arc::new(Self {
            budget,
            queue: Mutex::new(SendQueue::default()),
            ready: Notify::new(),
            peer: peer.clone(),
            held: metrics::gauge!("lightpath_mesh_queue_bytes", &labels),
            drops: metrics::counter!("lightpath_mesh_queue_drops_total", &labels),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SendQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an object for the peer, counting the waiting objects it pushed out.
    pub(crate) fn push(&self, object: Arc<Object>) {
        let mut queue = self.lock();
        let skipped = queue.push(object, self.budget);
        let held = queue.held();
        drop(queue);
        self.held.set(held as f64);
        self.ready.notify_one();
        if skipped > 0 {
            self.drops.increment(skipped as u64);
            tracing::debug!(peer = %self.peer, skipped, held, "a lagging peer skips to the newest objects");
        }
    }

    /// Waits for the next object there is room to send.
    pub(crate) async fn next(&self) -> Arc<Object> {
        loop {
            let ready = self.ready.notified();
            if let Some(object) = self.lock().next(self.budget) {
                return object;
            }
            ready.await;
        }
    }

    /// A send taken from [`Outbox::next`] ended.
    pub(crate) fn done(&self, object: &Object) {
        self.release(object.body.len() as u64);
    }

    /// Takes room for an object forwarded while it arrives; false when the peer lags (see
    /// [`SendQueue::reserve`]).
    pub(crate) fn reserve(&self, size: u64) -> bool {
        let mut queue = self.lock();
        let reserved = queue.reserve(size, self.budget);
        self.held.set(queue.held() as f64);
        reserved
    }

    /// Gives back what [`Outbox::reserve`] took, or what [`Outbox::next`] did.
    pub(crate) fn release(&self, size: u64) {
        let mut queue = self.lock();
        queue.done(size);
        self.held.set(queue.held() as f64);
        drop(queue);
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::id::{ObjectName, StreamName};
    use crate::wire::ObjectHeader;

    fn obj(name: &str, version: u64, len: usize) -> Arc<Object> {
        let header = ObjectHeader {
            stream: StreamName::new("s").unwrap(),
            name: ObjectName::new(name).unwrap(),
            version,
            seq: version,
            content_type: "video/mp2t".into(),
            duration_ms: 0,
            born_unix_ms: version,
            len: len as u64,
        };
        Arc::new(Object::new(header, Bytes::from(vec![0; len])))
    }

    fn names(q: &SendQueue) -> Vec<String> {
        q.waiting.iter().map(|o| format!("{}@{}", o.header.name, o.header.version)).collect()
    }

    #[test]
    fn a_stalled_peer_holds_at_most_twice_the_budget_and_gets_the_newest() {
        let mut q = SendQueue::default();
        let budget = 300;
        assert_eq!(q.push(obj("s1.ts", 1, 100), budget), 0);
        assert_eq!(q.push(obj("s2.ts", 2, 100), budget), 0);
        // The peer takes two, then stalls.
        assert!(q.next(budget).is_some());
        assert!(q.next(budget).is_some());
        let mut skipped = 0;
        for v in 3..20 {
            skipped += q.push(obj(&format!("s{v}.ts"), v, 100), budget);
            assert!(q.held() <= 2 * budget, "{} held", q.held());
        }
        assert_eq!(skipped, 14);
        assert_eq!(names(&q), ["s17.ts@17", "s18.ts@18", "s19.ts@19"]);
        // One more in flight fits (300 of 300), a second does not until a send ends.
        assert!(q.next(budget).is_some());
        assert!(q.next(budget).is_none());
        q.done(100);
        assert_eq!(q.next(budget).unwrap().header.name.as_str(), "s18.ts");
    }

    #[test]
    fn the_oldest_goes_whatever_the_order_objects_complete_in() {
        let mut q = SendQueue::default();
        // The newest object of a backlog completes first; older ones straggle in after it.
        q.push(obj("s20.ts", 20, 100), 300);
        for v in 10..15 {
            q.push(obj(&format!("s{v}.ts"), v, 100), 300);
        }
        assert_eq!(names(&q), ["s20.ts@20", "s13.ts@13", "s14.ts@14"]);
    }

    #[test]
    fn a_newer_playlist_replaces_the_waiting_one_and_an_older_is_ignored() {
        let mut q = SendQueue::default();
        q.push(obj("index.m3u8", 5, 10), 1000);
        q.push(obj("s5.ts", 6, 100), 1000);
        assert_eq!(q.push(obj("index.m3u8", 7, 12), 1000), 1);
        assert_eq!(q.push(obj("index.m3u8", 6, 12), 1000), 0);
        assert_eq!(names(&q), ["s5.ts@6", "index.m3u8@7"]);
        assert_eq!(q.held(), 112);
    }

    #[test]
    fn an_object_larger_than_the_budget_still_goes_alone() {
        let mut q = SendQueue::default();
        q.push(obj("big.ts", 1, 1000), 300);
        assert_eq!(q.held(), 1000);
        let big = q.next(300).unwrap();
        q.push(obj("s2.ts", 2, 10), 300);
        assert!(q.next(300).is_none(), "waits for the big one");
        q.done(big.body.len() as u64);
        assert!(q.next(300).is_some());
    }

    #[test]
    fn objects_passed_through_share_the_budget() {
        let mut q = SendQueue::default();
        assert!(q.reserve(200, 300));
        assert!(!q.reserve(200, 300), "a lagging peer skips the next one");
        q.push(obj("s1.ts", 1, 100), 300);
        assert!(q.next(300).is_some(), "room for 100 more");
        q.done(200);
        assert!(q.reserve(200, 300));
        assert_eq!(q.held(), 300);
    }
}
