//! What a node knows of every stream's life: who owns it (an origin and its epoch), whether it ended, and
//! whether an operator took it down.
//!
//! A stream has one owner at a time, named by the newest [`Frame::Announce`](crate::wire::Frame::Announce):
//! epochs only grow, and an origin that starts a stream (its first publish, a publish after the stream
//! ended, a publisher that restarted, a backup taking over, the primary coming back) picks an epoch above
//! every one it knows. Object versions are numbered from the epoch ([`first_version`]), so versions grow
//! across owners and restarts: every cache keeps the newest owner's bytes. The epoch also has the wall
//! clock as a floor, so that an origin that restarted without having heard of the stream yet still starts
//! above its old epoch.
//!
//! The rules of who may publish are [`Registry::claim`]'s; the relay feeds it what it sees of the stream
//! (when its objects last arrived here) and floods what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::id::{NodeId, StreamName};
use crate::wire::StreamPhase;
pub use crate::wire::Takedown;

/// The first object version of an epoch: versions of a newer epoch are above every version of an older one
/// (an epoch would need more than a thousand objects per millisecond of its life to overlap the next).
pub fn first_version(epoch: u64) -> u64 {
    epoch.saturating_mul(1000)
}

/// A stream's owner as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub origin: NodeId,
    pub epoch: u64,
    /// The origin holds the stream as a configured backup.
    pub backup: bool,
    /// When the stream ended (its Withdraw arrived, or its publisher fell silent here), if it did.
    pub ended: Option<Duration>,
}

/// How an origin asks to publish an object of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// This origin is configured as the stream's backup.
    pub backup: bool,
    /// The publisher started over (its playlist's media sequence went back, or it re-sent a segment name
    /// with other bytes): the stream starts a new epoch.
    pub restart: bool,
    /// Unix time in milliseconds: the floor of a new epoch.
    pub unix_ms: u64,
    /// The stream's target duration, when a playlist said it: the stream ends after three of them of
    /// silence.
    pub target: Option<Duration>,
}

/// Why an origin may not publish a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An operator took the stream down.
    #[error("stream {stream} is taken down: {reason}")]
    TakenDown { stream: StreamName, reason: String },
    /// Another origin owns the stream and its publisher is live.
    #[error("stream {stream} is live at origin {origin}; publish there")]
    Owned { stream: StreamName, origin: NodeId },
    /// This origin is the stream's backup; it takes over once the owner's publisher has been silent for
    /// `after`.
    #[error("stream {stream} is live at origin {origin}; this backup takes over after {after:?} without its objects")]
    Standby { stream: StreamName, origin: NodeId, after: Duration },
}

/// What [`Registry::claim`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This origin owns the stream already, in `epoch`.
    Held { epoch: u64 },
    /// This origin starts the stream in a new `epoch` (announce it).
    Started { epoch: u64 },
}

/// Every stream's owner and every takedown this node knows.
#[derive(Debug, Default)]
pub struct Registry {
    owners: BTreeMap<StreamName, Owner>,
    /// The ended streams by when they ended: the next to forget is the first, found without a walk (a relay
    /// asks for it on every timer).
    ended: BTreeSet<(Duration, StreamName)>,
    takedowns: BTreeMap<StreamName, Takedown>,
}

impl Registry {
    pub fn owner(&self, stream: &StreamName) -> Option<&Owner> {
        self.owners.get(stream)
    }

    pub fn owners(&self) -> impl Iterator<Item = (&StreamName, &Owner)> + '_ {
        self.owners.iter()
    }

    pub fn takedowns(&self) -> impl Iterator<Item = (&StreamName, &Takedown)> + '_ {
        self.takedowns.iter()
    }

    /// The reason `stream` is taken down, if it is.
    pub fn taken_down(&self, stream: &StreamName) -> Option<&str> {
        self.takedowns.get(stream).filter(|t| t.active).map(|t| t.reason.as_str())
    }

    /// The stream's phase, when it is known at all.
    pub fn phase(&self, stream: &StreamName) -> Option<StreamPhase> {
        if self.taken_down(stream).is_some() {
            return Some(StreamPhase::TakenDown);
        }
        let owner = self.owners.get(stream)?;
        Some(if owner.ended.is_some() { StreamPhase::Ended } else { StreamPhase::Live })
    }

    /// An announcement: returns the epoch it replaced (0 for a stream new here), or `None` when it is not
    /// newer than what is known (a stale or repeated flood).
    pub fn announce(&mut self, stream: &StreamName, origin: NodeId, epoch: u64, backup: bool) -> Option<u64> {
        let old = self.owners.get(stream).map_or(0, |o| o.epoch);
        if self.owners.contains_key(stream) && old >= epoch {
            return None;
        }
        let replaced = self.owners.insert(stream.clone(), Owner { origin, epoch, backup, ended: None });
        if let Some(at) = replaced.and_then(|o| o.ended) {
            self.ended.remove(&(at, stream.clone()));
        }
        Some(old)
    }

    /// The stream ended at `origin` in `epoch`; returns whether that is news.
    pub fn end(&mut self, now: Duration, stream: &StreamName, origin: &NodeId, epoch: u64) -> bool {
        match self.owners.get_mut(stream) {
            Some(o) if &o.origin == origin && o.epoch == epoch && o.ended.is_none() => {
                o.ended = Some(now);
                self.ended.insert((now, stream.clone()));
                true
            }
            _ => false,
        }
    }

    /// Streams that ended at least `linger` ago, removed.
    pub fn forget_ended(&mut self, now: Duration, linger: Duration) -> Vec<StreamName> {
        let mut gone = Vec::new();
        while let Some((at, stream)) = self.ended.first().cloned() {
            if now < at + linger {
                break;
            }
            self.ended.pop_first();
            self.owners.remove(&stream);
            gone.push(stream);
        }
        gone
    }

    /// When the next ended stream is due to be forgotten.
    pub fn next_forget(&self, linger: Duration) -> Option<Duration> {
        self.ended.first().map(|(at, _)| *at + linger)
    }

    /// An operator's takedown or lift; returns whether it is newer than the one known.
    pub fn takedown(&mut self, stream: &StreamName, takedown: Takedown) -> bool {
        if self.takedowns.get(stream).is_some_and(|t| t.version >= takedown.version) {
            return false;
        }
        self.takedowns.insert(stream.clone(), takedown);
        true
    }

    /// Whether origin `me` may publish `stream` now, and in which epoch. `silent` is how long the stream's
    /// objects have not arrived at this node while it asked for them (`None` when it does not ask), and
    /// `takeover` how long a backup waits for that silence.
    pub fn claim(
        &self,
        me: &NodeId,
        stream: &StreamName,
        claim: &Claim,
        silent: Option<Duration>,
        takeover: Duration,
    ) -> Result<Claimed, Refused> {
        if let Some(reason) = self.taken_down(stream) {
            return Err(Refused::TakenDown { stream: stream.clone(), reason: reason.to_owned() });
        }
        let Some(owner) = self.owners.get(stream) else {
            return Ok(Claimed::Started { epoch: claim.unix_ms.max(1) });
        };
        let next = Claimed::Started { epoch: (owner.epoch + 1).max(claim.unix_ms) };
        if owner.ended.is_some() {
            return Ok(next);
        }
        if &owner.origin == me {
            return Ok(if claim.restart { next } else { Claimed::Held { epoch: owner.epoch } });
        }
        if owner.backup && !claim.backup {
            // The primary's publisher is back: the backup yields.
            return Ok(next);
        }
        if !claim.backup {
            return Err(Refused::Owned { stream: stream.clone(), origin: owner.origin.clone() });
        }
        match silent {
            Some(silent) if silent >= takeover => Ok(next),
            _ => Err(Refused::Standby { stream: stream.clone(), origin: owner.origin.clone(), after: takeover }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn stream() -> StreamName {
        StreamName::new("shop").unwrap()
    }

    fn claim(backup: bool, restart: bool, unix_ms: u64) -> Claim {
        Claim { backup, restart, unix_ms, target: None }
    }

    const TAKEOVER: Duration = Duration::from_secs(2);

    #[test]
    fn a_second_origin_is_refused_and_the_first_keeps_its_epoch() {
        let mut r = Registry::default();
        let (a, b) = (node("origin-a"), node("origin-b"));
        let first = r.claim(&a, &stream(), &claim(false, false, 5_000), None, TAKEOVER).unwrap();
        assert_eq!(first, Claimed::Started { epoch: 5_000 });
        r.announce(&stream(), a.clone(), 5_000, false);
        // Later clocks do not win: b is refused, whatever its time.
        let err = r.claim(&b, &stream(), &claim(false, false, 9_000), None, TAKEOVER).unwrap_err();
        assert_eq!(err, Refused::Owned { stream: stream(), origin: a.clone() });
        assert_eq!(
            r.claim(&a, &stream(), &claim(false, false, 9_000), None, TAKEOVER),
            Ok(Claimed::Held { epoch: 5_000 })
        );
    }

    #[test]
    fn epochs_grow_across_restarts_ends_and_slow_clocks() {
        let mut r = Registry::default();
        let a = node("origin-a");
        r.announce(&stream(), a.clone(), 5_000, false);
        // A restarted publisher, with a clock behind the epoch: one above.
        assert_eq!(
            r.claim(&a, &stream(), &claim(false, true, 10), None, TAKEOVER),
            Ok(Claimed::Started { epoch: 5_001 })
        );
        assert!(r.end(Duration::ZERO, &stream(), &a, 5_000));
        assert_eq!(r.phase(&stream()), Some(StreamPhase::Ended));
        // Anyone may start an ended stream.
        let b = node("origin-b");
        assert_eq!(
            r.claim(&b, &stream(), &claim(false, false, 7_000), None, TAKEOVER),
            Ok(Claimed::Started { epoch: 7_000 })
        );
        assert!(first_version(5_001) > first_version(5_000) + 999);
    }

    #[test]
    fn a_backup_takes_over_after_silence_and_yields_to_the_primary() {
        let mut r = Registry::default();
        let (primary, backup) = (node("origin-a"), node("origin-b"));
        r.announce(&stream(), primary.clone(), 5_000, false);
        let standby = r.claim(&backup, &stream(), &claim(true, false, 6_000), Some(Duration::from_secs(1)), TAKEOVER);
        assert!(matches!(standby, Err(Refused::Standby { .. })), "{standby:?}");
        assert!(matches!(
            r.claim(&backup, &stream(), &claim(true, false, 6_000), None, TAKEOVER),
            Err(Refused::Standby { .. })
        ));
        let took = r.claim(&backup, &stream(), &claim(true, false, 6_000), Some(TAKEOVER), TAKEOVER).unwrap();
        assert_eq!(took, Claimed::Started { epoch: 6_000 });
        r.announce(&stream(), backup.clone(), 6_000, true);
        // The primary's publisher comes back: the primary starts a newer epoch at once.
        assert_eq!(
            r.claim(&primary, &stream(), &claim(false, false, 6_500), None, TAKEOVER),
            Ok(Claimed::Started { epoch: 6_500 })
        );
        // Another backup never preempts a backup.
        let other = node("origin-c");
        assert!(matches!(
            r.claim(&other, &stream(), &claim(true, false, 6_500), None, TAKEOVER),
            Err(Refused::Standby { .. })
        ));
    }

    #[test]
    fn takedowns_refuse_publishing_until_lifted_and_only_newer_ones_count() {
        let mut r = Registry::default();
        let a = node("origin-a");
        assert!(r.takedown(&stream(), Takedown { version: 2, active: true, reason: "policy".into() }));
        let refused = r.claim(&a, &stream(), &claim(false, false, 1), None, TAKEOVER).unwrap_err();
        assert_eq!(refused, Refused::TakenDown { stream: stream(), reason: "policy".into() });
        assert_eq!(r.phase(&stream()), Some(StreamPhase::TakenDown));
        // A stale lift (flooded late) changes nothing; a newer one lifts.
        assert!(!r.takedown(&stream(), Takedown { version: 1, active: false, reason: String::new() }));
        assert!(r.taken_down(&stream()).is_some());
        assert!(r.takedown(&stream(), Takedown { version: 3, active: false, reason: String::new() }));
        assert!(r.claim(&a, &stream(), &claim(false, false, 1), None, TAKEOVER).is_ok());
    }

    #[test]
    fn stale_announcements_and_ends_change_nothing_and_ended_streams_are_forgotten() {
        let mut r = Registry::default();
        let (a, b) = (node("origin-a"), node("origin-b"));
        assert_eq!(r.announce(&stream(), a.clone(), 5, false), Some(0));
        assert_eq!(r.announce(&stream(), b.clone(), 9, false), Some(5));
        assert_eq!(r.announce(&stream(), a.clone(), 5, false), None);
        assert!(!r.end(Duration::ZERO, &stream(), &a, 5), "the old owner's end is stale");
        assert!(r.end(Duration::from_secs(1), &stream(), &b, 9));
        assert!(!r.end(Duration::from_secs(2), &stream(), &b, 9), "ended once");
        assert_eq!(r.next_forget(Duration::from_secs(60)), Some(Duration::from_secs(61)));
        assert!(r.forget_ended(Duration::from_secs(60), Duration::from_secs(60)).is_empty());
        assert_eq!(r.forget_ended(Duration::from_secs(61), Duration::from_secs(60)), vec![stream()]);
        assert!(r.owner(&stream()).is_none());
    }
}
