//! The file names ffmpeg's dash muxer uploads, and the names the origin gives what it makes of them.
//!
//! With its default `init_seg_name` and `media_seg_name`, `ffmpeg -f dash` pushes `init-stream{R}.m4s`
//! (representation R's init segment), `chunk-stream{R}-{NNNNN}.m4s` (its segments, chunked as they are
//! encoded) and the DASH manifest (`*.mpd`). The origin serves each representation as the LL-HLS rendition
//! `stream{R}.m3u8`, with parts named after their segment (`chunk-stream0-00007.3.m4s` is part 3 of
//! segment 7) and a multivariant `index.m3u8`. Pure rules on names.

/// What a dash-muxer upload is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DashName<'a> {
    /// `init-{rendition}.m4s`.
    Init {
        /// `stream0`, ...
        rendition: &'a str,
    },
    /// `chunk-{rendition}-{number}.m4s`.
    Media {
        /// `stream0`, ...
        rendition: &'a str,
        /// The segment's number: its media sequence number.
        number: u64,
        /// Digits the number is written with (zero-padded).
        width: usize,
    },
    /// A DASH manifest: not served (the origin writes HLS playlists).
    Manifest,
}

/// Reads a name as one of the dash muxer's; `None` for anything else (HLS publishing goes on unchanged).
pub fn dash_name(name: &str) -> Option<DashName<'_>> {
    if name.ends_with(".mpd") {
        return Some(DashName::Manifest);
    }
    let stem = name.strip_suffix(".m4s")?;
    if let Some(rendition) = stem.strip_prefix("init-") {
        return valid(rendition).then_some(DashName::Init { rendition });
    }
    let (rendition, digits) = stem.strip_prefix("chunk-")?.rsplit_once('-')?;
    if !valid(rendition) || digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(DashName::Media { rendition, number: digits.parse().ok()?, width: digits.len() })
}

fn valid(rendition: &str) -> bool {
    !rendition.is_empty() && rendition.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The media playlist of a rendition.
pub fn playlist_name(rendition: &str) -> String {
    format!("{rendition}.m3u8")
}

/// The name of segment `number` of a rendition, as the muxer writes it.
pub fn segment_name(rendition: &str, number: u64, width: usize) -> String {
    format!("chunk-{rendition}-{number:0width$}.m4s")
}

/// The name of part `index` of segment `number`.
pub fn part_name(rendition: &str, number: u64, width: usize, index: u64) -> String {
    format!("chunk-{rendition}-{number:0width$}.{index}.m4s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_muxer_names_read_back() {
        assert_eq!(dash_name("init-stream0.m4s"), Some(DashName::Init { rendition: "stream0" }));
        assert_eq!(
            dash_name("chunk-stream1-00042.m4s"),
            Some(DashName::Media { rendition: "stream1", number: 42, width: 5 })
        );
        assert_eq!(dash_name("manifest.mpd"), Some(DashName::Manifest));
        for other in ["index.m3u8", "seg1.ts", "chunk-stream0.m4s", "chunk--1.m4s", "init-.m4s", "chunk-s-1x.m4s"] {
            assert_eq!(dash_name(other), None, "{other}");
        }
        assert_eq!(segment_name("stream0", 42, 5), "chunk-stream0-00042.m4s");
        assert_eq!(part_name("stream0", 42, 5, 3), "chunk-stream0-00042.3.m4s");
        assert_eq!(dash_name(&part_name("stream0", 42, 5, 3)), None, "a part is not an upload");
    }
}
