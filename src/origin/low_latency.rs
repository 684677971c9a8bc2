//! Low-Latency HLS from a CMAF upload: what the origin keeps of each rendition between uploads.
//!
//! `ffmpeg -f dash -ldash 1 -streaming 1 -method PUT` uploads each representation's init segment, then
//! each segment as one chunked PUT whose chunks (`moof`+`mdat`) arrive as they are encoded. Ingest
//! ([`super::Ingest::put`]) cuts the chunks into parts as they arrive ([`crate::hls::parts`]) and publishes
//! each part as an object of its own the moment it closes, so it crosses the mesh while the rest of its
//! segment is still being encoded; then the playlist that lists it. This module holds the per-rendition
//! state that connects the uploads: the init segment's timing, and the LL-HLS playlist being written
//! ([`crate::hls::ll::LowLatencyPlaylist`]). Bounded: one playlist window per rendition, renditions per
//! stream at most [`MAX_RENDITIONS`], and a stream's state goes when the publisher's does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::hls::dash::{part_name, playlist_name, segment_name};
use crate::hls::fmp4::InitInfo;
use crate::hls::ll::{ListedPart, LowLatencyPlaylist, RenditionReport};
use crate::id::StreamName;

/// The most renditions one stream may have (an upload for another is refused).
pub const MAX_RENDITIONS: usize = 16;

/// One rendition's state.
struct Rendition {
    init: InitInfo,
    init_name: String,
    playlist: Option<LowLatencyPlaylist>,
    /// The segment being received and the width its number is written with.
    current: Option<(u64, usize)>,
    /// Peak bit rate of a part so far, for the multivariant playlist's `BANDWIDTH`.
    bandwidth: u64,
}

/// Every stream's renditions.
#[derive(Default)]
pub struct Renditions {
    streams: Mutex<HashMap<StreamName, BTreeMap<String, Rendition>>>,
}

/// What changed when a part was added: the playlists to publish.
pub struct Published {
    /// The rendition's media playlist: name and text.
    pub playlist: (String, String),
    /// The multivariant playlist, when a rendition appeared or its bit rate grew.
    pub multivariant: Option<String>,
}

impl Renditions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, BTreeMap<String, Rendition>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a rendition's init segment; `false` when the stream has too many renditions.
    pub fn init(&self, stream: &StreamName, rendition: &str, init_name: &str, info: InitInfo) -> bool {
        let mut streams = self.lock();
        let renditions = streams.entry(stream.clone()).or_default();
        if !renditions.contains_key(rendition) && renditions.len() >= MAX_RENDITIONS {
            return false;
        }
        let r = renditions.entry(rendition.to_owned()).or_insert_with(|| Rendition {
            init: info,
            init_name: init_name.to_owned(),
            playlist: None,
            current: None,
            bandwidth: 0,
        });
        r.init = info;
        true
    }

    /// The rendition's init timing, if its init segment came.
    pub fn timing(&self, stream: &StreamName, rendition: &str) -> Option<InitInfo> {
        self.lock().get(stream)?.get(rendition).map(|r| r.init)
    }

    /// Adds part `index` of segment `number` (written `width` digits wide), `seconds` long, to the rendition's
    /// playlist; segment `number` is opened at `unix_ms` with its first part. Returns the playlists to publish.
    #[allow(clippy::too_many_arguments)]
    pub fn part(
        &self,
        stream: &StreamName,
        rendition: &str,
        (number, width): (u64, usize),
        index: u64,
        seconds: f64,
        bytes: usize,
        independent: bool,
        unix_ms: u64,
        shape: (u32, f64, usize),
    ) -> Option<Published> {
        let mut streams = self.lock();
        let renditions = streams.get_mut(stream)?;
        let r = renditions.get_mut(rendition)?;
        let (target, part_target, window) = shape;
        // A segment number that goes back is a restarted encoder: its playlist starts over.
        let restarted = r.current.is_some_and(|(n, _)| number < n);
        let playlist = match &mut r.playlist {
            Some(p) if !restarted => p,
            slot => slot.insert(LowLatencyPlaylist::new(&r.init_name, target, part_target, window)),
        };
        if index == 0 {
            playlist.begin(number, &segment_name(rendition, number, width), unix_ms);
        }
        r.current = Some((number, width));
        playlist.push_part(ListedPart {
            uri: part_name(rendition, number, width, index),
            duration: seconds,
            independent,
        });
        // The encoder cuts a segment at its segment duration (ingest.target_duration_s): a segment that has
        // it, give or take half a part, is expected to end, and its successor's first part comes next.
        let full = playlist.open_duration() + part_target / 2.0 >= target as f64;
        let next = if full {
            part_name(rendition, number + 1, width, 0)
        } else {
            part_name(rendition, number, width, index + 1)
        };
        playlist.hint(Some(next));
        let rate = (bytes as f64 * 8.0 / seconds.max(0.001)) as u64;
        let grew = rate > r.bandwidth + r.bandwidth / 4;
        if grew {
            r.bandwidth = rate;
        }
        Some(Published {
            playlist: render(renditions, rendition),
            multivariant: grew.then(|| multivariant(renditions)),
        })
    }

    /// Completes segment `number`: listed whole from now on, and the next segment's first part hinted.
    pub fn segment_done(&self, stream: &StreamName, rendition: &str) -> Option<(String, String)> {
        let mut streams = self.lock();
        let renditions = streams.get_mut(stream)?;
        let r = renditions.get_mut(rendition)?;
        let (number, width) = r.current?;
        let playlist = r.playlist.as_mut()?;
        playlist.end();
        playlist.hint(Some(part_name(rendition, number + 1, width, 0)));
        Some(render(renditions, rendition))
    }

    /// Keeps only the streams `keep` says are still known.
    pub fn retain(&self, keep: impl Fn(&StreamName) -> bool) {
        self.lock().retain(|s, _| keep(s));
    }

    /// Forgets a stream (its publisher went, or ended it).
    pub fn forget(&self, stream: &StreamName) {
        self.lock().remove(stream);
    }
}

/// A rendition's playlist, reporting on the others.
fn render(renditions: &BTreeMap<String, Rendition>, rendition: &str) -> (String, String) {
    let reports: Vec<RenditionReport> = renditions
        .iter()
        .filter(|(name, _)| name.as_str() != rendition)
        .filter_map(|(name, r)| r.playlist.as_ref()?.report(&playlist_name(name)))
        .collect();
    let text = renditions[rendition].playlist.as_ref().map(|p| p.render(&reports)).unwrap_or_default();
    (playlist_name(rendition), text)
}

/// The multivariant playlist: one variant per rendition, with its peak part bit rate.
fn multivariant(renditions: &BTreeMap<String, Rendition>) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (name, r) in renditions.iter().filter(|(_, r)| r.bandwidth > 0) {
        out.push_str(&format!("#EXT-X-STREAM-INF:BANDWIDTH={}\n{}\n", r.bandwidth.max(1), playlist_name(name)));
    }
    out
}
