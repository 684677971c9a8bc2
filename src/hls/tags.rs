//! Reading the few tags of a publisher's media playlist that the origin acts on: the target duration (a
//! stream ends after three of them of silence), the media sequence (going back means the publisher started
//! over), and `EXT-X-ENDLIST` (which the origin adds when the stream ends). Nothing else of the playlist is
//! interpreted or changed.

use std::time::Duration;

const TARGET: &str = "#EXT-X-TARGETDURATION:";
const SEQUENCE: &str = "#EXT-X-MEDIA-SEQUENCE:";
const ENDLIST: &str = "#EXT-X-ENDLIST";

fn tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim_end().strip_prefix(tag)).map(str::trim)
}

/// `EXT-X-TARGETDURATION`, when present and sane (1 s to 1 hour).
pub fn target_duration(text: &str) -> Option<Duration> {
    let secs: u64 = tag(text, TARGET)?.parse().ok()?;
    (1..=3600).contains(&secs).then(|| Duration::from_secs(secs))
}

/// `EXT-X-MEDIA-SEQUENCE` (0 when a media playlist leaves it out, as the spec says); `None` for a playlist
/// that lists no media (a multivariant playlist).
pub fn media_sequence(text: &str) -> Option<u64> {
    if !is_media_playlist(text) {
        return None;
    }
    Some(tag(text, SEQUENCE).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Whether the playlist lists media segments (it has a target duration), rather than variants.
pub fn is_media_playlist(text: &str) -> bool {
    text.starts_with("#EXTM3U") && tag(text, TARGET).is_some()
}

/// Whether the playlist says the stream ended.
pub fn has_endlist(text: &str) -> bool {
    text.lines().any(|l| l.trim_end() == ENDLIST)
}

/// The media playlist with `EXT-X-ENDLIST` appended, so that players stop asking for more; `None` when it is
/// not a media playlist or says so already.
pub fn with_endlist(text: &str) -> Option<String> {
    if !is_media_playlist(text) || has_endlist(text) {
        return None;
    }
    let mut out = text.trim_end().to_owned();
    out.push('\n');
    out.push_str(ENDLIST);
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n\
                        #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000000,\nindex41.m4s\n#EXTINF:2.000000,\nindex42.m4s\n";

    #[test]
    fn reads_the_tags_the_origin_acts_on() {
        assert_eq!(target_duration(LIVE), Some(Duration::from_secs(2)));
        assert_eq!(media_sequence(LIVE), Some(41));
        assert!(!has_endlist(LIVE));
        let ended = with_endlist(LIVE).unwrap();
        assert!(ended.starts_with(LIVE) && ended.ends_with("index42.m4s\n#EXT-X-ENDLIST\n"), "{ended}");
        assert!(has_endlist(&ended));
        assert_eq!(with_endlist(&ended), None, "ended once");
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlow/index.m3u8\n";
        assert_eq!(with_endlist(master), None);
        assert_eq!(media_sequence(master), None);
        assert_eq!(media_sequence("#EXTM3U\n#EXT-X-TARGETDURATION:6\n"), Some(0));
        assert_eq!(target_duration("#EXTM3U\n#EXT-X-TARGETDURATION:0\n"), None);
        assert_eq!(target_duration("#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n"), Some(Duration::from_secs(4)));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(text in ".{0,400}") {
            let _ = (target_duration(&text), media_sequence(&text), with_endlist(&text));
        }
    }
}
