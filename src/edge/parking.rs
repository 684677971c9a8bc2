//! Where blocking playlist reloads wait for what they asked for.
//!
//! Many viewers of a Low-Latency stream park on the same next part. Waking each of them whenever any object
//! of the stream lands (every part, every playlist version) would cost each parked request a check per
//! object: with 10,000 parked that is 200,000 wake-ups a second for a stream of 0.2 s parts. Instead one
//! watcher task per playlist with parked requests reads each new version once ([`Parking::position`],
//! memoised per version) and wakes only the requests it settles: the ones it satisfies, or can no longer
//! satisfy (a restarted publisher's numbering). Requests asking for the same part share one [`Lot`], which
//! carries the playlist version that satisfied them, so a woken request answers without reading anything
//! again. The watcher ends when no request is parked on its playlist any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cache::{Cache, Object};
use crate::hls::ll::{blocking, Blocking, Position};
use crate::id::{ObjectName, StreamName};

/// Playlist positions remembered (one per playlist of the streams being watched); past it they are read
/// again.
const MAX_POSITIONS: usize = 4096;

/// How often a watcher whose stream is quiet looks for requests that stopped waiting (timed out or
/// disconnected), so that it ends once none is left.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A playlist: its stream and name.
type Playlist = (StreamName, ObjectName);

/// What a blocking reload waits for: a segment and, optionally, a part of it.
type Target = (u64, Option<u64>);

/// The requests waiting for one target of one playlist.
#[derive(Default)]
pub struct Lot {
    /// Woken once the playlist settles the target.
    pub settled: Notify,
    /// The playlist version that lists the target, once one does (a target settled otherwise, by a
    /// playlist that can no longer list it, leaves it empty and each request judges for itself).
    pub ready: OnceLock<Arc<Object>>,
}

/// The parked requests of an edge, and the playlist positions they are judged by.
#[derive(Default)]
pub struct Parking {
    /// Each playlist version's position (`None`: not a media playlist), read once however many look.
    positions: Mutex<HashMap<Playlist, (u64, Option<Position>)>>,
    /// Per playlist with a watcher: one lot per target someone waits for.
    lots: Mutex<HashMap<Playlist, HashMap<Target, Arc<Lot>>>>,
}

impl Parking {
    /// The cached playlist and its position, read once per version.
    pub fn position(&self, cache: &Cache, stream: &StreamName, name: &ObjectName) -> Option<(Arc<Object>, Position)> {
        let obj = cache.get(stream, name)?;
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (stream.clone(), name.clone());
        let position = match positions.get(&key) {
            Some((version, position)) if *version == obj.header.version => *position,
            _ => {
                let position = std::str::from_utf8(&obj.body).ok().and_then(Position::read);
                if positions.len() >= MAX_POSITIONS {
                    positions.clear();
                }
                positions.insert(key, (obj.header.version, position));
                position
            }
        };
        Some((obj, position?))
    }

    /// The lot of the requests waiting for `target` of playlist `name`, woken once the playlist settles it;
    /// starts the playlist's watcher if it has none. Keep the returned handle while waiting: a target
    /// nobody holds is forgotten.
    pub fn park(
        self: &Arc<Self>,
        cache: &Arc<Cache>,
        stream: &StreamName,
        name: &ObjectName,
        target: Target,
    ) -> Arc<Lot> {
        let mut lots = self.lots.lock().unwrap_or_else(|e| e.into_inner());
        let playlist = (stream.clone(), name.clone());
        let lot = match lots.get_mut(&playlist) {
            Some(lot) => lot,
            None => {
                // Subscribed before the first request checks the playlist, so no version is missed.
                let changes = cache.watch(stream);
                tokio::spawn(self.clone().watch(cache.clone(), playlist.clone(), changes));
                lots.entry(playlist).or_default()
            }
        };
        lot.entry(target).or_default().clone()
    }

    /// A playlist's watcher: judges each version once and wakes the requests it settles.
    async fn watch(
        self: Arc<Self>,
        cache: Arc<Cache>,
        playlist: Playlist,
        mut changes: tokio::sync::watch::Receiver<u64>,
    ) {
        let (stream, name) = &playlist;
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ended = tokio::select! {
                changed = changes.changed() => changed.is_err(),
                _ = prune.tick() => false,
            };
            let read = self.position(&cache, stream, name);
            let mut lots = self.lots.lock().unwrap_or_else(|e| e.into_inner());
            let Some(targets) = lots.get_mut(&playlist) else { return };
            targets.retain(|&(msn, part), lot| {
                let judged = read.as_ref().map(|(obj, p)| (obj, blocking(p, msn, part)));
                let settled = ended || judged.as_ref().is_some_and(|(_, b)| *b != Blocking::Wait);
                if settled {
                    if let Some((obj, Blocking::Ready)) = judged {
                        let _ = lot.ready.set(obj.clone());
                    }
                    lot.settled.notify_waiters();
                }
                // Held by a waiting request besides this map.
                !settled && Arc::strong_count(lot) > 1
            });
            if targets.is_empty() {
                lots.remove(&playlist);
                return;
            }
        }
    }

    /// Playlists with a watcher now.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::FutureExt;

    use super::*;
    use crate::hls::ll::{ListedPart, LowLatencyPlaylist};
    use crate::wire::ObjectHeader;

    /// Version `version` of a playlist of two complete segments and `open` parts of segment 3.
    fn playlist(version: u64, open: usize) -> Arc<Object> {
        let mut p = LowLatencyPlaylist::new("init.mp4", 2, 0.5, 6);
        for msn in 1..=3u64 {
            p.begin(msn, &format!("s{msn}.m4s"), 1_700_000_000_000 + msn * 2000);
            for k in 0..if msn == 3 { open } else { 4 } {
                p.push_part(ListedPart { uri: format!("s{msn}.{k}.m4s"), duration: 0.5, independent: k == 0 });
            }
            if msn < 3 {
                p.end();
            }
        }
        let body = Bytes::from(p.render(&[]));
        let header = ObjectHeader {
            stream: StreamName::new("s").unwrap(),
            name: ObjectName::new("index.m3u8").unwrap(),
            version,
            seq: version,
            content_type: "application/vnd.apple.mpegurl".into(),
            duration_ms: 0,
            born_unix_ms: 0,
            len: body.len() as u64,
        };
        Arc::new(Object::new(header, body))
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_version_wakes_only_the_requests_it_settles_and_the_watcher_ends_with_them() {
        let cache = Cache::new(1 << 20, "edge");
        let parking = Arc::new(Parking::default());
        let (stream, name) = (StreamName::new("s").unwrap(), ObjectName::new("index.m3u8").unwrap());
        cache.insert(playlist(1, 1));
        let next = parking.park(&cache, &stream, &name, (3, Some(1)));
        let later = parking.park(&cache, &stream, &name, (3, Some(3)));
        let (mut next_woken, mut later_woken) = (Box::pin(next.settled.notified()), Box::pin(later.settled.notified()));
        next_woken.as_mut().enable();
        later_woken.as_mut().enable();
        assert_eq!(parking.watched(), 1);

        // An object that settles nothing wakes nobody.
        cache.insert(playlist(2, 1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(next_woken.as_mut().now_or_never().is_none());

        // Part 1 of segment 3 listed: that request alone is woken.
        cache.insert(playlist(3, 2));
        tokio::time::timeout(Duration::from_secs(1), next_woken).await.expect("the settled request is woken");
        assert_eq!(next.ready.get().map(|p| p.header.version), Some(3), "with the version that lists its part");
        assert!(later_woken.as_mut().now_or_never().is_none());
        assert!(later.ready.get().is_none());

        // Requests that stop waiting are forgotten, and the watcher ends with the last of them.
        drop(later_woken);
        drop((later, next));
        tokio::time::sleep(PRUNE_EVERY * 2).await;
        assert_eq!(parking.watched(), 0);
    }
}
