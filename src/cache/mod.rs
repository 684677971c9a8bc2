//! The live-window object store every node keeps.
//!
//! Each node holds, per stream, the newest version of every object that passed through it (segments, parts,
//! playlists), bounded in bytes across all streams: the bound holds for every byte held, each stream's newest
//! objects included. When an insert goes over it, objects of streams that have received nothing for
//! [`IDLE_AFTER`] go first, oldest first (an ended or abandoned stream's window gives way to a live one's,
//! however many such streams there are). Then a stream above its share of the bound (the bound divided by
//! the streams held) gives up its own oldest objects, so that one stream flooding a node cannot push out the
//! others' windows; otherwise the oldest object held goes, which belongs to the stream that has been idle
//! longest. The object being inserted is never the one evicted, so a single object larger than the whole
//! bound is still kept, alone.
//!
//! Waiters (an edge's viewer asking for a segment that is still on its way) park on the stream's change
//! counter and look again whenever an object lands.
//!
//! The cache knows nothing of HLS or QUIC: objects are named bytes with a header. A cache that serves
//! viewers ([`Cache::with_sealed_bodies`]) keeps each large body in a sealed memory file ([`sealed`]), from
//! which the edge sends it without copying; evicting the object frees the file as it would free heap memory.

#[allow(unsafe_code)] // mmap and munmap: the one module that needs unsafe, see its doc for the measured reason
pub mod sealed;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::id::{ObjectName, StreamName};
use crate::wire::ObjectHeader;

/// A named object and its bytes.
#[derive(Debug)]
pub struct Object {
    pub header: ObjectHeader,
    pub body: Bytes,
    /// [`Object::content_hash`], computed when first asked for: only nodes that serve viewers need it, and
    /// then once per object rather than once per request.
    content_hash: OnceLock<u64>,
}

impl Object {
    pub fn new(header: ObjectHeader, body: Bytes) -> Self {
        Self { header, body, content_hash: OnceLock::new() }
    }

    /// A 64-bit hash of the body (rapidhash v3, whose output is fixed across versions and machines), so that
    /// every edge derives the same validator from the same bytes whichever path brought them.
    pub fn content_hash(&self) -> u64 {
        *self.content_hash.get_or_init(|| rapidhash::v3::rapidhash_v3(&self.body))
    }
}

/// What [`Cache::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The object is new (or a newer version of its name).
    New,
    /// The cache already held this version or a newer one; nothing changed.
    Duplicate,
}

#[derive(Default)]
struct LiveWindow {
    /// Each name's newest version and its stamp in the eviction order.
    objects: HashMap<ObjectName, (u64, Arc<Object>)>,
    /// This stream's objects by stamp, oldest first.
    order: BTreeMap<u64, ObjectName>,
    /// Bytes of this stream's bodies.
    bytes: u64,
    /// When the stream last received an object.
    last_insert: Option<Instant>,
}

/// A stream that has received nothing for this long is idle: its objects are evicted before any live
/// stream's (see the module docs). Three times the longest segment duration in common use (10 s), so that a
/// live stream's playlist always comes sooner; an ended stream is forgotten after 60 s.
pub const IDLE_AFTER: Duration = Duration::from_secs(30);

struct Inner {
    streams: HashMap<StreamName, LiveWindow>,
    /// Eviction order across streams: (stamp given at insertion, stream, name).
    order: BTreeMap<u64, (StreamName, ObjectName)>,
    changes: HashMap<StreamName, watch::Sender<u64>>,
    bytes: u64,
    next_stamp: u64,
}

/// Moves a body into a sealed memory file, given the most sealed bodies the process may hold:
/// [`sealed::seal`], or a stand-in that fails in tests.
type Sealer = fn(&[u8], usize) -> Result<Bytes, sealed::SealError>;

/// The byte-bounded live-window store. Cheap to share: clone the `Arc`.
pub struct Cache {
    max_bytes: u64,
    /// [`IDLE_AFTER`], shorter in tests.
    idle_after: Duration,
    node: String,
    /// How bodies of at least [`sealed::MIN_SEALED_BYTES`] are moved into sealed memory files, if they are.
    sealer: Option<Sealer>,
    /// The most sealed bodies to hold: [`sealed::fd_budget`] of the open-file limit at start.
    max_sealed: usize,
    inner: Mutex<Inner>,
}

impl Cache {
    /// A cache holding at most `max_bytes` of object bodies.
    /// `node` labels its metrics.
    pub fn new(max_bytes: u64, node: &str) -> Arc<Self> {
        Self::build(max_bytes, node, None)
    }

    /// A cache for a node that serves viewers: like [`Cache::new`], but bodies of at least
    /// [`sealed::MIN_SEALED_BYTES`] are kept in sealed memory files, so that the edge can send them with
    /// `sendfile`. When a body cannot be sealed (the kernel refuses, or sealed bodies hold their share of the
    /// open-file limit) it stays on the heap and is served by copying, as from [`Cache::new`].
    pub fn with_sealed_bodies(max_bytes: u64, node: &str) -> Arc<Self> {
        Self::build(max_bytes, node, Some(sealed::seal))
    }

    fn build(max_bytes: u64, node: &str, sealer: Option<Sealer>) -> Arc<Self> {
        let fd_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        Arc::new(Self {
            max_bytes,
            idle_after: IDLE_AFTER,
            node: node.to_owned(),
            sealer,
            max_sealed: usize::try_from(sealed::fd_budget(fd_limit, max_bytes)).unwrap_or(usize::MAX),
            inner: Mutex::new(Inner {
                streams: HashMap::new(),
                order: BTreeMap::new(),
                changes: HashMap::new(),
                bytes: 0,
                next_stamp: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters more
        // than losing the node, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an object unless this version (or a newer one) of its name is already here. A cache with
    /// sealed bodies stores a copy whose body is sealed; `object` itself is left as it was.
    pub fn insert(&self, object: Arc<Object>) -> Inserted {
        let object = match self.sealer {
            Some(sealer) if object.body.len() >= sealed::MIN_SEALED_BYTES => {
                if self.holds(&object.header) {
                    return Inserted::Duplicate; // not worth a copy into a new file
                }
                self.sealed(sealer, object)
            }
            _ => object,
        };
        let mut inner = self.lock();
        let stream = object.header.stream.clone();
        let name = object.header.name.clone();
        let stamp = inner.next_stamp;
        let window = inner.streams.entry(stream.clone()).or_default();
        if let Some((_, old)) = window.objects.get(&name) {
            if old.header.version >= object.header.version {
                return Inserted::Duplicate;
            }
        }
        let size = object.body.len() as u64;
        let mut freed = 0;
        if let Some((old_stamp, old)) = window.objects.insert(name.clone(), (stamp, object)) {
            freed = old.body.len() as u64;
            window.order.remove(&old_stamp);
            inner.order.remove(&old_stamp);
        }
        let window = inner.streams.get_mut(&stream).expect("inserted above");
        window.last_insert = Some(Instant::now());
        window.order.insert(stamp, name.clone());
        window.bytes = window.bytes - freed + size;
        inner.bytes = inner.bytes - freed + size;
        inner.next_stamp += 1;
        inner.order.insert(stamp, (stream.clone(), name));
        self.evict(&mut inner, &stream, stamp);
        let sender = inner.changes.entry(stream).or_insert_with(|| watch::channel(0).0);
        sender.send_modify(|n| *n += 1);
        metrics::gauge!("lightpath_cache_bytes", "node" => self.node.clone()).set(inner.bytes as f64);
        Inserted::New
    }

    /// Whether this version (or a newer one) of the object's name is here.
    fn holds(&self, header: &ObjectHeader) -> bool {
        let inner = self.lock();
        let held = inner.streams.get(&header.stream).and_then(|w| w.objects.get(&header.name));
        held.is_some_and(|(_, old)| old.header.version >= header.version)
    }

    /// The object with its body in a sealed memory file; the object itself when that fails.
    fn sealed(&self, sealer: Sealer, object: Arc<Object>) -> Arc<Object> {
        /// Whether a failure was logged: the first one says why bodies stay on the heap; the rest would repeat
        /// it once per segment.
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if sealed::SealedSlice::find(&object.body).is_some_and(|s| s.len() == object.body.len()) {
            return object;
        }
        match sealer(&object.body, self.max_sealed) {
            Ok(body) => Arc::new(Object::new(object.header.clone(), body)),
            Err(e) => {
                metrics::counter!("lightpath_cache_unsealed_bodies_total", "node" => self.node.clone()).increment(1);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        node = %self.node,
                        error = %e,
                        "large cached bodies stay on the heap and are copied into each response (logged once; \
                         lightpath_cache_unsealed_bodies_total counts them)"
                    );
                }
                object
            }
        }
    }

    /// Brings the bytes held back under the bound after `stream` received the object stamped `kept`, which
    /// stays: first the oldest object held while its stream is idle, then from `stream` itself while it holds
    /// more than its share, then the oldest objects held.
    fn evict(&self, inner: &mut Inner, stream: &StreamName, kept: u64) {
        while inner.bytes > self.max_bytes {
            let idle = |s: &StreamName| {
                inner.streams.get(s).and_then(|w| w.last_insert).is_some_and(|at| at.elapsed() >= self.idle_after)
            };
            let oldest = inner.order.first_key_value().filter(|(&stamp, _)| stamp != kept);
            let share = self.max_bytes / inner.streams.len().max(1) as u64;
            let own = inner.streams.get(stream).filter(|w| w.bytes > share).and_then(|w| w.order.first_key_value());
            let victim = match (oldest, own) {
                (Some((&stamp, (s, name))), _) if idle(s) => (stamp, s.clone(), name.clone()),
                (_, Some((&stamp, name))) if stamp != kept => (stamp, stream.clone(), name.clone()),
                (Some((&stamp, (s, name))), _) => (stamp, s.clone(), name.clone()),
                _ => break,
            };
            self.drop_object(inner, victim);
            metrics::counter!("lightpath_cache_evictions_total", "node" => self.node.clone()).increment(1);
        }
    }

    /// Removes one object held under `stamp`, and its stream's window once empty.
    fn drop_object(&self, inner: &mut Inner, (stamp, stream, name): (u64, StreamName, ObjectName)) {
        inner.order.remove(&stamp);
        let Some(window) = inner.streams.get_mut(&stream) else { return };
        window.order.remove(&stamp);
        if let Some((_, obj)) = window.objects.remove(&name) {
            window.bytes -= obj.body.len() as u64;
            inner.bytes -= obj.body.len() as u64;
        }
        if window.objects.is_empty() {
            inner.streams.remove(&stream);
        }
    }

    /// The newest version of `name` in `stream`, if held.
    pub fn get(&self, stream: &StreamName, name: &ObjectName) -> Option<Arc<Object>> {
        self.lock().streams.get(stream)?.objects.get(name).map(|(_, o)| o.clone())
    }

    /// Every object of a stream, oldest first (by origin sequence).
    pub fn window(&self, stream: &StreamName) -> Vec<Arc<Object>> {
        let inner = self.lock();
        let mut all: Vec<_> =
            inner.streams.get(stream).map(|w| w.objects.values().map(|(_, o)| o.clone()).collect()).unwrap_or_default();
        all.sort_by_key(|o| o.header.seq);
        all
    }

    /// Whether the cache holds anything of `stream`.
    pub fn has_stream(&self, stream: &StreamName) -> bool {
        self.lock().streams.get(stream).is_some_and(|w| !w.objects.is_empty())
    }

    /// Removes one object (a publisher's DELETE). Returns whether it was there.
    pub fn remove(&self, stream: &StreamName, name: &ObjectName) -> bool {
        let mut inner = self.lock();
        let Some(&(stamp, _)) = inner.streams.get(stream).and_then(|w| w.objects.get(name)) else { return false };
        self.drop_object(&mut inner, (stamp, stream.clone(), name.clone()));
        metrics::gauge!("lightpath_cache_bytes", "node" => self.node.clone()).set(inner.bytes as f64);
        true
    }

    /// Drops a stream's objects of versions below `below`: an older epoch's, whose names a new publisher may
    /// reuse with other bytes. Returns how many went.
    pub fn purge_below(&self, stream: &StreamName, below: u64) -> usize {
        let mut inner = self.lock();
        let Some(window) = inner.streams.get(stream) else { return 0 };
        let old: Vec<(u64, StreamName, ObjectName)> = window
            .objects
            .iter()
            .filter(|(_, (_, o))| o.header.version < below)
            .map(|(n, (stamp, _))| (*stamp, stream.clone(), n.clone()))
            .collect();
        let purged = old.len();
        for victim in old {
            self.drop_object(&mut inner, victim);
        }
        metrics::gauge!("lightpath_cache_bytes", "node" => self.node.clone()).set(inner.bytes as f64);
        purged
    }

    /// Drops everything of a stream (it ended and is forgotten); its waiters give up at once.
    pub fn remove_stream(&self, stream: &StreamName) {
        let mut inner = self.lock();
        inner.changes.remove(stream);
        let Some(window) = inner.streams.remove(stream) else { return };
        for stamp in window.order.keys() {
            inner.order.remove(stamp);
        }
        inner.bytes -= window.bytes;
        metrics::gauge!("lightpath_cache_bytes", "node" => self.node.clone()).set(inner.bytes as f64);
    }

    /// A receiver that sees every change to `stream` (an object landing), for a waiter that judges each one
    /// itself (a blocking playlist reload).
    pub fn watch(&self, stream: &StreamName) -> watch::Receiver<u64> {
        self.lock().changes.entry(stream.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Waits up to `timeout` for `name` to arrive in `stream`.
    pub async fn wait_for(&self, stream: &StreamName, name: &ObjectName, timeout: Duration) -> Option<Arc<Object>> {
        let mut changes = {
            let mut inner = self.lock();
            let rx = inner.changes.entry(stream.clone()).or_insert_with(|| watch::channel(0).0).subscribe();
            if let Some((_, obj)) = inner.streams.get(stream).and_then(|w| w.objects.get(name)) {
                return Some(obj.clone());
            }
            rx
        };
        let wait = async {
            loop {
                if changes.changed().await.is_err() {
                    return None;
                }
                if let Some(obj) = self.get(stream, name) {
                    return Some(obj);
                }
            }
        };
        let found = tokio::time::timeout(timeout, wait).await.ok().flatten();
        drop(changes);
        // A name asked for in a stream that never came leaves nothing behind.
        let mut inner = self.lock();
        if !inner.streams.contains_key(stream) && inner.changes.get(stream).is_some_and(|s| s.receiver_count() == 0) {
            inner.changes.remove(stream);
        }
        found
    }

    /// Bytes of object bodies held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(stream: &str, name: &str, seq: u64, len: usize) -> Arc<Object> {
        obj_with(stream, name, seq, Bytes::from(vec![0u8; len]))
    }

    fn obj_with(stream: &str, name: &str, seq: u64, body: Bytes) -> Arc<Object> {
        Arc::new(Object::new(
            ObjectHeader {
                stream: StreamName::new(stream).unwrap(),
                name: ObjectName::new(name).unwrap(),
                version: seq,
                seq,
                content_type: "video/mp2t".into(),
                duration_ms: 0,
                born_unix_ms: 0,
                len: body.len() as u64,
            },
            body,
        ))
    }

    #[test]
    fn an_idle_streams_objects_go_before_a_live_stream_over_its_share_loses_its_own() {
        let mut cache = Arc::try_unwrap(Cache::new(300, "t")).ok().expect("one owner");
        cache.idle_after = Duration::from_millis(50);
        let cache = Arc::new(cache);
        cache.insert(obj("old", "s1.ts", 1, 100));
        cache.insert(obj("old", "s2.ts", 2, 100));
        std::thread::sleep(Duration::from_millis(60));
        // `live` bursts past its share (150 bytes) while `old` is idle: `old` goes, all of it, first.
        for (i, name) in ["s1.ts", "s2.ts", "s3.ts"].into_iter().enumerate() {
            cache.insert(obj("live", name, i as u64 + 1, 100));
        }
        let live = StreamName::new("live").unwrap();
        assert!(!cache.has_stream(&StreamName::new("old").unwrap()), "the idle stream gave way");
        for name in ["s1.ts", "s2.ts", "s3.ts"] {
            assert!(cache.get(&live, &ObjectName::new(name).unwrap()).is_some(), "{name} kept");
        }
        // No stream is idle any more: a newcomer within its share takes the oldest object held, `live`'s.
        cache.insert(obj("other", "s1.ts", 1, 100));
        assert!(cache.get(&live, &ObjectName::new("s1.ts").unwrap()).is_none());
        assert!(cache.get(&StreamName::new("other").unwrap(), &ObjectName::new("s1.ts").unwrap()).is_some());
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn the_bound_holds_for_every_byte_and_the_idlest_stream_goes_first() {
        let cache = Cache::new(250, "t");
        assert_eq!(cache.insert(obj("a", "s1.ts", 1, 100)), Inserted::New);
        assert_eq!(cache.insert(obj("a", "s2.ts", 2, 100)), Inserted::New);
        assert_eq!(cache.insert(obj("b", "s1.ts", 1, 100)), Inserted::New);
        let a = StreamName::new("a").unwrap();
        let b = StreamName::new("b").unwrap();
        // `b` is within its share (125 bytes): the oldest object held went.
        assert!(cache.get(&a, &ObjectName::new("s1.ts").unwrap()).is_none());
        assert!(cache.get(&a, &ObjectName::new("s2.ts").unwrap()).is_some());
        assert_eq!(cache.bytes(), 200);
        // `b` goes over its share with a second object: `b`'s own oldest goes, `a` keeps its window.
        cache.insert(obj("b", "s2.ts", 2, 100));
        assert!(cache.get(&b, &ObjectName::new("s1.ts").unwrap()).is_none());
        assert!(cache.get(&a, &ObjectName::new("s2.ts").unwrap()).is_some());
        // A third stream within its share (83 bytes): the oldest object held goes, `a`'s, the idlest stream's.
        cache.insert(obj("c", "s1.ts", 1, 80));
        assert!(!cache.has_stream(&a), "the stream idle longest was cut first");
        assert!(cache.has_stream(&b));
        assert_eq!(cache.bytes(), 180);
        // A single object bigger than the bound is kept, alone.
        cache.insert(obj("b", "s3.ts", 3, 1000));
        assert!(cache.get(&b, &ObjectName::new("s3.ts").unwrap()).is_some());
        assert_eq!(cache.bytes(), 1000);
    }

    #[test]
    fn many_streams_stay_within_the_bound() {
        let cache = Cache::new(64 * 1000, "t");
        for seq in 1..=3u64 {
            for s in 0..500 {
                cache.insert(obj(&format!("s{s}"), &format!("seg{seq}.ts"), seq, 1000));
                assert!(cache.bytes() <= 64 * 1000, "{} held after stream {s} object {seq}", cache.bytes());
            }
        }
        // The 64 streams published last each keep their newest object.
        for s in 436..500 {
            let held = cache.get(&StreamName::new(format!("s{s}")).unwrap(), &ObjectName::new("seg3.ts").unwrap());
            assert!(held.is_some(), "s{s}");
        }
    }

    #[test]
    fn duplicates_and_older_versions_are_ignored() {
        let cache = Cache::new(1 << 20, "t");
        assert_eq!(cache.insert(obj("a", "index.m3u8", 5, 10)), Inserted::New);
        assert_eq!(cache.insert(obj("a", "index.m3u8", 5, 10)), Inserted::Duplicate);
        assert_eq!(cache.insert(obj("a", "index.m3u8", 4, 10)), Inserted::Duplicate);
        assert_eq!(cache.insert(obj("a", "index.m3u8", 6, 20)), Inserted::New);
        assert_eq!(cache.bytes(), 20);
    }

    #[test]
    fn an_older_epoch_is_purged_and_a_forgotten_stream_frees_its_bytes() {
        let cache = Cache::new(1 << 20, "t");
        let a = StreamName::new("a").unwrap();
        cache.insert(obj("a", "index0.m4s", 1_000, 10));
        cache.insert(obj("a", "index.m3u8", 1_001, 5));
        cache.insert(obj("b", "index0.m4s", 1, 7));
        cache.insert(obj("a", "index1.m4s", 2_001, 20));
        assert_eq!(cache.purge_below(&a, 2_000), 2);
        assert!(cache.get(&a, &ObjectName::new("index0.m4s").unwrap()).is_none());
        assert_eq!(cache.bytes(), 27);
        // The same name from the new epoch is taken, though its version is lower than nothing now held.
        assert_eq!(cache.insert(obj("a", "index0.m4s", 2_002, 3)), Inserted::New);
        cache.remove_stream(&a);
        assert!(!cache.has_stream(&a));
        assert_eq!(cache.bytes(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_object_when_it_lands() {
        let cache = Cache::new(1 << 20, "t");
        let a = StreamName::new("a").unwrap();
        let name = ObjectName::new("s9.ts").unwrap();
        let waiter = {
            let cache = cache.clone();
            let (a, name) = (a.clone(), name.clone());
            tokio::spawn(async move { cache.wait_for(&a, &name, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.insert(obj("a", "s8.ts", 8, 1));
        cache.insert(obj("a", "s9.ts", 9, 3));
        assert_eq!(waiter.await.unwrap().unwrap().body.len(), 3);
        let missing = ObjectName::new("s10.ts").unwrap();
        assert!(cache.wait_for(&a, &missing, Duration::from_secs(1)).await.is_none());
    }

    #[test]
    fn large_bodies_are_sealed_and_released_on_eviction() {
        let cache = Cache::with_sealed_bodies(1 << 20, "t");
        let a = StreamName::new("a").unwrap();
        let data = sealed::tests::pattern(sealed::MIN_SEALED_BYTES * 2);
        let heap = obj_with("a", "s1.ts", 1, Bytes::from(data.clone()));
        assert_eq!(cache.insert(heap.clone()), Inserted::New);
        let held = cache.get(&a, &ObjectName::new("s1.ts").unwrap()).unwrap();
        assert_eq!(held.body, heap.body, "same bytes");
        assert_eq!(held.header.len, heap.header.len);
        assert!(sealed::SealedSlice::find(&held.body).is_some(), "kept in a sealed file");
        assert!(sealed::SealedSlice::find(&heap.body).is_none(), "the caller's object is left as it was");
        assert_eq!(cache.insert(heap.clone()), Inserted::Duplicate);
        assert_eq!(cache.bytes(), data.len() as u64);
        let file = sealed::tests::file_name(&held.body);
        drop(held);

        // Small bodies stay on the heap.
        cache.insert(obj("a", "index.m3u8", 2, 400));
        let playlist = cache.get(&a, &ObjectName::new("index.m3u8").unwrap()).unwrap();
        assert!(sealed::SealedSlice::find(&playlist.body).is_none());

        // Newer segments push s1 out (the bound is 1 MiB), and its file goes with it.
        for seq in 3..12 {
            cache.insert(obj_with("a", &format!("s{seq}.ts"), seq, Bytes::from(data.clone())));
        }
        assert!(cache.get(&a, &ObjectName::new("s1.ts").unwrap()).is_none());
        assert_eq!(sealed::tests::traces_of(&file), Vec::<String>::new(), "the evicted body's file is gone");
    }

    #[test]
    fn a_body_that_cannot_be_sealed_stays_on_the_heap() {
        let cache = Cache::build(1 << 20, "t", Some(|body, _| sealed::seal(body, 0)));
        let heap = obj("a", "s1.ts", 1, sealed::MIN_SEALED_BYTES);
        assert_eq!(cache.insert(heap.clone()), Inserted::New);
        let held = cache.get(&StreamName::new("a").unwrap(), &ObjectName::new("s1.ts").unwrap()).unwrap();
        assert!(Arc::ptr_eq(&held, &heap), "the object itself is kept");
    }
}
