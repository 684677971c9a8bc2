//! A checker of the Low-Latency HLS rules of the HLS specification (rfc8216bis), for playlists any server
//! writes: the integration tests run every playlist the edge serves through it, and it reads them with its
//! own parser, not with [`super::ll`]'s, so that a mistake in the writer is not mirrored here.
//!
//! [`check`] judges one media playlist; [`Sequence`] judges successive versions of one playlist (media
//! sequence and part numbering continuous, the preload hint always the next part). Each violation is a
//! sentence naming the rule's section. Pure: text in, findings out.

use std::collections::HashMap;

/// Seconds of rounding allowed when comparing durations written with a few decimals.
const ROUNDING: f64 = 0.0015;

#[derive(Debug, Clone, PartialEq)]
struct Part {
    uri: String,
    duration: f64,
    independent: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    msn: u64,
    uri: String,
    duration: f64,
    date: Option<String>,
    parts: Vec<Part>,
}

/// A media playlist as read by the checker.
#[derive(Debug, Clone, Default)]
struct Playlist {
    target: Option<f64>,
    part_target: Option<f64>,
    media_sequence: u64,
    version: Option<u32>,
    server_control: HashMap<String, String>,
    skipped: u64,
    segments: Vec<Segment>,
    open_parts: Vec<Part>,
    open_date: Option<String>,
    hints: Vec<HashMap<String, String>>,
    reports: Vec<HashMap<String, String>>,
}

/// `NAME=VALUE,NAME="VALUE",...` into a map (quotes removed).
fn attributes(list: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = list;
    while let Some((name, after)) = rest.split_once('=') {
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or("").trim_start_matches(','))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.insert(name.trim().to_owned(), value.to_owned());
        rest = next;
    }
    out
}

fn read(text: &str) -> Result<Playlist, String> {
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some("#EXTM3U") {
        return Err("4.4.1.1: the first line is not #EXTM3U".into());
    }
    let mut p = Playlist::default();
    let (mut parts, mut date, mut extinf) = (Vec::new(), None, None);
    for line in lines {
        let number = |v: &str| v.parse::<f64>().map_err(|_| format!("not a number in {line:?}"));
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = Some(number(v)?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            p.version = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().map_err(|_| format!("bad media sequence {line:?}"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            p.part_target = attributes(v).get("PART-TARGET").map(|t| number(t)).transpose()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            p.server_control = attributes(v);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            p.skipped = attributes(v)
                .get("SKIPPED-SEGMENTS")
                .and_then(|n| n.parse().ok())
                .ok_or("EXT-X-SKIP without a count")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            date = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let a = attributes(v);
            let uri = a.get("URI").ok_or_else(|| format!("4.4.4.9: EXT-X-PART without URI: {line:?}"))?;
            let duration = number(a.get("DURATION").ok_or_else(|| format!("4.4.4.9: no DURATION: {line:?}"))?)?;
            parts.push(Part {
                uri: uri.clone(),
                duration,
                independent: a.get("INDEPENDENT").is_some_and(|v| v == "YES"),
            });
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(number(v.split(',').next().unwrap_or(""))?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            p.hints.push(attributes(v));
        } else if let Some(v) = line.strip_prefix("#EXT-X-RENDITION-REPORT:") {
            p.reports.push(attributes(v));
        } else if !line.is_empty() && !line.starts_with('#') {
            let duration = extinf.take().ok_or_else(|| format!("4.4.4.1: {line} has no EXTINF"))?;
            let msn = p.media_sequence + p.skipped + p.segments.len() as u64;
            p.segments.push(Segment {
                msn,
                uri: line.to_owned(),
                duration,
                date: date.take(),
                parts: std::mem::take(&mut parts),
            });
        }
    }
    p.open_parts = parts;
    p.open_date = date;
    Ok(p)
}

/// The rules one media playlist must keep; an empty list when it keeps them all.
pub fn check(text: &str) -> Vec<String> {
    let p = match read(text) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let mut out = Vec::new();
    let Some(target) = p.target else {
        return vec!["4.4.3.1: no EXT-X-TARGETDURATION".into()];
    };
    for s in &p.segments {
        if s.duration.round() > target {
            out.push(format!("4.4.3.1: {} lasts {} s, over the target duration {target}", s.uri, s.duration));
        }
    }
    let has_parts = !p.open_parts.is_empty() || p.segments.iter().any(|s| !s.parts.is_empty());
    let Some(part_target) = p.part_target else {
        if has_parts {
            out.push("4.4.3.7: EXT-X-PART without EXT-X-PART-INF".into());
        }
        return out;
    };
    let sc = &p.server_control;
    if sc.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES") {
        out.push("4.4.3.8: EXT-X-SERVER-CONTROL lacks CAN-BLOCK-RELOAD=YES (required with parts)".into());
    }
    match sc.get("PART-HOLD-BACK").and_then(|v| v.parse::<f64>().ok()) {
        None => out.push("4.4.3.8: PART-HOLD-BACK is required in a playlist with parts".into()),
        Some(h) if h + ROUNDING < 3.0 * part_target => {
            out.push(format!("4.4.3.8: PART-HOLD-BACK {h} is under three part targets ({})", 3.0 * part_target))
        }
        _ => {}
    }
    if let Some(skip) = sc.get("CAN-SKIP-UNTIL").and_then(|v| v.parse::<f64>().ok()) {
        if skip + ROUNDING < 6.0 * target {
            out.push(format!("4.4.3.8: CAN-SKIP-UNTIL {skip} is under six target durations"));
        }
    }
    if p.skipped > 0 && p.version.unwrap_or(1) < 9 {
        out.push("4.4.5.2: EXT-X-SKIP needs EXT-X-VERSION 9".into());
    }
    let groups = p.segments.iter().map(|s| &s.parts).chain([&p.open_parts]);
    for parts in groups {
        for (i, part) in parts.iter().enumerate() {
            if part.duration > part_target + ROUNDING {
                out.push(format!(
                    "4.4.4.9: part {} lasts {} s, over PART-TARGET {part_target}",
                    part.uri, part.duration
                ));
            }
            let last = i + 1 == parts.len();
            if part.duration + ROUNDING < 0.85 * part_target && !part.independent && !last {
                out.push(format!("4.4.4.9: part {} lasts {} s, under 85% of PART-TARGET", part.uri, part.duration));
            }
        }
    }
    for s in p.segments.iter().filter(|s| !s.parts.is_empty()) {
        let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
        if (sum - s.duration).abs() > ROUNDING * s.parts.len() as f64 {
            out.push(format!("4.4.4.9: the parts of {} add up to {sum} s, not its {} s", s.uri, s.duration));
        }
    }
    if p.segments.first().map_or(p.open_date.is_none(), |s| s.date.is_none()) {
        out.push("4.4.4.6: no EXT-X-PROGRAM-DATE-TIME on the first segment".into());
    }
    let part_hints: Vec<_> = p.hints.iter().filter(|h| h.get("TYPE").map(String::as_str) == Some("PART")).collect();
    if part_hints.len() > 1 {
        out.push("4.4.5.3: more than one EXT-X-PRELOAD-HINT of TYPE=PART".into());
    }
    if has_parts && part_hints.is_empty() {
        out.push("6.2.5.3: a playlist with parts should hint the next part (EXT-X-PRELOAD-HINT)".into());
    }
    for hint in part_hints {
        let uri = hint.get("URI").map(String::as_str).unwrap_or("");
        let listed = p.segments.iter().flat_map(|s| &s.parts).chain(&p.open_parts).any(|p| p.uri == uri);
        if uri.is_empty() || listed {
            out.push(format!("4.4.5.3: the preload hint {uri:?} is not a part still to come"));
        }
    }
    for r in &p.reports {
        if !r.contains_key("URI") || r.get("LAST-MSN").and_then(|v| v.parse::<u64>().ok()).is_none() {
            out.push(format!("4.4.5.4: EXT-X-RENDITION-REPORT without URI or LAST-MSN: {r:?}"));
        }
    }
    out
}

/// Successive versions of one media playlist, as a player polling it sees them.
#[derive(Debug, Default)]
pub struct Sequence {
    previous: Option<Playlist>,
    /// Every segment seen, by media sequence number: its URI and the parts listed for it.
    seen: HashMap<u64, (String, Vec<String>)>,
}

impl Sequence {
    /// Takes the next version; returns the rules it breaks, alone ([`check`]) and after the ones before.
    pub fn next(&mut self, text: &str) -> Vec<String> {
        let mut out = check(text);
        let Ok(p) = read(text) else { return out };
        if let Some(prev) = &self.previous {
            if p.media_sequence < prev.media_sequence {
                out.push(format!(
                    "6.2.1: the media sequence went back from {} to {}",
                    prev.media_sequence, p.media_sequence
                ));
            }
            let prev_last = prev.segments.last().map(|s| s.msn);
            let now_last = p.segments.last().map(|s| s.msn);
            if prev_last > now_last {
                out.push(format!("6.2.1: the last segment went back from {prev_last:?} to {now_last:?}"));
            }
            // The hint of the version before is the first part that came after its last one.
            let prev_parts: Vec<&str> =
                prev.segments.iter().flat_map(|s| &s.parts).chain(&prev.open_parts).map(|p| p.uri.as_str()).collect();
            let now_parts: Vec<&str> =
                p.segments.iter().flat_map(|s| &s.parts).chain(&p.open_parts).map(|p| p.uri.as_str()).collect();
            let hint = prev.hints.iter().find_map(|h| h.get("URI"));
            if let (Some(hint), Some(last)) = (hint, prev_parts.last()) {
                if let Some(at) = now_parts.iter().position(|u| u == last) {
                    if let Some(following) = now_parts.get(at + 1) {
                        if following != hint {
                            out.push(format!("6.2.5.3: the preload hint was {hint} but the next part is {following}"));
                        }
                    }
                }
            }
        }
        let open_msn = p.media_sequence + p.skipped + p.segments.len() as u64;
        let open = (open_msn, String::new(), &p.open_parts);
        for (msn, uri, parts) in p.segments.iter().map(|s| (s.msn, s.uri.clone(), &s.parts)).chain([open]) {
            let uris: Vec<String> = parts.iter().map(|p| p.uri.clone()).collect();
            match self.seen.get_mut(&msn) {
                Some((seen_uri, seen_parts)) => {
                    if !uri.is_empty() && !seen_uri.is_empty() && *seen_uri != uri {
                        out.push(format!("6.2.1: segment {msn} was {seen_uri} and is now {uri}"));
                    }
                    if !(uris.is_empty() || uris.starts_with(seen_parts) || seen_parts.starts_with(&uris)) {
                        out.push(format!("6.2.1: the parts of segment {msn} changed: {seen_parts:?} then {uris:?}"));
                    }
                    if seen_uri.is_empty() {
                        *seen_uri = uri;
                    }
                    if uris.len() > seen_parts.len() {
                        *seen_parts = uris;
                    }
                }
                None => {
                    self.seen.insert(msn, (uri, uris));
                }
            }
        }
        self.previous = Some(p);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::ll::{ListedPart, LowLatencyPlaylist};
    use super::*;

    fn writer() -> LowLatencyPlaylist {
        LowLatencyPlaylist::new("init.mp4", 2, 0.5, 6)
    }

    #[test]
    fn what_the_writer_renders_passes() {
        let mut p = writer();
        let mut seq = Sequence::default();
        for msn in 1..=5u64 {
            p.begin(msn, &format!("s{msn}.m4s"), 1_700_000_000_000 + msn * 2000);
            for k in 0..4 {
                p.push_part(ListedPart { uri: format!("s{msn}.{k}.m4s"), duration: 0.5, independent: k == 0 });
                let next = if k == 3 { format!("s{}.0.m4s", msn + 1) } else { format!("s{msn}.{}.m4s", k + 1) };
                p.hint(Some(next));
                assert_eq!(seq.next(&p.render(&[])), Vec::<String>::new());
            }
            p.end();
            assert_eq!(seq.next(&p.render(&[])), Vec::<String>::new());
        }
    }

    #[test]
    fn broken_rules_are_named() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n\
            #EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-PART:DURATION=0.6,URI=\"a.0.m4s\"\n\
            #EXT-X-PART:DURATION=0.2,URI=\"a.1.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"a.2.m4s\"\n#EXTINF:3.0,\na.m4s\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"a.2.m4s\"\n";
        let found = check(text).join("\n");
        for rule in [
            "under three part targets",
            "over PART-TARGET",
            "under 85%",
            "add up to",
            "over the target",
            "PROGRAM-DATE-TIME",
            "not a part still to come",
        ] {
            assert!(found.contains(rule), "{rule} missing from:\n{found}");
        }
        let mut seq = Sequence::default();
        let a = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2,\nx5.ts\n";
        let b = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:2,\ny4.ts\n";
        seq.next(a);
        let found = seq.next(b).join("\n");
        assert!(found.contains("went back"), "{found}");
    }
}
