//! HLS as pure code: generating a live media playlist with a sliding window, (in [`media`]) the media-type
//! rules for object names, (in [`numbering`]) how a segment's name numbers it, and (in [`tags`]) the few
//! playlist tags the origin acts on.
//!
//! The mesh does not parse video; only the origin-side tools (the demo's built-in publisher today, and the
//! edge's LL-HLS features later) need to read or write playlists, and the origin and the edge need to know
//! what a file name holds. No clock and no I/O here: durations and the media sequence are the caller's.

pub mod check;
pub mod dash;
pub mod fmp4;
pub mod ll;
pub mod media;
pub mod numbering;
pub mod parts;
pub mod tags;

use std::collections::VecDeque;
use std::fmt::Write;

/// One segment of a live playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The URI as written in the playlist (relative to the playlist).
    pub uri: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Whether a timestamp discontinuity comes before this segment.
    pub discontinuity: bool,
}

/// A live media playlist keeping the newest `window` segments.
#[derive(Debug, Clone)]
pub struct LivePlaylist {
    window: usize,
    target_duration: u32,
    segments: VecDeque<Segment>,
    /// Media sequence number of the first segment in the window.
    media_sequence: u64,
    /// Discontinuities that slid out of the window.
    discontinuity_sequence: u64,
}

impl LivePlaylist {
    /// A playlist keeping `window` segments of at most `target_duration` seconds.
    pub fn new(window: usize, target_duration: u32) -> Self {
        Self {
            window: window.max(1),
            target_duration,
            segments: VecDeque::new(),
            media_sequence: 0,
            discontinuity_sequence: 0,
        }
    }

    /// Appends a segment, sliding the oldest out of the window.
    pub fn push(&mut self, segment: Segment) {
        self.segments.push_back(segment);
        while self.segments.len() > self.window {
            let gone = self.segments.pop_front().expect("longer than the window");
            self.media_sequence += 1;
            // EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuity tags no longer in the playlist.
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
        }
    }

    /// The media sequence number of the first segment listed.
    pub fn media_sequence(&self) -> u64 {
        self.media_sequence
    }

    /// The playlist text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        // A discontinuity on the first listed segment is counted here instead of tagged below.
        let first = self.segments.front().is_some_and(|s| s.discontinuity) as u64;
        let discontinuity_sequence = self.discontinuity_sequence + first;
        if discontinuity_sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}");
        }
        for (i, s) in self.segments.iter().enumerate() {
            if s.discontinuity && i > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(out, "#EXTINF:{:.3},\n{}", s.duration, s.uri);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64, disc: bool) -> Segment {
        Segment { uri: format!("seg{n}.ts"), duration: 2.0, discontinuity: disc }
    }

    #[test]
    fn window_slides_and_counts_discontinuities() {
        let mut p = LivePlaylist::new(3, 2);
        for n in 0..4 {
            p.push(seg(n, n == 2));
        }
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("DISCONTINUITY-SEQUENCE"), "{text}");
        assert!(text.contains("seg1.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nseg2.ts"), "{text}");
        p.push(seg(4, false));
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        p.push(seg(5, false));
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    }
}
