//! Low-Latency HLS media playlists: writing them at the origin, and what the edge reads of them.
//!
//! The origin keeps one [`LowLatencyPlaylist`] per rendition and renders it after every part it cuts
//! (`EXT-X-PART`), every segment that completes (`EXTINF`) and with the part expected next
//! (`EXT-X-PRELOAD-HINT`), under the server-control rules of the HLS specification (rfc8216bis, section
//! 4.4.3.8): blocking reloads allowed, `PART-HOLD-BACK` three part targets, delta updates for segments older
//! than `CAN-SKIP-UNTIL` (six target durations). Parts are listed for the segments of the last three
//! target durations, as the specification recommends; older segments are listed whole.
//!
//! The edge never re-renders a playlist: it reads the rendered text's [`Position`] (how far the stream has
//! got, to answer blocking reloads) and derives a delta update ([`delta`]) from it. The rendered text is the
//! one object every hop carries. Pure: wall-clock times are the caller's.

use std::collections::VecDeque;
use std::fmt::Write;

/// One part as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    /// URI relative to the playlist.
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Starts with an independent frame.
    pub independent: bool,
}

/// One segment as listed, complete or still receiving parts.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSegment {
    /// Its media sequence number.
    pub msn: u64,
    /// URI of the whole segment.
    pub uri: String,
    /// Seconds (the parts' sum until it completes).
    pub duration: f64,
    /// Wall-clock time of its first sample, Unix milliseconds (`EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_time_ms: u64,
    /// Its parts so far.
    pub parts: Vec<ListedPart>,
}

/// Another rendition's newest segment and part, for `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// That rendition's media playlist, relative to this one.
    pub uri: String,
    /// `LAST-MSN`.
    pub last_msn: u64,
    /// `LAST-PART`, if it lists parts.
    pub last_part: Option<u64>,
}

/// A rendition's live LL-HLS media playlist with a sliding window of segments.
#[derive(Debug, Clone)]
pub struct LowLatencyPlaylist {
    map_uri: String,
    target_duration: u32,
    part_target: f64,
    window: usize,
    complete: VecDeque<ListedSegment>,
    open: Option<ListedSegment>,
    hint: Option<String>,
}

impl LowLatencyPlaylist {
    /// A playlist of segments initialized by `map_uri`, of at most `target_duration` seconds, cut in parts
    /// of at most `part_target` seconds, keeping `window` complete segments.
    pub fn new(map_uri: &str, target_duration: u32, part_target: f64, window: usize) -> Self {
        Self {
            map_uri: map_uri.to_owned(),
            target_duration: target_duration.max(1),
            part_target,
            window: window.max(1),
            complete: VecDeque::new(),
            open: None,
            hint: None,
        }
    }

    /// Opens segment `msn`, named `uri`, whose first sample was captured at `program_date_time_ms`. A
    /// segment still open is closed first with the parts it has.
    pub fn begin(&mut self, msn: u64, uri: &str, program_date_time_ms: u64) {
        self.end();
        self.open =
            Some(ListedSegment { msn, uri: uri.to_owned(), duration: 0.0, program_date_time_ms, parts: Vec::new() });
    }

    /// Adds a part to the open segment (none open: ignored).
    pub fn push_part(&mut self, part: ListedPart) {
        if let Some(open) = &mut self.open {
            open.duration += part.duration;
            open.parts.push(part);
        }
    }

    /// Seconds of the open segment received so far.
    pub fn open_duration(&self) -> f64 {
        self.open.as_ref().map_or(0.0, |s| s.duration)
    }

    /// Completes the open segment: it is listed whole from now on.
    pub fn end(&mut self) {
        if let Some(done) = self.open.take() {
            self.complete.push_back(done);
            while self.complete.len() > self.window {
                self.complete.pop_front();
            }
        }
    }

    /// The part expected next, for `EXT-X-PRELOAD-HINT`.
    pub fn hint(&mut self, uri: Option<String>) {
        self.hint = uri;
    }

    /// The newest segment and part, as another rendition reports them.
    pub fn report(&self, uri: &str) -> Option<RenditionReport> {
        let last = self.open.as_ref().filter(|s| !s.parts.is_empty()).or(self.complete.back())?;
        Some(RenditionReport {
            uri: uri.to_owned(),
            last_msn: last.msn,
            last_part: last.parts.len().checked_sub(1).map(|p| p as u64),
        })
    }

    /// Number of segments and parts listed: whether there is anything to render yet.
    pub fn is_empty(&self) -> bool {
        self.complete.is_empty() && self.open.as_ref().is_none_or(|s| s.parts.is_empty())
    }

    /// The playlist text, with `reports` on the stream's other renditions.
    pub fn render(&self, reports: &[RenditionReport]) -> String {
        let mut out = String::new();
        let t = self.target_duration;
        out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{t}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}",
            6.0 * t as f64,
            3.0 * self.part_target
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", self.part_target);
        let first = self.complete.front().or(self.open.as_ref()).map_or(0, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.map_uri);
        // Parts are listed for the segments within three target durations of the live end.
        let mut from_end = self.open.as_ref().map_or(0.0, |s| s.duration);
        let mut with_parts = 0;
        for s in self.complete.iter().rev() {
            if from_end >= 3.0 * t as f64 {
                break;
            }
            with_parts += 1;
            from_end += s.duration;
        }
        let listed_whole = self.complete.len() - with_parts;
        for (i, s) in self.complete.iter().enumerate() {
            write_date(&mut out, s.program_date_time_ms);
            if i >= listed_whole {
                write_parts(&mut out, &s.parts);
            }
            let _ = writeln!(out, "#EXTINF:{:.5},\n{}", s.duration, s.uri);
        }
        if let Some(open) = self.open.as_ref().filter(|s| !s.parts.is_empty()) {
            write_date(&mut out, open.program_date_time_ms);
            write_parts(&mut out, &open.parts);
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        }
        for r in reports {
            let _ = write!(out, "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}", r.uri, r.last_msn);
            if let Some(p) = r.last_part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            out.push('\n');
        }
        out
    }
}

fn write_parts(out: &mut String, parts: &[ListedPart]) {
    for p in parts {
        let _ = write!(out, "#EXT-X-PART:DURATION={:.5},URI=\"{}\"", p.duration, p.uri);
        out.push_str(if p.independent { ",INDEPENDENT=YES\n" } else { "\n" });
    }
}

fn write_date(out: &mut String, unix_ms: u64) {
    let secs = (unix_ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    );
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// How far a rendered LL-HLS media playlist has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: u32,
    /// The newest complete segment's media sequence number, if any.
    pub last_complete: Option<u64>,
    /// How many parts of that segment the playlist lists (0 when listed whole).
    pub last_complete_parts: u64,
    /// Parts listed of the segment after it (the one still open).
    pub open_parts: u64,
    /// The media sequence number of the segment still open.
    pub open_msn: u64,
}

impl Position {
    /// Reads a media playlist as [`LowLatencyPlaylist::render`] writes it (any media playlist, in fact):
    /// `None` for text that is not one.
    pub fn read(text: &str) -> Option<Position> {
        let target_duration = super::tags::target_duration(text)?.as_secs() as u32;
        let first = super::tags::media_sequence(text)?;
        let (mut segments, mut parts, mut previous_parts) = (0u64, 0u64, 0u64);
        for line in text.lines().map(str::trim) {
            if line.starts_with("#EXT-X-PART:") {
                parts += 1;
            } else if !line.is_empty() && !line.starts_with('#') {
                segments += 1;
                previous_parts = parts;
                parts = 0;
            }
        }
        let open_msn = first + segments;
        Some(Position {
            target_duration,
            last_complete: open_msn.checked_sub(1).filter(|_| segments > 0),
            last_complete_parts: previous_parts,
            open_parts: parts,
            open_msn,
        })
    }
}

/// A blocking playlist reload's parameters (`_HLS_msn`, `_HLS_part`) and whether it asks for a delta
/// update (`_HLS_skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reload {
    /// `_HLS_msn` and `_HLS_part`: hold the reply until the playlist has them.
    pub block: Option<(u64, Option<u64>)>,
    /// `_HLS_skip=YES` or `v2`.
    pub skip: bool,
}

/// Why a playlist request's query is refused (400, as the specification asks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// A parameter is not a number, or not `YES`/`v2`.
    #[error("{name}={value:?} is not valid")]
    BadValue {
        /// The parameter.
        name: &'static str,
        /// Its value, as sent.
        value: String,
    },
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
}

impl Reload {
    /// Reads a playlist request's query string. Parameters other than the `_HLS_` ones (a signed URL's, a
    /// player's cache buster) are left alone.
    pub fn parse(query: Option<&str>) -> Result<Reload, ReloadError> {
        let (mut msn, mut part, mut skip) = (None, None, false);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |name: &'static str| {
                value.parse::<u64>().map_err(|_| ReloadError::BadValue { name, value: value.to_owned() })
            };
            match name {
                "_HLS_msn" => msn = Some(number("_HLS_msn")?),
                "_HLS_part" => part = Some(number("_HLS_part")?),
                "_HLS_skip" => match value {
                    "YES" | "v2" => skip = true,
                    _ => return Err(ReloadError::BadValue { name: "_HLS_skip", value: value.to_owned() }),
                },
                _ => {}
            }
        }
        if part.is_some() && msn.is_none() {
            return Err(ReloadError::PartWithoutMsn);
        }
        Ok(Reload { block: msn.map(|m| (m, part)), skip })
    }
}

/// What to do with a blocking reload, given the playlist's [`Position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// The playlist has what was asked for: answer now.
    Ready,
    /// Not yet: hold the request.
    Wait,
    /// More than two segments beyond the newest complete one: 400 at once.
    TooFar,
}

/// Decides a blocking reload for segment `msn` (and part `part` of it): ready once the playlist lists
/// that part, or the whole segment when no part is asked (rfc8216bis 6.2.5.2). A part index past the end
/// of a complete segment asks for the first part of the next one.
pub fn blocking(position: &Position, msn: u64, part: Option<u64>) -> Blocking {
    let complete = position.last_complete;
    if msn > complete.map_or(position.open_msn, |c| c + 2) {
        return Blocking::TooFar;
    }
    let ready = match (complete, part) {
        (Some(c), None) => msn <= c,
        (None, None) => false,
        (Some(c), Some(_)) if msn < c => true,
        (Some(c), Some(p)) if msn == c => p < position.last_complete_parts || position.open_parts > 0,
        (_, Some(p)) => msn == position.open_msn && p < position.open_parts,
    };
    if ready {
        Blocking::Ready
    } else {
        Blocking::Wait
    }
}

/// The delta update of a full media playlist (`_HLS_skip=YES`): the oldest segments, up to those within
/// `CAN-SKIP-UNTIL` seconds of the end, replaced by `EXT-X-SKIP`. `None` when the playlist allows no
/// skipping or nothing is old enough to skip.
pub fn delta(text: &str) -> Option<String> {
    let skip_until: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SERVER-CONTROL:"))?
        .split(',')
        .find_map(|a| a.strip_prefix("CAN-SKIP-UNTIL="))?
        .parse()
        .ok()?;
    // Split the text into its header and the segment blocks (each ends with its URI line).
    let mut header = Vec::new();
    let mut blocks: Vec<(Vec<&str>, f64)> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut duration = 0.0;
    let mut in_segments = false;
    for line in text.lines() {
        let segment_tag = ["#EXT-X-PROGRAM-DATE-TIME", "#EXTINF", "#EXT-X-PART:", "#EXT-X-DISCONTINUITY"]
            .iter()
            .any(|t| line.starts_with(t));
        if !in_segments && !segment_tag {
            header.push(line);
            continue;
        }
        in_segments = true;
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d.split(',').next()?.parse().ok()?;
        }
        current.push(line);
        if !line.is_empty() && !line.starts_with('#') {
            blocks.push((std::mem::take(&mut current), duration));
        }
    }
    // Skip from the start while what remains still reaches back at least CAN-SKIP-UNTIL.
    let mut remaining: f64 = blocks.iter().map(|b| b.1).sum();
    let mut skipped = 0;
    for (_, d) in &blocks {
        if remaining - d < skip_until {
            break;
        }
        remaining -= d;
        skipped += 1;
    }
    if skipped == 0 {
        return None;
    }
    let mut out = String::new();
    for line in header {
        out.push_str(line);
        out.push('\n');
    }
    let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    for (lines, _) in &blocks[skipped..] {
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    for line in current {
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn part(uri: &str, independent: bool) -> ListedPart {
        ListedPart { uri: uri.to_owned(), duration: 0.5, independent }
    }

    /// A playlist of `segments` complete 2 s segments of four 0.5 s parts from msn 1, then `open` parts.
    fn playlist(segments: u64, open: usize) -> LowLatencyPlaylist {
        windowed(segments, open, 6)
    }

    fn windowed(segments: u64, open: usize, window: usize) -> LowLatencyPlaylist {
        let mut p = LowLatencyPlaylist::new("init.mp4", 2, 0.5, window);
        for msn in 1..=segments + 1 {
            p.begin(msn, &format!("s{msn}.m4s"), 1_700_000_000_000 + msn * 2000);
            let parts = if msn > segments { open } else { 4 };
            for k in 0..parts {
                p.push_part(part(&format!("s{msn}.{k}.m4s"), k == 0));
            }
            if msn <= segments {
                p.end();
            }
        }
        p.hint(Some(format!("s{}.{open}.m4s", segments + 1)));
        p
    }

    #[test]
    fn renders_the_low_latency_tags() {
        let p = playlist(2, 2);
        let report = RenditionReport { uri: "b.m3u8".into(), last_msn: 3, last_part: Some(1) };
        let text = p.render(&[report]);
        let expected = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.500\n\
            #EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z\n\
            #EXT-X-PART:DURATION=0.50000,URI=\"s1.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.50000,URI=\"s1.1.m4s\"\n\
            #EXT-X-PART:DURATION=0.50000,URI=\"s1.2.m4s\"\n#EXT-X-PART:DURATION=0.50000,URI=\"s1.3.m4s\"\n\
            #EXTINF:2.00000,\ns1.m4s\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z\n\
            #EXT-X-PART:DURATION=0.50000,URI=\"s2.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.50000,URI=\"s2.1.m4s\"\n\
            #EXT-X-PART:DURATION=0.50000,URI=\"s2.2.m4s\"\n#EXT-X-PART:DURATION=0.50000,URI=\"s2.3.m4s\"\n\
            #EXTINF:2.00000,\ns2.m4s\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z\n\
            #EXT-X-PART:DURATION=0.50000,URI=\"s3.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.50000,URI=\"s3.1.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s3.2.m4s\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"b.m3u8\",LAST-MSN=3,LAST-PART=1\n";
        assert_eq!(text, expected);
        assert_eq!(p.report("a.m3u8"), Some(RenditionReport { uri: "a.m3u8".into(), last_msn: 3, last_part: Some(1) }));
    }

    #[test]
    fn old_segments_are_listed_whole_and_slide_out() {
        let text = playlist(9, 1).render(&[]);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"), "{text}");
        assert!(!text.contains("s3.m4s"), "{text}");
        // 0.5 s open, then 2 s segments: parts of s10, s9, s8 and s7 (which reach into the last 6 s), not of s6.
        assert!(text.contains("URI=\"s7.3.m4s\"") && !text.contains("URI=\"s6.3.m4s\""), "{text}");
        assert!(
            text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:32.000Z\n#EXTINF:2.00000,\ns6.m4s\n"),
            "{text}"
        );
    }

    #[test]
    fn positions_decide_blocking_reloads() {
        let pos = Position::read(&playlist(2, 2).render(&[])).unwrap();
        assert_eq!(
            pos,
            Position { target_duration: 2, last_complete: Some(2), last_complete_parts: 4, open_parts: 2, open_msn: 3 }
        );
        assert_eq!(blocking(&pos, 2, None), Blocking::Ready);
        assert_eq!(blocking(&pos, 3, None), Blocking::Wait);
        assert_eq!(blocking(&pos, 3, Some(1)), Blocking::Ready);
        assert_eq!(blocking(&pos, 3, Some(2)), Blocking::Wait);
        assert_eq!(blocking(&pos, 2, Some(9)), Blocking::Ready, "past the end of s2: s3.0, which is here");
        assert_eq!(blocking(&pos, 4, Some(0)), Blocking::Wait);
        assert_eq!(blocking(&pos, 4, None), Blocking::Wait, "two segments ahead is waited for");
        assert_eq!(blocking(&pos, 5, None), Blocking::TooFar);
        let fresh = Position::read(&playlist(0, 1).render(&[])).unwrap();
        assert_eq!(fresh.last_complete, None);
        assert_eq!(blocking(&fresh, 1, Some(0)), Blocking::Ready);
        assert_eq!(blocking(&fresh, 1, Some(1)), Blocking::Wait);
        assert_eq!(blocking(&fresh, 2, None), Blocking::TooFar);
        let between = Position::read(&playlist(2, 0).render(&[])).unwrap();
        assert_eq!(blocking(&between, 2, Some(4)), Blocking::Wait, "s3.0 is not here yet");
    }

    #[test]
    fn reload_queries_parse() {
        assert_eq!(Reload::parse(None), Ok(Reload::default()));
        assert_eq!(
            Reload::parse(Some("_HLS_msn=12&_HLS_part=3&token=x")),
            Ok(Reload { block: Some((12, Some(3))), skip: false })
        );
        assert_eq!(
            Reload::parse(Some("_HLS_msn=12&_HLS_skip=YES")),
            Ok(Reload { block: Some((12, None)), skip: true })
        );
        assert_eq!(Reload::parse(Some("_HLS_part=1")), Err(ReloadError::PartWithoutMsn));
        assert!(matches!(Reload::parse(Some("_HLS_msn=-1")), Err(ReloadError::BadValue { name: "_HLS_msn", .. })));
        assert!(Reload::parse(Some("_HLS_skip=NO")).is_err());
    }

    #[test]
    fn delta_updates_skip_what_is_older_than_can_skip_until() {
        // 12 s may be skipped beyond; 9 complete segments of 2 s and an open one: 18.5 s listed.
        let full = windowed(9, 1, 9).render(&[]);
        let delta = delta(&full).unwrap();
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXT-X-PROGRAM-DATE-TIME"), "{delta}");
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:1\n") && delta.contains("#EXT-X-MAP:URI=\"init.mp4\"\n"));
        assert!(!delta.contains("\ns3.m4s\n") && delta.contains("\ns4.m4s\n"), "{delta}");
        assert!(delta.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s10.1.m4s\"\n"), "{delta}");
        let pos = Position::read(&full).unwrap();
        assert_eq!(pos.last_complete, Some(9));
        assert_eq!(super::delta(&playlist(3, 1).render(&[])), None, "too short to skip");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// What the origin writes, the edge reads back: the newest segment and the parts of the open one.
        #[test]
        fn positions_read_back(segments in 0u64..12, open in 0usize..4) {
            let p = playlist(segments, open);
            let pos = Position::read(&p.render(&[])).unwrap();
            prop_assert_eq!(pos.open_parts, open as u64);
            prop_assert_eq!(pos.open_msn, segments + 1);
            prop_assert_eq!(pos.last_complete, (segments > 0).then_some(segments));
        }

        #[test]
        fn queries_never_panic(q in "[_A-Za-z=&0-9]{0,40}") {
            let _ = Reload::parse(Some(&q));
        }
    }
}
