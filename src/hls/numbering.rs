//! Segment numbering: what a media file name says about its place in a live stream.
//!
//! Packagers number a stream's media files in a name with a running counter: ffmpeg writes `index0.ts`,
//! `index1.ts`, ... (or `.m4s` for CMAF), LL-HLS packagers `part7.m4s`, multi-variant streams one counter per
//! variant (`v0_seg12.ts`, `v1_seg12.ts`). [`numbered`] reads a name as prefix + number + media extension,
//! so that the edge can compare a requested name with the newest one of the same counter (same prefix and
//! extension) that it holds. [`mentions`] tells whether a playlist refers to a name, for the edge to tell a
//! segment still on its way (listed) from one that left the live window (not listed).
//!
//! Pure rules on names and playlist text; deciding what to answer is the edge's.

/// The extensions of media files that carry a running number. Playlists (`.m3u8`) are rewritten under one
/// name and are not numbered; init segments usually carry no number (`init.mp4`), and when they do
/// (`init_0.mp4`, one per variant) the number names a variant, which [`numbered`] still reads as a counter
/// that never moves on.
const NUMBERED_EXTENSIONS: [&str; 7] = ["ts", "m4s", "mp4", "m4a", "aac", "vtt", "webvtt"];

/// The longest number read: 19 digits always fit a `u64`.
const MAX_DIGITS: usize = 19;

/// A media file name read as `{prefix}{number}.{extension}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered<'a> {
    /// Everything before the number (may be empty): the counter's name.
    pub prefix: &'a str,
    /// The number.
    pub number: u64,
    /// The extension, as written.
    pub extension: &'a str,
}

impl Numbered<'_> {
    /// Whether `other` counts on the same counter: same prefix, same extension (case-insensitively).
    pub fn same_counter(&self, other: &Numbered<'_>) -> bool {
        self.prefix == other.prefix && self.extension.eq_ignore_ascii_case(other.extension)
    }
}

/// Reads `name` as `{prefix}{number}.{extension}` when its extension is a media one and the part before it
/// ends in 1 to 19 decimal digits. `None` for playlists, names without a number (`init.mp4`) and numbers
/// too long to be a counter.
pub fn numbered(name: &str) -> Option<Numbered<'_>> {
    let (stem, extension) = name.rsplit_once('.')?;
    if !NUMBERED_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(extension)) {
        return None;
    }
    let digits = stem.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > MAX_DIGITS {
        return None;
    }
    let (prefix, number) = stem.split_at(stem.len() - digits);
    // A longer run of digits than MAX_DIGITS was cut above only if the byte before is not a digit.
    if prefix.as_bytes().last().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(Numbered { prefix, number: number.parse().ok()?, extension })
}

/// Whether `playlist` (a media playlist's text) refers to the file `name`: as a URI line, or in a tag's
/// `URI="..."` attribute (`EXT-X-MAP`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`). URIs are compared by their last
/// path component without a query, since a playlist may write them relative or absolute.
pub fn mentions(playlist: &[u8], name: &str) -> bool {
    let Ok(text) = std::str::from_utf8(playlist) else {
        return false;
    };
    let file = |uri: &str| {
        let uri = uri.split(['?', '#']).next().unwrap_or(uri);
        uri.rsplit('/').next().unwrap_or(uri) == name
    };
    text.lines().map(str::trim).any(|line| {
        if line.starts_with('#') {
            line.match_indices("URI=\"").any(|(at, attr)| {
                let value = &line[at + attr.len()..];
                value.split('"').next().is_some_and(file)
            })
        } else {
            !line.is_empty() && file(line)
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn packager_names_read_as_counters() {
        let n = |name| numbered(name).map(|n| (n.prefix, n.number, n.extension));
        assert_eq!(n("seg123.ts"), Some(("seg", 123, "ts")));
        assert_eq!(n("index5.m4s"), Some(("index", 5, "m4s")));
        assert_eq!(n("part7.m4s"), Some(("part", 7, "m4s")));
        assert_eq!(n("v1_seg007.TS"), Some(("v1_seg", 7, "TS")));
        assert_eq!(n("12.ts"), Some(("", 12, "ts")));
        assert_eq!(n("init_0.mp4"), Some(("init_", 0, "mp4")));
        assert_eq!(n("seg99999.ts"), Some(("seg", 99_999, "ts")));
        for unnumbered in ["index.m3u8", "index3.m3u8", "init.mp4", "seg.ts", "seg12", "seg12.txt", "seg12.ts.bak"] {
            assert_eq!(numbered(unnumbered), None, "{unnumbered}");
        }
        assert_eq!(numbered("seg99999999999999999999.ts"), None, "20 digits is not a counter");
    }

    #[test]
    fn counters_are_told_apart_by_prefix_and_extension() {
        let a = numbered("v0_seg3.ts").unwrap();
        assert!(a.same_counter(&numbered("v0_seg9.TS").unwrap()));
        assert!(!a.same_counter(&numbered("v1_seg9.ts").unwrap()));
        assert!(!a.same_counter(&numbered("v0_seg9.m4s").unwrap()));
    }

    #[test]
    fn playlists_mention_uris_lines_and_attributes() {
        let playlist = b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nindex4.m4s\n#EXTINF:2.0,\n\
            https://cdn.example/live/s/index5.m4s?token=x\n#EXT-X-PART:DURATION=0.5,URI=\"part6.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/live/s/part7.m4s\"\n";
        for listed in ["init.mp4", "index4.m4s", "index5.m4s", "part6.m4s", "part7.m4s"] {
            assert!(mentions(playlist, listed), "{listed}");
        }
        for absent in ["index3.m4s", "index4.m4", "part8.m4s", "EXTM3U", "2.0"] {
            assert!(!mentions(playlist, absent), "{absent}");
        }
        assert!(!mentions(b"\xff\xfe", "a.ts"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any prefix that does not end in a digit, any number of up to 19 digits and any media extension read
        /// back as written.
        #[test]
        fn names_round_trip(prefix in "[A-Za-z_-]{0,12}([A-Za-z0-9_-]{0,8}[A-Za-z_-])?",
                            number in 0u64..10_000_000_000_000_000_000,
                            ext in prop::sample::select(NUMBERED_EXTENSIONS.to_vec())) {
            let name = format!("{prefix}{number}.{ext}");
            let read = numbered(&name).expect("numbered");
            prop_assert_eq!(read, Numbered { prefix: &prefix, number, extension: ext });
        }

        /// Whatever the name, reading it never panics, and a name read as numbered is rebuilt from its parts
        /// up to leading zeros.
        #[test]
        fn any_name_reads_consistently(name in "[A-Za-z0-9._-]{0,40}") {
            if let Some(n) = numbered(&name) {
                let stem = &name[..name.len() - n.extension.len() - 1];
                prop_assert!(stem.starts_with(n.prefix));
                let digits = &stem[n.prefix.len()..];
                prop_assert_eq!(digits.parse::<u64>().ok(), Some(n.number));
                prop_assert!(!n.prefix.ends_with(|c: char| c.is_ascii_digit()));
            }
        }

        /// A playlist listing names mentions each of them and no other numbered name.
        #[test]
        fn a_playlist_mentions_what_it_lists(first in 0u64..1000, count in 1usize..8, other in 0u64..2000) {
            let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
            for n in first..first + count as u64 {
                text.push_str(&format!("#EXTINF:2.000,\nseg{n}.ts\n"));
            }
            let listed = (first..first + count as u64).contains(&other);
            prop_assert_eq!(mentions(text.as_bytes(), &format!("seg{other}.ts")), listed);
        }
    }
}
