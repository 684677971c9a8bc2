//! Media types: what an object's file name says about it.
//!
//! The origin labels each object with the content type its extension implies; the edge sends that type
//! back to viewers and picks an object's cache lifetime by whether it is a playlist (rewritten under the
//! same name every segment) or not (a segment, part, init segment or subtitle: immutable once published).
//! Pure rules on names, no I/O.

use crate::id::ObjectName;

/// The content types lightpath names itself, so that a reply can carry them without a copy.
pub const CONTENT_TYPES: [&str; 8] = [
    "application/vnd.apple.mpegurl",
    "video/mp2t",
    "video/iso.segment",
    "video/mp4",
    "audio/mp4",
    "audio/aac",
    "text/vtt",
    "application/octet-stream",
];

/// The MIME type of a file name, by its extension (case-insensitive); `application/octet-stream` for
/// anything else.
pub fn content_type(name: &ObjectName) -> &'static str {
    let ext = name.as_str().rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("m4a") => "audio/mp4",
        Some("aac") => "audio/aac",
        Some("vtt") => "text/vtt",
        Some("webvtt") => "text/vtt",
        _ => "application/octet-stream",
    }
}

/// The static copy of `content_type` when it is one of [`CONTENT_TYPES`] (an object from another
/// origin's version may carry any valid type).
pub fn known_content_type(content_type: &str) -> Option<&'static str> {
    CONTENT_TYPES.iter().find(|t| **t == content_type).copied()
}

/// Whether a name is a playlist: it changes under the same name, where every other object is immutable.
pub fn is_playlist(name: &ObjectName) -> bool {
    name.as_str().to_ascii_lowercase().ends_with(".m3u8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ObjectName {
        ObjectName::new(s).unwrap()
    }

    #[test]
    fn content_types_follow_the_extension() {
        for (file, expected) in [
            ("index.m3u8", "application/vnd.apple.mpegurl"),
            ("SEG1.TS", "video/mp2t"),
            ("part3.m4s", "video/iso.segment"),
            ("init.mp4", "video/mp4"),
            ("audio.m4a", "audio/mp4"),
            ("a.aac", "audio/aac"),
            ("subs.vtt", "text/vtt"),
            ("subs.webvtt", "text/vtt"),
            ("notes.txt", "application/octet-stream"),
            ("noextension", "application/octet-stream"),
        ] {
            assert_eq!(content_type(&name(file)), expected, "{file}");
        }
    }

    #[test]
    fn every_type_named_here_is_known() {
        for file in ["a.m3u8", "a.ts", "a.m4s", "a.mp4", "a.m4a", "a.aac", "a.vtt", "a.bin"] {
            let t = content_type(&name(file));
            assert_eq!(known_content_type(t), Some(t));
        }
        assert_eq!(known_content_type("video/mp4; codecs=\"avc1.64001f\""), None);
    }

    #[test]
    fn only_m3u8_names_are_playlists() {
        assert!(is_playlist(&name("index.m3u8")) && is_playlist(&name("LOW.M3U8")));
        assert!(!is_playlist(&name("seg1.ts")) && !is_playlist(&name("m3u8.ts")));
    }
}
