//! Whether a name missing from the cache is worth waiting for: the rule that keeps a viewer from holding
//! its connection for the whole `edge.wait_ms` on a name that will never come.
//!
//! A player asks for the segments its playlist lists, which are either cached or a moment away. A name far
//! beyond the newest segment (`seg99999.ts` while the stream is at `seg120.ts`) will not arrive within any
//! wait, and a name older than the newest that is not cached has left the live window (aged out, or deleted
//! by its publisher) and will not come back. Both are answered at once. What a cached playlist still lists
//! is always waited for: the mesh sends a stream's window newest first, so just after a subscription
//! `seg118.ts` may be on its way while `seg120.ts` already landed, and a publisher restarted with a fresh
//! counter lists low numbers while the cache still holds the old session's high ones.
//!
//! Pure: it reads the objects the caller passes and decides; the edge does the waiting.

use crate::cache::Object;
use crate::hls::media::is_playlist;
use crate::hls::numbering::{mentions, numbered};

/// How many segments beyond the newest one a request may name and still be waited for: the next one is
/// what a player that read a fresh playlist asks for first, and one more covers a playlist that ran ahead
/// of the segment's arrival here.
pub const AHEAD: u64 = 2;

/// What to do about a request for a name the cache does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The name may arrive soon: wait for it.
    Wait,
    /// The name is more than [`AHEAD`] segments beyond `newest`, the newest cached segment of its counter.
    TooFar {
        /// The newest cached name of the same counter.
        newest: String,
    },
    /// The name is older than `newest` and no cached playlist lists it: it left the live window.
    Gone {
        /// The newest cached name of the same counter.
        newest: String,
    },
}

/// Decides about `name`, which the cache of its stream does not hold, given what it does hold (`cached`,
/// the stream's objects in any order).
pub fn expect<'a>(name: &str, cached: impl IntoIterator<Item = &'a Object> + Clone) -> Expectation {
    let Some(wanted) = numbered(name) else {
        return Expectation::Wait; // playlists and unnumbered files: nothing to compare with
    };
    let newest = cached
        .clone()
        .into_iter()
        .filter_map(|o| {
            let n = numbered(o.header.name.as_str())?;
            n.same_counter(&wanted).then_some((n.number, o))
        })
        .max_by_key(|(number, _)| *number);
    let Some((newest_number, newest)) = newest else {
        return Expectation::Wait; // nothing of this counter yet: the stream may be starting
    };
    let listed = || cached.clone().into_iter().any(|o| is_playlist(&o.header.name) && mentions(&o.body, name));
    let newest = || newest.header.name.as_str().to_owned();
    if wanted.number > newest_number.saturating_add(AHEAD) && !listed() {
        Expectation::TooFar { newest: newest() }
    } else if wanted.number < newest_number && !listed() {
        Expectation::Gone { newest: newest() }
    } else {
        Expectation::Wait
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::id::{ObjectName, StreamName};
    use crate::wire::ObjectHeader;

    fn object(name: &str, body: &str) -> Object {
        let header = ObjectHeader {
            stream: StreamName::new("s").unwrap(),
            name: ObjectName::new(name).unwrap(),
            version: 1,
            seq: 1,
            content_type: String::new(),
            duration_ms: 0,
            born_unix_ms: 0,
            len: body.len() as u64,
        };
        Object::new(header, Bytes::copy_from_slice(body.as_bytes()))
    }

    fn window(names: &[&str], playlist: &[&str]) -> Vec<Object> {
        let mut objects: Vec<Object> = names.iter().map(|n| object(n, "media")).collect();
        let text: String = playlist.iter().map(|n| format!("#EXTINF:2.0,\n{n}\n")).collect();
        objects.push(object("index.m3u8", &format!("#EXTM3U\n{text}")));
        objects
    }

    #[test]
    fn far_future_and_old_names_are_not_waited_for() {
        let cached = window(&["seg118.ts", "seg119.ts", "seg120.ts"], &["seg118.ts", "seg119.ts", "seg120.ts"]);
        let newest = || "seg120.ts".to_owned();
        assert_eq!(expect("seg121.ts", &cached), Expectation::Wait);
        assert_eq!(expect("seg122.ts", &cached), Expectation::Wait);
        assert_eq!(expect("seg123.ts", &cached), Expectation::TooFar { newest: newest() });
        assert_eq!(expect("seg99999.ts", &cached), Expectation::TooFar { newest: newest() });
        assert_eq!(expect("seg117.ts", &cached), Expectation::Gone { newest: newest() });
        assert_eq!(expect("seg0.ts", &cached), Expectation::Gone { newest: newest() });
    }

    #[test]
    fn listed_names_are_waited_for_whatever_their_number() {
        // Newest first after a subscription: seg120 landed, seg118 is on its way.
        let cached = window(&["seg120.ts"], &["seg118.ts", "seg119.ts", "seg120.ts"]);
        assert_eq!(expect("seg118.ts", &cached), Expectation::Wait);
        // A restarted publisher counts from 0 again while the old session's segments are still cached.
        let cached = window(&["index41.m4s", "index0.m4s"], &["index0.m4s", "index1.m4s"]);
        assert_eq!(expect("index1.m4s", &cached), Expectation::Wait);
        // A playlist that ran far ahead of the segments lists them.
        let cached = window(&["seg1.ts"], &["seg1.ts", "seg2.ts", "seg3.ts", "seg4.ts", "seg5.ts"]);
        assert_eq!(expect("seg5.ts", &cached), Expectation::Wait);
    }

    #[test]
    fn other_counters_and_unnumbered_names_are_waited_for() {
        let cached = window(&["v0_seg500.ts", "part9.m4s"], &[]);
        assert_eq!(expect("v1_seg3.ts", &cached), Expectation::Wait, "another variant's counter");
        assert_eq!(expect("v0_seg3.m4s", &cached), Expectation::Wait, "another extension");
        assert_eq!(expect("init.mp4", &cached), Expectation::Wait);
        assert_eq!(expect("other.m3u8", &cached), Expectation::Wait);
        assert_eq!(expect("seg3.ts", &Vec::<Object>::new()), Expectation::Wait, "nothing cached yet");
        assert_eq!(expect("part20.m4s", &cached), Expectation::TooFar { newest: "part9.m4s".into() });
    }
}
